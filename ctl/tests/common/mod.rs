//! Shared by the integration tests: a private claudemesh home per test (its
//! own config, data and runtime directories, the file keystore), the real
//! `claudemesh-ctl` binary, and a real broker started in-process.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use claudemesh_broker::admin::{Admin, InviteRole};
use claudemesh_broker::{BrokerConfig, RunningBroker};

pub const CTL: &str = env!("CARGO_BIN_EXE_claudemesh-ctl");

/// One user's claudemesh directories, in a temporary directory.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub extra_env: Vec<(String, String)>,
    pub path_env: Option<String>,
}

impl Home {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            extra_env: Vec::new(),
            path_env: None,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.root().join("config")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }
    pub fn runtime_dir(&self) -> PathBuf {
        self.root().join("run")
    }
    pub fn config_file(&self) -> PathBuf {
        self.config_dir().join("config.json")
    }
    pub fn key_dir(&self) -> PathBuf {
        self.data_dir().join("keys")
    }

    pub fn env(&mut self, k: &str, v: impl Into<String>) -> &mut Self {
        self.extra_env.push((k.to_owned(), v.into()));
        self
    }

    /// The command, with this home's environment and nothing from the
    /// developer's own claudemesh or Claude Code setup.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(CTL);
        c.args(args)
            .env("CLAUDEMESH_CONFIG_DIR", self.config_dir())
            .env("CLAUDEMESH_DATA_DIR", self.data_dir())
            .env("CLAUDEMESH_RUNTIME_DIR", self.runtime_dir())
            .env("CLAUDEMESH_KEYSTORE", "file")
            .env("HOME", self.root())
            .env("XDG_CONFIG_HOME", self.root().join("xdg-config"))
            .env("NO_COLOR", "1")
            .env_remove("CLAUDEMESH_BROKER_URL")
            .env_remove("CLAUDEMESH_DEBUG")
            .env_remove("CLAUDEMESH_WAKE")
            .env_remove("CLAUDE_CODE_ENTRYPOINT")
            .env_remove("CLAUDE_CODE_SESSION_ATTENDED")
            .env_remove("CLAUDE_CONFIG_DIR")
            .env_remove("CLAUDEMESH_DAEMON");
        if let Some(p) = &self.path_env {
            c.env("PATH", p);
        }
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        c
    }

    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::from(self.cmd(args).output().expect("claudemesh-ctl runs"))
    }

    /// Runs ctl with `input` written to its stdin (then closed), as Claude
    /// Code runs a hook.
    pub fn run_with_stdin<I, S>(&self, args: I, input: &str) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("claudemesh-ctl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        Run::from(child.wait_with_output().expect("claudemesh-ctl runs"))
    }

    /// The config file's meshes (empty when there is no file).
    pub fn meshes(&self) -> Vec<serde_json::Value> {
        match std::fs::read_to_string(self.config_file()) {
            Ok(t) => serde_json::from_str::<serde_json::Value>(&t).unwrap()["meshes"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The key files in the file keystore.
    pub fn keys(&self) -> Vec<String> {
        match std::fs::read_dir(self.key_dir()) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// No key and no mesh: what a failed join must leave.
    pub fn assert_pristine(&self, why: &str) {
        assert!(
            self.meshes().is_empty(),
            "{why}: config left behind: {:?}",
            self.meshes()
        );
        assert!(
            self.keys().is_empty(),
            "{why}: key left behind: {:?}",
            self.keys()
        );
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A real broker on a loopback port, with its own tokio runtime.
pub struct TestBroker {
    pub rt: tokio::runtime::Runtime,
    pub broker: Option<RunningBroker>,
    pub data: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
}

impl TestBroker {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let config = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), data.path().to_owned());
        let broker = rt
            .block_on(claudemesh_broker::start(config))
            .expect("broker starts");
        let addr = broker.local_addr();
        Self {
            rt,
            broker: Some(broker),
            data,
            addr,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn admin(&self) -> Admin {
        Admin::open(self.data.path()).unwrap()
    }

    /// A new mesh and an invite link for it: (mesh id, invite id, link).
    pub fn mesh_and_invite(&self, slug: &str, uses: Option<u32>) -> (String, String, String) {
        let admin = self.admin();
        let mesh = admin.create_mesh(slug).unwrap();
        let (invite_id, link) = admin
            .create_invite(&mesh.id, InviteRole::Member, uses, 3600, &self.ws_url())
            .unwrap();
        (mesh.id, invite_id, link)
    }

    pub fn stop(&mut self) {
        if let Some(b) = self.broker.take() {
            self.rt.block_on(b.shutdown());
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback address where nothing listens.
pub fn dead_address() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Writes an executable shell script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A stand-in daemon on the home's socket: it speaks the IPC frames of
/// `claudemesh_protocol::ipc` (hello first, then one answer per request)
/// and records every request. It checks ctl's side of the protocol; the
/// real daemon is exercised by the end-to-end suite.
pub struct FakeDaemon {
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<claudemesh_protocol::ipc::Request>>>,
    socket: PathBuf,
}

pub type Answer = Box<
    dyn Fn(
            &claudemesh_protocol::ipc::Request,
        )
            -> Result<claudemesh_protocol::ipc::Response, claudemesh_protocol::ipc::IpcError>
        + Send
        + Sync,
>;

impl FakeDaemon {
    pub fn start(home: &Home, answer: Answer) -> Self {
        use claudemesh_protocol::ipc::{DaemonFrame, IPC_VERSION, Request, RequestFrame, Response};
        use std::io::{BufRead, BufReader, Write};
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::net::UnixListener;

        let dir = home.runtime_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let socket = dir.join("claudemeshd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let answer = std::sync::Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let recorded = recorded.clone();
                let answer = answer.clone();
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        let frame = RequestFrame::parse(&line).expect("ctl sends valid frames");
                        recorded.lock().unwrap().push(frame.request.clone());
                        let reply = match &frame.request {
                            Request::Hello { protocol, .. } => {
                                assert_eq!(*protocol, IPC_VERSION);
                                DaemonFrame::Ok {
                                    id: frame.id,
                                    result: Response::Welcome {
                                        protocol: IPC_VERSION,
                                        daemon_version: env!("CARGO_PKG_VERSION").into(),
                                        pid: 4242,
                                    },
                                }
                            }
                            other => match answer(other) {
                                Ok(result) => DaemonFrame::Ok {
                                    id: frame.id,
                                    result,
                                },
                                Err(error) => DaemonFrame::Err {
                                    id: Some(frame.id),
                                    error,
                                },
                            },
                        };
                        if out.write_all(reply.to_line().as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { requests, socket }
    }

    /// The requests received so far, without the hellos.
    pub fn requests(&self) -> Vec<claudemesh_protocol::ipc::Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !matches!(r, claudemesh_protocol::ipc::Request::Hello { .. }))
            .cloned()
            .collect()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}
