//! The offline queue, redelivery until `client_ack`, duplicate
//! suppression, durability across a restart, graceful shutdown, and the
//! HTTP probes.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn offline_messages_wait_and_are_pushed_on_every_reconnect_until_acked() {
    let b = TestBroker::start().await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;

    a.send(send_frame(
        "m1",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "one")],
    ))
    .await;
    let ack1 = a.recv_type("ack").await;
    assert_eq!(
        ack1["recipients"],
        json!([{"member": bob.pubkey(), "state": "queued"}])
    );
    let to_b1 = format!("{}/b1", bob.pubkey());
    a.send(send_frame("m2", &to_b1, vec![alice.envelope(&bob, "two")]))
        .await;
    let ack2 = a.recv_type("ack").await;
    assert_eq!(
        ack2["recipients"],
        json!([{"member": bob.pubkey(), "sessionId": "b1", "state": "queued"}])
    );
    // A name that is neither a listed session nor a member names no one.
    a.send(send_frame("m0", "nobody", vec![alice.envelope(&bob, "x")]))
        .await;
    assert_eq!(a.recv_type("error").await["code"], "unknown_target");

    // First connection: both arrive, in order; no client_ack.
    let (mut bc, _) = b.session(&bob, "b1", "bob").await;
    let p1 = bc.recv_type("push").await;
    let p2 = bc.recv_type("push").await;
    assert_eq!(p1["messageId"], ack1["messageId"]);
    assert_eq!(p1["sessions"], json!([]));
    assert_eq!(bob.open(&p1, &alice), "one");
    assert_eq!(p2["messageId"], ack2["messageId"]);
    assert_eq!(p2["sessions"], json!(["b1"]));
    bc.close().await;

    // Second connection: pushed again; this time m1 is acknowledged.
    let (mut bc, _) = b.session(&bob, "b1", "bob").await;
    let again: Vec<_> = [bc.recv_type("push").await, bc.recv_type("push").await]
        .iter()
        .map(|p| p["messageId"].clone())
        .collect();
    assert_eq!(
        again,
        vec![ack1["messageId"].clone(), ack2["messageId"].clone()]
    );
    bc.send(json!({"type":"client_ack","messageId": ack1["messageId"]}))
        .await;
    let r = a.recv_type("receipt").await;
    assert_eq!(r["messageId"], ack1["messageId"]);
    assert_eq!(r["state"], "delivered");
    assert_eq!(
        r["sessionId"], "",
        "a whole-member delivery names no session"
    );
    bc.close().await;

    // While bob is away, one more; on return m2 and m3 come, m1 does not
    // (redelivery is oldest first, so m1 would have come first).
    a.send(send_frame(
        "m3",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "three")],
    ))
    .await;
    let ack3 = a.recv_type("ack").await;
    let (mut bc, _) = b.session(&bob, "b1", "bob").await;
    assert_eq!(bc.recv_type("push").await["messageId"], ack2["messageId"]);
    assert_eq!(bc.recv_type("push").await["messageId"], ack3["messageId"]);
    let m = b.metrics().await;
    assert!(metric(&m, "claudemesh_broker_queue_depth").unwrap() >= 2.0);
}

#[tokio::test]
async fn a_repeated_send_id_is_acked_as_duplicate_and_delivered_once() {
    let b = TestBroker::start_with(|c| c.presence_grace = Duration::from_millis(100)).await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (mut bc, _) = b.session(&bob, "b1", "bob").await;

    let frame = send_frame("same", "bob", vec![alice.envelope(&bob, "once")]);
    a.send(frame.clone()).await;
    let first = a.recv_type("ack").await;
    assert_eq!(first["duplicate"], false);
    a.send(frame.clone()).await;
    let second = a.recv_type("ack").await;
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["messageId"], first["messageId"]);
    assert_eq!(second["recipients"][0]["member"], bob.pubkey());
    a.send(send_frame(
        "next",
        "bob",
        vec![alice.envelope(&bob, "next")],
    ))
    .await;
    let next = a.recv_type("ack").await;
    assert_eq!(bc.recv_type("push").await["messageId"], first["messageId"]);
    assert_eq!(bc.recv_type("push").await["messageId"], next["messageId"]);

    // Still a duplicate once the target is gone (bob left, the name is free).
    bc.close().await;
    loop {
        let e = a.recv_type("event").await;
        if e["event"] == "peer_left" {
            break;
        }
    }
    a.send(frame).await;
    let third = a.recv_type("ack").await;
    assert_eq!(
        (third["duplicate"].as_bool(), &third["messageId"]),
        (Some(true), &first["messageId"])
    );
    assert_eq!(
        metric(
            &b.metrics().await,
            "claudemesh_broker_messages_duplicate_total"
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn acked_messages_and_send_ids_survive_a_restart() {
    let mut b = TestBroker::start().await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let mut acked = Vec::new();
    for i in 0..20 {
        a.send(send_frame(
            &format!("k{i}"),
            &bob.pubkey(),
            vec![alice.envelope(&bob, &format!("n{i}"))],
        ))
        .await;
    }
    for _ in 0..20 {
        let ack = a.recv_type("ack").await;
        acked.push((
            ack["id"].as_str().unwrap().to_owned(),
            ack["messageId"].as_str().unwrap().to_owned(),
        ));
    }
    drop(a);
    b.restart_with(|_| {}).await;

    let (mut bc, _) = b.session(&bob, "b1", "bob").await;
    let mut got = HashSet::new();
    while got.len() < 20 {
        let p = bc.recv_type("push").await;
        let id = p["messageId"].as_str().unwrap().to_owned();
        let (client_id, _) = acked
            .iter()
            .find(|(_, m)| *m == id)
            .expect("an acked message");
        assert_eq!(bob.open(&p, &alice), format!("n{}", &client_id[1..]));
        assert!(got.insert(id), "pushed twice on one connection");
    }
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    a.send(send_frame(
        "k0",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "n0")],
    ))
    .await;
    let dup = a.recv_type("ack").await;
    assert_eq!(dup["duplicate"], true);
    assert_eq!(dup["messageId"], acked[0].1.as_str());
}

#[tokio::test]
async fn graceful_shutdown_closes_clients_with_1001() {
    let mut b = TestBroker::start().await;
    let alice = b.member("alice");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let mut d = b.daemon(&b.member("bob")).await;
    b.shutdown().await;
    for c in [&mut a, &mut d] {
        let (_, closed) = c.recv_close().await;
        assert_eq!(
            closed,
            Closed {
                code: 1001,
                reason: "shutdown".into()
            }
        );
    }
}

#[tokio::test]
async fn healthz_and_metrics() {
    let b = TestBroker::start().await;
    let (status, body) = http(b.addr, "GET", "/healthz", None).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let alice = b.member("alice");
    let (_a, _) = b.session(&alice, "a1", "alice").await;
    let (status, text) = http(b.addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    for name in [
        "claudemesh_broker_connections_active 1",
        "claudemesh_broker_connections_accepted_total 1",
        "claudemesh_broker_connections_rejected_total{reason=\"replayed\"} 0",
        "claudemesh_broker_messages_routed_total 0",
        "claudemesh_broker_messages_queued_total 0",
        "claudemesh_broker_messages_delivered_total 0",
        "claudemesh_broker_queue_depth 0",
        "claudemesh_broker_hello_verify_seconds_count 1",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}
