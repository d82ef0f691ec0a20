//! The real binary: traffic, `kill -9` mid-stream, restart on the same
//! data directory; every message that was acked must be delivered.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use claudemesh_broker::admin::Admin;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_broker(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--send-rate",
            "100000",
            "--send-burst",
            "100000",
        ])
        .arg("--data")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the broker binary starts")
}

async fn wait_healthy(port: u16) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && http(addr, "GET", "/healthz", None).await.0 == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the broker did not become healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acked_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::open(dir.path()).unwrap();
    let mesh = admin.create_mesh("k9").unwrap();
    let enroll = |name: &str| Member::enroll(&admin, &mesh, name);
    let (alice, bob) = (enroll("alice"), enroll("bob"));
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");

    let mut child = spawn_broker(dir.path(), port);
    wait_healthy(port).await;

    // Alice streams sends to bob (offline) while reading acks; the broker
    // is killed once some hundreds are acked and more are in flight.
    const TOTAL: usize = 3000;
    let mut a = Client::connect(&url).await;
    a.hello(
        &alice,
        "a1",
        Some("alice"),
        claudemesh_protocol::wire::ConnectionRole::Session,
    )
    .await;
    let frames: Vec<String> = (0..TOTAL)
        .map(|i| {
            send_frame(
                &format!("k{i}"),
                &bob.pubkey(),
                vec![alice.envelope(&bob, &format!("n{i}"))],
            )
            .to_string()
        })
        .collect();
    let (mut tx, mut rx) = a.ws.split();
    let writer = tokio::spawn(async move {
        for f in frames {
            if tx.send(Message::Text(f.into())).await.is_err() {
                break;
            }
        }
    });
    let mut acked: HashMap<String, String> = HashMap::new();
    let mut killed = false;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(WAIT, rx.next()).await {
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        if v["type"] == "ack" {
            acked.insert(
                v["messageId"].as_str().unwrap().to_owned(),
                v["id"].as_str().unwrap().to_owned(),
            );
            if acked.len() == 500 && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
    }
    assert!(killed, "the broker was killed mid-traffic");
    child.wait().unwrap();
    writer.abort();
    assert!(
        acked.len() >= 500 && acked.len() < TOTAL,
        "acked {}",
        acked.len()
    );

    let mut child = spawn_broker(dir.path(), port);
    wait_healthy(port).await;
    let mut bc = Client::connect(&url).await;
    bc.hello(
        &bob,
        "b1",
        Some("bob"),
        claudemesh_protocol::wire::ConnectionRole::Session,
    )
    .await;
    let mut delivered = HashSet::new();
    while !acked.keys().all(|m| delivered.contains(m)) {
        let p = bc.recv_type("push").await;
        let mid = p["messageId"].as_str().unwrap().to_owned();
        let text = bob.open(&p, &alice);
        if let Some(client_id) = acked.get(&mid) {
            assert_eq!(text, format!("n{}", &client_id[1..]));
        }
        assert!(
            delivered.insert(mid.clone()),
            "pushed twice on one connection"
        );
        bc.send(json!({"type":"client_ack","messageId": mid})).await;
    }

    // Send ids survive too: a retry of an acked send is a duplicate.
    let (mid, cid) = acked.iter().next().unwrap();
    let mut a = Client::connect(&url).await;
    a.hello(
        &alice,
        "a1",
        Some("alice"),
        claudemesh_protocol::wire::ConnectionRole::Session,
    )
    .await;
    a.send(send_frame(
        cid,
        &bob.pubkey(),
        vec![alice.envelope(&bob, "again")],
    ))
    .await;
    let dup = a.recv_type("ack").await;
    assert_eq!(dup["duplicate"], true);
    assert_eq!(dup["messageId"], mid.as_str());

    // SIGTERM: a graceful stop, clients see 1001.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (_, closed) = a.recv_close().await;
    assert_eq!(closed.code, 1001);
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful exit, got {exit:?}");
}
