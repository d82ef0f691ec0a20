//! `hook`: run by Claude Code's hooks. `Stop` waits for the messages that
//! wake the idle session (`crate::wake`), `SessionStart` tells a new
//! session where it is (`crate::session_start`); `UserPromptSubmit` and
//! `PostToolUse` show the pending messages, as follows. It asks the daemon for the messages of the session whose Claude
//! Code process is an ancestor of this process (marked seen by the daemon)
//! and prints them as additional context:
//!
//! ```json
//! {"hookSpecificOutput":{"hookEventName":"PostToolUse","additionalContext":"…"}}
//! ```
//!
//! Before that it reads the part of the session transcript written since
//! its last run (`transcript_path` in its stdin JSON) and confirms the
//! claudemesh messages shown there as `<channel>` messages (`hook_confirm`):
//! a channel push counts as seen only then (`docs/shim.md`).
//!
//! A hook must never break Claude Code: whatever happens, it exits 0 and
//! prints nothing on stdout unless there is something to show; problems
//! go to stderr; the whole exchange with the daemon has a ~1 s budget.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use claudemesh_daemon::client::DaemonClient;
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::ipc::{InboxMessage, IpcErrorCode, Request, Response};
use serde_json::{Value, json};

use crate::{daemon, transcript};

/// The whole budget for talking to the daemon.
pub(crate) const BUDGET: Duration = Duration::from_millis(1000);
/// Hook input is small; more than this is not read.
const MAX_INPUT: u64 = 1024 * 1024;

/// What the hook learns from Claude Code's JSON on stdin.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct HookInput {
    pub event: String,
    pub session_id: Option<String>,
    pub transcript_path: Option<PathBuf>,
}

impl HookInput {
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
            session_id: field("session_id"),
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

/// The transcript's new channel message ids, and where to keep the read
/// position once the daemon has them.
fn transcript_ids(paths: &Paths, input: &HookInput) -> Option<(BTreeSet<String>, PathBuf, u64)> {
    let transcript = input.transcript_path.as_deref()?;
    let keep = transcript::offset_file(&paths.runtime_dir, input.session_id.as_deref()?)?;
    match transcript::read_new(transcript, &keep) {
        Ok((ids, offset)) => Some((ids, keep, offset)),
        // Claude Code writes the transcript after the first prompt's hook.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            eprintln!(
                "claudemesh hook: cannot read the transcript {}: {e}",
                transcript.display()
            );
            None
        }
    }
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

/// The daemon's paths and a connection to it, within [`BUDGET`]; `None`
/// when it is not running (a hook then has nothing to do).
pub(crate) async fn connect() -> Result<Option<(Paths, DaemonClient)>, String> {
    let paths = Paths::from_env().map_err(|e| e.to_string())?;
    let client = daemon::connect(&paths, BUDGET)
        .await
        .map_err(|e| e.message)?;
    Ok(client.map(|c| (paths, c)))
}

/// Confirms the channel messages (and wakes) the transcript showed since
/// the last run: they are seen, neither shown again nor left to look
/// unread. `Err` only when the daemon failed.
pub(crate) async fn confirm_transcript(
    client: &DaemonClient,
    paths: &Paths,
    input: &HookInput,
) -> Result<(), String> {
    let Some((ids, keep, offset)) = transcript_ids(paths, input) else {
        return Ok(());
    };
    let confirmed = ids.is_empty()
        || match daemon::request(
            client,
            Request::HookConfirm {
                message_ids: ids.into_iter().collect(),
            },
        )
        .await
        {
            Ok(_) => true,
            Err(e) if e.daemon_code == Some(IpcErrorCode::NotAClaudeProcess) => true,
            Err(e) => return Err(e.message),
        };
    // Read again next time unless the daemon has them.
    if confirmed && let Err(e) = transcript::keep_offset(&keep, offset) {
        eprintln!("claudemesh hook: cannot keep {}: {e}", keep.display());
    }
    Ok(())
}

/// `UserPromptSubmit` and `PostToolUse`: first the transcript, then the
/// unread messages are fetched and shown as additional context.
fn show_pending(input: &HookInput) {
    let result = daemon::block_on(async {
        tokio::time::timeout(BUDGET, async {
            let Some((paths, client)) = connect().await? else {
                return Ok(Vec::new());
            };
            confirm_transcript(&client, &paths, input).await?;
            match daemon::request(&client, Request::HookContext).await {
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
    fn input_gives_event_session_and_transcript() {
        let i = HookInput::parse(
            r#"{"hook_event_name":"PostToolUse","session_id":"s-1","transcript_path":"/t/s-1.jsonl"}"#,
        );
        assert_eq!(i.event, "PostToolUse");
        assert_eq!(i.session_id.as_deref(), Some("s-1"));
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
