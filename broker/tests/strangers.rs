//! A crowd of strangers cannot keep members out (issue 24, part 2): the
//! real broker binary on SQLite, started under `prlimit --nofile=1024:1024`
//! (so that it cannot raise its limit past 1 024), with 1 100 stranger
//! connections held open, some idle (connected, nothing sent) and some
//! slowloris (a WebSocket upgrade request a byte at a time). Two members
//! then connect at the first try, complete their hellos and exchange a
//! message, `/healthz` answers 200, and `/metrics` counts the evictions.
//!
//! The strangers come from 100 loopback addresses (11 each, under the
//! per-address cap of 64 even where loopback is capped), so that it is the
//! global cap that fills. Figures are printed, not asserted.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use claudemesh_broker::admin::Admin;
use claudemesh_protocol::wire::ConnectionRole;
use common::cluster::free_port;
use common::*;

const STRANGERS: usize = 1100;
const SLOWLORIS_EVERY: usize = 5;
const OPEN_FILES: u64 = 1024;

struct BrokerProcess(Child);

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The soft and hard open-file limits of process `pid`, from /proc.
fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    (f[3].parse().unwrap(), f[4].parse().unwrap())
}

/// Sends a WebSocket upgrade request a byte every 100 ms until the broker
/// closes the connection.
async fn slowloris(mut s: TcpStream) {
    let req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
    for byte in req.iter().cycle() {
        if s.write_all(&[*byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_strangers_cannot_keep_members_from_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::open(dir.path()).unwrap();
    let mesh = admin.create_mesh("team").unwrap();
    let alice = Member::enroll(&admin, &mesh, "alice");
    let bob = Member::enroll(&admin, &mesh, "bob");
    drop(admin);

    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = Command::new("prlimit")
        .arg(format!("--nofile={OPEN_FILES}:{OPEN_FILES}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_claudemesh-broker"))
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--listen", &addr.to_string()])
        .env_remove("CLAUDEMESH_BROKER_DATABASE_URL")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs the broker");
    let broker = BrokerProcess(child);
    let mut up = false;
    for _ in 0..300 {
        if let Some((200, _)) = try_get(addr, "/healthz").await {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the broker never answered /healthz");
    // prlimit execs the broker: the child's pid is the broker's.
    assert_eq!(
        nofile_of(broker.0.id()),
        (OPEN_FILES, OPEN_FILES),
        "the broker runs under the 1 024 open-file limit"
    );

    let started = Instant::now();
    let mut idle = Vec::new();
    let mut trickles = Vec::new();
    for i in 0..STRANGERS {
        let s = tcp_from(&format!("127.0.0.{}", 2 + i % 100), addr).await;
        if i % SLOWLORIS_EVERY == 0 {
            trickles.push(tokio::spawn(slowloris(s)));
        } else {
            idle.push(s);
        }
    }
    let connected = started.elapsed();

    // The unauthenticated cap is at most half the open-file limit, so at
    // least this many strangers were evicted once the broker has accepted
    // them all (each request below evicts one more).
    let at_least = (STRANGERS as u64 - OPEN_FILES / 2) as f64;
    let mut evicted = None;
    for _ in 0..100 {
        if let Some((200, text)) = try_get(addr, "/metrics").await {
            evicted = metric(&text, "claudemesh_broker_connections_evicted_total");
            if evicted.is_some_and(|n| n >= at_least) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let fds_with_crowd = std::fs::read_dir(format!("/proc/{}/fd", broker.0.id()))
        .map(|d| d.count())
        .ok();

    // The members connect once each: no retry.
    let hello_started = Instant::now();
    let mut a = Client::connect(&format!("ws://{addr}/ws")).await;
    a.hello(&alice, "a1", Some("alice"), ConnectionRole::Session)
        .await;
    let mut b = Client::connect(&format!("ws://{addr}/ws")).await;
    b.hello(&bob, "b1", Some("bob"), ConnectionRole::Session)
        .await;
    let hellos = hello_started.elapsed();
    a.send(send_frame(
        "m1",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "past the strangers")],
    ))
    .await;
    assert_eq!(a.recv_type("ack").await["duplicate"], false);
    let push = b.recv_type("push").await;
    assert_eq!(bob.open(&push, &alice), "past the strangers");
    b.send(send_frame(
        "m2",
        &alice.pubkey(),
        vec![bob.envelope(&alice, "and back")],
    ))
    .await;
    let push = a.recv_type("push").await;
    assert_eq!(alice.open(&push, &bob), "and back");

    let health = try_get(addr, "/healthz").await;
    assert_eq!(health.as_ref().map(|h| h.0), Some(200), "{health:?}");
    let (status, text) = try_get(addr, "/metrics").await.expect("/metrics answered");
    assert_eq!(status, 200);
    let evicted_end = metric(&text, "claudemesh_broker_connections_evicted_total");
    assert!(
        evicted_end.is_some_and(|n| n >= at_least),
        "evictions {evicted_end:?} (before the members: {evicted:?}), expected at least {at_least}"
    );
    let limit = metric(&text, "claudemesh_broker_connections_unauthenticated_limit");
    assert!(
        limit.is_some_and(|l| l <= (OPEN_FILES / 2) as f64),
        "unauthenticated limit {limit:?} under nofile {OPEN_FILES}"
    );
    let open = metric(&text, "claudemesh_broker_connections_unauthenticated");
    println!(
        "{STRANGERS} strangers ({} slowloris) connected in {connected:?}; evicted before the members: {evicted:?}, at the end: {evicted_end:?}; two hellos took {hellos:?}; the broker held {fds_with_crowd:?} descriptors with the crowd; unauthenticated slots {open:?} of {limit:?}",
        trickles.len()
    );
    for t in &trickles {
        t.abort();
    }
    drop(idle);
}
