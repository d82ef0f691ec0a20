//! Every tool, between two sessions on the daemon's local mesh.
//!
//! Needs the real daemon (`claudemeshd run`, built by the harness): the
//! shims start it themselves, in a private home, with no configuration.

mod common;

use std::time::Duration;

use common::{Home, Shim};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn every_tool_works_between_two_sessions() {
    let home = Home::new();
    let mut alice = Shim::start(&home, "alice", &[]);
    let mut bob = Shim::start(&home, "bob", &[]);

    // set_summary and set_status.
    let (text, _) = alice.ok("set_summary", json!({"summary": "writing the API"}));
    assert!(text.contains("Summary set: \"writing the API\""), "{text}");
    // Working: a `next` message waits instead of being pushed.
    let (text, data) = alice.ok("set_status", json!({"status": "working"}));
    assert!(text.contains("Status set to working"), "{text}");
    assert_eq!(data["status"], "working");

    // list_peers: names, status, summary, cwd, host, and who is "you".
    let (text, data) = bob.ok_until("list_peers", json!({}), WAIT, |_, d| {
        d["peers"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p["name"] == "alice"
                    && p["summary"] == "writing the API"
                    && p["status"] == "working"
            })
        })
    });
    assert!(
        text.contains("- alice — working — \"writing the API\""),
        "{text}"
    );
    assert!(text.contains("- bob (you)"), "{text}");
    let me = data["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["self"] == true)
        .unwrap();
    assert_eq!(me["name"], "bob");
    assert!(!me["cwd"].as_str().unwrap().is_empty(), "{me}");
    assert!(me["host"].is_string(), "{me}");

    // send_message: a message id and a per-recipient state.
    let (text, data) = bob.ok(
        "send_message",
        json!({"to": "alice", "text": "can you expose /v1/users?", "priority": "next"}),
    );
    let id = data["messageId"].as_str().expect("a message id").to_owned();
    assert!(text.contains(&id), "{text}");
    let state = data["recipients"][0]["state"].as_str().unwrap_or("queued");
    assert!(["delivered", "queued"].contains(&state), "{data}");

    // The pending note on any tool result while the message waits.
    let (text, data) = alice.ok_until("list_peers", json!({}), WAIT, |_, d| d["unread"] == 1);
    assert!(
        text.contains("📬 1 unread mesh message — call check_messages"),
        "{text}"
    );
    assert_eq!(data["unread"], 1);

    // check_messages shows it once and marks it seen.
    let (text, data) = alice.ok("check_messages", json!({}));
    assert!(text.contains("can you expose /v1/users?"), "{text}");
    assert!(text.contains("from bob"), "{text}");
    assert_eq!(data["messages"][0]["text"], "can you expose /v1/users?");
    assert_eq!(data["messages"][0]["from"], "bob");
    let (text, _) = alice.ok("check_messages", json!({}));
    assert!(text.contains("No new messages"), "{text}");
    assert!(!text.contains("📬"), "{text}");

    // message_status: seen, per recipient.
    let (text, data) = bob.ok_until("message_status", json!({"message_id": id}), WAIT, |_, d| {
        d["recipients"][0]["state"] == "seen"
    });
    assert!(text.contains("(alice: seen)"), "{text}");
    assert_eq!(data["messageId"], id.as_str());

    // A reply, to @all-style and unknown targets.
    let (_, data) = alice.ok("send_message", json!({"to": "*", "text": "done"}));
    assert!(data["messageId"].is_string());
    let (is_error, text, result) = alice.call("send_message", json!({"to": "carol", "text": "hi"}));
    assert!(is_error, "{result}");
    assert!(text.contains("list_peers"), "points to the names: {text}");
    assert_eq!(result["structuredContent"]["error"], "refused");

    // Bad arguments get a sentence saying what to pass.
    let (is_error, text, _) = alice.call("send_message", json!({"text": "hi"}));
    assert!(is_error);
    assert!(text.contains("`to` is required"), "{text}");
    let (is_error, text, _) = alice.call(
        "send_message",
        json!({"to": "bob", "text": "x", "priority": "asap"}),
    );
    assert!(is_error);
    assert!(text.contains("now, next or low"), "{text}");
    let (is_error, text, _) = alice.call("set_status", json!({"status": "busy"}));
    assert!(is_error);
    assert!(text.contains("idle, working or dnd"), "{text}");
}

#[test]
fn shims_starting_together_share_one_daemon() {
    let home = Home::new();
    let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let shims: Vec<Shim> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let home = &home;
                scope.spawn(move || {
                    let mut shim = Shim::start(home, name, &[]);
                    shim.ok("set_summary", json!({"summary": format!("I am {name}")}));
                    shim
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The other nine stay alive until the end: a dropped shim's session
    // ends as soon as the daemon hears its Claude Code exit.
    let mut shims = shims;
    let first = &mut shims[0];
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (text, d) = first.ok("list_peers", json!({}));
        if d["peers"].as_array().is_some_and(|p| p.len() == 10) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "s0 never listed the 10 sessions; last answer: {text}\ndaemon log:\n{}",
            home.daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Losers of the start race exit; give them a moment.
    std::thread::sleep(Duration::from_millis(500));
    let daemons = home.daemon_processes();
    assert_eq!(
        daemons.len(),
        1,
        "exactly one daemon: {daemons:?}\n{}",
        home.daemon_log()
    );
}

#[test]
fn a_message_over_the_limit_is_refused_in_the_daemons_words() {
    use claudemesh_protocol::limits::{MAX_TEXT_BYTES, MessageError};
    let home = Home::new();
    let mut alice = Shim::start(&home, "alice", &[]);
    let text = "x".repeat(MAX_TEXT_BYTES + 1);
    let (is_error, said, result) = alice.call("send_message", json!({"to": "alice", "text": text}));
    assert!(is_error, "{said}");
    let words = MessageError::TooLarge {
        bytes: MAX_TEXT_BYTES + 1,
    }
    .to_string();
    assert!(said.contains(&words), "{said}");
    assert_eq!(result["structuredContent"]["error"], "refused");
    assert_eq!(result["structuredContent"]["code"], "too_large");
    // The limit itself is taken.
    let (_, data) = alice.ok(
        "send_message",
        json!({"to": " alice ", "text": "x".repeat(MAX_TEXT_BYTES)}),
    );
    assert!(data["messageId"].is_string(), "{data}");
}
