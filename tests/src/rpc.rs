//! Newline-delimited JSON-RPC over a child's stdio, as Claude Code speaks
//! MCP to a stdio server: requests matched to their answers by id,
//! notifications kept for the test. Shared by the shim's own tests and the
//! end-to-end suite; process handling (how the server is started, and how
//! it is stopped) stays with each of them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a request waits for its answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

pub struct StdioRpc {
    /// Who this is, in failure messages.
    pub name: String,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    next_id: u64,
    /// Notifications received so far and not yet taken.
    pub notifications: Vec<Value>,
    /// Where this client, standing in for Claude Code, writes each channel
    /// notification as it reads it, as Claude Code records one in the
    /// session transcript (the daemon reads it to tell a push was shown).
    pub transcript: Option<PathBuf>,
}

/// A tool call's outcome: whether it is an error, all its text content,
/// and the whole `result`.
pub struct ToolResult {
    pub is_error: bool,
    pub text: String,
    pub result: Value,
}

impl StdioRpc {
    /// Talks to a server over its stdin and stdout. A line that is not
    /// JSON fails the test: a stdio MCP server must write nothing else.
    pub fn new(name: &str, stdin: ChildStdin, stdout: ChildStdout) -> StdioRpc {
        let (tx, lines) = channel();
        let reader_name = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("{reader_name} wrote a non-JSON line to stdout ({e}): {line}")
                });
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        StdioRpc {
            name: name.to_owned(),
            stdin: Some(stdin),
            lines,
            next_id: 1,
            notifications: Vec::new(),
            transcript: None,
        }
    }

    /// The next line from the server; a channel notification is written
    /// to the transcript on the way.
    fn recv(&mut self, limit: Duration) -> Result<Value, RecvTimeoutError> {
        let msg = self.lines.recv_timeout(limit)?;
        if let Some(path) = &self.transcript
            && msg["method"] == "notifications/claude/channel"
        {
            record_channel_message(path, &msg["params"]);
        }
        Ok(msg)
    }

    /// Closes the server's stdin: end of input, as when Claude Code exits.
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// `initialize` then `notifications/initialized`; returns the
    /// `initialize` response.
    pub fn initialize(&mut self, client_name: &str) -> Value {
        let init = self.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": client_name, "version": "0"}
            }),
        );
        self.notify("notifications/initialized", json!({}));
        init
    }

    fn write(&mut self, msg: &Value) {
        let mut line = msg.to_string();
        line.push('\n');
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{}: stdin is closed", self.name));
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.flush())
            .expect("the server reads its stdin");
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns the whole response (result or error).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + ANSWER_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(msg) if msg.get("id") == Some(&json!(id)) => return msg,
                Ok(msg) if msg.get("method").is_some() && msg.get("id").is_none() => {
                    self.notifications.push(msg)
                }
                Ok(other) => panic!("{}: unexpected message: {other}", self.name),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: {method} got no answer in {ANSWER_LIMIT:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{}: the server closed stdout", self.name)
                }
            }
        }
    }

    /// Calls a tool.
    pub fn tool(&mut self, tool: &str, arguments: Value) -> ToolResult {
        let response = self.request("tools/call", json!({"name": tool, "arguments": arguments}));
        let result = response
            .get("result")
            .unwrap_or_else(|| panic!("{}: tools/call {tool} failed: {response}", self.name))
            .clone();
        let is_error = result["isError"].as_bool().unwrap_or(false);
        let text = result["content"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| c["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        ToolResult {
            is_error,
            text,
            result,
        }
    }

    /// Waits for a notification `method` whose params satisfy `pred`.
    pub fn wait_notification(
        &mut self,
        method: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let matches = |n: &Value| n["method"].as_str() == Some(method) && pred(&n["params"]);
        if let Some(i) = self.notifications.iter().position(matches) {
            return self.notifications.remove(i);
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(msg) if matches(&msg) => return msg,
                Ok(msg) => self.notifications.push(msg),
                Err(_) => panic!(
                    "{}: no {method} notification within {limit:?}; got {:?}",
                    self.name, self.notifications
                ),
            }
        }
    }

    /// Collects whatever arrives for `d` into `notifications`.
    pub fn drain_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(msg) = self.recv(deadline.saturating_duration_since(Instant::now())) {
            self.notifications.push(msg);
        }
    }
}

/// Appends a channel notification to a transcript as Claude Code records
/// it: `<channel source="claudemesh" …meta…>content</channel>` in a JSON
/// line.
fn record_channel_message(path: &Path, params: &Value) {
    let mut tag = String::from("<channel source=\"claudemesh\"");
    for (k, v) in params["meta"].as_object().into_iter().flatten() {
        tag.push_str(&format!(" {k}=\"{}\"", v.as_str().unwrap_or_default()));
    }
    tag.push_str(&format!(
        ">{}</channel>",
        params["content"].as_str().unwrap_or_default()
    ));
    let line = json!({"type": "user", "message": {"role": "user", "content": tag}});
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("the transcript folder");
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the transcript");
    writeln!(file, "{line}").expect("the transcript is written");
}
