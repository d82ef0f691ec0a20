//! Shared test harness: a broker on 127.0.0.1:0 in a temporary directory,
//! enrolled members, a WebSocket client and a minimal HTTP client.
//!
//! Every wait has a generous limit (`WAIT`) so that a broken broker makes
//! a test fail instead of hang; no test asserts on how long anything took.

#![allow(dead_code)]

pub mod cluster;
pub mod nodes;
pub mod postgres;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use claudemesh_broker::admin::{Admin, MemberInfo, MeshInfo};
use claudemesh_broker::{BrokerConfig, Clock, RunningBroker};
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::envelope;
use claudemesh_protocol::wire::{ClientFrame, ConnectionRole, Peer};

/// The most any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn now_ms() -> i64 {
    claudemesh_broker::clock::system_now_ms()
}

/// A hello timestamp never used before in this process. The hello
/// signature covers (mesh, member, key, timestamp) but not the session, so
/// two hellos of one member in the same millisecond would be replays.
pub fn fresh_ts() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut prev = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// A clock a test can pin and move.
#[derive(Clone)]
pub struct TestClock(pub Arc<AtomicI64>);

impl TestClock {
    pub fn pinned(at: i64) -> Self {
        Self(Arc::new(AtomicI64::new(at)))
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn clock(&self) -> Clock {
        let v = self.0.clone();
        Clock::from_fn(move || v.load(Ordering::SeqCst))
    }
}

/// Which store a test broker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `broker.db` in the temporary directory.
    Sqlite,
    /// A fresh database on this test binary's private PostgreSQL.
    Postgres,
    /// [`CLUSTER_NODES`] nodes on one fresh PostgreSQL database, each new
    /// connection on the next node in turn (see [`TestBroker::connect`]).
    Cluster,
}

/// How many nodes a [`Backend::Cluster`] broker has.
pub const CLUSTER_NODES: usize = 3;

/// Runs each named test (an `async fn(Backend)`) once per store, as
/// `<name>::sqlite` and `<name>::postgres`.
#[allow(unused_macros)]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use both_stores;

/// Runs each named test (an `async fn(Backend)`) on one node of each
/// store and across the nodes of a cluster, as `<name>::sqlite`,
/// `<name>::postgres` and `<name>::cluster`.
#[allow(unused_macros)]
macro_rules! all_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await;
            }

            #[tokio::test]
            async fn cluster() {
                super::$name($crate::common::Backend::Cluster).await;
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use all_backends;

/// A broker in a temporary directory (which holds the owner keys, and the
/// database unless it runs on PostgreSQL), with one mesh.
///
/// On [`Backend::Cluster`] it is node 1 of a cluster whose other nodes
/// are in `others`: `addr`, `admin` and `ws_url` are node 1's, while
/// [`TestBroker::connect`] puts each new connection on the next node in
/// turn, standing in for the load balancer (the real HAProxy is tested
/// in cluster_ops.rs); so a test's clients land on different nodes with
/// no change to the test.
pub struct TestBroker {
    pub dir: tempfile::TempDir,
    pub broker: Option<RunningBroker>,
    pub addr: SocketAddr,
    pub mesh: MeshInfo,
    /// Set when the broker runs on PostgreSQL.
    pub database_url: Option<String>,
    /// The other nodes of a cluster (node 2, 3, …); empty otherwise.
    pub others: Vec<TestBroker>,
    /// How many connections [`TestBroker::connect`] has made.
    turn: AtomicUsize,
}

pub fn test_config(data_dir: &Path) -> BrokerConfig {
    let mut c = BrokerConfig::new("127.0.0.1:0".parse().unwrap(), data_dir.to_owned());
    c.hello_timeout = Duration::from_secs(5);
    c.revocation_poll = Duration::from_millis(100);
    c
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        Self::start_on(Backend::Sqlite, tweak).await
    }

    /// A broker on `backend` with the default test configuration.
    pub async fn on(backend: Backend) -> Self {
        Self::start_on(backend, |_| {}).await
    }

    /// On [`Backend::Cluster`], `tweak` shapes node 1's configuration and
    /// every node runs a copy of it under its own node id and directory.
    pub async fn start_on(backend: Backend, tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres | Backend::Cluster => Some(postgres::shared().fresh_database()),
        };
        let mesh = Admin::open_store(dir.path(), database_url.as_deref())
            .unwrap()
            .create_mesh("team")
            .unwrap();
        let mut config = test_config(dir.path());
        config.database_url = database_url.clone();
        if backend == Backend::Cluster {
            config.node_id = Some(node_id(1));
        }
        tweak(&mut config);
        let broker = claudemesh_broker::start(config.clone()).await.unwrap();
        let addr = broker.local_addr();
        let mut first = Self {
            dir,
            broker: Some(broker),
            addr,
            mesh,
            database_url,
            others: Vec::new(),
            turn: AtomicUsize::new(0),
        };
        if backend == Backend::Cluster {
            // Started together: each start waits mostly on the database.
            let others = (2..=CLUSTER_NODES).map(|i| {
                let mut other = config.clone();
                other.node_id = Some(node_id(i));
                first.join(other)
            });
            let others = futures_util::future::join_all(others).await;
            first.others = others;
        }
        first
    }

    /// Another node on this broker's PostgreSQL database, started with
    /// `config` (its database URL set here, its data directory a new one).
    pub async fn join(&self, mut config: BrokerConfig) -> TestBroker {
        config.database_url = self.database_url.clone();
        Self::node(config, &self.mesh).await
    }

    /// One node serving `mesh` from the database `config` names, with a
    /// new data directory and a loopback port of its own.
    pub async fn node(mut config: BrokerConfig, mesh: &MeshInfo) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        config.data_dir = dir.path().to_owned();
        config.listen = "127.0.0.1:0".parse().unwrap();
        let database_url = config.database_url.clone();
        let broker = claudemesh_broker::start(config).await.unwrap();
        TestBroker {
            addr: broker.local_addr(),
            broker: Some(broker),
            dir,
            mesh: mesh.clone(),
            database_url,
            others: Vec::new(),
            turn: AtomicUsize::new(0),
        }
    }

    /// Every node: this one, then the others.
    pub fn nodes(&self) -> impl Iterator<Item = &TestBroker> {
        std::iter::once(self).chain(self.others.iter())
    }

    /// Which node (0 for this one, 1… for the others) `c` is connected to.
    pub fn node_of(&self, c: &Client) -> usize {
        let peer = match c.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s.peer_addr().unwrap(),
            _ => panic!("the tests speak plain WebSocket"),
        };
        self.nodes()
            .position(|n| n.addr == peer)
            .unwrap_or_else(|| panic!("{peer} is none of this broker's nodes"))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub fn admin(&self) -> Admin {
        Admin::open_store(self.dir.path(), self.database_url.as_deref()).unwrap()
    }

    /// In a cluster, asserts that `clients` are on pairwise different
    /// nodes (at most one per node), so that what passes between them
    /// crosses nodes; nothing to check on one node.
    pub fn assert_apart(&self, clients: &[&Client]) {
        if self.others.is_empty() {
            return;
        }
        let mut nodes: Vec<usize> = clients.iter().map(|c| self.node_of(c)).collect();
        let listed = nodes.clone();
        nodes.sort();
        nodes.dedup();
        assert_eq!(
            nodes.len(),
            clients.len(),
            "clients share a node: {listed:?}"
        );
    }

    /// In a cluster, waits until every node lists the same sessions with
    /// the same fields (a node learns of another's presence changes
    /// through the database, a moment after they happen: docs/broker.md,
    /// "Presence is one view"), so that what a test does next on another
    /// node sees what it just did. Nothing to wait for on one node.
    pub async fn settle(&self) {
        if self.others.is_empty() {
            return;
        }
        let views = || -> Vec<Vec<(Peer, bool)>> {
            self.nodes()
                .map(|n| {
                    n.broker
                        .as_ref()
                        .map(|b| b.listed_sessions(&self.mesh.id))
                        .unwrap_or_default()
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        // Looking costs the nodes time (they share this test's thread):
        // look again after a growing pause.
        let mut pause = Duration::from_millis(2);
        loop {
            let now = views();
            if now.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the nodes never came to list the same sessions: {}",
                views_differ(&now)
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Graceful stop, then a new broker on the same data directory. A
    /// cluster stops every node, then starts each again under its node id
    /// (with `tweak` on each).
    pub async fn restart_with(&mut self, tweak: impl Fn(&mut BrokerConfig)) {
        self.shutdown().await;
        let clustered = !self.others.is_empty();
        let mut others = std::mem::take(&mut self.others);
        for (i, node) in std::iter::once(&mut *self)
            .chain(others.iter_mut())
            .enumerate()
        {
            let mut config = test_config(node.dir.path());
            config.database_url = node.database_url.clone();
            if clustered {
                config.node_id = Some(node_id(i + 1));
            }
            tweak(&mut config);
            let broker = claudemesh_broker::start(config).await.unwrap();
            node.addr = broker.local_addr();
            node.broker = Some(broker);
        }
        self.others = others;
    }

    /// Graceful stop of every node.
    pub async fn shutdown(&mut self) {
        if let Some(b) = self.broker.take() {
            b.shutdown().await;
        }
        for node in &mut self.others {
            if let Some(b) = node.broker.take() {
                b.shutdown().await;
            }
        }
    }

    /// Enrolls a fresh key.
    pub fn member(&self, name: &str) -> Member {
        Member::enroll(&self.admin(), &self.mesh, name)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// A new WebSocket connection; in a cluster, on the next node in turn
    /// (node 1, 2, 3, 1, …), so that consecutive connections of a test
    /// are on different nodes.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.next_ws_url()).await
    }

    /// The WebSocket URL of the node the next connection goes to (see
    /// [`TestBroker::connect`]), for a test that connects its own way.
    pub fn next_ws_url(&self) -> String {
        self.next_node().ws_url()
    }

    /// The address of the node the next connection goes to, for an HTTP
    /// request through any node.
    pub fn next_addr(&self) -> SocketAddr {
        self.next_node().addr
    }

    fn next_node(&self) -> &TestBroker {
        let turn = self.turn.fetch_add(1, Ordering::SeqCst);
        self.nodes().nth(turn % self.nodes().count()).unwrap()
    }

    /// Connects and says hello as a `role:"session"` connection.
    pub async fn session(&self, m: &Member, session_id: &str, name: &str) -> (Client, Value) {
        let mut c = self.connect().await;
        let ack = c
            .hello(m, session_id, Some(name), ConnectionRole::Session)
            .await;
        self.settle().await;
        (c, ack)
    }

    /// Connects and says hello as a daemon.
    pub async fn daemon(&self, m: &Member) -> Client {
        let mut c = self.connect().await;
        c.hello(m, "daemon", None, ConnectionRole::Daemon).await;
        self.settle().await;
        c
    }

    /// The broker's metrics; a cluster's as one text where each series
    /// is the sum of its value on every node (counters and gauges of
    /// connections add up; the `node` label is dropped).
    pub async fn metrics(&self) -> String {
        if self.others.is_empty() {
            return http(self.addr, "GET", "/metrics", None).await.1;
        }
        let mut texts = Vec::new();
        for node in self.nodes() {
            texts.push(http(node.addr, "GET", "/metrics", None).await.1);
        }
        sum_over_nodes(&texts)
    }
}

/// How nodes' views (see [`TestBroker::settle`]) differ: per node, how
/// many sessions it lists and those that node 1 does not list as it does.
fn views_differ(views: &[Vec<(Peer, bool)>]) -> String {
    let mut out = String::new();
    for (i, view) in views.iter().enumerate() {
        let unlike: Vec<(&str, &str, bool)> = view
            .iter()
            .filter(|s| !views[0].contains(s))
            .take(3)
            .map(|(p, live)| (p.display_name.as_str(), p.session_id.as_str(), *live))
            .collect();
        out.push_str(&format!(
            "\nnode {}: {} sessions; not so on node 1: {unlike:?}",
            i + 1,
            view.len()
        ));
    }
    out
}

/// The id of a cluster's node `i` (from 1).
pub fn node_id(i: usize) -> String {
    format!("node-{i}")
}

/// Several nodes' exposition texts as one, without comments, each series
/// (its `node` label dropped) summed over the nodes, in order of first
/// appearance.
fn sum_over_nodes(texts: &[String]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut sums: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    for line in texts.iter().flat_map(|t| t.lines()) {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let line = without_node_label(line);
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if !sums.contains_key(series) {
            order.push(series.to_owned());
        }
        *sums.entry(series.to_owned()).or_default() += value;
    }
    order
        .iter()
        .map(|series| format!("{series} {}\n", sums[series]))
        .collect()
}

/// An enrolled member and its key.
pub struct Member {
    pub key: MemberSecretKey,
    pub info: MemberInfo,
    pub mesh_id: String,
}

impl Member {
    /// A fresh key enrolled in `mesh` under `name`.
    pub fn enroll(admin: &Admin, mesh: &MeshInfo, name: &str) -> Self {
        let key = MemberSecretKey::generate().unwrap();
        let info = admin
            .enroll_member(&mesh.id, &key.public_key().to_hex(), name)
            .unwrap();
        Self {
            key,
            info,
            mesh_id: mesh.id.clone(),
        }
    }

    pub fn pubkey(&self) -> String {
        self.info.pubkey.clone()
    }

    /// A signed hello frame as JSON.
    pub fn hello_frame(
        &self,
        session_id: &str,
        display_name: Option<&str>,
        role: ConnectionRole,
        timestamp: i64,
    ) -> Value {
        let mut h = claudemesh_protocol::hello::signed_hello(
            &self.key,
            &self.mesh_id,
            &self.info.id,
            session_id,
            4242,
            "/home/u/project",
            timestamp,
        );
        h.display_name = display_name.map(str::to_owned);
        h.role = role;
        h.client = Some("broker-tests".into());
        serde_json::from_str(&ClientFrame::Hello(h).to_json()).unwrap()
    }

    /// An envelope sealed for `to` with a `{"text":…}` body.
    pub fn envelope(&self, to: &Member, text: &str) -> Value {
        let body = json!({ "text": text }).to_string();
        let env = envelope::seal(body.as_bytes(), &to.key.public_key(), &self.key).unwrap();
        serde_json::to_value(env).unwrap()
    }

    /// Opens a push addressed to this member, returning its text.
    pub fn open(&self, push: &Value, from: &Member) -> String {
        let plain = envelope::open(
            push["nonce"].as_str().unwrap(),
            push["ciphertext"].as_str().unwrap(),
            &from.key.public_key(),
            &self.key,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&plain).unwrap();
        v["text"].as_str().unwrap().to_owned()
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

/// A WebSocket client speaking JSON frames.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect failed");
        Self { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, t: String) {
        self.ws.send(Message::Text(t.into())).await.unwrap();
    }

    /// The next JSON frame; panics on close or after `WAIT`.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no frame arrived in time")
                .expect("connection ended")
                .expect("read error");
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(c) => panic!("connection closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame of type `ty`, skipping others (events, receipts).
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Frames up to and including the first of type `ty`.
    pub async fn recv_until(&mut self, ty: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let v = self.recv().await;
            let done = v["type"] == ty;
            out.push(v);
            if done {
                return out;
            }
        }
    }

    /// Reads until the connection closes; returns the text frames seen and
    /// the close code and reason.
    pub async fn recv_close(&mut self) -> (Vec<Value>, Closed) {
        let mut frames = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the connection did not close in time");
            match next {
                Some(Ok(Message::Text(t))) => {
                    frames.push(serde_json::from_str(t.as_str()).unwrap())
                }
                Some(Ok(Message::Close(Some(c)))) => {
                    let code: u16 = CloseCode::into(c.code);
                    return (
                        frames,
                        Closed {
                            code,
                            reason: c.reason.to_string(),
                        },
                    );
                }
                Some(Ok(Message::Close(None))) | None => {
                    return (
                        frames,
                        Closed {
                            code: 1005,
                            reason: String::new(),
                        },
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("read error before close: {e}"),
            }
        }
    }

    /// Sends a hello and returns the `hello_ack`.
    pub async fn hello(
        &mut self,
        m: &Member,
        session_id: &str,
        name: Option<&str>,
        role: ConnectionRole,
    ) -> Value {
        self.send(m.hello_frame(session_id, name, role, fresh_ts()))
            .await;
        let ack = self.recv().await;
        assert_eq!(ack["type"], "hello_ack", "{ack}");
        ack
    }

    /// A `list_peers` round trip: every frame queued for this connection
    /// before it has then been read, which lets a test check that some
    /// event did *not* happen without waiting on a clock.
    pub async fn sync(&mut self) -> Vec<Value> {
        let id = format!("sync-{}", now_ms());
        self.send(json!({"type":"list_peers","id": id})).await;
        let mut before = Vec::new();
        loop {
            let v = self.recv().await;
            if v["type"] == "peers_list" && v["id"] == id.as_str() {
                return before;
            }
            before.push(v);
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Read until the broker's half of the close arrives.
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The peers a client's `list_peers` shows, as (display name, groups).
pub async fn peers(c: &mut Client) -> Vec<(String, Vec<String>)> {
    c.send(json!({"type":"list_peers","id":"peers"})).await;
    let list = loop {
        let v = c.recv().await;
        if v["type"] == "peers_list" && v["id"] == "peers" {
            break v;
        }
    };
    let mut out: Vec<(String, Vec<String>)> = list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let groups = p["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_str().unwrap().to_owned())
                .collect();
            (p["displayName"].as_str().unwrap().to_owned(), groups)
        })
        .collect();
    out.sort();
    out
}

/// Waits until `c`'s peer list is `expected` (other nodes' sessions
/// arrive through the database, a moment after they change).
pub async fn await_peers(c: &mut Client, expected: &[(&str, &[&str])]) {
    let expected: Vec<(String, Vec<String>)> = expected
        .iter()
        .map(|(n, g)| ((*n).to_owned(), g.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
    for _ in 0..500 {
        if peers(c).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("peers never became {expected:?}: {:?}", peers(c).await);
}

/// Resident memory of this process (which runs the broker) in bytes,
/// from /proc.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// A TCP connection from `source` (any 127.0.0.0/8 address is loopback).
pub async fn tcp_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// A GET that tolerates being refused or cut off (a broker that closes
/// connections at accept): status and body, or `None`. For answers with a
/// length (`/healthz`, `/metrics`), not chunks.
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A tiny HTTP/1.1 client: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((head, rest))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(rest)
        }
        Some((_, rest)) => rest.to_owned(),
        None => String::new(),
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// POST with a JSON body, parsing the JSON answer.
pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http(addr, "POST", path, Some(body)).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A metric's value from exposition text (`name{labels} value`). A
/// broker on PostgreSQL puts its node's label first on every series;
/// `series` may name it or leave it out.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            [Cow::Borrowed(*l), without_node_label(l)]
                .iter()
                .any(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `name{node="n1",a="b"} 1` as `name{a="b"} 1`, `name{node="n1"} 1` as
/// `name 1`.
fn without_node_label(line: &str) -> Cow<'_, str> {
    let Some((name, rest)) = line.split_once("{node=\"") else {
        return Cow::Borrowed(line);
    };
    let Some((_, after)) = rest.split_once('"') else {
        return Cow::Borrowed(line);
    };
    match after.strip_prefix(',') {
        Some(others) => Cow::Owned(format!("{name}{{{others}")),
        None => Cow::Owned(format!(
            "{name}{}",
            after.strip_prefix('}').unwrap_or(after)
        )),
    }
}

/// A `send` frame.
pub fn send_frame(id: &str, to: &str, envelopes: Vec<Value>) -> Value {
    json!({"type":"send","id":id,"to":to,"priority":"now","envelopes":envelopes})
}

/// An ack's recipients as sorted (member, session, state) triples.
pub fn recipients(ack: &Value) -> Vec<(String, Option<String>, String)> {
    let mut v: Vec<_> = ack["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["member"].as_str().unwrap().to_owned(),
                r["sessionId"].as_str().map(str::to_owned),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A push's `sessions`, sorted.
pub fn push_sessions(push: &Value) -> Vec<String> {
    let mut v: Vec<String> = push["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}
