//! `hook`: run by Claude Code's hooks. `Stop` waits for the messages that
//! wake the idle session (`crate::wake`), `SessionStart` tells a new
//! session where it is (`crate::session_start`); `UserPromptSubmit` and
//! `PostToolUse` show the pending messages, as follows. It asks the
//! daemon for the messages of the session whose Claude Code process is an
//! ancestor of this process (marked seen by the daemon) and prints them as
//! additional context:
//!
//! ```json
//! {"hookSpecificOutput":{"hookEventName":"PostToolUse","additionalContext":"…"}}
//! ```
//!
//! It passes the session transcript (`transcript_path` in its stdin JSON)
//! along: the daemon first confirms the claudemesh messages shown there as
//! `<channel>` messages (a channel push counts as seen only then), then
//! hands out the rest (`docs/shim.md`).
//!
//! A hook must never break Claude Code: whatever happens, it exits 0 (a
//! `Stop` hook 2 when it wakes the session) and
//! prints nothing on stdout unless there is something to show; problems
//! go to stderr; the whole exchange with the daemon has a ~1 s budget.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use claudemesh_daemon::client::DaemonClient;
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::ipc::{HookContextArgs, InboxMessage, IpcErrorCode, Request, Response};
use serde_json::{Value, json};

use crate::daemon;

/// The whole budget for talking to the daemon.
pub(crate) const BUDGET: Duration = Duration::from_millis(1000);
/// Hook input is small; more than this is not read.
const MAX_INPUT: u64 = 1024 * 1024;

/// What the hook learns from Claude Code's JSON on stdin.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct HookInput {
    pub event: String,
    pub transcript_path: Option<PathBuf>,
}

impl HookInput {
    /// The transcript path for the daemon: Claude Code gives an absolute
    /// path; anything else is left out rather than refused with the
    /// messages.
    pub(crate) fn transcript_for_daemon(&self) -> Option<String> {
        self.transcript_path
            .as_deref()
            .filter(|p| p.is_absolute())
            .and_then(|p| p.to_str())
            .map(str::to_owned)
    }

    fn parse(text: &str) -> HookInput {
        let value = serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        let field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        HookInput {
            event: field("hook_event_name").unwrap_or_else(|| "UserPromptSubmit".to_owned()),
            transcript_path: field("transcript_path").map(PathBuf::from),
        }
    }
}

/// Reads the hook's JSON on stdin. Never blocks on a terminal.
fn read_input() -> HookInput {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return HookInput::parse("");
    }
    // Claude Code writes the JSON and closes stdin; read it on a thread so a
    // caller that keeps stdin open cannot hold the hook up.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = std::io::stdin().take(MAX_INPUT).read_to_string(&mut buf);
        let _ = tx.send(buf);
    });
    HookInput::parse(
        &rx.recv_timeout(Duration::from_millis(300))
            .unwrap_or_default(),
    )
}

/// The messages, as the model will read them.
pub fn format_messages(messages: &[InboxMessage]) -> String {
    let mut out = format!(
        "claudemesh: {} new message{} from your mesh peers (reply with the claudemesh send_message tool \
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

/// Runs the hook for the event named in its input; the exit code Claude
/// Code gets: 0, or 2 when a `Stop` hook wakes the session with messages
/// on stderr (`crate::wake`).
///
/// The daemon reads the transcript first (named with each request): the
/// messages Claude Code already showed as channel messages (or wakes) are
/// confirmed (marked seen), so they are neither shown again nor left to
/// look unread. Then the unread ones are fetched and shown.
pub fn run(wake: Option<crate::wake::WakeSetting>) -> u8 {
    let input = read_input();
    match input.event.as_str() {
        "Stop" => crate::wake::run_stop(&input, wake),
        "SessionStart" => {
            crate::session_start::run(&input);
            0
        }
        _ => {
            show_pending(&input);
            0
        }
    }
}

/// A connection to the daemon, within [`BUDGET`]; `None` when it is not
/// running (a hook then has nothing to do).
pub(crate) async fn connect() -> Result<Option<DaemonClient>, String> {
    let paths = Paths::from_env().map_err(|e| e.to_string())?;
    daemon::connect(&paths, BUDGET).await.map_err(|e| e.message)
}

/// `UserPromptSubmit` and `PostToolUse`: the unread messages (after the
/// daemon confirmed what the transcript shows) as additional context.
fn show_pending(input: &HookInput) {
    let result = daemon::block_on(async {
        tokio::time::timeout(BUDGET, async {
            let Some(client) = connect().await? else {
                return Ok(Vec::new());
            };
            let args = HookContextArgs {
                transcript_path: input.transcript_for_daemon(),
            };
            match daemon::request(&client, Request::HookContext(args)).await {
                Ok(Response::HookContext { messages, .. }) => Ok(messages),
                Ok(_) => Err("unexpected answer to hook_context".to_owned()),
                // Not a Claude Code session the daemon knows: nothing to show.
                Err(e) if e.daemon_code == Some(IpcErrorCode::NotAClaudeProcess) => Ok(Vec::new()),
                Err(e) => Err(e.message),
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("the daemon did not answer within {BUDGET:?}")))
    });
    match result {
        Ok(messages) if messages.is_empty() => {}
        Ok(messages) => print_context(&input.event, &format_messages(&messages)),
        Err(e) => eprintln!("claudemesh hook: {e}"),
    }
}

/// Prints `text` as the hook's additional context for the model.
pub(crate) fn print_context(event: &str, text: &str) {
    let out = json!({
        "hookSpecificOutput": {
            "hookEventName": event,
            "additionalContext": text,
        }
    });
    println!("{out}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use claudemesh_protocol::wire::{MessageSender, Priority};

    #[test]
    fn input_gives_event_and_transcript() {
        let i = HookInput::parse(
            r#"{"hook_event_name":"PostToolUse","session_id":"s-1","transcript_path":"/t/s-1.jsonl"}"#,
        );
        assert_eq!(i.event, "PostToolUse");
        assert_eq!(i.transcript_path, Some(PathBuf::from("/t/s-1.jsonl")));
        assert_eq!(HookInput::parse("garbage").event, "UserPromptSubmit");
        assert_eq!(HookInput::parse("").transcript_path, None);
    }

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
