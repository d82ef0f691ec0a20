//! Load benchmark: N members, each on its own live WebSocket connection to
//! the real `claudemesh-broker` binary (a separate process), each sending M
//! end-to-end encrypted direct messages (real `crypto_box` envelopes) to
//! random peers at priority `now`. Total messages = N × M.
//!
//! Reports delivered % (each message checked to arrive exactly once, at
//! the right recipient, and to decrypt to what was sent), end-to-end
//! latency (send → push at the recipient) p50/p95/p99/max, send → ack
//! latency, throughput, and the broker's peak RSS (VmHWM).
//!
//! Fairness on a small machine: every envelope is sealed and every frame
//! serialized *before* the clock starts; the load generator runs on a
//! single-threaded runtime (one core at most), paces each member to
//! `rate / N` sends per second with at most `window` unacknowledged sends,
//! and decrypts what it received only after the clock stops.
//!
//! Stores and topologies: by default one node on SQLite. `--database-url
//! URL` runs one node on that PostgreSQL database; `--cluster N` starts a
//! private PostgreSQL and N node processes on it (the test harness in
//! `tests/common/cluster.rs`), member i connecting to node i mod N so
//! that most messages cross nodes (`--via-haproxy`: every member through
//! a HAProxy in front of the nodes instead). Either way the single-node
//! SQLite run comes first in the same process, and both are printed side
//! by side (`--no-baseline` skips it). A client that has its acks and
//! then hears nothing for `--idle` seconds stops waiting, so lost
//! messages are reported as missing instead of hanging the bench.
//!
//! ```text
//! cargo bench -p claudemesh-broker --bench load                 # N=100, M=1000
//! cargo bench -p claudemesh-broker --bench load -- --quick      # N=10, M=100
//! cargo bench -p claudemesh-broker --bench load -- --members 50 --messages 200 --rate 0
//! cargo bench -p claudemesh-broker --bench load -- --cluster 3  # 3 nodes on PostgreSQL
//! cargo bench -p claudemesh-broker --bench load -- --database-url postgres://u@host/db
//! ```

// The test harness: a private PostgreSQL, and broker nodes behind HAProxy
// (`cluster.rs` finds the server module as `super::postgres`).
#[path = "../tests/common/cluster.rs"]
mod cluster;
#[path = "../tests/common/postgres.rs"]
mod postgres;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use claudemesh_broker::admin::Admin;
use claudemesh_protocol::envelope;
use claudemesh_protocol::wire::{ClientFrame, ConnectionRole};
use claudemesh_protocol::{MemberPublicKey, MemberSecretKey};

struct Opts {
    members: usize,
    messages: usize,
    /// Total sends per second across all members; 0 = as fast as the window allows.
    rate: f64,
    /// Unacknowledged sends allowed per member.
    window: usize,
    /// Bytes of message text.
    text_bytes: usize,
    deadline: Duration,
    /// After its last ack, how long a client waits with nothing arriving
    /// before it counts what is still missing as lost.
    idle: Duration,
    /// Where to run, after the SQLite baseline.
    mode: Mode,
    baseline: bool,
}

/// The store and topology of one run.
#[derive(Clone, Debug, PartialEq)]
enum Mode {
    /// One node on a fresh SQLite data directory.
    Sqlite,
    /// One node on this PostgreSQL database.
    Postgres(String),
    /// N nodes on a private PostgreSQL, clients spread over them (or all
    /// through HAProxy).
    Cluster { nodes: usize, haproxy: bool },
}

impl Mode {
    fn label(&self) -> String {
        match self {
            Self::Sqlite => "1 node, SQLite".into(),
            Self::Postgres(_) => "1 node, PostgreSQL".into(),
            Self::Cluster {
                nodes,
                haproxy: false,
            } => format!("{nodes} node(s), PostgreSQL, direct"),
            Self::Cluster {
                nodes,
                haproxy: true,
            } => format!("{nodes} node(s), PostgreSQL, via HAProxy"),
        }
    }
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        members: 100,
        messages: 1000,
        rate: 21_000.0,
        window: 64,
        text_bytes: 200,
        deadline: Duration::from_secs(300),
        idle: Duration::from_secs(10),
        mode: Mode::Sqlite,
        baseline: true,
    };
    let mut cluster = None;
    let mut via_haproxy = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match a.as_str() {
            "--members" => o.members = val("--members").parse().expect("--members N"),
            "--messages" => o.messages = val("--messages").parse().expect("--messages M"),
            "--rate" => o.rate = val("--rate").parse().expect("--rate R"),
            "--window" => o.window = val("--window").parse().expect("--window W"),
            "--text-bytes" => o.text_bytes = val("--text-bytes").parse().expect("--text-bytes B"),
            "--deadline" => {
                o.deadline = Duration::from_secs(val("--deadline").parse().expect("--deadline S"))
            }
            "--idle" => o.idle = Duration::from_secs(val("--idle").parse().expect("--idle S")),
            "--database-url" => o.mode = Mode::Postgres(val("--database-url")),
            "--cluster" => {
                cluster = Some(val("--cluster").parse::<usize>().expect("--cluster N"));
            }
            "--via-haproxy" => via_haproxy = true,
            "--no-baseline" => o.baseline = false,
            "--quick" => {
                o.members = 10;
                o.messages = 100;
                o.rate = 2_000.0;
            }
            // `cargo bench` passes --bench; filters are irrelevant here.
            _ => {}
        }
    }
    assert!(o.members >= 2, "--members must be at least 2");
    if let Some(nodes) = cluster {
        assert!(
            o.mode == Mode::Sqlite,
            "--cluster starts its own PostgreSQL: drop --database-url"
        );
        assert!(nodes >= 1, "--cluster needs at least 1 node");
        o.mode = Mode::Cluster {
            nodes,
            haproxy: via_haproxy,
        };
    }
    o.baseline &= o.mode != Mode::Sqlite;
    o.window = o.window.max(1);
    o
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

const BROKER_BIN: &str = env!("CARGO_BIN_EXE_claudemesh-broker");

fn spawn_broker(dir: &Path, database_url: Option<&str>, port: u16) -> Child {
    Command::new(BROKER_BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(dir)
        .args(
            database_url
                .map(|u| ["--database-url", u])
                .into_iter()
                .flatten(),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the broker binary starts")
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The broker's own counters, for the batch size of its group commits.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A counter's value, with or without labels (a node's page labels every
/// series with its node).
fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn now_ms() -> i64 {
    claudemesh_broker::clock::system_now_ms()
}

/// One planned message.
struct Planned {
    to: usize,
    frame: String,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(default, borrow)]
    id: Option<&'a str>,
    #[serde(default, rename = "messageId", borrow)]
    message_id: Option<&'a str>,
    #[serde(default, borrow)]
    nonce: Option<&'a str>,
    #[serde(default, borrow)]
    ciphertext: Option<&'a str>,
    #[serde(default)]
    from: Option<FromField<'a>>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct FromField<'a> {
    #[serde(borrow)]
    member: &'a str,
}

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    /// (k, send instant)
    sent: Vec<Instant>,
    /// k -> (messageId, ack instant)
    acks: Vec<Option<(String, Instant)>>,
    /// (messageId, arrival, from pubkey, nonce, ciphertext)
    pushes: Vec<(String, Instant, String, String, String)>,
    errors: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn run_client(
    url: String,
    me: usize,
    mesh_id: String,
    peer: (MemberSecretKey, String),
    plan: Vec<String>,
    expected_pushes: usize,
    per_member_rate: f64,
    window: usize,
    ready: tokio::sync::mpsc::Sender<()>,
    start: tokio::sync::watch::Receiver<Option<Instant>>,
    deadline: Instant,
    idle: Duration,
) -> ClientLog {
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    let (mut sink, mut stream) = ws.split();
    let (key, member_id) = peer;
    let mut hello = claudemesh_protocol::hello::signed_hello(
        &key,
        &mesh_id,
        &member_id,
        &format!("s{me}"),
        std::process::id(),
        "/bench",
        now_ms(),
    );
    hello.display_name = Some(format!("m{me}"));
    hello.role = ConnectionRole::Session;
    sink.send(Message::Text(ClientFrame::Hello(hello).to_json().into()))
        .await
        .expect("send hello");
    loop {
        let Some(Ok(Message::Text(t))) = stream.next().await else {
            panic!("client {me}: no hello_ack");
        };
        let f: Incoming = serde_json::from_str(t.as_str()).expect("json");
        if f.ty == "hello_ack" {
            break;
        }
        assert_ne!(f.ty, "error", "client {me}: hello refused: {t}");
    }
    let _ = ready.send(()).await;
    drop(ready);
    let mut start = start;
    let t0 = loop {
        if let Some(t) = *start.borrow() {
            break t;
        }
        start.changed().await.expect("start signal");
    };

    let total = plan.len();
    let mut log = ClientLog {
        sent: Vec::with_capacity(total),
        acks: vec![None; total],
        pushes: Vec::with_capacity(expected_pushes),
        errors: Vec::new(),
    };
    let mut plan = plan.into_iter();
    let mut acked = 0usize;
    let mut in_flight = 0usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(2));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Members start at staggered offsets inside the first tick.
    let mut dirty = false;
    let mut last_frame = Instant::now();
    while acked < total || log.pushes.len() < expected_pushes {
        if acked == total && last_frame.elapsed() > idle {
            log.errors.push(format!(
                "nothing for {:.0} s after the last ack: pushes {}/{expected_pushes}",
                idle.as_secs_f64(),
                log.pushes.len()
            ));
            break;
        }
        if Instant::now() > deadline {
            log.errors.push(format!(
                "deadline: acked {acked}/{total}, pushes {}/{expected_pushes}",
                log.pushes.len()
            ));
            break;
        }
        tokio::select! {
            biased;
            msg = stream.next() => {
                let Some(Ok(msg)) = msg else {
                    log.errors.push("connection ended".into());
                    break;
                };
                last_frame = Instant::now();
                let Message::Text(t) = msg else { continue };
                let f: Incoming = match serde_json::from_str(t.as_str()) {
                    Ok(f) => f,
                    Err(e) => { log.errors.push(format!("bad frame: {e}")); continue; }
                };
                match f.ty {
                    "ack" => {
                        let k: usize = f.id.and_then(|id| id.rsplit('-').next()).and_then(|k| k.parse().ok()).unwrap_or(usize::MAX);
                        if let Some(slot) = log.acks.get_mut(k)
                            && slot.is_none()
                        {
                            *slot = Some((f.message_id.unwrap_or_default().to_owned(), Instant::now()));
                            acked += 1;
                            in_flight -= 1;
                        }
                    }
                    "push" => {
                        let at = Instant::now();
                        let mid = f.message_id.unwrap_or_default().to_owned();
                        let ack = format!("{{\"type\":\"client_ack\",\"messageId\":\"{mid}\"}}");
                        if sink.feed(Message::Text(ack.into())).await.is_err() {
                            log.errors.push("write failed".into());
                            break;
                        }
                        dirty = true;
                        log.pushes.push((
                            mid,
                            at,
                            f.from.map(|x| x.member.to_owned()).unwrap_or_default(),
                            f.nonce.unwrap_or_default().to_owned(),
                            f.ciphertext.unwrap_or_default().to_owned(),
                        ));
                    }
                    "error" => log.errors.push(format!("error {}: {}", f.code.unwrap_or("?"), f.id.unwrap_or(""))),
                    _ => {}
                }
            }
            _ = ticker.tick() => {
                let due = if per_member_rate > 0.0 {
                    ((t0.elapsed().as_secs_f64() * per_member_rate) as usize + 1).min(total)
                } else {
                    total
                };
                while log.sent.len() < due && in_flight < window {
                    let Some(frame) = plan.next() else { break };
                    log.sent.push(Instant::now());
                    in_flight += 1;
                    if sink.feed(Message::Text(frame.into())).await.is_err() {
                        log.errors.push("write failed".into());
                        break;
                    }
                    dirty = true;
                }
            }
        }
        if dirty {
            if sink.flush().await.is_err() {
                log.errors.push("flush failed".into());
                break;
            }
            dirty = false;
        }
    }
    let _ = sink.close().await;
    log
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The members' keys: the same for every run, so that the envelopes are
/// sealed once.
struct Keys {
    key: MemberSecretKey,
    pubkey: MemberPublicKey,
}

/// What one run measured, for the side-by-side table.
struct Report {
    label: String,
    total: usize,
    delivered_once: usize,
    lost: usize,
    p50: f64,
    p99: f64,
    per_sec: f64,
    /// (node, peak RSS in MB)
    rss: Vec<(String, Option<f64>)>,
    ok: bool,
}

/// The broker processes of one run.
enum Brokers {
    One {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    },
    Cluster(Box<cluster::Cluster>),
}

impl Brokers {
    /// (node name, pid, port) of every node.
    fn nodes(&self) -> Vec<(String, u32, u16)> {
        match self {
            Self::One { child, port, .. } => vec![("broker".into(), child.id(), *port)],
            Self::Cluster(c) => c
                .nodes
                .iter()
                .map(|n| (n.id.clone(), n.pid().unwrap_or(0), n.addr.port()))
                .collect(),
        }
    }

    fn stop(self) {
        match self {
            Self::One { mut child, .. } => {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let _ = child.wait();
            }
            // Dropping kills the nodes and HAProxy; PostgreSQL's watcher
            // stops it when this process ends.
            Self::Cluster(c) => drop(c),
        }
    }
}

/// Starts the brokers of `mode` and enrolls every key in a new mesh;
/// the processes, the mesh id, each member's id and the URL each member
/// connects to.
fn start_brokers(mode: &Mode, keys: &[Keys]) -> (Brokers, String, Vec<String>, Vec<String>) {
    let slug = format!("load{}", std::process::id());
    let enroll = |admin: Admin| {
        let mesh = admin.create_mesh(&slug).expect("mesh");
        let ids: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                admin
                    .enroll_member(&slug, &k.pubkey.to_hex(), &format!("m{i}"))
                    .expect("enroll")
                    .id
            })
            .collect();
        (mesh.id, ids)
    };
    let wait_port = |port: u16| {
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the broker never listened on {port}");
    };
    match mode {
        Mode::Sqlite | Mode::Postgres(_) => {
            let url = match mode {
                Mode::Postgres(u) => Some(u.as_str()),
                _ => None,
            };
            let dir = tempfile::tempdir().expect("tempdir");
            let (mesh, ids) = enroll(Admin::open_store(dir.path(), url).expect("admin"));
            let port = free_port();
            let child = spawn_broker(dir.path(), url, port);
            wait_port(port);
            let ws = format!("ws://127.0.0.1:{port}/ws");
            let urls = vec![ws; keys.len()];
            (
                Brokers::One {
                    child,
                    port,
                    _dir: dir,
                },
                mesh,
                ids,
                urls,
            )
        }
        Mode::Cluster { nodes, haproxy } => {
            let c = cluster::Cluster::start(
                BROKER_BIN.as_ref(),
                cluster::ClusterSpec {
                    nodes: *nodes,
                    haproxy: *haproxy,
                    serve_flags: Vec::new(),
                },
            );
            let (mesh, ids) =
                enroll(Admin::open_store(c.dir.path(), Some(&c.database_url)).expect("admin"));
            let urls = (0..keys.len())
                .map(|i| match &c.haproxy {
                    Some(p) => p.ws_url(),
                    None => c.nodes[i % c.nodes.len()].ws_url(),
                })
                .collect();
            (Brokers::Cluster(Box::new(c)), mesh, ids, urls)
        }
    }
}

fn main() {
    let o = parse_opts();
    let total = o.members * o.messages;
    println!(
        "claudemesh broker load test: {} members x {} messages each = {} messages, rate {} msg/s total, window {} per member, {}-byte texts",
        o.members,
        o.messages,
        total,
        if o.rate > 0.0 {
            format!("{}", o.rate)
        } else {
            "unpaced".into()
        },
        o.window,
        o.text_bytes
    );

    let keys: Vec<Keys> = (0..o.members)
        .map(|_| {
            let key = MemberSecretKey::generate().expect("key");
            let pubkey = key.public_key();
            Keys { key, pubkey }
        })
        .collect();
    let plans = seal_plans(&o, &keys);

    let mut runs = Vec::new();
    if o.baseline {
        runs.push(Mode::Sqlite);
    }
    runs.push(o.mode.clone());
    let reports: Vec<Report> = runs
        .iter()
        .map(|mode| run(&o, mode, &keys, &plans))
        .collect();

    if reports.len() > 1 {
        println!("=== side by side (same run, same sealed messages) ===");
        println!(
            "| setup | delivered exactly once | not delivered | p50 ms | p99 ms | messages/s | peak RSS per node |"
        );
        println!("|---|---|---|---|---|---|---|");
        for r in &reports {
            let rss: Vec<String> = r
                .rss
                .iter()
                .map(|(n, mb)| match mb {
                    Some(mb) => format!("{n} {mb:.1} MB"),
                    None => format!("{n} ?"),
                })
                .collect();
            println!(
                "| {} | {:.3} % ({}/{}) | {} | {:.2} | {:.2} | {:.0} | {} |",
                r.label,
                100.0 * r.delivered_once as f64 / r.total as f64,
                r.delivered_once,
                r.total,
                r.lost,
                r.p50,
                r.p99,
                r.per_sec,
                rss.join(", ")
            );
        }
    }
    if reports.iter().any(|r| !r.ok) {
        std::process::exit(1);
    }
}

/// Plans and seals every message before any clock starts, on all cores.
fn seal_plans(o: &Opts, keys: &[Keys]) -> Vec<Vec<Planned>> {
    let total = o.members * o.messages;
    let sealing = Instant::now();
    let filler = "x".repeat(o.text_bytes.saturating_sub(40));
    let plans: Vec<Vec<Planned>> = std::thread::scope(|s| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let chunk = o.members.div_ceil(threads);
        let handles: Vec<_> = (0..o.members)
            .collect::<Vec<_>>()
            .chunks(chunk)
            .map(|senders| {
                let senders = senders.to_vec();
                let filler = &filler;
                s.spawn(move || {
                    senders
                        .into_iter()
                        .map(|i| {
                            let mut rng = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                            (0..o.messages)
                                .map(|k| {
                                    rng ^= rng << 13;
                                    rng ^= rng >> 7;
                                    rng ^= rng << 17;
                                    let mut to = (rng % (o.members as u64 - 1)) as usize;
                                    if to >= i {
                                        to += 1;
                                    }
                                    let body =
                                        json!({"text": format!("m{i}-{k} {filler}")}).to_string();
                                    let env = envelope::seal(
                                        body.as_bytes(),
                                        &keys[to].pubkey,
                                        &keys[i].key,
                                    )
                                    .expect("seal");
                                    let frame = json!({
                                        "type": "send",
                                        "id": format!("m{i}-{k}"),
                                        "to": format!("{}/s{to}", keys[to].pubkey.to_hex()),
                                        "priority": "now",
                                        "envelopes": [env],
                                    })
                                    .to_string();
                                    Planned { to, frame }
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("sealer"))
            .collect()
    });
    println!(
        "sealed {total} envelopes in {:.1} s (not timed)",
        sealing.elapsed().as_secs_f64()
    );
    plans
}

/// One run on `mode`: start, load, stop, check, print.
fn run(o: &Opts, mode: &Mode, keys: &[Keys], plans: &[Vec<Planned>]) -> Report {
    let total = o.members * o.messages;
    println!("=== {} ===", mode.label());
    let mut expected = vec![0usize; o.members];
    let mut destination: Vec<Vec<usize>> = Vec::with_capacity(o.members);
    for p in plans {
        destination.push(p.iter().map(|x| x.to).collect());
        for x in p {
            expected[x.to] += 1;
        }
    }

    let (brokers, mesh_id, member_ids, urls) = start_brokers(mode, keys);
    let nodes = brokers.nodes();
    let pids: Vec<u32> = nodes.iter().map(|n| n.1).collect();
    let cpu_of = |pids: &[u32]| -> Option<u64> { pids.iter().map(|p| cpu_ticks(*p)).sum() };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (logs, elapsed, broker_cpu) = rt.block_on(async {
        let (start_tx, start_rx) = tokio::sync::watch::channel(None);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(o.members);
        let deadline = Instant::now() + o.deadline;
        let mut tasks = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let frames = plan.iter().map(|p| p.frame.clone()).collect();
            tasks.push(tokio::spawn(run_client(
                urls[i].clone(),
                i,
                mesh_id.clone(),
                (keys[i].key.clone(), member_ids[i].clone()),
                frames,
                expected[i],
                o.rate / o.members as f64,
                o.window,
                ready_tx.clone(),
                start_rx.clone(),
                deadline,
                o.idle,
            )));
        }
        // Every client connects and says hello before the clock starts.
        drop(ready_tx);
        for _ in 0..o.members {
            ready_rx.recv().await.expect("a client failed to connect");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu0 = cpu_of(&pids);
        let own0 = cpu_ticks(std::process::id());
        let t0 = Instant::now();
        start_tx.send_replace(Some(t0));
        let mut logs = Vec::new();
        for t in tasks {
            logs.push(t.await.expect("client task"));
        }
        let elapsed = t0.elapsed();
        let cpu1 = cpu_of(&pids);
        let own1 = cpu_ticks(std::process::id());
        let diff = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 100.0),
            _ => None,
        };
        (logs, elapsed, (diff(cpu0, cpu1), diff(own0, own1)))
    });
    let rss: Vec<(String, Option<f64>)> = nodes
        .iter()
        .map(|(name, pid, _)| {
            (
                name.clone(),
                proc_status(*pid, "VmHWM:").map(|kb| kb as f64 / 1024.0),
            )
        })
        .collect();
    let pages: Vec<String> = nodes.iter().map(|(_, _, port)| scrape(*port)).collect();
    brokers.stop();
    // Join acks and pushes; check exactly-once and the right recipient.
    let mut send_at: HashMap<&str, (usize, usize, Instant, Instant)> =
        HashMap::with_capacity(total);
    let mut ack_lat = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        errors.extend(log.errors.iter().map(|e| format!("client {i}: {e}")));
        for (k, ack) in log.acks.iter().enumerate() {
            if let (Some((mid, at)), Some(sent)) = (ack, log.sent.get(k)) {
                ack_lat.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
                send_at.insert(mid.as_str(), (i, k, *sent, *at));
            }
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(total);
    let mut e2e = Vec::with_capacity(total);
    let mut wrong_recipient = 0usize;
    let mut last_push = None::<Instant>;
    let mut first_send = None::<Instant>;
    for log in &logs {
        if let Some(s) = log.sent.first() {
            first_send = Some(first_send.map_or(*s, |f: Instant| f.min(*s)));
        }
    }
    for (j, log) in logs.iter().enumerate() {
        for (mid, at, _, _, _) in &log.pushes {
            *seen.entry(mid.as_str()).or_default() += 1;
            last_push = Some(last_push.map_or(*at, |l: Instant| l.max(*at)));
            if let Some((i, k, sent, _)) = send_at.get(mid.as_str()) {
                if destination[*i][*k] != j {
                    wrong_recipient += 1;
                }
                e2e.push(at.duration_since(*sent).as_secs_f64() * 1000.0);
            }
        }
    }
    let delivered_once = send_at.keys().filter(|m| seen.get(*m) == Some(&1)).count();
    let duplicates = seen.values().filter(|n| **n > 1).count();
    let missing = send_at.keys().filter(|m| !seen.contains_key(*m)).count();

    // Decrypt everything received (after the clock).
    let opening = Instant::now();
    let bad_plaintext: usize = std::thread::scope(|s| {
        let handles: Vec<_> = logs
            .chunks(logs.len().div_ceil(2).max(1))
            .enumerate()
            .map(|(c, chunk)| {
                let peers = keys;
                let send_at = &send_at;
                let base = c * logs.len().div_ceil(2).max(1);
                s.spawn(move || {
                    let by_hex: HashMap<String, &MemberPublicKey> = peers
                        .iter()
                        .map(|p| (p.pubkey.to_hex(), &p.pubkey))
                        .collect();
                    let mut bad = 0;
                    for (off, log) in chunk.iter().enumerate() {
                        let me = &peers[base + off].key;
                        for (mid, _, from, nonce, ct) in &log.pushes {
                            let ok = by_hex
                                .get(from)
                                .and_then(|pk| envelope::open(nonce, ct, pk, me).ok())
                                .and_then(|plain| {
                                    let v: serde_json::Value =
                                        serde_json::from_slice(&plain).ok()?;
                                    let (i, k, _, _) = send_at.get(mid.as_str())?;
                                    v["text"]
                                        .as_str()?
                                        .starts_with(&format!("m{i}-{k} "))
                                        .then_some(())
                                });
                            if ok.is_none() {
                                bad += 1;
                            }
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(usize::MAX))
            .sum()
    });
    let opening = opening.elapsed();

    ack_lat.sort_by(f64::total_cmp);
    e2e.sort_by(f64::total_cmp);
    let span = match (first_send, last_push) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => f64::NAN,
    };
    println!("--- results ---");
    println!(
        "sent {} / acked {} / delivered exactly once {} of {} ({:.3} %)",
        logs.iter().map(|l| l.sent.len()).sum::<usize>(),
        send_at.len(),
        delivered_once,
        total,
        100.0 * delivered_once as f64 / total as f64
    );
    println!(
        "duplicates {duplicates}, missing {missing}, wrong recipient {wrong_recipient}, bad plaintext {bad_plaintext} (decrypted {} pushes in {:.1} s, not timed)",
        seen.values().sum::<usize>(),
        opening.as_secs_f64()
    );
    println!(
        "end-to-end latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        pct(&e2e, 0.50),
        pct(&e2e, 0.95),
        pct(&e2e, 0.99),
        e2e.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "send->ack latency ms:   p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}",
        pct(&ack_lat, 0.50),
        pct(&ack_lat, 0.95),
        pct(&ack_lat, 0.99),
        ack_lat.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "throughput: {:.0} messages/s delivered (first send to last push {:.2} s; whole run {:.2} s)",
        delivered_once as f64 / span,
        span,
        elapsed.as_secs_f64()
    );
    if let Some(cpu) = broker_cpu.0 {
        println!(
            "broker CPU: {:.2} s over the run = {:.2} cores",
            cpu,
            cpu / elapsed.as_secs_f64()
        );
    }
    if let Some(cpu) = broker_cpu.1 {
        println!(
            "load generator CPU: {:.2} s over the run = {:.2} cores",
            cpu,
            cpu / elapsed.as_secs_f64()
        );
    }
    // Summed over the nodes.
    let sum = |name: &str| -> Option<f64> { pages.iter().map(|p| counter(p, name)).sum() };
    if let (Some(c), Some(w)) = (
        sum("claudemesh_broker_db_commits_total"),
        sum("claudemesh_broker_db_writes_total"),
    ) {
        println!(
            "broker group commits: {c:.0} transactions for {w:.0} writes ({:.1} per commit)",
            w / c.max(1.0)
        );
        println!(
            "broker writer time: applying {:.2} s, committing {:.2} s",
            sum("claudemesh_broker_db_apply_seconds_total").unwrap_or(f64::NAN),
            sum("claudemesh_broker_db_commit_seconds_total").unwrap_or(f64::NAN)
        );
    }
    for (name, mb) in &rss {
        match mb {
            Some(mb) => println!("{name} peak RSS (VmHWM): {mb:.1} MB"),
            None => println!("{name} peak RSS: unavailable (no /proc)"),
        }
    }
    for e in errors.iter().take(10) {
        println!("  {e}");
    }
    let ok =
        delivered_once == total && duplicates == 0 && wrong_recipient == 0 && bad_plaintext == 0;
    println!(
        "verdict: {}",
        if ok {
            "every message delivered exactly once".to_owned()
        } else {
            format!(
                "FAILED delivery checks ({} of {total} not delivered exactly once)",
                total - delivered_once
            )
        }
    );
    Report {
        label: mode.label(),
        total,
        delivered_once,
        lost: total - delivered_once,
        p50: pct(&e2e, 0.50),
        p99: pct(&e2e, 0.99),
        per_sec: delivered_once as f64 / span,
        rss,
        ok,
    }
}
