//! Memory per connection: what one idle WebSocket costs the real
//! `claudemesh-broker` binary (a separate process, so the figure is the
//! broker's alone), before its hello and once authenticated.
//!
//! For each kind, a fresh broker is started and warmed up (a few
//! connections opened and closed), its RSS is read from /proc, N
//! connections are opened and left idle, and the RSS growth divided by N
//! is printed. Target (issue 13): under 16 KB each.
//!
//! ```text
//! cargo bench -p claudemesh-broker --bench conn_memory              # N=1000
//! cargo bench -p claudemesh-broker --bench conn_memory -- --count 500
//! ```

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use claudemesh_broker::admin::Admin;
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::wire::{ClientFrame, ConnectionRole};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connections per source address: below the per-IP cap, though loopback
/// is exempt by default.
const PER_SOURCE: usize = 50;

/// Connections one member may hold (the broker's default).
const PER_MEMBER: usize = 32;

struct Broker {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_broker(dir: &Path) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the broker binary starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the broker exited before listening")
            .unwrap();
        if line.contains("broker listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["listen"].as_str().unwrap().parse().unwrap();
        }
    };
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Broker { child, addr }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn open_ws(addr: SocketAddr, i: usize) -> Ws {
    let source = format!("127.0.0.{}:0", 1 + i / PER_SOURCE);
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(source.parse().unwrap()).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    tokio_tungstenite::client_async(
        format!("ws://{addr}/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap()
    .0
}

struct Enrolled {
    key: MemberSecretKey,
    member_id: String,
    mesh_id: String,
}

async fn hello(ws: &mut Ws, m: &Enrolled, session: &str, ts: i64) {
    let mut h = claudemesh_protocol::hello::signed_hello(
        &m.key,
        &m.mesh_id,
        &m.member_id,
        session,
        1,
        "",
        ts,
    );
    h.role = ConnectionRole::Daemon;
    ws.send(Message::text(ClientFrame::Hello(h).to_json()))
        .await
        .unwrap();
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) if t.as_str().contains("hello_ack") => return,
            Message::Text(t) => panic!("hello refused: {t}"),
            _ => {}
        }
    }
}

fn now_ms() -> i64 {
    claudemesh_broker::clock::system_now_ms()
}

/// Opens `n` connections (authenticating them when `members` is given)
/// and returns the broker's RSS growth per connection, in bytes.
async fn measure(dir: &Path, n: usize, members: Option<&[Enrolled]>) -> (f64, u64, u64) {
    let broker = spawn_broker(dir);
    let pid = broker.child.id();
    let mut ts = now_ms();
    // Warm-up: the first connections pay for lazily built state.
    for i in 0..20 {
        let mut ws = open_ws(broker.addr, i).await;
        if let Some(ms) = members {
            ts += 1;
            hello(&mut ws, &ms[0], &format!("warm{i}"), ts).await;
        }
        let _ = ws.close(None).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kb(pid);
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let mut ws = open_ws(broker.addr, i).await;
        if let Some(ms) = members {
            ts += 1;
            hello(&mut ws, &ms[i / PER_MEMBER], &format!("c{i}"), ts).await;
        }
        open.push(ws);
    }
    // Let the broker finish setting every connection up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kb(pid);
    drop(open);
    let per = (after.saturating_sub(before) as f64 * 1024.0) / n as f64;
    (per, before, after)
}

fn main() {
    let mut count = 1000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--count" {
            count = args.next().and_then(|v| v.parse().ok()).expect("--count N");
        }
    }
    claudemesh_broker::net::fdlimit::raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::open(dir.path()).unwrap();
    let mesh = admin.create_mesh("bench").unwrap();
    let members: Vec<Enrolled> = (0..count.div_ceil(PER_MEMBER))
        .map(|i| {
            let key = MemberSecretKey::generate().unwrap();
            let info = admin
                .enroll_member(&mesh.id, &key.public_key().to_hex(), &format!("m{i}"))
                .unwrap();
            Enrolled {
                key,
                member_id: info.id,
                mesh_id: mesh.id.clone(),
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (per, before, after) = measure(dir.path(), count, None).await;
        println!(
            "pre-hello WebSocket: {:.1} KB per connection ({count} connections, broker RSS {:.1} -> {:.1} MB)",
            per / 1024.0,
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
        let (per, before, after) = measure(dir.path(), count, Some(&members)).await;
        println!(
            "idle authenticated WebSocket: {:.1} KB per connection ({count} connections, broker RSS {:.1} -> {:.1} MB)",
            per / 1024.0,
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
    });
}
