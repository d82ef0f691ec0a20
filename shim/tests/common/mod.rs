//! Harness for the shim's tests: a private home for one daemon, the real
//! `claudemeshd`, and shims driven as MCP clients over their stdio.
//!
//! The daemon is another package's binary, so `CARGO_BIN_EXE_claudemeshd`
//! does not exist here: [`daemon_exe`] runs `cargo build -p
//! claudemesh-daemon --bin claudemeshd` once per test binary (same profile
//! as this test; quick when it is up to date) and uses
//! `target/<profile>/claudemeshd`, next to this test executable's
//! `deps/` directory. The shims start the daemon themselves, as in real use,
//! through `CLAUDEMESH_DAEMON`.

#![allow(dead_code)]

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use claudemesh_e2e::mcp::{Launch, McpClient, Parent};
use claudemesh_e2e::rpc::StdioRpc;
use serde_json::Value;

pub const SHIM: &str = env!("CARGO_BIN_EXE_claudemesh-shim");

/// `target/<profile>`: this test runs from `target/<profile>/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

/// The real daemon, built on first use.
pub fn daemon_exe() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "claudemesh-daemon", "--bin", "claudemeshd"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // Cargo sets CARGO_PKG_*, CARGO_MANIFEST_DIR, … for this test;
            // passed on, they would look like a changed environment to build
            // scripts that watch them (ring does), and rebuild half the tree.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                let keep = [
                    "CARGO_HOME",
                    "CARGO_TARGET_DIR",
                    "CARGO_BUILD_",
                    "CARGO_NET_",
                ]
                .iter()
                .any(|k| key.starts_with(k));
                if (key.starts_with("CARGO_") && !keep) || key == "OUT_DIR" {
                    cmd.env_remove(key.as_ref());
                }
            }
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cargo runs");
            assert!(status.success(), "building claudemeshd failed");
            let exe = dir.join(format!("claudemeshd{}", std::env::consts::EXE_SUFFIX));
            assert!(exe.exists(), "{} is missing after the build", exe.display());
            exe
        })
        .clone()
}

/// One user's claudemesh world: config, data and runtime dirs of its own.
pub struct Home {
    dir: tempfile::TempDir,
    /// What `CLAUDEMESH_DAEMON` points at for the shims of this home.
    pub daemon: PathBuf,
    /// More environment for every shim (and the daemon it starts).
    pub extra_env: Vec<(&'static str, String)>,
}

impl Home {
    /// A home whose shims start the real daemon.
    pub fn new() -> Home {
        Home::with_daemon(daemon_exe())
    }

    pub fn with_daemon(daemon: PathBuf) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("cm-shim-")
            .tempdir()
            .expect("a temp dir");
        Home {
            dir,
            daemon,
            extra_env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("run").join("claudemeshd.sock")
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        let p = |s: &str| self.path().join(s).display().to_string();
        let mut env = vec![
            ("HOME", p("")),
            ("CLAUDEMESH_CONFIG_DIR", p("config")),
            ("CLAUDEMESH_DATA_DIR", p("data")),
            ("CLAUDEMESH_RUNTIME_DIR", p("run")),
            ("XDG_RUNTIME_DIR", p("xdg-run")),
            ("CLAUDEMESH_KEYSTORE", "file".into()),
            ("CLAUDEMESH_DAEMON", self.daemon.display().to_string()),
            ("CLAUDEMESH_DEBUG", "1".into()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// The pid of the daemon answering on this home's socket, if any.
    pub fn daemon_pid(&self) -> Option<u32> {
        let socket = self.socket();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                claudemesh_daemon::client::DaemonClient::connect(&socket, "shim-test/0")
                    .await
                    .ok()
                    .map(|c| c.welcome().pid)
            })
    }

    /// Kills this home's daemon (SIGKILL) and waits until nothing answers.
    pub fn kill_daemon(&self) {
        if let Some(pid) = self.daemon_pid() {
            kill9(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon_pid().is_some() {
            assert!(Instant::now() < deadline, "the daemon does not die");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pids of every `claudemeshd` process started for this home.
    pub fn daemon_processes(&self) -> Vec<u32> {
        let marker = format!(
            "CLAUDEMESH_RUNTIME_DIR={}",
            self.path().join("run").display()
        );
        let mut pids = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
            if !exe
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("claudemeshd"))
            {
                continue;
            }
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Where a shim's stderr goes.
    pub fn log(&self, name: &str) -> PathBuf {
        self.path().join(format!("shim-{name}.log"))
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path().join("data").join("claudemeshd.log"))
            .unwrap_or_default()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        for pid in self.daemon_processes() {
            kill9(pid);
        }
        // SHIM_TEST_KEEP=1 keeps the home (and the shim and daemon logs).
        if std::env::var_os("SHIM_TEST_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("kept {}", self.dir.path().display());
        }
    }
}

pub fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// A shim as Claude Code runs it, spoken to over MCP JSON-RPC: the
/// end-to-end suite's [`McpClient`], started once under a parent `sh` that
/// plays the Claude Code process (so every shim is its own session).
///
/// It derefs to its JSON-RPC connection (`name`, `notifications`,
/// `request`, `initialize`, `wait_notification`, `drain_for`).
pub struct Shim {
    client: McpClient,
}

impl Deref for Shim {
    type Target = StdioRpc;
    fn deref(&self) -> &StdioRpc {
        &self.client
    }
}

impl DerefMut for Shim {
    fn deref_mut(&mut self) -> &mut StdioRpc {
        &mut self.client
    }
}

impl Shim {
    /// Starts a shim named `name` and initializes it.
    pub fn start(home: &Home, name: &str, extra_env: &[(&str, &str)]) -> Shim {
        let mut shim = Shim::spawn(home, name, extra_env);
        let init = shim.initialize();
        assert!(init.get("result").is_some(), "initialize failed: {init}");
        shim
    }

    /// Starts a shim whose "Claude Code" parent has `parent_args` on its
    /// command line, without initializing it.
    pub fn spawn_with_parent_args(home: &Home, name: &str, parent_args: &[&str]) -> Shim {
        Shim::spawn_under(home, name, &[], parent_args)
    }

    /// Starts a shim without initializing it.
    pub fn spawn(home: &Home, name: &str, extra_env: &[(&str, &str)]) -> Shim {
        Shim::spawn_under(home, name, extra_env, &[])
    }

    /// Starts and initializes a shim whose "Claude Code" parent has
    /// `parent_args` on its command line (e.g. the channels flag).
    pub fn start_under(home: &Home, name: &str, parent_args: &[&str]) -> Shim {
        Shim::start_with(home, name, &[], parent_args)
    }

    /// `start_under` with `extra_env` too (what Claude Code puts in its MCP
    /// servers' environment).
    pub fn start_with(
        home: &Home,
        name: &str,
        extra_env: &[(&str, &str)],
        parent_args: &[&str],
    ) -> Shim {
        let mut shim = Shim::spawn_under(home, name, extra_env, parent_args);
        let init = shim.initialize();
        assert!(init.get("result").is_some(), "initialize failed: {init}");
        shim
    }

    fn spawn_under(
        home: &Home,
        name: &str,
        extra_env: &[(&str, &str)],
        parent_args: &[&str],
    ) -> Shim {
        let mut env: Vec<(String, String)> = home
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let log = home.log(name);
        Shim {
            client: McpClient::spawn(Launch {
                shim: Path::new(SHIM),
                env,
                display_name: name,
                log: &log,
                parent: Parent::Once { args: parent_args },
            }),
        }
    }

    /// `initialize` then `notifications/initialized`.
    pub fn initialize(&mut self) -> Value {
        self.client.initialize("shim-test")
    }

    /// Calls a tool: (is_error, all text content, the whole result).
    pub fn call(&mut self, tool: &str, arguments: Value) -> (bool, String, Value) {
        self.client.call_tool(tool, arguments)
    }

    /// A tool call that must succeed: (text, structured content).
    pub fn ok(&mut self, tool: &str, arguments: Value) -> (String, Value) {
        let (text, result) = self.client.tool_ok(tool, arguments);
        (text, result["structuredContent"].clone())
    }

    /// Calls `tool` until `done` holds for its (text, structured) result.
    pub fn ok_until(
        &mut self,
        tool: &str,
        arguments: Value,
        limit: Duration,
        done: impl Fn(&str, &Value) -> bool,
    ) -> (String, Value) {
        let deadline = Instant::now() + limit;
        loop {
            let (text, data) = self.ok(tool, arguments.clone());
            if done(&text, &data) {
                return (text, data);
            }
            assert!(
                Instant::now() < deadline,
                "{}: {tool} never got there; last answer: {text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
