//! Sending by display name right after a broker restart, while the
//! recipient's daemon has not reconnected yet: the send is queued and
//! delivered once it is back, exactly as a send made while the broker was
//! down, instead of failing at once with `unknown_target`.
//!
//! Real daemons, a real broker stopped and started again on the same port
//! and database; the recipient's daemon is held back with SIGSTOP so that
//! "not reconnected yet" does not depend on timing.

mod support;

use std::time::Duration;

use claudemesh_protocol::ipc::{LinkState, Request, Response, SendArgs};
use claudemesh_protocol::wire::Priority;
use support::broker::TwoDaemons;
use support::client::{TestClient, WAIT};
use support::{TestBroker, eventually};

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child this test started.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

async fn linked(client: &mut TestClient) -> bool {
    match client.request(Request::DaemonStatus).await {
        Ok(Response::DaemonStatus(s)) => s.meshes.iter().all(|m| m.link == LinkState::Connected),
        other => panic!("daemon_status answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_sent_to_while_its_daemon_reconnects_is_queued_not_refused() {
    let mut broker = TestBroker::start().await;
    let TwoDaemons {
        home_a: _home_a,
        home_b: _home_b,
        a: da,
        b: db,
    } = broker.two_daemons().await;
    let me = std::process::id();
    let mut a = da.client().await;
    let mut b = db.client().await;
    a.attach(me, "alice", None).await;
    b.attach(me, "bob", None).await;
    let seen = eventually(WAIT, async || {
        a.peer_names()
            .await
            .contains(&"bob".to_owned())
            .then_some(())
    })
    .await;
    assert!(seen.is_some(), "alice never saw bob");

    // Bob's daemon cannot reconnect until it is let go.
    signal(db.pid(), libc::SIGSTOP);
    broker.restart().await;
    let back = eventually(Duration::from_secs(60), async || {
        let names = a.peer_names().await;
        (linked(&mut a).await && !names.contains(&"bob".to_owned())).then_some(())
    })
    .await;
    assert!(back.is_some(), "alice's daemon did not reconnect");

    let sent = a
        .request(Request::Send(SendArgs {
            to: "bob".into(),
            text: "after the restart".into(),
            priority: Priority::Now,
        }))
        .await;
    signal(db.pid(), libc::SIGCONT);
    match sent {
        Ok(Response::Sent(_)) => {}
        other => panic!("a send to a peer not back yet was refused: {other:?}"),
    }
    let got = b
        .next_message(Duration::from_secs(60))
        .await
        .expect("bob gets it once his daemon is back");
    assert_eq!(got.text, "after the restart");
}
