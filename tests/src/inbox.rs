//! Receiving as a model does: a message reaches a session either as a
//! `notifications/claude/channel` push or through `check_messages`, and
//! must never be shown twice. The client writes every push it gets to its
//! transcript, as Claude Code does (`StdioRpc::transcript`), so the daemon
//! can tell it was shown.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mcp::McpClient;

pub const CHANNEL: &str = "notifications/claude/channel";

/// How a message reached the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Channel,
    CheckMessages,
}

/// Waits until `text` reaches `client` by either path; returns the path and
/// the sender's display name.
pub fn receive(client: &mut McpClient, text: &str, limit: Duration) -> (Path, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(i) = client
            .notifications
            .iter()
            .position(|n| n["method"] == CHANNEL && n["params"]["content"].as_str() == Some(text))
        {
            let n = client.notifications.remove(i);
            let from = n["params"]["meta"]["from"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            return (Path::Channel, from);
        }
        let (_, data) = client.tool_ok("check_messages", json!({}));
        let messages = data["structuredContent"]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(m) = messages.iter().find(|m| m["text"] == text) {
            return (
                Path::CheckMessages,
                m["from"].as_str().unwrap_or("").to_owned(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} never received {text:?} (notifications: {:?})",
            client.name,
            client.notifications
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asserts `text` is not shown to `client` again by any path.
pub fn assert_not_shown_again(client: &mut McpClient, text: &str) {
    let (_, data) = client.tool_ok("check_messages", json!({}));
    let messages = data["structuredContent"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !messages.iter().any(|m| m["text"] == text),
        "{} was shown {text:?} a second time by check_messages",
        client.name
    );
    let pushed_again = client
        .notifications
        .iter()
        .any(|n: &Value| n["method"] == CHANNEL && n["params"]["content"].as_str() == Some(text));
    assert!(
        !pushed_again,
        "{} was pushed {text:?} a second time",
        client.name
    );
}
