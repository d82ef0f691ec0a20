//! Inbound messages reach the model, and no path shows one twice.
//!
//! Needs the real daemon (`claudemeshd run`, built by the harness).

mod common;

use std::time::Duration;

use common::{Home, Shim};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);
const CHANNEL: &str = "notifications/claude/channel";

const CHANNELS_FLAG: [&str; 2] = [
    "--dangerously-load-development-channels",
    "server:claudemesh",
];

/// Claude Code dropped the push (channels unavailable: an API key, an
/// organisation not opted in, offline) and no transcript holds it:
/// `check_messages` shows it at once, well within the push window (the
/// default 20 s here), and once.
#[test]
fn a_pushed_message_is_not_seen_until_shown_and_check_messages_shows_it_at_once() {
    let home = Home::new();
    // Claude Code shows a server's channel notifications only when started
    // with a channels flag; the shim pushes when its parent has one.
    let mut alice = Shim::start_under(&home, "alice", &CHANNELS_FLAG);
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

    // Pushed is not seen: nothing confirmed that the model was shown it
    // (here no transcript ever will), so the sender does not hear `seen`.
    let (_, data) = bob.ok("message_status", json!({"message_id": id}));
    assert_ne!(data["recipients"][0]["state"], "seen", "{data}");

    // The model asks: it gets the message at once, pushed or not.
    let (text, data) = alice.ok("check_messages", json!({}));
    assert!(text.contains("the schema changed"), "{text}");
    assert_eq!(data["messages"].as_array().unwrap().len(), 1);
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

/// The shim finds its session's transcript from the environment Claude
/// Code gives its MCP servers (`CLAUDE_CODE_SESSION_ID`,
/// `CLAUDE_PROJECT_DIR`, `CLAUDE_CONFIG_DIR`). A push the transcript shows
/// (the test writes the line Claude Code would) is confirmed:
/// `check_messages` does not show it again and the sender hears `seen`.
#[test]
fn a_push_the_transcript_shows_is_confirmed_and_not_shown_again() {
    let home = Home::new();
    let config = home.path().join("claude-config");
    let folder = config.join("projects").join("-tmp-proj-x");
    std::fs::create_dir_all(&folder).unwrap();
    let transcript = folder.join("sess-123.jsonl");
    let config_dir = config.display().to_string();
    let env = [
        ("CLAUDE_CODE_SESSION_ID", "sess-123"),
        ("CLAUDE_PROJECT_DIR", "/tmp/proj.x"),
        ("CLAUDE_CONFIG_DIR", config_dir.as_str()),
    ];
    let mut alice = Shim::start_with(&home, "alice", &env, &CHANNELS_FLAG);
    let mut bob = Shim::start(&home, "bob", &[]);
    bob.ok_until("list_peers", json!({}), WAIT, |t, _| t.contains("- alice"));
    let (_, data) = bob.ok(
        "send_message",
        json!({"to": "alice", "text": "seen as a channel message", "priority": "now"}),
    );
    let id = data["messageId"].as_str().unwrap().to_owned();
    let note = alice.wait_notification(CHANNEL, WAIT, |p| {
        p["content"] == "seen as a channel message"
    });
    let pushed_id = note["params"]["meta"]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tag = format!(
        "<channel source=\"claudemesh\" from=\"bob\" message_id=\"{pushed_id}\">seen as a channel message</channel>"
    );
    let line = json!({"type": "user", "message": {"role": "user", "content": tag}});
    std::fs::write(&transcript, format!("{line}\n")).unwrap();

    let (text, _) = alice.ok("check_messages", json!({}));
    assert!(text.contains("No new messages"), "{text}");
    let (_, data) = bob.ok_until("message_status", json!({"message_id": id}), WAIT, |_, d| {
        d["recipients"][0]["state"] == "seen"
    });
    assert_eq!(data["recipients"][0]["name"], "alice");
}

/// The `_meta` a 2026-07-28 client sends with `server/discover`.
fn discover_params() -> Value {
    json!({"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    }})
}

#[test]
fn a_session_that_wants_pushes_refuses_server_discover_and_pushes_after_initialize() {
    let home = Home::new();
    let mut erin = Shim::spawn_with_parent_args(&home, "erin", &CHANNELS_FLAG);
    // Claude Code 2.1.332 probes `server/discover` first; in that era it has
    // no channel delivery path, so the shim sends it back to `initialize`.
    let discover = erin.request("server/discover", discover_params());
    assert_eq!(
        discover["error"]["code"], -32601,
        "method not found: {discover}"
    );
    let init = erin.initialize();
    assert!(init["result"]["capabilities"]["experimental"]["claude/channel"].is_object());

    let mut fred = Shim::start(&home, "fred", &[]);
    fred.ok_until("list_peers", json!({}), WAIT, |t, _| t.contains("- erin"));
    fred.ok("send_message", json!({"to": "erin", "text": "hello erin"}));
    erin.wait_notification(CHANNEL, WAIT, |p| p["content"] == "hello erin");
}

#[test]
fn without_the_flag_the_discover_era_is_kept_and_tools_work_there() {
    let home = Home::new();
    let mut gina = Shim::spawn(&home, "gina", &[]);
    let discover = gina.request("server/discover", discover_params());
    assert!(
        discover["result"]["capabilities"]["tools"].is_object(),
        "answered: {discover}"
    );

    let mut hank = Shim::start(&home, "hank", &[]);
    hank.ok_until("list_peers", json!({}), WAIT, |t, _| t.contains("- gina"));
    hank.ok(
        "send_message",
        json!({"to": "gina", "text": "modern hello", "priority": "now"}),
    );
    // A 2026-07-28 request carries its own `_meta`; no `initialize` came.
    let mut params = discover_params();
    params["name"] = json!("check_messages");
    params["arguments"] = json!({});
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let answer = gina.request("tools/call", params.clone());
        let text = answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("a tool result: {answer}"))
            .to_owned();
        if text.contains("modern hello") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("from hank"), "{text}");
    gina.drain_for(Duration::from_millis(300));
    assert!(
        !gina.notifications.iter().any(|n| n["method"] == CHANNEL),
        "{:?}",
        gina.notifications
    );
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
