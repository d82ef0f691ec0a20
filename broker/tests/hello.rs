//! The handshake: every rejection reason, in PROTOCOL.md's order, with its
//! error frame, close 1008 + reason, and rejection counter.

mod common;

use common::*;
use serde_json::{Value, json};

use claudemesh_protocol::wire::ConnectionRole;

/// Sends `frame` as the first frame on a connection to each node (the
/// one node, or every node of a cluster in turn) and expects a rejection
/// with `reason` from each.
async fn expect_rejected(b: &TestBroker, frame: Value, reason: &str) {
    for _ in b.nodes() {
        expect_rejected_once(b, frame.clone(), reason).await;
    }
}

/// Sends `frame` as the first frame of the next connection and expects a
/// rejection with `reason`.
async fn expect_rejected_once(b: &TestBroker, frame: Value, reason: &str) {
    let mut c = b.connect().await;
    c.send(frame).await;
    let (frames, closed) = c.recv_close().await;
    assert_eq!(
        closed,
        Closed {
            code: 1008,
            reason: reason.into()
        }
    );
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0]["type"], "error");
    assert_eq!(frames[0]["code"], reason);
    assert!(frames[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// How many times [`expect_rejected`] tries a frame: once per node.
fn nodes(b: &TestBroker) -> f64 {
    b.nodes().count() as f64
}

async fn expect_accepted(b: &TestBroker, frame: Value) -> Client {
    let mut c = b.connect().await;
    c.send(frame).await;
    let ack = c.recv().await;
    assert_eq!(ack["type"], "hello_ack", "{ack}");
    c
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    metric(
        metrics,
        &format!("claudemesh_broker_connections_rejected_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(-1.0)
}

async fn hello_ack_carries_identity_and_peers(store: Backend) {
    let b = TestBroker::on(store).await;
    let alice = b.member("alice");
    let bob = b.member("bob");
    let (_a, ack) = b.session(&alice, "s-a", "alice").await;
    assert_eq!(ack["meshId"], b.mesh.id.as_str());
    assert_eq!(ack["memberId"], alice.info.id.as_str());
    assert_eq!(ack["sessionId"], "s-a");
    assert_eq!(ack["displayName"], "alice");
    assert!(ack["serverTime"].as_i64().is_some());
    assert_eq!(ack["peers"], json!([]));
    let (_b, ack) = b.session(&bob, "s-b", "bob").await;
    let peers = ack["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["member"], alice.pubkey());
    assert_eq!(peers[0]["sessionId"], "s-a");
    assert_eq!(peers[0]["displayName"], "alice");
    assert_eq!(peers[0]["status"], "idle");
    assert_eq!(peers[0]["cwd"], "/home/u/project");
}

async fn timestamp_window_is_inclusive_at_60000_ms_and_exclusive_beyond(store: Backend) {
    let t = 1_764_168_000_000;
    let clock = TestClock::pinned(t);
    let c = clock.clone();
    let b = TestBroker::start_on(store, move |cfg| cfg.clock = c.clock()).await;
    let m = b.member("m");
    for (i, delta) in [-60_000i64, 60_000].into_iter().enumerate() {
        let frame = m.hello_frame(&format!("ok{i}"), None, ConnectionRole::Session, t + delta);
        expect_accepted(&b, frame).await;
    }
    for (i, delta) in [-60_001i64, 60_001].into_iter().enumerate() {
        let frame = m.hello_frame(
            &format!("skew{i}"),
            None,
            ConnectionRole::Session,
            t + delta,
        );
        expect_rejected(&b, frame, "timestamp_skew").await;
    }
    assert_eq!(
        rejected(&b.metrics().await, "timestamp_skew"),
        2.0 * nodes(&b)
    );
    assert_eq!(clock.get(), t);
}

async fn malformed_hellos(store: Backend) {
    let b = TestBroker::on(store).await;
    let m = b.member("m");
    let good = m.hello_frame("s", None, ConnectionRole::Session, fresh_ts());

    let mut short_key = good.clone();
    short_key["pubkey"] = json!(&m.pubkey()[..63]);
    expect_rejected(&b, short_key, "malformed").await;

    let mut upper_sig = good.clone();
    upper_sig["signature"] = json!(good["signature"].as_str().unwrap().to_uppercase());
    expect_rejected(&b, upper_sig, "malformed").await;

    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("memberId");
    expect_rejected(&b, missing, "malformed").await;

    let mut ill_typed = good.clone();
    ill_typed["timestamp"] = json!("yesterday");
    expect_rejected(&b, ill_typed, "malformed").await;

    assert_eq!(rejected(&b.metrics().await, "malformed"), 4.0 * nodes(&b));
}

async fn checks_run_in_protocol_order(store: Backend) {
    let b = TestBroker::on(store).await;
    let m = b.member("m");
    // Stale and malformed: the timestamp is checked first.
    let mut f = m.hello_frame("s", None, ConnectionRole::Session, now_ms() - 3_600_000);
    f["pubkey"] = json!("zz");
    expect_rejected(&b, f, "timestamp_skew").await;
    // Malformed and unauthorized (unknown mesh): malformed first.
    let mut f = m.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    f["signature"] = json!("00");
    f["meshId"] = json!("no-such-mesh");
    expect_rejected(&b, f, "malformed").await;
    // Bad signature on an unknown member: bad_signature first.
    let stranger = claudemesh_protocol::MemberSecretKey::generate().unwrap();
    let mut f = m.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    f["pubkey"] = json!(stranger.public_key().to_hex());
    expect_rejected(&b, f, "bad_signature").await;
}

async fn bad_signatures(store: Backend) {
    let b = TestBroker::on(store).await;
    let m = b.member("m");
    let other = b.member("other");
    // Signed by another key.
    let mut f = other.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    f["pubkey"] = json!(m.pubkey());
    f["memberId"] = json!(m.info.id);
    expect_rejected(&b, f, "bad_signature").await;
    // A field covered by the signature changed.
    let mut f = m.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    f["timestamp"] = json!(f["timestamp"].as_i64().unwrap() + 1);
    expect_rejected(&b, f, "bad_signature").await;
    assert_eq!(
        rejected(&b.metrics().await, "bad_signature"),
        2.0 * nodes(&b)
    );
}

async fn unauthorized_hellos(store: Backend) {
    let b = TestBroker::on(store).await;
    let m = b.member("m");
    let other = b.member("other");
    // A key that is no member (signature valid).
    let stranger = Member {
        key: claudemesh_protocol::MemberSecretKey::generate().unwrap(),
        info: claudemesh_broker::admin::MemberInfo {
            pubkey: String::new(),
            ..m.info.clone()
        },
        mesh_id: b.mesh.id.clone(),
    };
    let f = stranger.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    expect_rejected(&b, f, "unauthorized").await;
    // A member claiming another member's id (signed correctly over it).
    let liar = Member {
        key: m.key.clone(),
        info: claudemesh_broker::admin::MemberInfo {
            id: other.info.id.clone(),
            ..m.info.clone()
        },
        mesh_id: b.mesh.id.clone(),
    };
    let f = liar.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    expect_rejected(&b, f, "unauthorized").await;
    // A revoked member.
    b.admin().revoke_member(&b.mesh.slug, &m.pubkey()).unwrap();
    let f = m.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    expect_rejected(&b, f, "unauthorized").await;
    assert_eq!(
        rejected(&b.metrics().await, "unauthorized"),
        3.0 * nodes(&b)
    );
}

async fn replayed_hello_is_refused_also_after_a_restart(store: Backend) {
    let mut b = TestBroker::on(store).await;
    let m = b.member("m");
    let f = m.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    let first = expect_accepted(&b, f.clone()).await;
    expect_rejected(&b, f.clone(), "replayed").await;
    assert_eq!(rejected(&b.metrics().await, "replayed"), nodes(&b));
    first.close().await;
    b.restart_with(|_| {}).await;
    expect_rejected(&b, f, "replayed").await;
    // A fresh hello from the same member is fine.
    let f = m.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    expect_accepted(&b, f).await;
}

async fn any_other_first_frame_is_no_hello(store: Backend) {
    let b = TestBroker::on(store).await;
    let firsts = [
        json!({"type":"list_peers","id":"r1"}).to_string(),
        "not json at all".to_owned(),
        json!({"no":"type"}).to_string(),
    ];
    // Each on every node.
    for first in b.nodes().flat_map(|_| firsts.clone()) {
        let mut c = b.connect().await;
        c.send_text(first).await;
        let (frames, closed) = c.recv_close().await;
        assert_eq!(
            closed,
            Closed {
                code: 1008,
                reason: "no_hello".into()
            }
        );
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["code"], "no_hello");
    }
    assert_eq!(rejected(&b.metrics().await, "no_hello"), 3.0 * nodes(&b));
}

async fn silent_connection_gets_hello_timeout(store: Backend) {
    let b = TestBroker::start_on(store, |c| {
        c.hello_timeout = std::time::Duration::from_millis(300)
    })
    .await;
    for _ in b.nodes() {
        let mut c = b.connect().await;
        let (_, closed) = c.recv_close().await;
        assert_eq!(
            closed,
            Closed {
                code: 1008,
                reason: "hello_timeout".into()
            }
        );
    }
    assert_eq!(rejected(&b.metrics().await, "hello_timeout"), nodes(&b));
}

async fn a_rejected_hello_changes_nothing(store: Backend) {
    let b = TestBroker::on(store).await;
    let m = b.member("m");
    let mut f = m.hello_frame("s", None, ConnectionRole::Session, fresh_ts());
    f["timestamp"] = json!(f["timestamp"].as_i64().unwrap() + 5);
    expect_rejected(&b, f, "bad_signature").await;
    let members = b.admin().list_members(&b.mesh.id).unwrap();
    assert_eq!(members.len(), 1);
    assert!(!members[0].revoked);
    let (mut c, _) = b.session(&m, "s", "m").await;
    assert!(c.sync().await.is_empty());
}

async fn connections_per_member_are_limited(store: Backend) {
    let b = TestBroker::start_on(store, |c| c.max_connections_per_member = 2).await;
    let m = b.member("m");
    let _c1 = b.session(&m, "s1", "a").await;
    let _c2 = b.session(&m, "s2", "b").await;
    // In a cluster, the third hello arrives at a third node.
    b.assert_apart(&[&_c1.0, &_c2.0]);
    // The limit is checked after the five checks, so a refused hello has
    // passed the replay check and its signature is spent (docs/protocol.md):
    // each node gets a fresh one, and the first sent again is `replayed`.
    let first = m.hello_frame("s3", None, ConnectionRole::Session, fresh_ts());
    expect_rejected_once(&b, first.clone(), "too_many_connections").await;
    for _ in 1..b.nodes().count() {
        let f = m.hello_frame("s3", None, ConnectionRole::Session, fresh_ts());
        expect_rejected_once(&b, f, "too_many_connections").await;
    }
    expect_rejected_once(&b, first, "replayed").await;
}

all_backends!(
    hello_ack_carries_identity_and_peers,
    timestamp_window_is_inclusive_at_60000_ms_and_exclusive_beyond,
    malformed_hellos,
    checks_run_in_protocol_order,
    bad_signatures,
    unauthorized_hellos,
    replayed_hello_is_refused_also_after_a_restart,
    any_other_first_frame_is_no_hello,
    silent_connection_gets_hello_timeout,
    a_rejected_hello_changes_nothing,
    connections_per_member_are_limited,
);
