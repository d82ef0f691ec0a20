//! Property-based fuzzing of the parsers that take bytes from outside and
//! have no fuzz target elsewhere: the hello (its stateless checks), the
//! `/v1/leave` body, and the daemon's IPC lines in both directions. (Wire
//! frames are fuzzed in frames_roundtrip.rs, invite links in invites.rs.)
//!
//! Each property runs a bounded number of cases in `cargo test`: whatever
//! the input, the answer is a typed error or a value, never a panic, and
//! nothing invalid is accepted.

use proptest::prelude::*;
use serde_json::{Map, Value};

use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::hello::{signed_hello, verify_hello_value};
use claudemesh_protocol::ipc::{DaemonFrame, RequestFrame};
use claudemesh_protocol::leave::LeaveRequest;
use claudemesh_protocol::limits::{MAX_CLIENT_BYTES, MAX_CWD_BYTES, MAX_ID_CHARS};
use claudemesh_protocol::wire::ClientFrame;

const NOW: i64 = 1_764_168_000_000;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::from),
        "[0-9a-f]{64}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> MemberSecretKey {
    MemberSecretKey::from_seed(&[7u8; 32])
}

fn valid_hello() -> Value {
    let h = signed_hello(&key(), "mesh_1", "mem_1", "s1", 1, "/w", NOW);
    serde_json::from_str(&ClientFrame::Hello(h).to_json()).unwrap()
}

const HELLO_FIELDS: &[&str] = &[
    "meshId",
    "memberId",
    "pubkey",
    "sessionId",
    "pid",
    "cwd",
    "timestamp",
    "signature",
    "displayName",
    "role",
    "client",
];

fn leave_fields() -> Vec<&'static str> {
    vec!["meshId", "memberId", "pubkey", "timestamp", "signature"]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary JSON is never an accepted hello.
    #[test]
    fn arbitrary_json_is_never_an_accepted_hello(v in json_value()) {
        prop_assert!(verify_hello_value(&v, NOW).is_err());
    }

    /// A signed hello with one field replaced by an arbitrary value: the
    /// signed fields break the signature, the others must still be within
    /// their limits to pass.
    #[test]
    fn a_hello_with_a_field_replaced_passes_only_within_the_limits(
        pick in prop::sample::select(HELLO_FIELDS),
        replacement in json_value(),
    ) {
        let original = valid_hello();
        let mut v = original.clone();
        v[pick] = replacement.clone();
        if let Ok(ok) = verify_hello_value(&v, NOW) {
            let h = ok.hello;
            // Signed fields unchanged (a same-valued replacement).
            prop_assert_eq!(&h.mesh_id, "mesh_1");
            prop_assert_eq!(&h.member_id, "mem_1");
            prop_assert_eq!(h.timestamp, NOW);
            prop_assert!(!h.session_id.is_empty() && h.session_id.chars().count() <= MAX_ID_CHARS);
            prop_assert!(!h.session_id.chars().any(char::is_control));
            prop_assert!(h.cwd.len() <= MAX_CWD_BYTES && !h.cwd.chars().any(char::is_control));
            prop_assert!(h.client.as_ref().is_none_or(|c| c.len() <= MAX_CLIENT_BYTES));
            prop_assert!(h.display_name.as_ref().is_none_or(|n| !n.chars().any(char::is_control)));
        }
    }

    /// Session ids with any character: control characters are refused.
    #[test]
    fn hello_session_ids_with_control_characters_are_refused(sid in ".{1,20}") {
        let mut v = valid_hello();
        v["sessionId"] = Value::from(sid.clone());
        let verdict = verify_hello_value(&v, NOW);
        if sid.chars().any(char::is_control) {
            prop_assert!(verdict.is_err());
        } else {
            prop_assert!(verdict.is_ok(), "{sid:?}");
        }
    }

    /// Arbitrary `/v1/leave` bodies: a typed error or a request; a request
    /// verifies only if it is the signed one.
    #[test]
    fn leave_bodies_parse_or_fail_cleanly(
        pick in prop::sample::select(leave_fields()),
        replacement in json_value(),
        raw in ".{0,80}",
    ) {
        let _ = serde_json::from_str::<LeaveRequest>(&raw);
        let signed = LeaveRequest::signed(&key(), "mesh_1", "mem_1", NOW);
        let mut v = serde_json::to_value(&signed).unwrap();
        v[pick] = replacement;
        if let Ok(req) = serde_json::from_value::<LeaveRequest>(v)
            && req.verify(NOW).is_ok()
        {
            prop_assert_eq!(req, signed);
        }
    }

    /// IPC request lines: a typed error (with the id when it had one) or a
    /// request that round-trips.
    #[test]
    fn ipc_request_lines_parse_or_fail_cleanly(
        op in prop::sample::select(vec!["hello", "send", "list_peers", "status", "set_summary", "nope"]),
        id in any::<Option<u64>>(),
        fields in prop::collection::btree_map("[a-zA-Z]{1,10}", json_value(), 0..5),
        raw in ".{0,120}",
    ) {
        let _ = RequestFrame::parse(&raw);
        let mut object: Map<String, Value> = fields.into_iter().collect();
        object.insert("op".into(), Value::from(op));
        if let Some(id) = id {
            object.insert("id".into(), Value::from(id));
        }
        let line = Value::Object(object).to_string();
        match RequestFrame::parse(&line) {
            Ok(frame) => {
                let again = RequestFrame::parse(frame.to_line().trim_end()).unwrap();
                prop_assert_eq!(again, frame);
            }
            Err(failure) => {
                prop_assert!(!failure.error.code.as_str().is_empty());
                if failure.id.is_some() {
                    prop_assert_eq!(failure.id, id);
                }
            }
        }
    }

    /// Daemon → shim lines, as the shim reads them.
    #[test]
    fn ipc_daemon_lines_parse_or_fail_cleanly(v in json_value(), raw in ".{0,120}") {
        let _ = DaemonFrame::parse(&raw);
        if let Ok(frame) = DaemonFrame::parse(&v.to_string()) {
            let again = DaemonFrame::parse(frame.to_line().trim_end()).unwrap();
            prop_assert_eq!(again, frame);
        }
    }
}
