//! What every Claude Code hook run shares: its input (the JSON on stdin),
//! the budget and connection for the daemon, and its output as context
//! for the model. `hook` (the dispatcher and the prompt/tool hooks),
//! `wake` (`Stop`) and `session_start` (`SessionStart`) all use it.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::Duration;

use claudemesh_daemon::client::DaemonClient;
use claudemesh_daemon::paths::Paths;
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
pub(crate) fn read_input() -> HookInput {
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

/// A connection to the daemon, within [`BUDGET`]; `None` when it is not
/// running (a hook then has nothing to do).
pub(crate) async fn connect() -> Result<Option<DaemonClient>, String> {
    let paths = Paths::from_env().map_err(|e| e.to_string())?;
    daemon::connect(&paths, BUDGET).await.map_err(|e| e.message)
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
}
