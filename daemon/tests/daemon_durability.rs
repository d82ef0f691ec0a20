//! What survives what: a `kill -9` of the daemon between accepting a send
//! and its delivery, a broker restart, a clean SIGTERM.

mod support;

use std::time::Duration;

use claudemesh_protocol::ipc::{Request, Response, SendArgs};
use claudemesh_protocol::wire::Priority;
use support::broker::TwoDaemons;
use support::client::{TestClient, WAIT};
use support::{Daemon, Home, TestBroker, eventually};

fn send(to: &str, text: &str) -> Request {
    Request::Send(SendArgs {
        to: to.into(),
        text: text.into(),
        priority: Priority::Now,
    })
}

/// Collects every message the client is shown within `quiet` of the last
/// one (events and a final fetch), in arrival order.
async fn drain_messages(c: &mut TestClient, want: usize, limit: Duration) -> Vec<String> {
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while texts.len() < want {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_message(left).await {
            Some(m) => texts.push(m.text),
            None => break,
        }
    }
    // Anything more would be a duplicate: give it a moment to show up.
    while let Some(m) = c.next_message(Duration::from_secs(2)).await {
        texts.push(m.text);
    }
    texts
}

async fn outbox_len(c: &mut TestClient) -> usize {
    match c.request(Request::ListOutbox).await {
        Ok(Response::Outbox { messages }) => messages.len(),
        other => panic!("list_outbox answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_accept_and_delivery_loses_and_duplicates_nothing() {
    let mut broker = TestBroker::start().await;
    let TwoDaemons {
        home_a,
        home_b: _home_b,
        a: mut da,
        b: db,
    } = broker.two_daemons().await;
    let me = std::process::id();
    let mut a = da.client().await;
    a.attach(me, "alice", None).await;
    let mut b = db.client().await;
    let ib = b.attach(me, "bob", None).await;
    let bob = format!("{}/{}", ib.member, ib.session_id);

    broker.stop().await;
    let sent = match a.request(send(&bob, "survives kill -9")).await {
        Ok(Response::Sent(s)) => s,
        other => panic!("send answered {other:?}"),
    };
    assert!(sent.recipients.is_empty(), "nothing can be delivered yet");
    assert_eq!(outbox_len(&mut a).await, 1);
    drop(a);
    da.kill9();

    broker.restart().await;
    let _da = Daemon::start_ready(&home_a, &["--no-local"]).await;
    let texts = drain_messages(&mut b, 1, Duration::from_secs(30)).await;
    assert_eq!(texts, ["survives kill -9"], "exactly one copy");
    let fetched = b.fetch(true).await;
    assert_eq!(fetched.len(), 1);
    let mut a = _da.client().await;
    let empty = eventually(WAIT, async || (outbox_len(&mut a).await == 0).then_some(())).await;
    assert!(empty.is_some(), "the outbox did not drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_receiver_after_storing_keeps_one_copy() {
    let broker = TestBroker::start().await;
    let TwoDaemons {
        home_a: _home_a,
        home_b,
        a: da,
        b: mut db,
    } = broker.two_daemons().await;
    let me = std::process::id();
    let mut a = da.client().await;
    a.attach(me, "alice", None).await;
    let mut b = db.client().await;
    let ib = b.attach(me, "bob", None).await;
    b.request(Request::SetStatus {
        status: claudemesh_protocol::wire::PeerStatus::Working,
    })
    .await
    .expect("working");
    let bob = format!("{}/{}", ib.member, ib.session_id);
    for i in 0..5 {
        a.request(Request::Send(SendArgs {
            to: bob.clone(),
            text: format!("m{i}"),
            priority: Priority::Low,
        }))
        .await
        .expect("send");
    }
    eventually(WAIT, async || match b.request(Request::Pending).await {
        Ok(Response::Pending { count: 5 }) => Some(()),
        _ => None,
    })
    .await
    .expect("all five stored at bob's daemon");
    drop(b);
    db.kill9();
    let db = Daemon::start_ready(&home_b, &["--no-local"]).await;
    let mut b = db.client().await;
    let again = b.attach(me, "bob", None).await;
    assert!(again.resumed, "the session outlives the daemon");
    let texts: Vec<String> = b.fetch(true).await.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        b.fetch(false).await.is_empty(),
        "no repeat after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing() {
    let mut broker = TestBroker::start().await;
    let TwoDaemons {
        home_a: _home_a,
        home_b: _home_b,
        a: da,
        b: db,
    } = broker.two_daemons().await;
    let me = std::process::id();
    let mut a = da.client().await;
    a.attach(me, "alice", None).await;
    let mut b = db.client().await;
    b.attach(me, "bob", None).await;
    eventually(WAIT, async || {
        a.peer_names()
            .await
            .contains(&"bob".to_owned())
            .then_some(())
    })
    .await
    .expect("alice sees bob");
    a.request(send("bob", "before")).await.expect("send before");
    assert_eq!(b.next_message(WAIT).await.expect("before").text, "before");

    broker.stop().await;
    // Sent while the broker is down: by key form, as names cannot be
    // checked offline... and by name too (the daemon accepts it).
    let ib_member = {
        let st = match b.request(Request::DaemonStatus).await {
            Ok(Response::DaemonStatus(s)) => s,
            other => panic!("{other:?}"),
        };
        st.meshes[0].member.clone()
    };
    a.request(send(&ib_member, "during-1"))
        .await
        .expect("during 1");
    a.request(send("bob", "during-2")).await.expect("during 2");
    broker.restart().await;

    let mut texts = drain_messages(&mut b, 2, Duration::from_secs(40)).await;
    texts.sort();
    assert_eq!(texts, ["during-1", "during-2"]);
    let names = eventually(WAIT, async || {
        let n = a.peer_names().await;
        n.contains(&"bob".to_owned()).then_some(n)
    })
    .await;
    assert!(
        names.is_some(),
        "bob's session was reopened after the restart"
    );
    let drained = eventually(WAIT, async || (outbox_len(&mut a).await == 0).then_some(())).await;
    assert!(drained.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_sessions_survive_a_restart() {
    let home = Home::new();
    let mut daemon = Daemon::start_ready(&home, &[]).await;
    let me = std::process::id();
    let mut c = daemon.client().await;
    let info = c.attach(me, "stayer", None).await;
    c.request(send("stayer", "note to self"))
        .await
        .expect("send");
    eventually(WAIT, async || match c.request(Request::Pending).await {
        Ok(Response::Pending { count: 1 }) => Some(()),
        _ => None,
    })
    .await
    .expect("stored");
    drop(c);
    let status = daemon.terminate().expect("exit status");
    assert!(status.success(), "{status:?}; log:\n{}", daemon.log());
    assert!(
        !support::daemon::exists(&home.socket()),
        "the socket file is removed"
    );

    let daemon = Daemon::start_ready(&home, &[]).await;
    let mut c = daemon.client().await;
    let again = c.attach(me, "stayer", None).await;
    assert!(again.resumed);
    assert_eq!(again.session_id, info.session_id);
    assert_eq!(again.pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_links_window_arrives_whole_after_a_restart() {
    // More than the 2 048 frames a link lets wait for its worker, so the
    // link must pause reading and resume without losing or repeating any.
    const COUNT: usize = 2500;
    let broker = TestBroker::start().await;
    let TwoDaemons {
        home_a: _home_a,
        home_b,
        a: da,
        b: mut db,
    } = broker.two_daemons().await;
    let me = std::process::id();
    let mut a = da.client().await;
    a.attach(me, "alice", None).await;
    let mut b = db.client().await;
    let ib = b.attach(me, "bob", None).await;
    let bob = format!("{}/{}", ib.member, ib.session_id);
    drop(b);
    assert!(db.terminate().is_some_and(|s| s.success()));

    let mut ids = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        ids.push(
            a.request_id(Request::Send(SendArgs {
                to: bob.clone(),
                text: format!("m{i:04}"),
                priority: Priority::Low,
            }))
            .await,
        );
    }
    for id in ids {
        a.answer(id, Duration::from_secs(60))
            .await
            .expect("accepted");
    }
    let at_broker = eventually(Duration::from_secs(60), async || {
        (outbox_len(&mut a).await == 0).then_some(())
    })
    .await;
    assert!(at_broker.is_some(), "the broker took every message");

    let db = Daemon::start_ready(&home_b, &["--no-local"]).await;
    let mut b = db.client().await;
    let again = b.attach(me, "bob", None).await;
    assert!(again.resumed);
    let stored = eventually(Duration::from_secs(60), async || {
        match b.request(Request::Pending).await {
            Ok(Response::Pending { count }) if count as usize >= COUNT => Some(count),
            _ => None,
        }
    })
    .await;
    assert_eq!(stored, Some(COUNT as u32), "every message stored once");
    let mut texts = Vec::new();
    while texts.len() < COUNT {
        let more = b.fetch(true).await;
        assert!(!more.is_empty(), "{} of {COUNT} handed over", texts.len());
        texts.extend(more.into_iter().map(|m| m.text));
    }
    let expected: Vec<String> = (0..COUNT).map(|i| format!("m{i:04}")).collect();
    texts.sort();
    assert_eq!(texts, expected);
}
