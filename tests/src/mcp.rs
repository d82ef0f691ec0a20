//! A minimal MCP client over a shim's stdio: newline-delimited JSON-RPC,
//! as Claude Code speaks it. Notifications are collected for the test.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bins;
use crate::home::Home;
use crate::process::Guarded;

pub struct McpClient {
    pub name: String,
    process: Guarded,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    next_id: u64,
    /// Notifications received so far and not yet taken.
    pub notifications: Vec<Value>,
}

impl McpClient {
    /// Starts a shim as a Claude Code session would, and initializes it.
    ///
    /// The shim runs under its own `sh`, which stays as its parent: each
    /// shim then has its own "Claude Code" process, as in real use (the
    /// daemon keys sessions by the shim's parent). Like Claude Code, the
    /// `sh` starts the shim again when it dies (see [`Self::restart_shim`]);
    /// a shim that exits cleanly, on end of input, ends it.
    pub fn start(home: &Home, display_name: &str, extra_env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("until \"$0\"; do sleep 0.2; done")
            .arg(bins::bin(bins::SHIM));
        cmd.env_remove("CLAUDEMESH_BROKER_URL");
        for (k, v) in home.env() {
            cmd.env(k, v);
        }
        cmd.env("CLAUDEMESH_DISPLAY_NAME", display_name);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.path().join(format!("shim-{display_name}.log")))
            .expect("log file");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the shim starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(e) => panic!("the shim wrote a non-JSON line to stdout ({e}): {line}"),
                }
            }
        });
        let mut client = Self {
            name: display_name.to_owned(),
            process: Guarded {
                child,
                name: format!("shim {display_name}"),
            },
            stdin: Some(stdin),
            lines,
            next_id: 1,
            notifications: Vec::new(),
        };
        client.initialize();
        client
    }

    fn initialize(&mut self) {
        let init = self.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "claudemesh-e2e", "version": "0"}
            }),
        );
        assert!(init.get("result").is_some(), "initialize failed: {init}");
        self.notify("notifications/initialized", json!({}));
    }

    /// Kills the shim (not its Claude Code); the parent starts a new one,
    /// which is initialized again: a restarted shim under the same Claude
    /// Code, which must resume the same session and inbox.
    pub fn restart_shim(&mut self) {
        kill_children(self.process.pid());
        self.initialize();
    }

    /// Kills the shim and keeps it down (its Claude Code lives on) until
    /// [`Self::resume_shim`]: the session is offline but not gone.
    pub fn suspend_shim(&mut self) {
        let _ = Command::new("kill")
            .args(["-STOP", &self.process.pid().to_string()])
            .status();
        kill_children(self.process.pid());
    }

    /// Lets the parent start the shim again, and initializes it.
    pub fn resume_shim(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.process.pid().to_string()])
            .status();
        self.initialize();
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn write(&mut self, msg: &Value) {
        let mut line = msg.to_string();
        line.push('\n');
        let stdin = self.stdin.as_mut().expect("the client is not stopped");
        stdin
            .write_all(line.as_bytes())
            .and_then(|_| stdin.flush())
            .expect("the shim reads its stdin");
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns the whole response (result or error).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(msg) if msg.get("id") == Some(&json!(id)) => return msg,
                Ok(msg) if msg.get("method").is_some() && msg.get("id").is_none() => {
                    self.notifications.push(msg)
                }
                Ok(other) => panic!("unexpected message from the shim: {other}"),
                Err(RecvTimeoutError::Timeout) => panic!("{method} got no answer in 60 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("the shim closed stdout"),
            }
        }
    }

    /// Calls a tool; returns (is_error, text of all text content).
    pub fn call_tool(&mut self, name: &str, arguments: Value) -> (bool, String, Value) {
        let resp = self.request("tools/call", json!({"name": name, "arguments": arguments}));
        let result = resp
            .get("result")
            .unwrap_or_else(|| panic!("tools/call {name} returned no result: {resp}"))
            .clone();
        let is_error = result
            .get("isError")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let text = result
            .get("content")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| c.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        (is_error, text, result)
    }

    /// A tool call that must succeed.
    pub fn tool_ok(&mut self, name: &str, arguments: Value) -> (String, Value) {
        let (is_error, text, result) = self.call_tool(name, arguments);
        assert!(!is_error, "{} {name} failed: {text}", self.name);
        (text, result)
    }

    /// Waits for a notification with `method` whose params satisfy `pred`.
    pub fn wait_notification(
        &mut self,
        method: &str,
        limit: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let matches = |n: &Value| {
            n.get("method").and_then(Value::as_str) == Some(method)
                && pred(n.get("params").unwrap_or(&Value::Null))
        };
        if let Some(i) = self.notifications.iter().position(matches) {
            return self.notifications.remove(i);
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(msg) if matches(&msg) => return msg,
                Ok(msg) => self.notifications.push(msg),
                Err(_) => panic!(
                    "{}: no {method} notification within {limit:?}; got {:?}",
                    self.name, self.notifications
                ),
            }
        }
    }

    /// Ends the session as Claude Code does on exit: closes the shim's
    /// stdin, and kills the shim and its parent if they linger.
    pub fn stop(self) {}

    /// Kills the shim's "Claude Code" parent (and the shim) at once, as a
    /// crash would: the daemon must reap the session.
    pub fn kill_claude(mut self) {
        self.stdin.take();
        kill_children(self.process.pid());
        self.process.kill9();
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.process.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.process.is_running() {
            kill_children(self.process.pid());
        }
    }
}

fn kill_children(pid: u32) {
    let _ = Command::new("pkill")
        .args(["-9", "-P", &pid.to_string()])
        .status();
}
