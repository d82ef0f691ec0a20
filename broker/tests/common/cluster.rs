//! Broker nodes as real processes on one private PostgreSQL, behind a
//! real HAProxy whose configuration is generated from the shipped
//! `deploy/haproxy.cfg` (so the documented configuration is the tested
//! one; see the markers in that file).
//!
//! Synchronous and `std`-only (plus `tempfile` and [`super::postgres`]),
//! so that the load bench and other test crates can include it by path
//! next to `postgres.rs`. Waits poll with a generous cap and panic with
//! what was last seen; they measure nothing.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::postgres::PgServer;

/// How long a wait for a process or a health state may take before the
/// harness gives up (a cap, not an expectation).
pub const WAIT_CAP: Duration = Duration::from_secs(30);

/// The shipped HAProxy configuration the test configuration comes from.
pub const HAPROXY_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/haproxy.cfg"
));

/// The HAProxy backend every node is in (as in `deploy/haproxy.cfg`).
pub const BACKEND: &str = "brokers";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One `claudemesh-broker serve` process.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    bin: PathBuf,
    database_url: String,
    public_url: String,
    log: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the node's log file");
        let child = Command::new(&self.bin)
            .args(["serve", "--listen", &self.addr.to_string()])
            .args(["--database-url", &self.database_url])
            .args(["--node-id", &self.id])
            .args(["--public-url", &self.public_url])
            .args(&self.extra)
            .env_remove("CLAUDEMESH_BROKER_DATA")
            .env_remove("CLAUDEMESH_BROKER_DATABASE_URL")
            .env_remove("CLAUDEMESH_BROKER_NODE_ID")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the broker binary starts");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// SIGKILL: the process gets no chance to tidy anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same id, port and database, and
    /// waits until it answers `/healthz` with 200.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_health(200);
    }

    /// `/healthz`: status, body and the node header; `None` when nothing
    /// answers.
    pub fn health(&self) -> Option<(u16, String, Option<String>)> {
        health_at(self.addr)
    }

    /// Waits until `/healthz` answers `status`; its body.
    pub fn wait_health(&self, status: u16) -> String {
        let mut last = None;
        let answered = wait_for(|| {
            last = self.health();
            match &last {
                Some((s, body, _)) if *s == status => Some(body.clone()),
                _ => None,
            }
        });
        answered.unwrap_or_else(|| {
            panic!(
                "node {} never answered /healthz with {status} (last: {last:?}); its log:\n{}",
                self.id,
                self.log()
            )
        })
    }

    /// This node's `/metrics` page.
    pub fn metrics(&self) -> String {
        get(self.addr, "/metrics").map(|r| r.2).unwrap_or_default()
    }

    /// Peak resident memory of the running process (VmHWM), in kB.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        text.lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A HAProxy process running the generated configuration.
pub struct Haproxy {
    pub addr: SocketAddr,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Child,
}

/// The `haproxy` program: /usr/sbin (Debian's place, off a user's PATH),
/// else PATH.
fn haproxy_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/haproxy");
    if sbin.is_file() {
        return sbin;
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("haproxy"))
                .find(|b| b.is_file())
        })
        .unwrap_or_else(|| {
            panic!("HAProxy is not installed; run ./test.sh --provision (as root) to install it")
        })
}

/// The test configuration: `template` with its `@test-…` lines replaced
/// (see `deploy/haproxy.cfg`).
pub fn haproxy_config(
    template: &str,
    listen: SocketAddr,
    socket: &Path,
    servers: &[(String, SocketAddr)],
) -> String {
    let mut out = String::with_capacity(template.len());
    let mut servers_written = false;
    for line in template.lines() {
        let Some((_, marker)) = line.split_once("# @test-") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        match marker.trim() {
            "drop" => {}
            "bind" => out.push_str(&format!("    bind {listen}\n")),
            "stats" => out.push_str(&format!(
                "    stats socket {} mode 600 level admin\n",
                socket.display()
            )),
            "maxconn" => out.push_str("    maxconn 2000\n"),
            // Fast checks so that a test sees a node go down or come back
            // within a fraction of a second.
            "check" => out.push_str("    default-server check inter 100ms fall 2 rise 1\n"),
            "server" if !servers_written => {
                for (name, addr) in servers {
                    out.push_str(&format!("    server {name} {addr}\n"));
                }
                servers_written = true;
            }
            "server" => {}
            other => panic!("unknown marker @test-{other} in the HAProxy template"),
        }
    }
    assert!(
        servers_written,
        "the HAProxy template has no @test-server line"
    );
    out
}

impl Haproxy {
    /// Starts HAProxy on `listen` in front of `servers` (name, address),
    /// with its files in `dir`.
    pub fn start(dir: &Path, listen: SocketAddr, servers: &[(String, SocketAddr)]) -> Self {
        let socket = dir.join("haproxy.sock");
        let config = dir.join("haproxy.cfg");
        let log = dir.join("haproxy.log");
        std::fs::write(
            &config,
            haproxy_config(HAPROXY_TEMPLATE, listen, &socket, servers),
        )
        .expect("writing the HAProxy configuration");
        let bin = haproxy_bin();
        let check = Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .expect("haproxy -c runs");
        assert!(
            check.status.success(),
            "HAProxy refuses the generated configuration: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&bin)
            // -db: stay in the foreground, so that the child is HAProxy.
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the HAProxy log"))
            .spawn()
            .expect("haproxy starts");
        let proxy = Self {
            addr: listen,
            socket,
            config,
            log,
            child,
        };
        // HAProxy binds its frontend and its stats socket one after the
        // other: wait for both, or a stats command may find no socket yet.
        let up = wait_for(|| {
            TcpStream::connect(listen).ok()?;
            std::os::unix::net::UnixStream::connect(&proxy.socket).ok()?;
            Some(())
        });
        assert!(up.is_some(), "HAProxy never listened: {}", proxy.log());
        proxy
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A command on the stats socket; its answer.
    pub fn command(&self, cmd: &str) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("the HAProxy stats socket: {e}"));
        s.write_all(format!("{cmd}\n").as_bytes())
            .expect("writing to the stats socket");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// What HAProxy's health checks say of server `name` (`UP`, `DOWN`,
    /// or a transition such as `UP 1/2`).
    pub fn server_status(&self, name: &str) -> Option<String> {
        let stat = self.command("show stat");
        let mut lines = stat.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let col = |n: &str| header.iter().position(|h| *h == n);
        let (px, sv, status) = (col("pxname")?, col("svname")?, col("status")?);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(px) == Some(&BACKEND) && f.get(sv) == Some(&name))
            .and_then(|f| f.get(status).map(|s| (*s).to_owned()))
    }

    /// Waits until HAProxy reports server `name` exactly `status`.
    pub fn wait_status(&self, name: &str, status: &str) {
        let mut last = None;
        let seen = wait_for(|| {
            last = self.server_status(name);
            (last.as_deref() == Some(status)).then_some(())
        });
        assert!(
            seen.is_some(),
            "HAProxy never marked {name} {status} (last: {last:?}); its log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// N nodes named `n1`…`nN` on one private PostgreSQL, optionally behind
/// HAProxy.
pub struct Cluster {
    pub pg: PgServer,
    pub database_url: String,
    /// Holds the logs, the HAProxy files, and the owner keys for admin
    /// commands (`--data`).
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub haproxy: Option<Haproxy>,
}

/// What to start.
pub struct ClusterSpec {
    pub nodes: usize,
    pub haproxy: bool,
    /// More `serve` flags for every node.
    pub serve_flags: Vec<String>,
}

impl Cluster {
    /// Starts PostgreSQL, the nodes (waiting for each to be healthy) and
    /// HAProxy (waiting for it to mark every node up). `bin` is the
    /// `claudemesh-broker` binary.
    pub fn start(bin: &Path, spec: ClusterSpec) -> Self {
        let pg = PgServer::start();
        let database_url = pg.fresh_database();
        let dir = tempfile::Builder::new()
            .prefix("cm-cluster-")
            .tempdir()
            .expect("temp dir");
        let proxy_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut nodes = Vec::with_capacity(spec.nodes);
        for k in 1..=spec.nodes {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            // Invites name the balancer when there is one.
            let public = if spec.haproxy { proxy_addr } else { addr };
            let mut extra = spec.serve_flags.clone();
            if spec.haproxy {
                // HAProxy connects from loopback with a PROXY header
                // (deploy/haproxy.cfg).
                extra.extend(["--trusted-proxy".to_owned(), "127.0.0.1".to_owned()]);
            }
            let mut node = Node {
                id: format!("n{k}"),
                addr,
                bin: bin.to_owned(),
                database_url: database_url.clone(),
                public_url: format!("ws://{public}/ws"),
                log: dir.path().join(format!("n{k}.log")),
                extra,
                child: None,
            };
            // One at a time: the first creates the schema.
            node.spawn();
            node.wait_health(200);
            nodes.push(node);
        }
        let haproxy = spec.haproxy.then(|| {
            let servers: Vec<(String, SocketAddr)> =
                nodes.iter().map(|n| (n.id.clone(), n.addr)).collect();
            let proxy = Haproxy::start(dir.path(), proxy_addr, &servers);
            for n in &nodes {
                proxy.wait_status(&n.id, "UP");
            }
            proxy
        });
        Self {
            pg,
            database_url,
            dir,
            nodes,
            haproxy,
        }
    }

    pub fn proxy(&self) -> &Haproxy {
        self.haproxy.as_ref().expect("this cluster has no HAProxy")
    }

    pub fn node(&mut self, id: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }
}

/// Polls `probe` every 50 ms until it gives a value or [`WAIT_CAP`] passes.
pub fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT_CAP;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain `GET` (HTTP/1.1, connection closed after): status, the
/// `X-Claudemesh-Node` header, body. `None` when the connection fails.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, Option<String>, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: claudemesh\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let node = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("x-claudemesh-node")
            .then(|| v.trim().to_owned())
    });
    Some((status, node, body.to_owned()))
}

/// `/healthz` at `addr`: status, body, the answering node.
pub fn health_at(addr: SocketAddr) -> Option<(u16, String, Option<String>)> {
    get(addr, "/healthz").map(|(s, node, body)| (s, body, node))
}
