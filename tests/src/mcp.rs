//! A minimal MCP client over a shim's stdio: newline-delimited JSON-RPC,
//! as Claude Code speaks it. Notifications are collected for the test.

use std::ops::{Deref, DerefMut};
use std::path::Path;
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

/// The "Claude Code" a shim runs under: an `sh` that stays the shim's
/// parent, so that each shim is its own session (the daemon keys sessions
/// by the shim's parent).
pub enum Parent<'a> {
    /// Starts the shim again when it dies, as Claude Code does (see
    /// [`McpClient::restart_shim`]); a shim that exits cleanly, on end of
    /// input, ends it.
    Restarting,
    /// Runs the shim once; `args` show on the parent's command line (not
    /// the shim's), as Claude Code's own flags would.
    Once { args: &'a [&'a str] },
}

/// How to start one shim.
pub struct Launch<'a> {
    pub shim: &'a Path,
    /// The whole environment of the home, extras last.
    pub env: Vec<(String, String)>,
    pub display_name: &'a str,
    /// Where the shim's stderr goes (appended).
    pub log: &'a Path,
    pub parent: Parent<'a>,
}

impl McpClient {
    /// Starts a shim as a Claude Code session would, under a [`Parent::Restarting`]
    /// parent, and initializes it.
    ///
    /// Like Claude Code, it gives the shim a session id, project directory
    /// and configuration directory, so that the shim names the transcript
    /// this client writes.
    pub fn start(home: &Home, display_name: &str, extra_env: &[(&str, &str)]) -> Self {
        let mut env = home.env();
        let plain: String = display_name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        let session_id = format!("e2e-{plain}");
        let config = home.path().join("claude-config");
        let transcript = config
            .join("projects")
            .join(format!("-e2e-{plain}"))
            .join(format!("{session_id}.jsonl"));
        env.extend([
            ("CLAUDE_CODE_SESSION_ID".to_owned(), session_id),
            ("CLAUDE_PROJECT_DIR".to_owned(), format!("/e2e/{plain}")),
            ("CLAUDE_CONFIG_DIR".to_owned(), config.display().to_string()),
        ]);
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let log = home.path().join(format!("shim-{display_name}.log"));
        let shim = bins::bin(bins::SHIM);
        let mut client = Self::spawn(Launch {
            shim: &shim,
            env,
            display_name,
            log: &log,
            parent: Parent::Restarting,
        });
        client.transcript = Some(transcript);
        client.handshake();
        client
    }

    /// Starts a shim without initializing it.
    pub fn spawn(launch: Launch<'_>) -> Self {
        let mut cmd = Command::new("sh");
        match launch.parent {
            Parent::Restarting => cmd
                .arg("-c")
                .arg("until \"$0\"; do sleep 0.2; done")
                .arg(launch.shim),
            // `sh -c SCRIPT SHIM ARGS…`: the shim gets no arguments.
            Parent::Once { args } => cmd
                .arg("-c")
                .arg("\"$0\"; exit $?")
                .arg(launch.shim)
                .args(args),
        };
        // Whatever the test runner has set must not choose a broker, mesh
        // or channel mode for the shim; only `launch.env` does.
        for key in [
            "CLAUDEMESH_BROKER_URL",
            "CLAUDEMESH_MESH",
            "CLAUDEMESH_CHANNEL",
        ] {
            cmd.env_remove(key);
        }
        cmd.env("CLAUDEMESH_DISPLAY_NAME", launch.display_name);
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(launch.log)
            .expect("log file");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the shim starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            rpc: StdioRpc::new(launch.display_name, stdin, stdout),
            process: Guarded {
                child,
                name: format!("shim {}", launch.display_name),
            },
        }
    }

    fn handshake(&mut self) {
        let init = self.rpc.initialize("claudemesh-e2e");
        assert!(init.get("result").is_some(), "initialize failed: {init}");
    }

    /// Kills the shim (not its Claude Code); the parent starts a new one,
    /// which is initialized again: a restarted shim under the same Claude
    /// Code, which must resume the same session and inbox.
    pub fn restart_shim(&mut self) {
        kill_children(self.process.pid());
        self.handshake();
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
        self.handshake();
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
