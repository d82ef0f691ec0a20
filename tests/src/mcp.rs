//! A minimal MCP client over a shim's stdio: newline-delimited JSON-RPC,
//! as Claude Code speaks it. Notifications are collected for the test.

use std::ops::{Deref, DerefMut};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins;
use crate::home::Home;
use crate::process::Guarded;
use crate::rpc::StdioRpc;

/// A shim under its own stand-in Claude Code; derefs to its JSON-RPC
/// connection (`name`, `notifications`, `request`, `wait_notification`).
pub struct McpClient {
    rpc: StdioRpc,
    process: Guarded,
}

impl Deref for McpClient {
    type Target = StdioRpc;
    fn deref(&self) -> &StdioRpc {
        &self.rpc
    }
}

impl DerefMut for McpClient {
    fn deref_mut(&mut self) -> &mut StdioRpc {
        &mut self.rpc
    }
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
        let mut client = Self {
            rpc: StdioRpc::new(display_name, stdin, stdout),
            process: Guarded {
                child,
                name: format!("shim {display_name}"),
            },
        };
        client.initialize();
        client
    }

    fn initialize(&mut self) {
        let init = self.rpc.initialize("claudemesh-e2e");
        assert!(init.get("result").is_some(), "initialize failed: {init}");
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

    /// Calls a tool; returns (is_error, text of all text content, result).
    pub fn call_tool(&mut self, name: &str, arguments: Value) -> (bool, String, Value) {
        let r = self.rpc.tool(name, arguments);
        (r.is_error, r.text, r.result)
    }

    /// A tool call that must succeed.
    pub fn tool_ok(&mut self, name: &str, arguments: Value) -> (String, Value) {
        let (is_error, text, result) = self.call_tool(name, arguments);
        assert!(!is_error, "{} {name} failed: {text}", self.name);
        (text, result)
    }

    /// Ends the session as Claude Code does on exit: closes the shim's
    /// stdin, and kills the shim and its parent if they linger.
    pub fn stop(self) {}

    /// Kills the shim's "Claude Code" parent (and the shim) at once, as a
    /// crash would: the daemon must reap the session.
    pub fn kill_claude(mut self) {
        self.rpc.close_stdin();
        kill_children(self.process.pid());
        self.process.kill9();
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        self.rpc.close_stdin();
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
