//! Inbound messages reach the model, and no path shows one twice.
//!
//! Needs the real daemon (`claudemeshd run`, built by the harness).

mod common;

use std::time::Duration;

use common::{Home, Shim};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
const CHANNEL: &str = "notifications/claude/channel";

#[test]
fn a_message_is_pushed_as_a_channel_notification_once() {
    let home = Home::new();
    // Claude Code shows a server's channel notifications only when started
    // with a channels flag; the shim pushes when its parent has one.
    let mut alice = Shim::start_under(
        &home,
        "alice",
        &[
            "--dangerously-load-development-channels",
            "server:claudemesh",
        ],
    );
    let mut bob = Shim::start(&home, "bob", &[]);
    bob.ok_until("list_peers", json!({}), WAIT, |t, _| t.contains("- alice"));

    let (_, data) = bob.ok(
        "send_message",
        json!({"to": "alice", "text": "the schema changed", "priority": "now"}),
    );
    let id = data["messageId"].as_str().unwrap().to_owned();

    // The recipient sees the broker's message id, not the sender's outbox
    // id: match the push by its text.
    let note = alice.wait_notification(CHANNEL, WAIT, |p| p["content"] == "the schema changed");
    let params = &note["params"];
    assert_eq!(params["content"], "the schema changed");
    let meta = params["meta"].as_object().unwrap();
    assert!(
        meta.values().all(Value::is_string),
        "every meta value is a string: {meta:?}"
    );
    assert_eq!(meta["from"], "bob");
    assert_eq!(meta["priority"], "now");

    // Shown by the push: marked seen, so no other path shows it again.
    let (_, data) = bob.ok_until("message_status", json!({"message_id": id}), WAIT, |_, d| {
        d["recipients"][0]["state"] == "seen"
    });
    assert_eq!(data["recipients"][0]["name"], "alice");
    let (text, _) = alice.ok("check_messages", json!({}));
    assert!(text.contains("No new messages"), "{text}");
    assert!(!text.contains("📬"), "{text}");
    alice.drain_for(Duration::from_millis(300));
    let pushed_id = meta["message_id"].clone();
    let pushes = alice
        .notifications
        .iter()
        .filter(|n| n["method"] == CHANNEL && n["params"]["meta"]["message_id"] == pushed_id)
        .count();
    assert_eq!(pushes, 0, "pushed once only");
}

#[test]
fn without_channels_a_message_waits_for_check_messages() {
    let home = Home::new();
    // A Claude Code without the channels flag drops channel notifications:
    // the shim must not push (and mark seen) there.
    let mut carol = Shim::start(&home, "carol", &[]);
    let mut dave = Shim::start(&home, "dave", &[]);
    dave.ok_until("list_peers", json!({}), WAIT, |t, _| t.contains("- carol"));
    let (_, data) = dave.ok(
        "send_message",
        json!({"to": "carol", "text": "ping", "priority": "now"}),
    );
    let id = data["messageId"].as_str().unwrap().to_owned();

    let (text, _) = carol.ok_until("set_summary", json!({"summary": "x"}), WAIT, |_, d| {
        d["unread"] == 1
    });
    assert!(text.contains("📬 1 unread mesh message"), "{text}");
    assert!(
        !carol.notifications.iter().any(|n| n["method"] == CHANNEL),
        "{:?}",
        carol.notifications
    );
    let (text, data) = carol.ok("check_messages", json!({}));
    assert!(text.contains("ping"), "{text}");
    assert_eq!(data["messages"][0]["text"], "ping");
    assert_eq!(data["messages"][0]["from"], "dave");
    let (_, data) = dave.ok_until("message_status", json!({"message_id": id}), WAIT, |_, d| {
        d["recipients"][0]["state"] == "seen"
    });
    assert_eq!(data["recipients"][0]["name"], "carol");
}
