//! What a stranger can hold without authenticating: connections, slow
//! headers and bodies, idle keep-alive. Each test pushes past a cap or a
//! deadline and checks that a member is still served meanwhile.
//!
//! One node by nature: these caps and deadlines belong to each node's
//! listening socket and share nothing with the other nodes (docs/broker.md,
//! "Running a cluster": per-address caps behind a balancer), so a cluster
//! adds nothing here.

mod common;

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use claudemesh_protocol::wire::ConnectionRole;
use common::*;

/// True when the broker closes `s` (EOF or reset) before `WAIT`.
async fn closed_by_broker(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    read.is_ok()
}

/// A WebSocket client on a connection from `source`, with a hello.
async fn member_from(source: &str, b: &TestBroker, m: &Member, sid: &str) -> Client {
    let tcp = tcp_from(source, b.addr).await;
    let (ws, _) =
        tokio_tungstenite::client_async(b.ws_url(), tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    let mut c = Client { ws };
    c.hello(m, sid, Some(sid), ConnectionRole::Session).await;
    c
}

#[tokio::test]
async fn full_unauthenticated_slots_evict_the_oldest_and_members_keep_their_room() {
    let b = TestBroker::start_with(|c| {
        c.max_unauthenticated = 8;
        c.max_unauthenticated_per_ip = 100;
        c.unauthenticated_deadline = Duration::from_secs(120);
    })
    .await;
    let alice = b.member("alice");
    let bob = b.member("bob");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;

    let before = rss_bytes();
    // A stranger fills every unauthenticated slot with idle sockets.
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(b.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    // A member still gets in, at the first try: the oldest stranger makes
    // room for it.
    let mut bob_c = member_from("127.0.0.1", &b, &bob, "b1").await;
    assert!(
        closed_by_broker(&mut idle[0]).await,
        "the oldest stranger was kept"
    );
    // Hundreds more strangers each push out the oldest, holding nothing
    // beyond the slots.
    let mut crowd = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(b.addr).await.unwrap();
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n").await;
        crowd.push(s);
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 50 << 20, "RSS grew by {} MB", grown >> 20);
    // Authenticated connections are never evicted: both members talk.
    a.sync().await;
    a.send(send_frame(
        "m1",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "through the crowd")],
    ))
    .await;
    assert_eq!(a.recv_type("ack").await["duplicate"], false);
    let push = bob_c.recv_type("push").await;
    assert_eq!(bob.open(&push, &alice), "through the crowd");
    // The metrics request gets in the same way (evicting one more).
    let (_, metrics) = try_get(b.addr, "/metrics")
        .await
        .expect("/metrics answered");
    let evicted = metric(&metrics, "claudemesh_broker_connections_evicted_total");
    // bob's connection, then the 300 and the metrics request but the
    // first (bob's authenticated slot left one free) each evicted one.
    assert_eq!(evicted, Some(301.0), "{metrics}");
    // The slots are full, the metrics request's included.
    let open = metric(&metrics, "claudemesh_broker_connections_unauthenticated");
    assert_eq!(open, Some(8.0), "{metrics}");
    let limit = metric(
        &metrics,
        "claudemesh_broker_connections_unauthenticated_limit",
    );
    assert_eq!(limit, Some(8.0), "{metrics}");
    drop(crowd);
    drop(idle);
}

#[tokio::test]
async fn unauthenticated_connections_are_capped_per_ip() {
    let b = TestBroker::start_with(|c| {
        c.max_unauthenticated = 100;
        c.max_unauthenticated_per_ip = 4;
        c.per_ip_cap_on_loopback = true;
        c.unauthenticated_deadline = Duration::from_secs(120);
    })
    .await;
    let alice = b.member("alice");
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tcp_from("127.0.0.1", b.addr).await);
    }
    let mut extra = tcp_from("127.0.0.1", b.addr).await;
    assert!(
        closed_by_broker(&mut extra).await,
        "a fifth from one IP was kept"
    );
    // Another address is not affected.
    let mut c = member_from("127.0.0.2", &b, &alice, "a1").await;
    c.sync().await;
}

#[tokio::test]
async fn slow_headers_slow_bodies_and_idle_connections_are_cut_at_the_deadline() {
    let b = TestBroker::start_with(|c| {
        c.unauthenticated_deadline = Duration::from_secs(1);
    })
    .await;
    let alice = b.member("alice");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;

    // Headers a byte at a time, for ever.
    let mut slow_headers = TcpStream::connect(b.addr).await.unwrap();
    slow_headers
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..1000 {
            if slow_headers.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(1), slow_headers.read(&mut buf)).await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                _ => {}
            }
        }
        false
    };
    assert!(
        tokio::time::timeout(WAIT, trickle).await.unwrap_or(false),
        "slow headers were never cut"
    );

    // A body shorter than its Content-Length.
    let mut slow_body = TcpStream::connect(b.addr).await.unwrap();
    slow_body
        .write_all(b"POST /v1/join HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inv")
        .await
        .unwrap();
    assert!(
        closed_by_broker(&mut slow_body).await,
        "a slow body was never cut"
    );

    // A keep-alive connection left idle after an answer.
    let mut keep = TcpStream::connect(b.addr).await.unwrap();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_broker(&mut keep).await,
        "an idle keep-alive stayed open"
    );

    // A WebSocket that upgraded but never says hello gets its close too
    // (the hello timeout or the deadline, whichever comes first).
    let mut silent = b.connect().await;
    let ended = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        loop {
            match silent.ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                | Some(Err(_))
                | None => {
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a WebSocket without hello stayed open");

    // The authenticated connection outlives the deadline.
    a.sync().await;
    a.send(json!({"type":"set_status","status":"working"}))
        .await;
    a.sync().await;
}

#[tokio::test]
async fn http_bodies_are_capped() {
    let b = TestBroker::start().await;
    let big = json!({"invite": "x".repeat(claudemesh_protocol::limits::MAX_HTTP_BODY_BYTES), "pubkey": "00"});
    let (status, _) = post(b.addr, "/v1/join", &big).await;
    assert_eq!(status, 413);
}

/// The broker binary raises its soft open-file limit at start (started
/// here with a soft limit of 256, as a default 1 024 would leave a
/// thousand idle sockets able to exhaust it).
#[test]
fn the_broker_raises_its_open_file_limit_at_start() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    claudemesh_broker::admin::Admin::open(dir.path())
        .unwrap()
        .create_mesh("team")
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"));
    cmd.arg("--data")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; the closure touches no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
            l.rlim_cur = 256.min(l.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert!(
        lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("broker listening")),
        "the broker did not start"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    let hard_n: u64 = hard.parse().unwrap_or(u64::MAX);
    let expected = hard_n.min(1 << 20);
    assert_eq!(soft.parse::<u64>().unwrap(), expected, "{line}");
    assert!(expected > 256, "{line}");
}
