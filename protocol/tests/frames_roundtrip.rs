//! Every broker wire frame, in the exact JSON shapes of PROTOCOL.md's
//! examples: parse, serialize, parse again; plus the typed errors for frames
//! that are not frames.
//!
//! The examples are copied from PROTOCOL.md as written (placeholders such
//! as `"…"` and `"<64 hex>"` are ordinary strings). Where the spec's example
//! is not JSON (`"status":"idle|working|dnd"`, `<peer>`, `"at":…`), one of
//! the listed values is filled in.

use std::collections::BTreeSet;

use claudemesh_protocol::wire::{Ack, ErrorCode, MemberPresence, SendRequest};
use claudemesh_protocol::wire::{
    ClientFrame, ConnectionRole, DeliveryState, Envelope, ErrorFrame, FrameError, Hello, HelloAck,
    MessageBody, MessageSender, Peer, PeerEvent, PeerStatus, Priority, Push, RecipientState,
    ServerFrame, SessionOpen,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const PEER: &str = r#"{"member":"<pubkey>","sessionId":"…","displayName":"…","status":"working",
 "summary":"…","groups":["…"],"cwd":"…","host":"…","connectedAt":1764168000000}"#;

fn peer() -> Peer {
    Peer {
        member: "<pubkey>".into(),
        session_id: "…".into(),
        display_name: "…".into(),
        status: PeerStatus::Working,
        summary: "…".into(),
        groups: vec!["…".into()],
        cwd: "…".into(),
        host: "…".into(),
        connected_at: 1_764_168_000_000,
    }
}

fn s(x: &str) -> String {
    x.to_owned()
}

/// PROTOCOL.md's client → broker examples and the frames they mean.
fn client_examples() -> Vec<(String, ClientFrame)> {
    vec![
        (
            s(
                r#"{"type":"hello","meshId":"…","memberId":"…","pubkey":"<64 hex>",
 "sessionId":"…","pid":4242,"cwd":"/home/u/project",
 "timestamp":1764168000000,"signature":"<128 hex>"}"#,
            ),
            ClientFrame::Hello(Hello {
                mesh_id: s("…"),
                member_id: s("…"),
                pubkey: s("<64 hex>"),
                session_id: s("…"),
                pid: 4242,
                cwd: s("/home/u/project"),
                timestamp: 1_764_168_000_000,
                signature: s("<128 hex>"),
                display_name: None,
                role: ConnectionRole::Session,
                client: None,
            }),
        ),
        (
            s(
                r#"{"type":"hello","meshId":"m","memberId":"mem","pubkey":"p","sessionId":"s",
 "pid":1,"cwd":"/","timestamp":0,"signature":"sig",
 "displayName":"api","role":"daemon","client":"claudemeshd/0.1.0"}"#,
            ),
            ClientFrame::Hello(Hello {
                mesh_id: s("m"),
                member_id: s("mem"),
                pubkey: s("p"),
                session_id: s("s"),
                pid: 1,
                cwd: s("/"),
                timestamp: 0,
                signature: s("sig"),
                display_name: Some(s("api")),
                role: ConnectionRole::Daemon,
                client: Some(s("claudemeshd/0.1.0")),
            }),
        ),
        (
            s(
                r#"{"type":"session_open","sessionId":"…","displayName":"…","cwd":"…","pid":1,"host":"…","summary":"…","groups":["backend"]}"#,
            ),
            ClientFrame::SessionOpen(SessionOpen {
                session_id: s("…"),
                display_name: Some(s("…")),
                cwd: s("…"),
                pid: 1,
                host: s("…"),
                summary: s("…"),
                groups: vec![s("backend")],
                status: PeerStatus::Idle,
            }),
        ),
        (
            s(r#"{"type":"session_open","sessionId":"s2","status":"dnd"}"#),
            ClientFrame::SessionOpen(SessionOpen {
                session_id: s("s2"),
                display_name: None,
                cwd: String::new(),
                pid: 0,
                host: String::new(),
                summary: String::new(),
                groups: vec![],
                status: PeerStatus::Dnd,
            }),
        ),
        (
            s(r#"{"type":"session_close","sessionId":"…"}"#),
            ClientFrame::SessionClose {
                session_id: s("…")
            },
        ),
        (
            s(r#"{"type":"list_peers","id":"r1"}"#),
            ClientFrame::ListPeers {
                id: Some(s("r1")),
                members: false,
            },
        ),
        (
            s(r#"{"type":"list_peers"}"#),
            ClientFrame::ListPeers {
                id: None,
                members: false,
            },
        ),
        (
            s(r#"{"type":"list_peers","id":"r2","members":true}"#),
            ClientFrame::ListPeers {
                id: Some(s("r2")),
                members: true,
            },
        ),
        (
            s(r#"{"type":"set_status","sessionId":"…","status":"working"}"#),
            ClientFrame::SetStatus {
                session_id: Some(s("…")),
                status: PeerStatus::Working,
            },
        ),
        (
            s(r#"{"type":"set_status","status":"idle"}"#),
            ClientFrame::SetStatus {
                session_id: None,
                status: PeerStatus::Idle,
            },
        ),
        (
            s(r#"{"type":"set_summary","sessionId":"…","summary":"…"}"#),
            ClientFrame::SetSummary {
                session_id: Some(s("…")),
                summary: s("…"),
            },
        ),
        (
            s(r#"{"type":"join_group","sessionId":"…","group":"backend"}"#),
            ClientFrame::JoinGroup {
                session_id: Some(s("…")),
                group: s("backend"),
            },
        ),
        (
            s(r#"{"type":"leave_group","sessionId":"…","group":"backend"}"#),
            ClientFrame::LeaveGroup {
                session_id: Some(s("…")),
                group: s("backend"),
            },
        ),
        (
            s(
                r#"{"type":"send","id":"<client message id>","sessionId":"<sender session>","to":"…",
 "priority":"now",
 "envelopes":[{"member":"<recipient pubkey>","nonce":"<b64 24 bytes>","ciphertext":"<b64>"}]}"#,
            ),
            ClientFrame::Send(SendRequest {
                id: s("<client message id>"),
                session_id: Some(s("<sender session>")),
                to: s("…"),
                priority: Priority::Now,
                envelopes: vec![Envelope {
                    member: s("<recipient pubkey>"),
                    nonce: s("<b64 24 bytes>"),
                    ciphertext: s("<b64>"),
                }],
            }),
        ),
        (
            s(r#"{"type":"send","id":"c2","to":"@backend","envelopes":[]}"#),
            ClientFrame::Send(SendRequest {
                id: s("c2"),
                session_id: None,
                to: s("@backend"),
                priority: Priority::Next,
                envelopes: vec![],
            }),
        ),
        (
            s(r#"{"type":"client_ack","messageId":"…"}"#),
            ClientFrame::ClientAck {
                message_id: s("…")
            },
        ),
        (
            s(r#"{"type":"receipt","messageId":"…","sessionId":"…","state":"seen"}"#),
            ClientFrame::Receipt {
                message_id: s("…"),
                session_id: Some(s("…")),
                state: DeliveryState::Seen,
            },
        ),
        (
            s(r#"{"type":"message_status","id":"r2","messageId":"…"}"#),
            ClientFrame::MessageStatus {
                id: Some(s("r2")),
                message_id: s("…"),
            },
        ),
    ]
}

/// PROTOCOL.md's broker → client examples and the frames they mean.
fn server_examples() -> Vec<(String, ServerFrame)> {
    vec![
        (
            format!(
                r#"{{"type":"hello_ack","meshId":"…","memberId":"…","sessionId":"…",
 "displayName":"…","serverTime":1764168000123,"peers":[ {PEER} ]}}"#
            ),
            ServerFrame::HelloAck(HelloAck {
                mesh_id: s("…"),
                member_id: s("…"),
                session_id: s("…"),
                display_name: s("…"),
                server_time: 1_764_168_000_123,
                peers: vec![peer()],
                truncated: false,
            }),
        ),
        (
            s(r#"{"type":"session_opened","sessionId":"…","displayName":"<unique name>"}"#),
            ServerFrame::SessionOpened {
                session_id: s("…"),
                display_name: s("<unique name>"),
            },
        ),
        (
            format!(r#"{{"type":"peers_list","id":"r1","peers":[{PEER}]}}"#),
            ServerFrame::PeersList {
                id: Some(s("r1")),
                peers: vec![peer()],
                truncated: false,
                members: None,
            },
        ),
        (
            format!(
                r#"{{"type":"peers_list","id":"r2","peers":[],"members":[{{"member":"{}","displayName":"bob","online":false,"lastSeen":5}}]}}"#,
                "ab".repeat(32)
            ),
            ServerFrame::PeersList {
                id: Some(s("r2")),
                peers: vec![],
                truncated: false,
                members: Some(vec![MemberPresence {
                    member: "ab".repeat(32),
                    display_name: s("bob"),
                    online: false,
                    last_seen: Some(5),
                }]),
            },
        ),
        (
            format!(r#"{{"type":"event","event":"peer_joined","peer":{PEER}}}"#),
            ServerFrame::Event {
                event: PeerEvent::PeerJoined,
                peer: peer(),
            },
        ),
        (
            format!(r#"{{"type":"event","event":"peer_left","peer":{PEER}}}"#),
            ServerFrame::Event {
                event: PeerEvent::PeerLeft,
                peer: peer(),
            },
        ),
        (
            format!(r#"{{"type":"event","event":"peer_updated","peer":{PEER}}}"#),
            ServerFrame::Event {
                event: PeerEvent::PeerUpdated,
                peer: peer(),
            },
        ),
        (
            s(
                r#"{"type":"ack","id":"…","messageId":"…","duplicate":false,"recipients":[{"member":"…","sessionId":"…","state":"delivered"}]}"#,
            ),
            ServerFrame::Ack(Ack {
                id: s("…"),
                message_id: s("…"),
                duplicate: false,
                recipients: vec![RecipientState {
                    member: s("…"),
                    session_id: Some(s("…")),
                    state: DeliveryState::Delivered,
                }],
            }),
        ),
        (
            // Queued at member level: no live session, so no sessionId.
            s(
                r#"{"type":"ack","id":"c1","messageId":"m1","duplicate":true,"recipients":[{"member":"p","state":"queued"}]}"#,
            ),
            ServerFrame::Ack(Ack {
                id: s("c1"),
                message_id: s("m1"),
                duplicate: true,
                recipients: vec![RecipientState {
                    member: s("p"),
                    session_id: None,
                    state: DeliveryState::Queued,
                }],
            }),
        ),
        (
            s(
                r#"{"type":"push","messageId":"…","from":{"member":"<pubkey>","sessionId":"…","displayName":"…"},
 "to":"<target as sent>","sessions":["<recipient sessionId>"],"priority":"next",
 "nonce":"<b64>","ciphertext":"<b64>","sentAt":1764168000000}"#,
            ),
            ServerFrame::Push(Push {
                message_id: s("…"),
                from: MessageSender {
                    member: s("<pubkey>"),
                    session_id: s("…"),
                    display_name: s("…"),
                },
                to: s("<target as sent>"),
                sessions: vec![s("<recipient sessionId>")],
                priority: Priority::Next,
                nonce: s("<b64>"),
                ciphertext: s("<b64>"),
                sent_at: 1_764_168_000_000,
            }),
        ),
        (
            s(
                r#"{"type":"push","messageId":"m","from":{"member":"p","sessionId":"s","displayName":"d"},
 "to":"*","priority":"low","nonce":"n","ciphertext":"c","sentAt":1}"#,
            ),
            ServerFrame::Push(Push {
                message_id: s("m"),
                from: MessageSender {
                    member: s("p"),
                    session_id: s("s"),
                    display_name: s("d"),
                },
                to: s("*"),
                sessions: vec![],
                priority: Priority::Low,
                nonce: s("n"),
                ciphertext: s("c"),
                sent_at: 1,
            }),
        ),
        (
            s(
                r#"{"type":"receipt","messageId":"…","member":"…","sessionId":"…","state":"seen","at":1764168000500}"#,
            ),
            ServerFrame::Receipt {
                message_id: s("…"),
                member: s("…"),
                session_id: s("…"),
                state: DeliveryState::Seen,
                at: 1_764_168_000_500,
            },
        ),
        (
            s(
                r#"{"type":"message_status_result","id":"r2","messageId":"…","recipients":[{"member":"…","sessionId":"…","state":"queued"}]}"#,
            ),
            ServerFrame::MessageStatusResult {
                id: Some(s("r2")),
                message_id: s("…"),
                recipients: vec![RecipientState {
                    member: s("…"),
                    session_id: Some(s("…")),
                    state: DeliveryState::Queued,
                }],
            },
        ),
        (
            s(
                r#"{"type":"error","code":"<snake_case>","message":"<sentence>","id":"<request id, if any>"}"#,
            ),
            ServerFrame::Error(ErrorFrame {
                code: ErrorCode::Other(s("<snake_case>")),
                message: s("<sentence>"),
                id: Some(s("<request id, if any>")),
                members: Vec::new(),
            }),
        ),
        (
            s(r#"{"type":"error","code":"no_hello","message":"Send hello first."}"#),
            ServerFrame::Error(ErrorFrame {
                code: ErrorCode::NoHello,
                message: s("Send hello first."),
                id: None,
                members: Vec::new(),
            }),
        ),
        (
            s(
                r#"{"type":"error","code":"missing_envelope","message":"no envelope for recipient member(s) …","id":"m-1","members":["…"]}"#,
            ),
            ServerFrame::Error(ErrorFrame {
                code: ErrorCode::MissingEnvelope,
                message: s("no envelope for recipient member(s) …"),
                id: Some(s("m-1")),
                members: vec![s("…")],
            }),
        ),
    ]
}

/// The index of the variant, by an exhaustive match: a new variant does not
/// compile here until it has an example above.
fn client_variant(frame: &ClientFrame) -> usize {
    match frame {
        ClientFrame::Hello(_) => 0,
        ClientFrame::SessionOpen(_) => 1,
        ClientFrame::SessionClose { .. } => 2,
        ClientFrame::ListPeers { .. } => 3,
        ClientFrame::SetStatus { .. } => 4,
        ClientFrame::SetSummary { .. } => 5,
        ClientFrame::JoinGroup { .. } => 6,
        ClientFrame::LeaveGroup { .. } => 7,
        ClientFrame::Send(_) => 8,
        ClientFrame::ClientAck { .. } => 9,
        ClientFrame::Receipt { .. } => 10,
        ClientFrame::MessageStatus { .. } => 11,
    }
}
const CLIENT_VARIANTS: usize = 12;

fn server_variant(frame: &ServerFrame) -> usize {
    match frame {
        ServerFrame::HelloAck(_) => 0,
        ServerFrame::SessionOpened { .. } => 1,
        ServerFrame::PeersList { .. } => 2,
        ServerFrame::Event { .. } => 3,
        ServerFrame::Ack(_) => 4,
        ServerFrame::Push(_) => 5,
        ServerFrame::Receipt { .. } => 6,
        ServerFrame::MessageStatusResult { .. } => 7,
        ServerFrame::Error(_) => 8,
    }
}
const SERVER_VARIANTS: usize = 9;

/// Fields whose absence makes a client frame invalid; every other field of
/// an example may be left out.
fn client_required(frame_type: &str) -> &'static [&'static str] {
    match frame_type {
        "receipt" => &["messageId", "state"],
        other => required(other),
    }
}

/// The same for broker frames.
fn server_required(frame_type: &str) -> &'static [&'static str] {
    match frame_type {
        "receipt" => &["messageId", "member", "sessionId", "state", "at"],
        other => required(other),
    }
}

fn required(frame_type: &str) -> &'static [&'static str] {
    match frame_type {
        "hello" => &[
            "meshId",
            "memberId",
            "pubkey",
            "sessionId",
            "pid",
            "cwd",
            "timestamp",
            "signature",
        ],
        "session_open" | "session_close" => &["sessionId"],
        "list_peers" => &[],
        "set_status" => &["status"],
        "set_summary" => &["summary"],
        "join_group" | "leave_group" => &["group"],
        "send" => &["id", "to", "envelopes"],
        "client_ack" | "message_status" => &["messageId"],
        "hello_ack" => &[
            "meshId",
            "memberId",
            "sessionId",
            "displayName",
            "serverTime",
            "peers",
        ],
        "session_opened" => &["sessionId", "displayName"],
        "peers_list" => &["peers"],
        "event" => &["event", "peer"],
        "ack" => &["id", "messageId", "duplicate", "recipients"],
        "push" => &["messageId", "from", "to", "nonce", "ciphertext", "sentAt"],
        "message_status_result" => &["messageId", "recipients"],
        "error" => &["code", "message"],
        other => panic!("no required-field list for {other}"),
    }
}

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("example is not JSON ({e}): {text}"))
}

/// Every field of `spec` is in `ours` with the same value (objects
/// recursively); `ours` may add defaults.
fn assert_contains(ours: &Value, spec: &Value, path: &str) {
    match (ours, spec) {
        (Value::Object(o), Value::Object(sp)) => {
            for (k, v) in sp {
                let got = o
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing from {ours}"));
                assert_contains(got, v, &format!("{path}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(sp)) => {
            assert_eq!(o.len(), sp.len(), "{path}");
            for (i, (a, b)) in o.iter().zip(sp).enumerate() {
                assert_contains(a, b, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(ours, spec, "{path}"),
    }
}

/// Checks one direction's examples: parse == expected; serialize keeps the
/// spec's field names and values; parse(serialize) == expected; unknown
/// fields are ignored; removing a field fails exactly when it is required,
/// with the request id carried.
fn check_examples<F>(
    examples: Vec<(String, F)>,
    parse: fn(&str) -> Result<F, claudemesh_protocol::wire::ParseFailure>,
    to_json: fn(&F) -> String,
    required: fn(&str) -> &'static [&'static str],
) where
    F: PartialEq + std::fmt::Debug,
{
    for (text, expected) in examples {
        let spec = value(&text);
        let frame_type = spec["type"].as_str().unwrap().to_owned();
        let parsed = parse(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(parsed, expected, "{text}");

        let json = to_json(&expected);
        let ours = value(&json);
        assert_contains(&ours, &spec, &frame_type);
        assert_eq!(parse(&json).unwrap(), expected, "round trip of {json}");

        let mut extra = spec.clone();
        extra["someFieldFromTheFuture"] = json!({"nested": [1, 2, 3]});
        extra["x"] = Value::Null;
        assert_eq!(parse(&extra.to_string()).unwrap(), expected, "{extra}");

        let request_id = spec.get("id").and_then(Value::as_str).map(str::to_owned);
        for key in spec.as_object().unwrap().keys().filter(|k| *k != "type") {
            let mut without = spec.clone();
            without.as_object_mut().unwrap().remove(key);
            let result = parse(&without.to_string());
            if required(&frame_type).contains(&key.as_str()) {
                let failure = result.expect_err(&format!("{frame_type} without {key}"));
                match &failure.error {
                    FrameError::Invalid {
                        frame_type: t,
                        detail,
                    } => {
                        assert_eq!(t, &frame_type);
                        assert!(!detail.contains(" at line "), "{detail}");
                        assert!(detail.contains(key.as_str()), "{detail} names {key}");
                    }
                    other => panic!("{frame_type} without {key}: {other:?}"),
                }
                assert_eq!(failure.error.code(), "malformed");
                let expected_id = if key == "id" {
                    None
                } else {
                    request_id.clone()
                };
                assert_eq!(failure.id, expected_id, "{frame_type} without {key}");
            } else {
                assert!(
                    result.is_ok(),
                    "{frame_type} without optional {key}: {result:?}"
                );
            }
        }
    }
}

#[test]
fn every_client_frame_round_trips_in_the_spec_shape() {
    let examples = client_examples();
    let covered: BTreeSet<_> = examples.iter().map(|(_, f)| client_variant(f)).collect();
    assert_eq!(
        covered,
        (0..CLIENT_VARIANTS).collect(),
        "a variant has no example"
    );
    for (text, frame) in &examples {
        assert_eq!(value(text)["type"], frame.type_name(), "{text}");
    }
    check_examples(
        examples,
        ClientFrame::parse,
        ClientFrame::to_json,
        client_required,
    );
}

#[test]
fn every_server_frame_round_trips_in_the_spec_shape() {
    let examples = server_examples();
    let covered: BTreeSet<_> = examples.iter().map(|(_, f)| server_variant(f)).collect();
    assert_eq!(
        covered,
        (0..SERVER_VARIANTS).collect(),
        "a variant has no example"
    );
    check_examples(
        examples,
        ServerFrame::parse,
        ServerFrame::to_json,
        server_required,
    );
}

fn types_of(jsons: impl Iterator<Item = String>) -> Vec<String> {
    jsons
        .map(|j| value(&j)["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn types_lists_match_the_variants() {
    for (types, examples, variants) in [
        (
            ClientFrame::TYPES,
            types_of(client_examples().iter().map(|(_, f)| f.to_json())),
            CLIENT_VARIANTS,
        ),
        (
            ServerFrame::TYPES,
            types_of(server_examples().iter().map(|(_, f)| f.to_json())),
            SERVER_VARIANTS,
        ),
    ] {
        let listed: BTreeSet<_> = types.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            listed.len(),
            types.len(),
            "TYPES has a duplicate: {types:?}"
        );
        assert_eq!(types.len(), variants, "TYPES has one entry per variant");
        let serialized: BTreeSet<_> = examples.into_iter().collect();
        assert_eq!(listed, serialized);
    }
    for (_, frame) in client_examples() {
        assert!(ClientFrame::TYPES.contains(&frame.type_name()));
    }
}

#[test]
fn every_enum_value_round_trips() {
    for (status, text) in [
        (PeerStatus::Idle, "idle"),
        (PeerStatus::Working, "working"),
        (PeerStatus::Dnd, "dnd"),
    ] {
        assert_eq!(status.as_str(), text);
        let frame = ClientFrame::SetStatus {
            session_id: None,
            status,
        };
        assert_eq!(value(&frame.to_json())["status"], text);
        assert_eq!(ClientFrame::parse(&frame.to_json()).unwrap(), frame);
    }
    for (priority, text) in [
        (Priority::Now, "now"),
        (Priority::Next, "next"),
        (Priority::Low, "low"),
    ] {
        assert_eq!(priority.as_str(), text);
        assert_eq!(Priority::parse(text), Some(priority));
        let send = ClientFrame::Send(SendRequest {
            id: s("c"),
            session_id: None,
            to: s("*"),
            priority,
            envelopes: vec![],
        });
        assert_eq!(value(&send.to_json())["priority"], text);
        assert_eq!(ClientFrame::parse(&send.to_json()).unwrap(), send);
    }
    assert_eq!(Priority::default(), Priority::Next);
    assert_eq!(Priority::parse("urgent"), None);
    for (state, text) in [
        (DeliveryState::Queued, "queued"),
        (DeliveryState::Delivered, "delivered"),
        (DeliveryState::Seen, "seen"),
    ] {
        assert_eq!(state.as_str(), text);
        assert_eq!(DeliveryState::parse(text), Some(state));
    }
    assert!(DeliveryState::Queued < DeliveryState::Delivered);
    assert!(DeliveryState::Delivered < DeliveryState::Seen);
    // A value outside the enum is an invalid frame, not an unknown type.
    let bad = ClientFrame::parse(r#"{"type":"set_status","status":"asleep"}"#).unwrap_err();
    assert!(matches!(bad.error, FrameError::Invalid { .. }), "{bad:?}");
}

#[test]
fn member_level_recipient_omits_session_id() {
    let ack = ServerFrame::Ack(Ack {
        id: s("c1"),
        message_id: s("m1"),
        duplicate: false,
        recipients: vec![RecipientState {
            member: s("p"),
            session_id: None,
            state: DeliveryState::Queued,
        }],
    });
    let json = value(&ack.to_json());
    assert_eq!(
        json["recipients"][0],
        json!({"member":"p","state":"queued"})
    );
}

#[test]
fn error_frames_echo_the_request_id_only_when_there_is_one() {
    let with = ServerFrame::error("unknown_target", "No session is named bob.", Some(s("c9")));
    assert_eq!(
        value(&with.to_json()),
        json!({"type":"error","code":"unknown_target","message":"No session is named bob.","id":"c9"})
    );
    let without = ServerFrame::error("no_hello", "Send hello first.", None);
    assert_eq!(
        value(&without.to_json()),
        json!({"type":"error","code":"no_hello","message":"Send hello first."})
    );
}

#[test]
fn message_body_keeps_extra_fields() {
    let text = r#"{"text":"schema changed","replyTo":"m1","n":3}"#;
    let body: MessageBody = serde_json::from_str(text).unwrap();
    assert_eq!(body.text, "schema changed");
    assert_eq!(body.extra.get("replyTo"), Some(&json!("m1")));
    assert_eq!(value(&serde_json::to_string(&body).unwrap()), value(text));
    assert_eq!(
        serde_json::to_string(&MessageBody::text("hi")).unwrap(),
        r#"{"text":"hi"}"#
    );
    assert!(serde_json::from_str::<MessageBody>(r#"{"nottext":"x"}"#).is_err());
}

fn client_err(text: &str) -> claudemesh_protocol::wire::ParseFailure {
    ClientFrame::parse(text).expect_err(text)
}

fn server_err(text: &str) -> claudemesh_protocol::wire::ParseFailure {
    ServerFrame::parse(text).expect_err(text)
}

#[test]
fn non_json_is_not_json() {
    for text in [
        "",
        "not json",
        "{",
        r#"{"type":"hello""#,
        "\u{0}",
        "{'type':'hello'}",
    ] {
        for failure in [client_err(text), server_err(text)] {
            assert!(
                matches!(failure.error, FrameError::NotJson(_)),
                "{text:?}: {failure:?}"
            );
            assert_eq!(failure.id, None);
            assert_eq!(failure.error.code(), "malformed");
        }
    }
}

#[test]
fn non_object_is_not_object() {
    for text in [
        "[]",
        r#"[{"type":"hello"}]"#,
        "1",
        r#""hello""#,
        "null",
        "true",
    ] {
        for failure in [client_err(text), server_err(text)] {
            assert_eq!(failure.error, FrameError::NotObject, "{text}");
            assert_eq!(failure.id, None);
            assert_eq!(failure.error.code(), "malformed");
        }
    }
}

#[test]
fn missing_or_non_string_type_is_missing_type() {
    for (text, id) in [
        ("{}", None),
        (r#"{"id":"r1"}"#, Some("r1")),
        (r#"{"type":1,"id":"r2"}"#, Some("r2")),
        (r#"{"type":null,"messageId":"m"}"#, None),
        (r#"{"type":["hello"]}"#, None),
        (r#"{"Type":"hello"}"#, None),
    ] {
        for failure in [client_err(text), server_err(text)] {
            assert_eq!(failure.error, FrameError::MissingType, "{text}");
            assert_eq!(failure.id.as_deref(), id, "{text}");
            assert_eq!(failure.error.code(), "malformed");
        }
    }
}

#[test]
fn unknown_type_is_unknown_type_with_the_request_id() {
    let failure = client_err(r#"{"type":"teleport","id":"r3","to":"*"}"#);
    assert_eq!(failure.error, FrameError::UnknownType(s("teleport")));
    assert_eq!(failure.id.as_deref(), Some("r3"));
    assert_eq!(failure.error.code(), "unknown_type");
    assert!(failure.to_string().contains("teleport"));
    let failure = server_err(r#"{"type":"teleport"}"#);
    assert_eq!(failure.error, FrameError::UnknownType(s("teleport")));
    assert_eq!(failure.id, None);
    // Type names are case-sensitive and exact.
    for t in ["Hello", "HELLO", "hello ", "helloAck", "sessionOpen"] {
        let text = json!({"type": t}).to_string();
        assert_eq!(client_err(&text).error, FrameError::UnknownType(s(t)));
    }
    // A frame of the other direction is unknown here (except `receipt`,
    // which both directions have).
    for t in ServerFrame::TYPES
        .iter()
        .filter(|t| !ClientFrame::TYPES.contains(t))
    {
        let text = json!({"type": t, "id": "r4"}).to_string();
        let failure = client_err(&text);
        assert_eq!(failure.error, FrameError::UnknownType(s(t)));
        assert_eq!(failure.id.as_deref(), Some("r4"));
    }
    for t in ClientFrame::TYPES
        .iter()
        .filter(|t| !ServerFrame::TYPES.contains(t))
    {
        let text = json!({"type": t}).to_string();
        assert_eq!(server_err(&text).error, FrameError::UnknownType(s(t)));
    }
}

#[test]
fn ill_typed_field_is_invalid_with_the_request_id() {
    for (text, id) in [
        (
            r#"{"type":"send","id":"c1","to":5,"envelopes":[]}"#,
            Some("c1"),
        ),
        (
            r#"{"type":"send","id":"c1","to":"*","envelopes":{}}"#,
            Some("c1"),
        ),
        (
            r#"{"type":"send","id":"c1","to":"*","priority":"soon","envelopes":[]}"#,
            Some("c1"),
        ),
        (r#"{"type":"send","id":7,"to":"*","envelopes":[]}"#, None),
        (r#"{"type":"list_peers","id":7}"#, None),
        (r#"{"type":"hello","pid":"x"}"#, None),
        (
            r#"{"type":"message_status","id":"r2","messageId":null}"#,
            Some("r2"),
        ),
    ] {
        let failure = client_err(text);
        assert!(
            matches!(failure.error, FrameError::Invalid { .. }),
            "{text}: {failure:?}"
        );
        assert_eq!(failure.id.as_deref(), id, "{text}");
        assert_eq!(failure.error.code(), "malformed");
    }
    let failure =
        server_err(r#"{"type":"ack","id":"c1","messageId":"m","duplicate":"no","recipients":[]}"#);
    assert!(matches!(failure.error, FrameError::Invalid { .. }));
    assert_eq!(failure.id.as_deref(), Some("c1"));
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "idle",
            "working",
            "now",
            "seen",
            "queued",
            "peer_left"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(field_name(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Field names the frames use, and others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "id", "type", "meshId", "memberId", "pubkey", "sessionId", "pid", "cwd",
            "timestamp", "signature", "displayName", "role", "client", "status", "summary",
            "group", "groups", "to", "priority", "envelopes", "member", "nonce", "ciphertext",
            "messageId", "state", "host", "serverTime", "peers", "peer", "event", "duplicate",
            "recipients", "from", "sessions", "sentAt", "at", "code", "message", "connectedAt",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z]{1,8}",
    ]
}

fn frame_type() -> impl Strategy<Value = String> {
    let mut known: Vec<&str> = ClientFrame::TYPES.to_vec();
    known.extend_from_slice(ServerFrame::TYPES);
    prop_oneof![
        4 => prop::sample::select(known).prop_map(str::to_owned),
        1 => ".{0,10}",
    ]
}

fn check_arbitrary_object(object: &Map<String, Value>) {
    let text = Value::Object(object.clone()).to_string();
    let id = object.get("id").and_then(Value::as_str);
    match ClientFrame::parse(&text) {
        Ok(frame) => assert_eq!(ClientFrame::parse(&frame.to_json()).unwrap(), frame),
        Err(failure) => assert_eq!(failure.id.as_deref(), id, "{text}"),
    }
    match ServerFrame::parse(&text) {
        Ok(frame) => assert_eq!(ServerFrame::parse(&frame.to_json()).unwrap(), frame),
        Err(failure) => assert_eq!(failure.id.as_deref(), id, "{text}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_strings_never_panic_the_parsers(text in any::<String>()) {
        let _ = ClientFrame::parse(&text);
        let _ = ServerFrame::parse(&text);
    }

    #[test]
    fn arbitrary_bytes_near_json_never_panic_the_parsers(text in r#"[{}\[\]":,a-z0-9 \\.-]{0,64}"#) {
        let _ = ClientFrame::parse(&text);
        let _ = ServerFrame::parse(&text);
    }

    /// Objects with a (mostly known) type and arbitrary fields: parsing
    /// never panics, whatever parses round-trips, and a failure carries the
    /// request id exactly when the frame had a string `id`.
    #[test]
    fn arbitrary_frames_parse_or_fail_cleanly(
        t in frame_type(),
        fields in prop::collection::btree_map(field_name(), json_value(), 0..10),
    ) {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        object.insert("type".into(), Value::from(t));
        check_arbitrary_object(&object);
    }

    /// The spec examples with one field replaced by an arbitrary value.
    #[test]
    fn spec_examples_with_a_field_replaced_parse_or_fail_cleanly(
        pick in any::<prop::sample::Index>(),
        field in field_name(),
        replacement in json_value(),
    ) {
        let mut texts: Vec<String> = client_examples().into_iter().map(|(t, _)| t).collect();
        texts.extend(server_examples().into_iter().map(|(t, _)| t));
        let text: &String = pick.get(&texts);
        let mut object = value(text).as_object().unwrap().clone();
        object.insert(field, replacement);
        check_arbitrary_object(&object);
    }
}
