//! A real `claudemeshd` whose data directory and log are on a small tmpfs
//! that fills up (a real ENOSPC, not a mock). While the disk is full its
//! sends are refused with `storage_full`, pushes to it are not
//! acknowledged (their sender is not told `delivered`), and it stays up;
//! once space is freed the held pushes are stored and delivered with no
//! reconnect and no restart, and its sends work again.

mod support;

use std::time::Duration;

use claudemesh_protocol::ipc::{Request, Response, SendArgs};
use claudemesh_protocol::wire::{DeliveryState, Priority};
use support::client::WAIT;
use support::tmpfs::Tmpfs;
use support::{Daemon, Home, TestBroker, eventually};

fn send(to: &str, text: &str) -> Request {
    Request::Send(SendArgs {
        to: to.into(),
        text: text.into(),
        priority: Priority::Now,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_clearly_holds_pushes_unacked_and_recovers_without_a_restart() {
    let Some(disk) = Tmpfs::mount("8m") else {
        return;
    };
    let broker = TestBroker::start().await;
    let home_a = Home::new();
    let mut home_b = Home::new();
    home_b.paths.data_dir = disk.path().join("data");
    broker.enroll(&home_a, "team", "a");
    broker.enroll(&home_b, "team", "b");
    let da = Daemon::start_ready(&home_a, &["--no-local"]).await;
    let mut db = Daemon::start_with_log(&home_b, &["--no-local"], disk.path().join("daemon.log"));
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
    a.request(send("bob", "before")).await.expect("send");
    let got = b.next_message(WAIT).await.expect("bob gets it");
    assert_eq!(got.text, "before");

    let filler = disk.fill();
    // Bob's sends are refused, clearly, until a write fails (the WAL may
    // still have room for a few); each refusal is logged to the full disk.
    let big = "x".repeat(8 * 1024);
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..1000 {
        match b.request(send("alice", &format!("{i}:{big}"))).await {
            Ok(Response::Sent(s)) => accepted.push(s.message_id),
            Ok(other) => panic!("send answered {other:?}"),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("a send is refused once the disk is full");
    assert_eq!(refusal.code, "storage_full", "{refusal:?}");
    assert!(refusal.message.contains("disk is full"), "{refusal:?}");
    for _ in 0..32 {
        let e = b.request(send("alice", &big)).await.unwrap_err();
        assert_eq!(e.code, "storage_full", "{e:?}");
    }

    // Pushes to bob cannot be stored: not acknowledged, so alice's
    // messages are never reported delivered meanwhile.
    let mut pushed = Vec::new();
    for i in 0..10 {
        match a.request(send("bob", &format!("p{i}"))).await {
            Ok(Response::Sent(s)) => pushed.push(s.message_id),
            other => panic!("send answered {other:?}"),
        }
    }
    for _ in 0..20 {
        for id in &pushed {
            let state = a.first_recipient_state(id).await;
            assert_ne!(state, Some(DeliveryState::Delivered), "delivered unstored");
            assert_ne!(state, Some(DeliveryState::Seen), "seen unstored");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(db.is_running(), "the daemon exited on a full disk");

    // Space returns: the held pushes are stored and shown, and only then
    // acknowledged; no reconnect, no restart.
    disk.free(&filler);
    let mut texts = Vec::new();
    while texts.len() < pushed.len() {
        let m = b
            .next_message(Duration::from_secs(30))
            .await
            .expect("the held messages arrive once space is freed");
        texts.push(m.text);
    }
    texts.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    expected.sort();
    assert_eq!(texts, expected);
    for id in &pushed {
        let delivered = eventually(WAIT, async || {
            matches!(
                a.first_recipient_state(id).await,
                Some(DeliveryState::Delivered | DeliveryState::Seen)
            )
            .then_some(())
        })
        .await;
        assert!(delivered.is_some(), "{id} never reported delivered");
    }
    // Bob's sends work again, and what was accepted while full arrives.
    b.request(send("alice", "after")).await.expect("send after");
    let mut want = accepted.len() + 1;
    while want > 0 {
        a.next_message(WAIT)
            .await
            .expect("alice gets bob's messages");
        want -= 1;
    }
    assert!(db.is_running());
    db.terminate();
}
