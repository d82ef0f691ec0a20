//! Property-based fuzzing of what a running broker reads from outside:
//! `/v1/join` and `/v1/leave` bodies, and arbitrary frames on an
//! authenticated connection. A bounded number of cases per property; each
//! case goes through the real HTTP server or WebSocket.
//!
//! Whatever the input: a 4xx answer with `{"error","message"}` (never a
//! 5xx, never a hang), or an `error` frame on a connection that stays
//! open; and the broker keeps serving.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use claudemesh_protocol::leave::LeaveRequest;
use claudemesh_protocol::wire::ClientFrame;
use common::*;

struct Shared {
    runtime: tokio::runtime::Runtime,
    broker: TestBroker,
    link: String,
}

/// One broker for all cases (a broker per case would make the bound on
/// cases a bound on broker start-ups). The HTTP bodies are refused by
/// code that reads no state of another node: one SQLite node covers
/// them.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared::start(Backend::Sqlite))
}

/// A cluster for the frames: what one node accepts, the others take in
/// as replicas, so every node must take whatever a frame got accepted.
fn shared_cluster() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared::start(Backend::Cluster))
}

impl Shared {
    fn start(backend: Backend) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let broker = runtime.block_on(TestBroker::on(backend));
        let (_, link) = broker
            .admin()
            .create_invite(
                &broker.mesh.slug,
                claudemesh_broker::admin::InviteRole::Member,
                None,
                3600,
                "",
            )
            .unwrap();
        Shared {
            runtime,
            broker,
            link,
        }
    }

    /// Sends `frames` (type, fields) on a new daemon connection: it stays
    /// open and answering, and in a cluster every node comes to list the
    /// same sessions.
    fn daemon_survives(&self, frames: Vec<(&str, BTreeMap<&str, Value>)>) {
        let m = self.broker.member("fuzz");
        self.runtime.block_on(async {
            let mut d = self.broker.daemon(&m).await;
            for (t, fields) in frames {
                let mut object: Map<String, Value> =
                    fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                object.insert("type".into(), Value::from(t));
                d.send(Value::Object(object)).await;
            }
            // Still open and answering.
            d.sync().await;
            self.broker.settle().await;
            d.close().await;
        });
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "[0-9a-f]{64}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// POSTs a raw body; the status and the parsed answer.
async fn post_raw(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn assert_clean_refusal(status: u16, answer: &Value) -> Result<(), TestCaseError> {
    prop_assert!((400..500).contains(&status), "status {status}: {answer}");
    if status != 413 {
        prop_assert!(answer["error"].is_string(), "{answer}");
        prop_assert!(answer["message"].is_string(), "{answer}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Arbitrary bytes and arbitrary objects as `/v1/join` bodies.
    #[test]
    fn join_bodies_are_refused_cleanly(
        raw in prop::collection::vec(any::<u8>(), 0..200),
        fields in prop::collection::btree_map(
            prop::sample::select(vec!["invite", "pubkey", "displayName", "x"]),
            json_value(),
            0..4,
        ),
    ) {
        let s = shared();
        let (status, answer) = s.runtime.block_on(post_raw(s.broker.addr, "/v1/join", &raw));
        assert_clean_refusal(status, &answer)?;
        let object: Map<String, Value> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let body = Value::Object(object).to_string();
        let (status, answer) = s.runtime.block_on(post_raw(s.broker.addr, "/v1/join", body.as_bytes()));
        assert_clean_refusal(status, &answer)?;
    }

    /// A valid join body with its display name replaced by any string:
    /// accepted only without control characters.
    #[test]
    fn join_display_names_with_control_characters_are_refused(name in ".{1,20}") {
        let s = shared();
        let key = claudemesh_protocol::MemberSecretKey::generate().unwrap();
        let body = json!({"invite": s.link, "pubkey": key.public_key().to_hex(), "displayName": name});
        let (status, answer) = s.runtime.block_on(post_raw(s.broker.addr, "/v1/join", body.to_string().as_bytes()));
        if name.chars().any(char::is_control) || name.trim().chars().count() > 64 {
            prop_assert_eq!(status, 400, "{:?}: {}", name, answer);
        } else {
            prop_assert_eq!(status, 200, "{:?}: {}", name, answer);
        }
    }

    /// Arbitrary `/v1/leave` bodies, and a signed one with a field replaced.
    #[test]
    fn leave_bodies_are_refused_cleanly(
        raw in prop::collection::vec(any::<u8>(), 0..200),
        pick in prop::sample::select(vec!["meshId", "memberId", "pubkey", "timestamp", "signature"]),
        replacement in json_value(),
    ) {
        let s = shared();
        let (status, answer) = s.runtime.block_on(post_raw(s.broker.addr, "/v1/leave", &raw));
        assert_clean_refusal(status, &answer)?;
        let key = claudemesh_protocol::MemberSecretKey::generate().unwrap();
        let signed = LeaveRequest::signed(&key, &s.broker.mesh.id, "mem_nobody", now_ms());
        let mut v = serde_json::to_value(&signed).unwrap();
        v[pick] = replacement;
        let (status, answer) = s.runtime.block_on(post_raw(s.broker.addr, "/v1/leave", v.to_string().as_bytes()));
        assert_clean_refusal(status, &answer)?;
    }
}

/// 1 to 8 frames of any type the protocol knows (and one it does not),
/// with any values in any of its fields.
fn frames() -> impl Strategy<Value = Vec<(&'static str, BTreeMap<&'static str, Value>)>> {
    prop::collection::vec(
        (
            prop::sample::select(
                ClientFrame::TYPES
                    .iter()
                    .copied()
                    .chain(["nope"])
                    .collect::<Vec<_>>(),
            ),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "sessionId",
                    "displayName",
                    "cwd",
                    "host",
                    "summary",
                    "groups",
                    "status",
                    "group",
                    "id",
                    "to",
                    "envelopes",
                    "messageId",
                    "state",
                ]),
                json_value(),
                0..5,
            ),
        ),
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary frames on an authenticated daemon connection: each gets
    /// its answer (or none) and the connection stays open and served.
    #[test]
    fn arbitrary_frames_never_close_an_authenticated_connection(
        frames in frames(),
    ) {
        shared().daemon_survives(frames);
    }

    /// The same through the nodes of a cluster (each case's connection on
    /// the next node).
    #[test]
    fn arbitrary_frames_never_close_a_connection_or_split_a_cluster(
        frames in frames(),
    ) {
        shared_cluster().daemon_survives(frames);
    }
}
