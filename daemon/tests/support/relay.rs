//! A session whose Claude Code is another process.
//!
//! The daemon ties a session to a Claude Code process that must be the
//! connecting process or one of its ancestors. To have several sessions
//! (or one whose "Claude Code" the test can kill), the test binary runs
//! itself as a helper: `relay` mode connects to the socket and copies bytes
//! between it and stdin/stdout; `parent` mode starts a relay child and
//! waits, standing in for Claude Code. Each test binary that uses relays
//! has `#[test] fn relay_helper() { support::relay::helper_main() }`,
//! which does nothing unless the mode variable is set.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::client::TestClient;

const MODE_ENV: &str = "CLAUDEMESH_TEST_RELAY";
const SOCKET_ENV: &str = "CLAUDEMESH_TEST_RELAY_SOCKET";
const READY: &str = "RELAY-READY";
const FAILED: &str = "RELAY-FAILED";

/// Who stands in for Claude Code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// The relay process itself.
    SelfIsClaude,
    /// The relay's parent, which the test may kill.
    ParentIsClaude,
}

/// The body of each test binary's `relay_helper` test.
pub fn helper_main() {
    let Ok(mode) = std::env::var(MODE_ENV) else {
        return;
    };
    match mode.as_str() {
        "relay" => relay(),
        "parent" => {
            let exe = std::env::current_exe().expect("own exe");
            let status = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env(MODE_ENV, "relay")
                .status();
            std::process::exit(if matches!(status, Ok(s) if s.success()) {
                0
            } else {
                1
            });
        }
        _ => {}
    }
}

fn relay() -> ! {
    let socket = std::env::var_os(SOCKET_ENV).expect("socket path");
    let mut out = std::io::stdout();
    let stream = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(out, "{FAILED} {e}");
            let _ = out.flush();
            std::process::exit(0);
        }
    };
    let _ = writeln!(out, "{READY} {}", std::process::id());
    let _ = out.flush();
    let mut to_socket = stream.try_clone().expect("clone the stream");
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut to_socket);
        let _ = to_socket.shutdown(std::net::Shutdown::Write);
    });
    let mut from_socket = stream;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from_socket.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        }
    }
    std::process::exit(0);
}

pub struct Relay {
    pub child: Child,
    pub client: TestClient,
    /// The pid to give as `claudePid`.
    pub claude_pid: u32,
    /// The relay process (the socket's peer).
    pub relay_pid: u32,
}

impl Relay {
    pub async fn spawn(socket: &Path, mode: RelayMode) -> Relay {
        let (child, lines, first) = start(socket, mode, &[]).await;
        let relay_pid: u32 = first
            .strip_prefix(READY)
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or_else(|| panic!("the relay did not connect: {first}"));
        let claude_pid = match mode {
            RelayMode::SelfIsClaude => relay_pid,
            RelayMode::ParentIsClaude => child.id().expect("parent pid"),
        };
        let (reader, writer) = lines;
        let mut client = TestClient::over(reader, writer);
        client.hello().await;
        Relay {
            child,
            client,
            claude_pid,
            relay_pid,
        }
    }

    /// Kills the stand-in Claude Code (the parent, in `ParentIsClaude`).
    pub async fn kill_claude(&mut self) {
        let _ = self.child.kill().await;
    }
}

type Pipes = (
    BufReader<tokio::process::ChildStdout>,
    tokio::process::ChildStdin,
);

/// Starts a relay, prefixed by `wrapper` (e.g. setpriv), and returns its
/// first meaningful line (`RELAY-READY pid` or `RELAY-FAILED why`).
pub async fn start(socket: &Path, mode: RelayMode, wrapper: &[&str]) -> (Child, Pipes, String) {
    let exe = std::env::current_exe().expect("own exe");
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([
        "relay_helper",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(
        MODE_ENV,
        match mode {
            RelayMode::SelfIsClaude => "relay",
            RelayMode::ParentIsClaude => "parent",
        },
    )
    .env(SOCKET_ENV, socket)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn the relay");
    let stdout = child.stdout.take().expect("stdout");
    let stdin = child.stdin.take().expect("stdin");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            reader.read_line(&mut line),
        )
        .await
        .expect("the relay said nothing")
        .expect("read the relay");
        if n == 0 {
            panic!("the relay exited before connecting");
        }
        let t = line.trim();
        if t.starts_with(READY) || t.starts_with(FAILED) {
            return (child, (reader, stdin), t.to_owned());
        }
    }
}
