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

use claudemesh_protocol::ipc::{HookContextArgs, InboxMessage, IpcErrorCode, Request, Response};

use crate::daemon;
use crate::hook_io::{BUDGET, HookInput, connect, print_context, read_input};

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
