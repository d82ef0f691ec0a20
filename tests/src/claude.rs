//! Real Claude Code sessions on a mesh, driven offline by a scripted
//! Messages API (`tests/claude/scripted_api.py`: the model is the one thing
//! that is not real; it answers with the next step of a script and records
//! every request, so a test reads exactly what the model was shown).
//!
//! Each `Machine` is one user: a HOME with `claudemesh-ctl install` done
//! (the shim registered with the real `claude mcp add`, the hooks in
//! `~/.claude/settings.json`), Claude Code's onboarding marked done, and the
//! daemon started by the test (so that it gets a short push window).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bins;
use crate::process::Guarded;

/// A pinned Claude Code release (`tests/js/package.json`).
#[derive(Debug, Clone)]
pub struct ClaudeCode {
    pub version: &'static str,
    pub exe: PathBuf,
}

/// Every pinned release: the current one and an older one.
pub fn pinned() -> Vec<ClaudeCode> {
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/node_modules");
    let all = [
        (
            "2.1.332",
            modules.join("@anthropic-ai/claude-code/bin/claude.exe"),
        ),
        (
            "2.1.197",
            modules.join("claude-code-2-1-197/bin/claude.exe"),
        ),
    ];
    all.into_iter()
        .map(|(version, exe)| {
            assert!(
                exe.exists(),
                "Claude Code {version} is not installed for the tests: run `npm ci --prefix tests/js`"
            );
            ClaudeCode { version, exe }
        })
        .collect()
}

/// Any key will do: the scripted API does not check it.
const API_KEY: &str = "sk-ant-api03-offline-test-key-0123456789abcdef";

/// The channels flag on Claude Code's command line.
pub const CHANNELS_FLAG: [&str; 2] = [
    "--dangerously-load-development-channels",
    "server:claudemesh",
];

/// The host part of default display names, as the shim computes it.
pub fn short_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// One user with claudemesh installed for Claude Code.
pub struct Machine {
    // Dropped in this order: the daemon stops before its HOME goes.
    _daemon: Guarded,
    home: tempfile::TempDir,
    path: String,
}

impl Machine {
    /// `push_confirm_ms`: the daemon's push window.
    pub fn new(claude: &ClaudeCode, push_confirm_ms: u64) -> Machine {
        let mut home = tempfile::Builder::new().prefix("cm-cc-").tempdir().unwrap();
        // To read the logs after a run: CLAUDEMESH_E2E_KEEP=1.
        home.disable_cleanup(std::env::var_os("CLAUDEMESH_E2E_KEEP").is_some());
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(&claude.exe, bin.join("claude")).unwrap();
        let path = format!(
            "{}:{}:{}",
            bins::profile_dir().display(),
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(home.path().join("daemon.log")).unwrap();
        let mut daemon = Command::new(bins::bin(bins::DAEMON));
        daemon
            .arg("run")
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", &path)
            .env("CLAUDEMESH_DEBUG", "1")
            .env("CLAUDEMESH_PUSH_CONFIRM_MS", push_confirm_ms.to_string())
            .stdout(Stdio::null())
            .stderr(log);
        let daemon = Guarded::spawn("claudemeshd", &mut daemon);
        let machine = Machine {
            home,
            path,
            _daemon: daemon,
        };
        let install = machine
            .command(&bins::bin(bins::CTL))
            .arg("install")
            .output()
            .unwrap();
        assert!(
            install.status.success(),
            "ctl install: {}{}",
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr)
        );
        machine
    }

    /// Joins a mesh through an invite link (`claudemesh-ctl join
    /// --default`): the running daemon picks it up, and new sessions go
    /// there.
    pub fn join(&self, link: &str) {
        let out = self
            .command(&bins::bin(bins::CTL))
            .args(["join", link, "--default"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctl join: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// This user's member key in the local mesh (`claudemesh-ctl status`).
    pub fn member_key(&self) -> String {
        let out = self
            .command(&bins::bin(bins::CTL))
            .args(["status", "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "ctl status --json: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        v.pointer("/daemon/meshes/0/member")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no member key in {v}"))
            .to_owned()
    }

    /// What Claude Code logged of project `name`'s claudemesh MCP server
    /// (the shim's stderr included), all runs.
    pub fn mcp_log(&self, name: &str) -> String {
        let cache = self.home().join(".cache/claude-cli-nodejs");
        let mut out = String::new();
        for project in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
            if !project
                .file_name()
                .to_string_lossy()
                .ends_with(&format!("-work-{name}"))
            {
                continue;
            }
            let logs = project.path().join("mcp-logs-claudemesh");
            for f in std::fs::read_dir(logs).into_iter().flatten().flatten() {
                out.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
        out
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.home().join("daemon.log")).unwrap_or_default()
    }

    /// A command with only this user's HOME and PATH, as a login would.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("HOME", self.home())
            .env("PATH", &self.path)
            .env("TERM", "xterm-256color")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("ANTHROPIC_API_KEY", API_KEY)
            .env("CLAUDEMESH_DEBUG", "1");
        cmd
    }

    /// A project folder `name` (so the session's default name is
    /// `name@host`), trusted in `~/.claude.json` for interactive mode.
    pub fn project(&self, name: &str) -> PathBuf {
        let dir = self.home().join("work").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = self.home().join(".claude.json");
        let mut v: Value = std::fs::read(&config)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({}));
        v["hasCompletedOnboarding"] = json!(true);
        // The API key is approved (interactive mode asks otherwise).
        let key = API_KEY;
        v["customApiKeyResponses"] = json!({"approved": [&key[key.len() - 20..]], "rejected": []});
        v["projects"][dir.display().to_string()]["hasTrustDialogAccepted"] = json!(true);
        std::fs::write(&config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        dir
    }
}

/// The scripted Messages API of one session.
pub struct ScriptedApi {
    _server: Guarded,
    pub port: u16,
    log: PathBuf,
}

impl ScriptedApi {
    pub fn start(dir: &Path, name: &str, steps: Value) -> ScriptedApi {
        let script = dir.join(format!("{name}.script.json"));
        std::fs::write(&script, json!({ "steps": steps }).to_string()).unwrap();
        let log = dir.join(format!("{name}.requests.jsonl"));
        let port_file = dir.join(format!("{name}.port"));
        let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("claude/scripted_api.py");
        let mut cmd = Command::new("python3");
        cmd.arg(server)
            .arg("--script")
            .arg(&script)
            .arg("--log")
            .arg(&log)
            .arg("--port-file")
            .arg(&port_file);
        let server = Guarded::spawn(&format!("scripted API ({name})"), &mut cmd);
        let port = crate::wait::until("the scripted API's port", Duration::from_secs(20), || {
            std::fs::read_to_string(&port_file)
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        ScriptedApi {
            _server: server,
            port,
            log,
        }
    }

    /// Every request the session's Claude Code made, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The conversation the model was shown last: the `messages` and
    /// `system` of the last main-loop request (each request carries the
    /// whole conversation so far).
    pub fn last_conversation(&self) -> String {
        self.requests()
            .iter()
            .rev()
            .find(|r| r["main"] == true)
            .map(|r| json!([r["body"]["system"], r["body"]["messages"]]).to_string())
            .unwrap_or_default()
    }

    /// Everything any request of this session carried.
    pub fn everything(&self) -> String {
        self.requests()
            .iter()
            .map(|r| r["body"].to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The text of the tool results the model got, in order.
    pub fn tool_results(&self) -> Vec<String> {
        let Some(last) = self
            .requests()
            .into_iter()
            .rev()
            .find(|r| r["main"] == true)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for m in last["body"]["messages"].as_array().into_iter().flatten() {
            for block in m["content"].as_array().into_iter().flatten() {
                if block["type"] == "tool_result" {
                    out.push(block["content"].to_string());
                }
            }
        }
        out
    }
}

/// A Claude Code session in print mode (`claude -p PROMPT`).
pub struct PrintSession {
    pub name: String,
    pub api: ScriptedApi,
    child: Child,
    started: Instant,
    out: PathBuf,
    pub debug_log: PathBuf,
}

impl PrintSession {
    pub fn start(
        machine: &Machine,
        claude: &ClaudeCode,
        name: &str,
        steps: Value,
        prompt: &str,
        extra_args: &[&str],
    ) -> PrintSession {
        let project = machine.project(name);
        let dir = machine.home().join("logs");
        std::fs::create_dir_all(&dir).unwrap();
        let api = ScriptedApi::start(&dir, name, steps);
        let out = dir.join(format!("{name}.out"));
        let debug_log = dir.join(format!("{name}.debug.txt"));
        let mut cmd = machine.command(&claude.exe);
        cmd.current_dir(&project)
            .env(
                "ANTHROPIC_BASE_URL",
                format!("http://127.0.0.1:{}", api.port),
            )
            .arg("-p")
            .arg(prompt)
            .args(["--allowedTools", "mcp__claudemesh"])
            .arg("--debug-file")
            .arg(&debug_log)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("claude starts");
        PrintSession {
            name: name.to_owned(),
            api,
            child,
            started: Instant::now(),
            out,
            debug_log,
        }
    }

    /// Waits for the session to end (at most `limit`); its output.
    pub fn finish(&mut self, limit: Duration) -> String {
        let deadline = self.started + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = std::fs::read_to_string(&self.out).unwrap_or_default();
                assert!(
                    status.success(),
                    "{}: claude exited {status}: {out}",
                    self.name
                );
                return out;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: claude did not finish within {limit:?}; requests so far: {}",
                    self.name,
                    self.api.requests().len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn debug(&self) -> String {
        std::fs::read_to_string(&self.debug_log).unwrap_or_default()
    }
}

impl Drop for PrintSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Claude Code session in interactive mode, in its own tmux server:
/// the test types with `send-keys` and reads the screen with
/// `capture-pane`.
pub struct TmuxSession {
    pub name: String,
    pub api: ScriptedApi,
    socket: PathBuf,
    /// Every screen seen so far (notices come and go).
    pub screens: String,
}

impl TmuxSession {
    pub fn start(
        machine: &Machine,
        claude: &ClaudeCode,
        name: &str,
        steps: Value,
        extra_args: &[&str],
    ) -> TmuxSession {
        let project = machine.project(name);
        let dir = machine.home().join("logs");
        std::fs::create_dir_all(&dir).unwrap();
        let api = ScriptedApi::start(&dir, name, steps);
        let socket = dir.join(format!("{name}.tmux"));
        // tmux runs the command through a shell with its own environment:
        // give Claude Code exactly the user's, as `Machine::command` does.
        let mut line = String::from("exec env -i");
        let cmd = machine.command(&claude.exe);
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                line.push_str(&format!(
                    " {}={}",
                    k.to_string_lossy(),
                    quote(&v.to_string_lossy())
                ));
            }
        }
        line.push_str(&format!(
            " ANTHROPIC_BASE_URL=http://127.0.0.1:{}",
            api.port
        ));
        line.push_str(&format!(" {}", quote(&claude.exe.display().to_string())));
        line.push_str(" --allowedTools mcp__claudemesh");
        line.push_str(&format!(
            " --debug-file {}",
            quote(&dir.join(format!("{name}.debug.txt")).display().to_string())
        ));
        for a in extra_args {
            line.push_str(&format!(" {}", quote(a)));
        }
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args([
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "50",
                "-c",
            ])
            .arg(&project)
            .arg(line)
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed");
        TmuxSession {
            name: name.to_owned(),
            api,
            socket,
            screens: String::new(),
        }
    }

    /// Claude Code's debug log (`--debug-file`).
    pub fn debug(&self) -> String {
        let log = self
            .socket
            .with_file_name(format!("{}.debug.txt", self.name));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// The screen now (also kept in `screens`).
    pub fn screen(&mut self) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["capture-pane", "-p"])
            .output()
            .expect("tmux runs");
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        self.screens.push_str(&screen);
        screen
    }

    /// Waits until the screen shows `text`.
    pub fn wait_for_screen(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if self.screen().contains(text) {
                return;
            }
            if Instant::now() > deadline {
                let screen = self.screen();
                panic!("{}: the screen never showed {text:?}:\n{screen}", self.name);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Types `text` and Enter.
    pub fn type_line(&mut self, text: &str) {
        for keys in [text, "Enter"] {
            let status = Command::new("tmux")
                .arg("-S")
                .arg(&self.socket)
                .args(["send-keys", "-t", "0"])
                .args(if keys == "Enter" {
                    vec![keys]
                } else {
                    vec!["-l", keys]
                })
                .status()
                .expect("tmux runs");
            assert!(status.success());
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

impl Drop for TmuxSession {
    /// Ends Claude Code and waits (briefly) for it to exit, so that it
    /// writes nothing into a HOME that is being removed.
    fn drop(&mut self) {
        let tmux = |args: &[&str]| {
            Command::new("tmux")
                .arg("-S")
                .arg(&self.socket)
                .args(args)
                .output()
        };
        let pid = tmux(&["display-message", "-p", "#{pane_pid}"])
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            });
        let _ = tmux(&["kill-server"]);
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// `s` as one word for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// How many times `needle` occurs in `haystack`.
pub fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}
