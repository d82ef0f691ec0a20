//! Sessions talking through real daemons: two daemons on one standalone
//! broker, sessions on one machine through the local mesh, priorities,
//! receipts, resume and reaping.

mod support;

use std::time::Duration;

use claudemesh_protocol::ipc::{Event, Request, Response, SendArgs};
use claudemesh_protocol::wire::{DeliveryState, PeerStatus, Priority};
use support::broker::TwoDaemons;
use support::client::WAIT;
use support::{Daemon, Home, Relay, RelayMode, TestBroker, eventually};

#[test]
fn relay_helper() {
    support::relay::helper_main();
}

fn send(to: &str, text: &str, priority: Priority) -> Request {
    Request::Send(SendArgs {
        to: to.into(),
        text: text.into(),
        priority,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_broker_exchange_messages() {
    let broker = TestBroker::start().await;
    let (home_a, home_b) = (Home::new(), Home::new());
    broker.enroll(&home_a, "team", "alice-member");
    broker.enroll(&home_b, "team", "bob-member");
    let da = Daemon::start_ready(&home_a, &["--no-local"]).await;
    let db = Daemon::start_ready(&home_b, &["--no-local"]).await;

    // The test process is each session's "Claude Code" (self counts).
    let me = std::process::id();
    let mut a = da.client().await;
    let mut b = db.client().await;
    let info_a = a.attach(me, "alice", None).await;
    let info_b = b.attach(me, "bob", Some("team")).await;
    assert_eq!(info_a.mesh_slug, "team");
    assert_ne!(info_a.session_id, info_b.session_id);

    let seen = eventually(WAIT, async || {
        let names = a.peer_names().await;
        names.contains(&"bob".to_owned()).then_some(names)
    })
    .await;
    assert!(seen.is_some(), "alice never saw bob; log:\n{}", da.log());

    let sent = match a.request(send("bob", "hello bob", Priority::Now)).await {
        Ok(Response::Sent(s)) => s,
        other => panic!("send answered {other:?}"),
    };
    assert_eq!(sent.recipients.len(), 1, "{sent:?}");
    assert_eq!(sent.recipients[0].display_name.as_deref(), Some("bob"));

    let got = b.next_message(WAIT).await.expect("bob gets the message");
    assert_eq!(got.text, "hello bob");
    assert_eq!(got.from.display_name, "alice");
    assert_eq!(got.mesh_slug, "team");

    // Shown by fetch: marked seen, and alice hears of it.
    let fetched = b.fetch(true).await;
    assert_eq!(fetched.len(), 1);
    assert!(
        b.fetch(false).await.is_empty(),
        "seen messages are not shown twice"
    );
    let receipt = eventually(WAIT, async || {
        match a.next_event(Duration::from_millis(200)).await {
            Some(Event::Receipt {
                state: DeliveryState::Seen,
                message_id,
                ..
            }) => Some(message_id),
            _ => None,
        }
    })
    .await;
    assert_eq!(receipt.as_deref(), Some(sent.message_id.as_str()));
    match a
        .request(Request::MessageStatus {
            message_id: sent.message_id.clone(),
        })
        .await
    {
        Ok(Response::MessageStatus { recipients, .. }) => {
            assert_eq!(recipients[0].state, DeliveryState::Seen, "{recipients:?}")
        }
        other => panic!("message_status answered {other:?}"),
    }

    // And back, to the member key form.
    let to_alice = format!("{}/{}", info_a.member, info_a.session_id);
    b.request(send(&to_alice, "hi alice", Priority::Next))
        .await
        .expect("send back");
    let back = a.next_message(WAIT).await.expect("alice gets the reply");
    assert_eq!(back.text, "hi alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_one_machine_talk_through_the_local_mesh() {
    let home = Home::new();
    let daemon = Daemon::start_ready(&home, &[]).await;
    let mut a = Relay::spawn(&home.socket(), RelayMode::SelfIsClaude).await;
    let mut b = Relay::spawn(&home.socket(), RelayMode::SelfIsClaude).await;
    let ia = a.client.attach(a.claude_pid, "api", None).await;
    let ib = b.client.attach(b.claude_pid, "web", None).await;
    assert_eq!(ia.mesh_slug, "local");
    assert_eq!(ia.mesh_id, ib.mesh_id);
    assert_ne!(ia.session_id, ib.session_id);

    // web is working: `next` waits, `now` goes through at once.
    b.client
        .request(Request::SetStatus {
            status: PeerStatus::Working,
        })
        .await
        .expect("set status");
    a.client
        .request(send("web", "when you can", Priority::Next))
        .await
        .expect("send next");
    a.client
        .request(send("web", "urgent", Priority::Now))
        .await
        .expect("send now");
    let first = b.client.next_message(WAIT).await.expect("the now message");
    assert_eq!(first.text, "urgent");
    assert!(
        b.client
            .next_message(Duration::from_millis(800))
            .await
            .is_none(),
        "a next message reached a working session"
    );
    match b.client.request(Request::Pending).await {
        Ok(Response::Pending { count }) => assert_eq!(count, 2),
        other => panic!("pending answered {other:?}"),
    }
    b.client
        .request(Request::SetStatus {
            status: PeerStatus::Idle,
        })
        .await
        .expect("set idle");
    let second = b
        .client
        .next_message(WAIT)
        .await
        .expect("released when idle");
    assert_eq!(second.text, "when you can");

    // Broadcast reaches the other session only; groups work.
    b.client
        .request(Request::JoinGroup {
            group: "frontend".into(),
        })
        .await
        .expect("join group");
    a.client
        .request(send("@frontend", "to the group", Priority::Now))
        .await
        .expect("group send");
    assert_eq!(
        b.client
            .next_message(WAIT)
            .await
            .expect("group message")
            .text,
        "to the group"
    );
    a.client
        .request(send("*", "to everyone", Priority::Now))
        .await
        .expect("broadcast");
    assert_eq!(
        b.client.next_message(WAIT).await.expect("broadcast").text,
        "to everyone"
    );
    assert!(
        a.client
            .next_message(Duration::from_millis(500))
            .await
            .is_none()
    );

    let status = match a.client.request(Request::DaemonStatus).await {
        Ok(Response::DaemonStatus(s)) => s,
        other => panic!("daemon_status answered {other:?}"),
    };
    assert_eq!(status.meshes.len(), 1);
    assert!(status.meshes[0].local);
    assert!(status.meshes[0].broker.starts_with("ws://127.0.0.1:"));
    assert_eq!(status.sessions.len(), 2);
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_shim_resumes_its_session_and_inbox() {
    let home = Home::new();
    let daemon = Daemon::start_ready(&home, &[]).await;
    let me = std::process::id();
    let mut sender = Relay::spawn(&home.socket(), RelayMode::SelfIsClaude).await;
    sender
        .client
        .attach(sender.claude_pid, "sender", None)
        .await;

    let mut first = daemon.client().await;
    let info = first.attach(me, "resumer", None).await;
    assert!(!info.resumed);
    first
        .request(Request::SetStatus {
            status: PeerStatus::Working,
        })
        .await
        .expect("working");
    drop(first); // the shim exits without detaching

    for i in 0..3 {
        sender
            .client
            .request(send("resumer", &format!("m{i}"), Priority::Low))
            .await
            .expect("send");
    }
    let mut second = daemon.client().await;
    let again = second.attach(me, "resumer", None).await;
    assert!(again.resumed);
    assert_eq!(again.session_id, info.session_id);
    assert_eq!(again.pending, 3);
    let texts: Vec<String> = second
        .fetch(true)
        .await
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2"]);

    // A second connection cannot act as the same session at once: the
    // newer attach takes it over.
    let mut third = daemon.client().await;
    third.attach(me, "resumer", None).await;
    let err = second.request(Request::Pending).await.unwrap_err();
    assert_eq!(err.code, "not_attached");
}

/// Every request a session can make, for checking what a connection
/// without its session gets.
fn session_requests() -> Vec<Request> {
    vec![
        send("anyone", "x", Priority::Next),
        Request::ListPeers,
        Request::ListMembers,
        Request::FetchInbox { mark_seen: true },
        Request::Pending,
        Request::MarkSeen {
            message_ids: vec!["m-x".into()],
        },
        Request::MarkPushed {
            message_ids: vec!["m-x".into()],
        },
        Request::SetSummary {
            summary: "s".into(),
        },
        Request::SetStatus {
            status: PeerStatus::Dnd,
        },
        Request::JoinGroup { group: "g".into() },
        Request::LeaveGroup { group: "g".into() },
        Request::Detach,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_or_taken_over_connection_gets_not_attached_for_every_session_request() {
    let home = Home::new();
    let daemon = Daemon::start_ready(&home, &[]).await;
    let me = std::process::id();

    let mut first = daemon.client().await;
    let info = first.attach(me, "handle", None).await;
    first.request(Request::Detach).await.expect("detach");
    for request in session_requests() {
        let what = format!("{request:?}");
        let err = first.request(request).await.unwrap_err();
        assert_eq!(err.code, "not_attached", "after detach: {what}");
    }

    // The same connection may attach again: the detached session ended,
    // so this is a new one.
    let again = first.attach(me, "handle", None).await;
    assert_eq!(again.session_id, info.session_id);
    assert!(!again.resumed);

    // A newer connection of the same Claude Code takes the session over.
    let mut second = daemon.client().await;
    assert!(second.attach(me, "handle", None).await.resumed);
    // (`detach` last: it lets go of the lost session, checked below.)
    for request in session_requests()
        .into_iter()
        .filter(|r| !matches!(r, Request::Detach))
    {
        let what = format!("{request:?}");
        let err = first.request(request).await.unwrap_err();
        assert_eq!(err.code, "not_attached", "after takeover: {what}");
    }

    // The first connection takes it back, and keeps it: letting go of the
    // session it had lost must not detach the one it attached again.
    assert!(first.attach(me, "handle", None).await.resumed);
    assert!(matches!(
        first.request(Request::Pending).await,
        Ok(Response::Pending { .. })
    ));
    let err = second.request(Request::Pending).await.unwrap_err();
    assert_eq!(err.code, "not_attached");
    let err = second.request(Request::Detach).await.unwrap_err();
    assert_eq!(err.code, "not_attached");
    assert!(matches!(
        first.request(Request::Pending).await,
        Ok(Response::Pending { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_is_held_to_the_brokers_limit() {
    use claudemesh_protocol::limits::MAX_SUMMARY_BYTES;
    let home = Home::new();
    let daemon = Daemon::start_ready(&home, &[]).await;
    let mut c = daemon.client().await;
    c.attach(std::process::id(), "summarist", None).await;
    let longest = "s".repeat(MAX_SUMMARY_BYTES);
    c.request(Request::SetSummary {
        summary: longest.clone(),
    })
    .await
    .expect("a summary of the broker's limit is taken");
    let err = c
        .request(Request::SetSummary {
            summary: "s".repeat(MAX_SUMMARY_BYTES + 1),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, "too_large");
    assert!(
        err.message.contains(&MAX_SUMMARY_BYTES.to_string()),
        "{}",
        err.message
    );
    // The refused one changed nothing.
    let peers = match c.request(Request::ListPeers).await {
        Ok(Response::Peers { peers }) => peers,
        other => panic!("{other:?}"),
    };
    let me = peers
        .iter()
        .find(|p| p.is_self)
        .expect("the session itself");
    assert_eq!(me.peer.summary, longest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_claude_code_exits_leaves_the_broker() {
    let broker = TestBroker::start().await;
    let TwoDaemons {
        home_a,
        home_b: _home_b,
        a: da,
        b: db,
    } = broker.two_daemons().await;

    let mut doomed = Relay::spawn(&home_a.socket(), RelayMode::ParentIsClaude).await;
    doomed
        .client
        .attach(doomed.claude_pid, "doomed", None)
        .await;
    let mut watcher = db.client().await;
    watcher.attach(std::process::id(), "watcher", None).await;
    let listed = eventually(WAIT, async || {
        watcher
            .peer_names()
            .await
            .contains(&"doomed".to_owned())
            .then_some(())
    })
    .await;
    assert!(listed.is_some(), "the watcher never saw the session");

    // Claude Code dies; its shim (the relay) lives on, still connected.
    doomed.kill_claude().await;
    let gone = eventually(Duration::from_secs(20), async || {
        (!watcher.peer_names().await.contains(&"doomed".to_owned())).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the session was not reaped; log:\n{}",
        da.log()
    );
    let mut status_client = da.client().await;
    match status_client.request(Request::DaemonStatus).await {
        Ok(Response::DaemonStatus(s)) => assert!(s.sessions.is_empty(), "{:?}", s.sessions),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_context_finds_the_callers_session() {
    let home = Home::new();
    let daemon = Daemon::start_ready(&home, &[]).await;
    let mut target = daemon.client().await;
    let info = target.attach(std::process::id(), "hooked", None).await;
    let mut sender = Relay::spawn(&home.socket(), RelayMode::SelfIsClaude).await;
    sender.client.attach(sender.claude_pid, "poker", None).await;
    sender
        .client
        .request(send("hooked", "look at this", Priority::Next))
        .await
        .expect("send");
    eventually(WAIT, async || {
        match target.request(Request::Pending).await {
            Ok(Response::Pending { count: 1 }) => Some(()),
            _ => None,
        }
    })
    .await
    .expect("the message arrives");

    // A hook runs as a descendant of Claude Code: here, the test process.
    let mut hook = daemon.client().await;
    match hook.request(Request::HookContext(Default::default())).await {
        Ok(Response::HookContext { session, messages }) => {
            assert_eq!(session.as_deref(), Some(info.session_id.as_str()));
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0].text, "look at this");
        }
        other => panic!("hook_context answered {other:?}"),
    }
    match hook.request(Request::HookContext(Default::default())).await {
        Ok(Response::HookContext { messages, .. }) => assert!(messages.is_empty()),
        other => panic!("{other:?}"),
    }
}

/// This daemon's member key in its only mesh.
async fn member_of(c: &mut support::client::TestClient) -> String {
    match c.request(Request::DaemonStatus).await {
        Ok(Response::DaemonStatus(s)) => s.meshes[0].member.clone(),
        other => panic!("daemon_status answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_from_a_session_that_ended_while_the_broker_was_down_is_delivered() {
    let mut broker = TestBroker::start().await;
    let TwoDaemons {
        home_a,
        home_b: _home_b,
        a: da,
        b: db,
    } = broker.two_daemons().await;
    let me = std::process::id();
    let mut b = db.client().await;
    b.attach(me, "bob", None).await;
    let mut a = da.client().await;
    a.attach(me, "alice", None).await;
    eventually(WAIT, async || {
        b.peer_names()
            .await
            .contains(&"alice".to_owned())
            .then_some(())
    })
    .await
    .expect("bob sees alice");
    let bob = member_of(&mut b).await;

    broker.stop().await;
    // A script's `claudemesh-ctl send`: attach, send (accepted: durable
    // here), detach, exit — all before the broker is back.
    let mut script = Relay::spawn(&home_a.socket(), RelayMode::SelfIsClaude).await;
    script
        .client
        .attach(script.claude_pid, "script", None)
        .await;
    match script
        .client
        .request(send(&bob, "from a script", Priority::Now))
        .await
    {
        Ok(Response::Sent(_)) => {}
        other => panic!("send answered {other:?}"),
    }
    script
        .client
        .request(Request::Detach)
        .await
        .expect("detach");
    script.kill_claude().await;
    // Meanwhile alice's shim restarts: detach and attach again, offline.
    a.request(Request::Detach).await.expect("alice detaches");
    let mut a = da.client().await;
    a.attach(me, "alice", None).await;
    broker.restart().await;

    let got = b
        .next_message(Duration::from_secs(40))
        .await
        .expect("the script's message arrives");
    assert_eq!(got.text, "from a script");
    let drained = eventually(WAIT, async || match a.request(Request::ListOutbox).await {
        Ok(Response::Outbox { messages }) if messages.is_empty() => Some(()),
        _ => None,
    })
    .await;
    assert!(drained.is_some(), "nothing stuck or failed in the outbox");
    // The script's session ends once its message is in; alice, who came
    // back, is not closed by the close owed for her earlier life.
    let names = eventually(WAIT, async || {
        let n = b.peer_names().await;
        (!n.contains(&"script".to_owned())).then_some(n)
    })
    .await
    .expect("the script's session ends");
    assert!(names.contains(&"alice".to_owned()), "{names:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(b.peer_names().await.contains(&"alice".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_client_never_takes_messages_meant_for_the_next_session() {
    let broker = TestBroker::start().await;
    let TwoDaemons {
        home_a: _home_a,
        home_b,
        a: da,
        b: db,
    } = broker.two_daemons().await;
    let me = std::process::id();
    let mut b_status = db.client().await;
    let bob = member_of(&mut b_status).await;
    let mut a = da.client().await;
    a.attach(me, "alice", None).await;
    // To bob's member while bob's daemon has no session: kept for the
    // next session that attaches there.
    a.request(send(&bob, "for whoever comes", Priority::Now))
        .await
        .expect("send");
    let delivered = eventually(WAIT, async || match a.request(Request::ListOutbox).await {
        Ok(Response::Outbox { messages }) if messages.is_empty() => Some(()),
        _ => None,
    })
    .await;
    assert!(delivered.is_some(), "the broker accepted the message");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // `claudemesh-ctl peers` or `send`: a transient attach takes nothing.
    let mut ctl = Relay::spawn(&home_b.socket(), RelayMode::SelfIsClaude).await;
    let attached = ctl
        .client
        .request(Request::Attach(claudemesh_protocol::ipc::AttachArgs {
            mesh: None,
            display_name: Some("ctl".into()),
            cwd: "/tmp".into(),
            claude_pid: ctl.claude_pid,
            groups: vec![],
            transient: true,
            transcript_path: None,
        }))
        .await;
    match attached {
        Ok(Response::Attached(info)) => assert_eq!(info.pending, 0),
        other => panic!("attach answered {other:?}"),
    }
    assert!(ctl.client.fetch(true).await.is_empty());
    ctl.client.request(Request::Detach).await.expect("detach");

    let mut b = db.client().await;
    let info = b.attach(me, "bob", None).await;
    assert_eq!(info.pending, 1);
    let texts: Vec<String> = b.fetch(true).await.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["for whoever comes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_inbox_is_handed_over_in_answers_the_client_can_read() {
    let home = Home::new();
    let daemon = Daemon::start_ready(&home, &[]).await;
    let mut a = Relay::spawn(&home.socket(), RelayMode::SelfIsClaude).await;
    let mut b = Relay::spawn(&home.socket(), RelayMode::SelfIsClaude).await;
    a.client.attach(a.claude_pid, "writer", None).await;
    b.client.attach(b.claude_pid, "reader", None).await;
    b.client
        .request(Request::SetStatus {
            status: PeerStatus::Working,
        })
        .await
        .expect("working");
    // 80 messages of 60 KB: 4.8 MB, more than one socket line may carry.
    const COUNT: usize = 80;
    for i in 0..COUNT {
        let text = format!("{i:02}:{}", "x".repeat(60 * 1024));
        a.client
            .request(send("reader", &text, Priority::Low))
            .await
            .expect("send");
    }
    eventually(Duration::from_secs(30), async || {
        match b.client.request(Request::Pending).await {
            Ok(Response::Pending { count }) if count as usize == COUNT => Some(()),
            _ => None,
        }
    })
    .await
    .expect("all stored");

    let first = b.client.fetch(true).await;
    assert!(
        !first.is_empty() && first.len() < COUNT,
        "one answer carried {} of {COUNT} messages",
        first.len()
    );
    // Only what was handed over is marked seen: the rest are still pending.
    match b.client.request(Request::Pending).await {
        Ok(Response::Pending { count }) => assert_eq!(count as usize, COUNT - first.len()),
        other => panic!("pending answered {other:?}"),
    }
    let mut all: Vec<String> = first.into_iter().map(|m| m.text[..2].to_owned()).collect();
    while all.len() < COUNT {
        let more = b.client.fetch(true).await;
        assert!(!more.is_empty(), "pending messages were not handed over");
        all.extend(more.into_iter().map(|m| m.text[..2].to_owned()));
    }
    let expected: Vec<String> = (0..COUNT).map(|i| format!("{i:02}")).collect();
    assert_eq!(all, expected, "each message once, oldest first");
    drop(daemon);
}

/// A send to an enrolled member with no session anywhere: the daemon's peer
/// list cannot name it, so the first transmission has no envelope for it;
/// the broker's `missing_envelope` names the member in `members`, and the
/// daemon seals for it and sends again, so the message is queued for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_named_by_missing_envelope_is_sealed_for_and_the_message_queued() {
    let broker = TestBroker::start().await;
    let (home_a, home_c) = (Home::new(), Home::new());
    broker.enroll(&home_a, "team", "alice-member");
    // Carol never runs a daemon: the broker knows her only as a member.
    let carol = broker.enroll(&home_c, "team", "carol-member");
    let da = Daemon::start_ready(&home_a, &["--no-local"]).await;
    let mut a = da.client().await;
    a.attach(std::process::id(), "alice", None).await;

    let sent = match a
        .request(send("carol-member", "for later", Priority::Next))
        .await
    {
        Ok(Response::Sent(s)) => s,
        other => panic!("send answered {other:?}; log:\n{}", da.log()),
    };
    let queued = eventually(WAIT, async || {
        match a
            .request(Request::MessageStatus {
                message_id: sent.message_id.clone(),
            })
            .await
        {
            Ok(Response::MessageStatus { recipients, .. }) => recipients
                .iter()
                .any(|r| r.member == carol.pubkey && r.state == DeliveryState::Queued)
                .then_some(()),
            other => panic!("message_status answered {other:?}"),
        }
    })
    .await;
    assert!(
        queued.is_some(),
        "never queued for carol; log:\n{}",
        da.log()
    );
    assert!(
        da.log().contains("missing_envelope"),
        "the first transmission was expected to lack carol's envelope; log:\n{}",
        da.log()
    );
}
