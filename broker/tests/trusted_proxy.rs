//! Per-client caps behind a proxy (issue 24, part 2): with
//! `--trusted-proxy`, a connection from the proxy is counted under the
//! client address of its PROXY v2 header (a real HAProxy with
//! `send-proxy-v2`, from the shipped deploy/haproxy.cfg) or of its
//! `X-Forwarded-For`; from any other peer neither is believed.
//!
//! The `X-Forwarded-For` cases have the test client play the proxy (nginx
//! and Caddy are not installed here): it connects from the trusted address
//! and sends the header as they do.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use claudemesh_protocol::wire::ConnectionRole;
use common::cluster::{Haproxy, free_port};
use common::*;

/// A WebSocket upgrade from `source` to `to` (the broker or the proxy),
/// with an `X-Forwarded-For` header when given. `Err` with what failed
/// when it is not upgraded.
async fn upgrade_from(
    source: &str,
    to: SocketAddr,
    forwarded_for: Option<&str>,
) -> Result<Client, String> {
    let tcp = tcp_from(source, to).await;
    let mut req = format!("ws://{to}/ws").into_client_request().unwrap();
    if let Some(xff) = forwarded_for {
        req.headers_mut()
            .insert("x-forwarded-for", xff.parse().unwrap());
    }
    let upgraded = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)),
    )
    .await
    .map_err(|_| "the upgrade timed out".to_owned())?;
    match upgraded {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(e) => Err(e.to_string()),
    }
}

/// The broker's counter `series`, waiting (up to `WAIT`) until it is at
/// least `min`; its last value.
async fn counter_reaches(b: &TestBroker, series: &str, min: f64) -> Option<f64> {
    let mut last = None;
    for _ in 0..300 {
        last = metric(&b.metrics().await, series);
        if last.is_some_and(|v| v >= min) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

const PER_IP: &str =
    "claudemesh_broker_connections_rejected_total{reason=\"too_many_unauthenticated_from_ip\"}";
const UNTRUSTED: &str =
    "claudemesh_broker_connections_rejected_total{reason=\"untrusted_proxy_header\"}";

/// Starts HAProxy (the shipped configuration) in front of `b`, waiting
/// until its health checks, which carry a LOCAL PROXY header, mark the
/// broker up when `expect_up`.
fn haproxy_in_front(b: &TestBroker, expect_up: bool) -> Haproxy {
    tokio::task::block_in_place(|| {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let proxy = Haproxy::start(b.dir.path(), listen, &[("n1".to_owned(), b.addr)]);
        if expect_up {
            proxy.wait_status("n1", "UP");
        }
        proxy
    })
}

fn capped_behind_a_proxy(c: &mut claudemesh_broker::BrokerConfig, trusted: bool) {
    c.max_unauthenticated = 100;
    c.max_unauthenticated_per_ip = 3;
    c.hello_timeout = Duration::from_secs(120);
    c.unauthenticated_deadline = Duration::from_secs(120);
    if trusted {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_each_client_address_has_its_own_cap() {
    let b = TestBroker::start_with(|c| capped_behind_a_proxy(c, true)).await;
    let alice = b.member("alice");
    let proxy = haproxy_in_front(&b, true);
    // 127.0.0.2 holds its three unauthenticated connections (upgraded
    // WebSockets that never say hello) through the proxy.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(upgrade_from("127.0.0.2", proxy.addr, None).await.unwrap());
    }
    // A fourth from the same client is refused…
    let fourth = upgrade_from("127.0.0.2", proxy.addr, None).await;
    assert!(
        fourth.is_err(),
        "a fourth connection from 127.0.0.2 was upgraded"
    );
    assert!(
        counter_reaches(&b, PER_IP, 1.0).await >= Some(1.0),
        "the refusal was not counted per address"
    );
    // …while another client, through the same proxy, still gets in.
    let mut c = upgrade_from("127.0.0.3", proxy.addr, None).await.unwrap();
    c.hello(&alice, "a1", Some("alice"), ConnectionRole::Session)
        .await;
    c.sync().await;
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxy_a_proxy_header_is_not_believed() {
    let b = TestBroker::start_with(|c| capped_behind_a_proxy(c, false)).await;
    let proxy = haproxy_in_front(&b, false);
    // HAProxy's header (its health checks' and the clients') closes the
    // connection: nothing gets through.
    let through = upgrade_from("127.0.0.2", proxy.addr, None).await;
    assert!(through.is_err(), "upgraded through an untrusted proxy");
    assert!(
        counter_reaches(&b, UNTRUSTED, 1.0).await >= Some(1.0),
        "the PROXY header from an untrusted peer was not counted"
    );
    // A client forging a header directly is closed the same way.
    let before = metric(&b.metrics().await, UNTRUSTED).unwrap_or(0.0);
    let mut forged = tcp_from("127.0.0.2", b.addr).await;
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    header.extend_from_slice(&[10, 9, 9, 9, 127, 0, 0, 1, 0, 80, 0, 80]);
    header.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    forged.write_all(&header).await.unwrap();
    let answer = read_all(&mut forged).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(counter_reaches(&b, UNTRUSTED, before + 1.0).await >= Some(before + 1.0));
    // The broker itself still serves its direct clients.
    let alice = b.member("alice");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    a.sync().await;
}

async fn read_all(s: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn forwarded_for_counts_clients_from_a_trusted_proxy_only() {
    let b = TestBroker::start_with(|c| {
        capped_behind_a_proxy(c, true);
        // So that an untrusted loopback peer is capped as well.
        c.per_ip_cap_on_loopback = true;
    })
    .await;
    let alice = b.member("alice");
    // The trusted proxy (127.0.0.1) relays three clients from 10.0.0.1.
    let mut held = Vec::new();
    for _ in 0..3 {
        let c = upgrade_from("127.0.0.1", b.addr, Some("10.6.6.6, 10.0.0.1"))
            .await
            .unwrap();
        held.push(c);
    }
    let fourth = upgrade_from("127.0.0.1", b.addr, Some("10.0.0.1")).await;
    let refused = fourth.err().unwrap_or_default();
    assert!(refused.contains("429"), "{refused}");
    // Another client through the same proxy gets in; the proxy's own
    // address holds nothing against it.
    let mut c = upgrade_from("127.0.0.1", b.addr, Some("10.0.0.2"))
        .await
        .unwrap();
    c.hello(&alice, "a1", Some("alice"), ConnectionRole::Session)
        .await;
    // Without the header a connection from the proxy counts as the
    // proxy's own, which is not capped (one over the cap here).
    for _ in 0..4 {
        held.push(upgrade_from("127.0.0.1", b.addr, None).await.unwrap());
    }
    // From an untrusted peer the header changes nothing: 127.0.0.2 is
    // capped as itself whatever it claims.
    for i in 0..3 {
        let xff = format!("10.1.0.{i}");
        held.push(upgrade_from("127.0.0.2", b.addr, Some(&xff)).await.unwrap());
    }
    let claimed = upgrade_from("127.0.0.2", b.addr, Some("10.1.0.9")).await;
    assert!(
        claimed.is_err(),
        "X-Forwarded-For from an untrusted peer was believed"
    );
    c.sync().await;
    drop(held);
}
