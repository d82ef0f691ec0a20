//! A standalone `claudemesh-broker` process on a loopback port, with its
//! own data directory, administered through its own command line.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bins;
use crate::process::{Guarded, free_port};
use crate::wait;

pub struct Broker {
    pub data: tempfile::TempDir,
    pub port: u16,
    pub process: Guarded,
}

impl Broker {
    pub fn start() -> Self {
        let data = tempfile::Builder::new()
            .prefix("cm-broker-")
            .tempdir()
            .expect("a temp dir");
        let port = free_port();
        let process = spawn(data.path(), port);
        let broker = Self {
            data,
            port,
            process,
        };
        broker.wait_healthy();
        broker
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// `kill -9`, then a new process on the same port and data.
    pub fn kill9_and_restart(&mut self) {
        self.process.kill9();
        self.process = spawn(self.data.path(), self.port);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let port = self.port;
        wait::until("the broker's /healthz", wait::DEFAULT, || {
            http_get(port, "/healthz").filter(|r| r.starts_with("HTTP/1.1 200"))
        });
    }

    /// Runs an administration command on the data dir; returns stdout.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(bins::bin(bins::BROKER))
            .arg("--data")
            .arg(self.data.path())
            .args(args)
            .output()
            .expect("claudemesh-broker runs");
        assert!(
            out.status.success(),
            "claudemesh-broker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a mesh and returns an invite link for it.
    pub fn mesh_with_invite(&self, slug: &str, uses: u32) -> String {
        self.admin(&["mesh", "create", slug]);
        let link = self.admin(&[
            "invite",
            slug,
            "--uses",
            &uses.to_string(),
            "--broker-url",
            &self.ws_url(),
        ]);
        link.trim().to_owned()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        crate::logs::print_if_panicking("broker", self.data.path());
    }
}

fn spawn(data: &std::path::Path, port: u16) -> Guarded {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("broker.log"))
        .expect("log file");
    let mut cmd = Command::new(bins::bin(bins::BROKER));
    cmd.arg("--data")
        .arg(data)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(log);
    Guarded::spawn("claudemesh-broker", &mut cmd)
}

/// A bare HTTP/1.1 GET; `None` when nothing answers yet.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}
