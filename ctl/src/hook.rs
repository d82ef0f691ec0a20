//! `hook`: run by Claude Code's `UserPromptSubmit` and `PostToolUse`
//! hooks. It asks the daemon for the messages of the session whose Claude
//! Code process is an ancestor of this process (marked seen by the daemon)
//! and prints them as additional context:
//!
//! ```json
//! {"hookSpecificOutput":{"hookEventName":"PostToolUse","additionalContext":"…"}}
//! ```
//!
//! A hook must never break Claude Code: whatever happens, it exits 0 and
//! prints nothing on stdout unless there is something to show; problems
//! go to stderr; the whole exchange with the daemon has a ~1 s budget.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use claudemesh_protocol::ipc::{InboxMessage, Request, Response};
use serde_json::{Value, json};

use crate::daemon;

/// The whole budget for talking to the daemon.
const BUDGET: Duration = Duration::from_millis(1000);
/// Hook input is small; more than this is not read.
const MAX_INPUT: u64 = 1024 * 1024;

/// Reads the event name from the hook's JSON on stdin (default
/// `UserPromptSubmit`). Never blocks on a terminal.
fn event_name() -> String {
    let default = "UserPromptSubmit".to_owned();
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return default;
    }
    // Claude Code writes the JSON and closes stdin; read it on a thread so a
    // caller that keeps stdin open cannot hold the hook up.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = std::io::stdin().take(MAX_INPUT).read_to_string(&mut buf);
        let _ = tx.send(buf);
    });
    let Ok(text) = rx.recv_timeout(Duration::from_millis(300)) else {
        return default;
    };
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("hook_event_name")?.as_str().map(str::to_owned))
        .filter(|e| !e.is_empty())
        .unwrap_or(default)
}

/// The messages, as the model will read them.
pub fn format_messages(messages: &[InboxMessage]) -> String {
    let mut out = format!(
        "claudemesh: {} new message{} from your mesh peers (answer with the claudemesh `send` tool \
         if a reply is needed):\n",
        messages.len(),
        if messages.len() == 1 { "" } else { "s" }
    );
    for m in messages {
        out.push_str(&format!(
            "\n--- from {} (mesh {}, to {}, priority {}, sent {}) ---\n{}\n",
            m.from.display_name,
            m.mesh_slug,
            m.to,
            m.priority.as_str(),
            crate::output::format_millis(m.sent_at),
            m.text.trim_end()
        ));
    }
    out
}

/// Runs the hook. Always succeeds.
pub fn run() {
    let event = event_name();
    let result = daemon::block_on(async {
        tokio::time::timeout(BUDGET, async {
            let paths = claudemesh_daemon::paths::Paths::from_env().map_err(|e| e.to_string())?;
            let Some(client) = daemon::connect(&paths, BUDGET)
                .await
                .map_err(|e| e.message)?
            else {
                return Ok(Vec::new());
            };
            match daemon::request(&client, Request::HookContext).await {
                Ok(Response::HookContext { messages, .. }) => Ok(messages),
                Ok(_) => Err("unexpected answer to hook_context".to_owned()),
                // Not a Claude Code session the daemon knows: nothing to show.
                Err(e) if e.message.contains("not_a_claude_process") => Ok(Vec::new()),
                Err(e) => Err(e.message),
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("the daemon did not answer within {BUDGET:?}")))
    });
    match result {
        Ok(messages) if messages.is_empty() => {}
        Ok(messages) => {
            let out = json!({
                "hookSpecificOutput": {
                    "hookEventName": event,
                    "additionalContext": format_messages(&messages),
                }
            });
            println!("{out}");
        }
        Err(e) => eprintln!("claudemesh hook: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use claudemesh_protocol::wire::{MessageSender, Priority};

    #[test]
    fn messages_read_well() {
        let m = InboxMessage {
            message_id: "m1".into(),
            mesh_slug: "team".into(),
            from: MessageSender {
                member: "ab".repeat(32),
                session_id: "s1".into(),
                display_name: "api@laptop".into(),
            },
            to: "web@desk".into(),
            priority: Priority::Now,
            text: "schema changed\n".into(),
            sent_at: 0,
            received_at: 0,
        };
        let s = format_messages(&[m]);
        assert!(s.starts_with("claudemesh: 1 new message from"), "{s}");
        assert!(s.contains("--- from api@laptop (mesh team, to web@desk, priority now, sent 1970-01-01 00:00:00 UTC) ---\nschema changed\n"), "{s}");
    }
}
