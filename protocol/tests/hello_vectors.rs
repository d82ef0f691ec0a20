//! The hello checks against libsodium's vectors, the exact skew boundary,
//! the order of the checks, and malformed frames as they come off the wire.

mod common;

use claudemesh_protocol::MemberPublicKey;
use claudemesh_protocol::hello::{
    self, HelloRejection, signed_hello, verify_hello, verify_hello_value,
};
use claudemesh_protocol::limits::HELLO_SKEW_MS;
use claudemesh_protocol::wire::{ClientFrame, Hello};
use common::{HelloVector, MEMBER, MESH, NOW, alice, bob, key_from_seed, vectors};
use serde_json::{Value, json};

/// The vector as a typed hello, with the fields the vectors leave out.
fn typed(v: &HelloVector) -> Hello {
    Hello {
        mesh_id: v.mesh_id.clone(),
        member_id: v.member_id.clone(),
        pubkey: v.pubkey.clone(),
        session_id: "sess-1".into(),
        pid: 4242,
        cwd: "/home/u/project".into(),
        timestamp: v.timestamp,
        signature: v.signature.clone(),
        display_name: None,
        role: Default::default(),
        client: None,
    }
}

/// The vector as the JSON frame a broker reads.
fn frame(v: &HelloVector) -> Value {
    json!({
        "type": "hello",
        "meshId": v.mesh_id,
        "memberId": v.member_id,
        "pubkey": v.pubkey,
        "sessionId": "sess-1",
        "pid": 4242,
        "cwd": "/home/u/project",
        "timestamp": v.timestamp,
        "signature": v.signature,
    })
}

fn alice_frame(timestamp: i64) -> Value {
    let h = signed_hello(&alice(), MESH, MEMBER, "sess-1", 4242, "/p", timestamp);
    serde_json::to_value(ClientFrame::Hello(h)).unwrap()
}

fn code_of<T>(r: Result<T, HelloRejection>) -> &'static str {
    match r {
        Ok(_) => "accepted",
        Err(e) => e.code(),
    }
}

#[test]
fn every_hello_vector_gives_its_expected_verdict() {
    let vectors = vectors().hello;
    assert!(vectors.iter().any(|v| v.valid) && vectors.iter().any(|v| !v.valid));
    for v in &vectors {
        let expected = if v.valid {
            assert!(v.reason.is_none(), "{}: valid with a reason", v.name);
            "accepted"
        } else {
            v.reason.as_deref().expect("invalid vectors name a reason")
        };
        let now = v.timestamp;
        assert_eq!(
            code_of(verify_hello(&typed(v), now)),
            expected,
            "{}",
            v.name
        );
        assert_eq!(
            code_of(verify_hello_value(&frame(v), now)),
            expected,
            "{} (from JSON)",
            v.name
        );
        if let Ok(verified) = verify_hello(&typed(v), now) {
            assert_eq!(verified.pubkey.to_hex(), v.pubkey, "{}", v.name);
        }
    }
}

#[test]
fn vector_canonical_strings_match() {
    let mut checked = 0;
    for v in vectors().hello {
        if let Some(canonical) = &v.canonical {
            assert_eq!(
                &hello::canonical(&v.mesh_id, &v.member_id, &v.pubkey, v.timestamp),
                canonical,
                "{}",
                v.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "too few vectors carry a canonical string");
}

#[test]
fn signing_from_the_seed_reproduces_every_valid_vector() {
    let valid: Vec<_> = vectors().hello.into_iter().filter(|v| v.valid).collect();
    assert!(!valid.is_empty());
    for v in valid {
        let seed = v.seed.as_deref().expect("valid vectors carry a seed");
        let key = key_from_seed(seed);
        assert_eq!(key.public_key().to_hex(), v.pubkey, "{}", v.name);
        if let Some(sk) = &v.secret_key_libsodium {
            assert_eq!(*sk, format!("{seed}{}", v.pubkey), "{}", v.name);
        }
        let signature = hello::sign(&key, &v.mesh_id, &v.member_id, v.timestamp);
        assert_eq!(signature.to_hex(), v.signature, "{}", v.name);
        let built = signed_hello(&key, &v.mesh_id, &v.member_id, "s", 1, "/", v.timestamp);
        assert_eq!(built.signature, v.signature, "{}", v.name);
        assert_eq!(built.pubkey, v.pubkey, "{}", v.name);
    }
}

#[test]
fn skew_boundary_is_60_000_ms_inclusive_both_ways() {
    assert_eq!(HELLO_SKEW_MS, 60_000);
    let key = alice();
    for (offset, accepted) in [
        (0, true),
        (60_000, true),
        (-60_000, true),
        (60_001, false),
        (-60_001, false),
    ] {
        // A hello stamped `offset` ms away from the verifier's clock.
        let timestamp = NOW + offset;
        let hello = signed_hello(&key, MESH, MEMBER, "sess-1", 1, "/", timestamp);
        let value = serde_json::to_value(ClientFrame::Hello(hello.clone())).unwrap();
        let expected = if accepted {
            "accepted"
        } else {
            "timestamp_skew"
        };
        assert_eq!(
            code_of(verify_hello(&hello, NOW)),
            expected,
            "typed, offset {offset}"
        );
        assert_eq!(
            code_of(verify_hello_value(&value, NOW)),
            expected,
            "value, offset {offset}"
        );
    }
    assert!(hello::within_skew(i64::MIN, i64::MIN));
    assert!(!hello::within_skew(i64::MIN, i64::MAX));
}

#[test]
fn skewed_and_malformed_is_timestamp_skew() {
    let stale = NOW - 60_001;
    let mut hello = signed_hello(&alice(), MESH, MEMBER, "s", 1, "/", stale);
    hello.pubkey = "zz".into();
    hello.signature = "00".into();
    assert_eq!(
        verify_hello(&hello, NOW).err(),
        Some(HelloRejection::TimestampSkew)
    );

    // From the wire: any other field missing or ill-typed is still skew.
    for broken in ["pubkey", "signature", "meshId", "sessionId", "pid", "cwd"] {
        let mut missing = alice_frame(stale);
        missing.as_object_mut().unwrap().remove(broken);
        assert_eq!(
            verify_hello_value(&missing, NOW).err(),
            Some(HelloRejection::TimestampSkew),
            "without {broken}"
        );
        let mut ill_typed = alice_frame(stale);
        ill_typed[broken] = json!({"not": "a string"});
        assert_eq!(
            verify_hello_value(&ill_typed, NOW).err(),
            Some(HelloRejection::TimestampSkew),
            "ill-typed {broken}"
        );
    }
}

#[test]
fn malformed_and_bad_signature_is_malformed() {
    // Uppercase pubkey (malformed) and a signature by the wrong key.
    let mut hello = signed_hello(&alice(), MESH, MEMBER, "s", 1, "/", NOW);
    let canonical = hello::canonical(MESH, MEMBER, &hello.pubkey, NOW);
    hello.signature = bob().sign(canonical.as_bytes()).to_hex();
    hello.pubkey = hello.pubkey.to_uppercase();
    assert_eq!(
        verify_hello(&hello, NOW).err(),
        Some(HelloRejection::Malformed)
    );

    // A tampered mesh id (bad signature) and a short signature (malformed).
    let mut hello = signed_hello(&alice(), MESH, MEMBER, "s", 1, "/", NOW);
    hello.mesh_id = "mesh_OTHER".into();
    hello.signature.truncate(126);
    assert_eq!(
        verify_hello(&hello, NOW).err(),
        Some(HelloRejection::Malformed)
    );
    let value = serde_json::to_value(ClientFrame::Hello(hello)).unwrap();
    assert_eq!(
        verify_hello_value(&value, NOW).err(),
        Some(HelloRejection::Malformed)
    );
}

#[test]
fn missing_required_fields_are_malformed() {
    assert!(verify_hello_value(&alice_frame(NOW), NOW).is_ok());
    for field in [
        "meshId",
        "memberId",
        "pubkey",
        "sessionId",
        "pid",
        "cwd",
        "timestamp",
        "signature",
    ] {
        let mut frame = alice_frame(NOW);
        frame.as_object_mut().unwrap().remove(field);
        assert_eq!(
            verify_hello_value(&frame, NOW).err(),
            Some(HelloRejection::Malformed),
            "without {field}"
        );
    }
}

#[test]
fn optional_fields_may_be_absent_or_present() {
    let mut frame = alice_frame(NOW);
    let object = frame.as_object_mut().unwrap();
    for optional in ["displayName", "role", "client"] {
        object.remove(optional);
    }
    assert!(verify_hello_value(&frame, NOW).is_ok());
    frame["displayName"] = json!("api");
    frame["role"] = json!("daemon");
    frame["client"] = json!("claudemeshd/0.1.0");
    frame["somethingNewer"] = json!({"ignored": true});
    assert!(verify_hello_value(&frame, NOW).is_ok());
}

#[test]
fn ill_typed_fields_are_malformed() {
    let cases = [
        ("meshId", json!(5)),
        ("meshId", Value::Null),
        ("memberId", json!(["mem_alice01"])),
        ("pubkey", json!(123)),
        ("sessionId", json!({})),
        ("pid", json!("4242")),
        ("pid", json!(-1)),
        ("pid", json!(1.5)),
        ("pid", json!(u64::from(u32::MAX) + 1)),
        ("cwd", json!(7)),
        ("timestamp", json!("1764168000000")),
        ("timestamp", json!(1_764_168_000_000.0_f64)),
        ("timestamp", json!(u64::MAX)),
        ("timestamp", Value::Null),
        ("signature", json!(true)),
        ("displayName", json!(5)),
        ("role", json!("admin")),
        ("role", json!(1)),
        ("client", json!(["x"])),
    ];
    for (field, value) in cases {
        let mut frame = alice_frame(NOW);
        frame[field] = value.clone();
        assert_eq!(
            verify_hello_value(&frame, NOW).err(),
            Some(HelloRejection::Malformed),
            "{field} = {value}"
        );
    }
    for not_an_object in [json!([]), json!("hello"), Value::Null, json!(42)] {
        assert_eq!(
            verify_hello_value(&not_an_object, NOW).err(),
            Some(HelloRejection::Malformed),
            "{not_an_object}"
        );
    }
}

#[test]
fn ids_must_be_1_to_64_characters() {
    let key = alice();
    let long = "m".repeat(65);
    let max = "m".repeat(64);
    assert!(verify_hello(&signed_hello(&key, &max, &max, &max, 1, "/", NOW), NOW).is_ok());
    // 64 characters, not bytes.
    let wide = "é".repeat(64);
    assert!(verify_hello(&signed_hello(&key, &wide, MEMBER, "s", 1, "/", NOW), NOW).is_ok());
    for (mesh, member, session) in [
        (long.as_str(), MEMBER, "s"),
        (MESH, long.as_str(), "s"),
        (MESH, MEMBER, long.as_str()),
        ("", MEMBER, "s"),
        (MESH, "", "s"),
        (MESH, MEMBER, ""),
    ] {
        let hello = signed_hello(&key, mesh, member, session, 1, "/", NOW);
        assert_eq!(
            verify_hello(&hello, NOW).err(),
            Some(HelloRejection::Malformed),
            "{mesh:?} {member:?} {session:?}"
        );
    }
}

/// 64 lowercase hex characters that do not decode to an ed25519 point.
fn not_a_point() -> String {
    (0u8..=255)
        .map(|b| [b; 32])
        .find(|bytes| MemberPublicKey::from_bytes(bytes).is_err())
        .map(hex::encode)
        .expect("some repeated byte is not a curve point")
}

#[test]
fn well_formed_pubkey_that_is_not_a_point_is_bad_signature() {
    // Check 2 asks only for 64 hex characters; such a key passes it, and no
    // signature verifies under it (check 3).
    let mut hello = signed_hello(&alice(), MESH, MEMBER, "s", 1, "/", NOW);
    hello.pubkey = not_a_point();
    assert_eq!(
        verify_hello(&hello, NOW).err(),
        Some(HelloRejection::BadSignature)
    );
    let value = serde_json::to_value(ClientFrame::Hello(hello.clone())).unwrap();
    assert_eq!(
        verify_hello_value(&value, NOW).err(),
        Some(HelloRejection::BadSignature)
    );
    // ...but check 2 still comes first.
    hello.signature.truncate(126);
    assert_eq!(
        verify_hello(&hello, NOW).err(),
        Some(HelloRejection::Malformed)
    );
}

#[test]
fn small_order_pubkey_cannot_forge_a_hello() {
    // The identity point with R = identity, S = 0 satisfies the cofactorless
    // equation for every message; libsodium refuses it, and so must we.
    let identity = format!("01{}", "00".repeat(31));
    let forged_signature = format!("01{}", "00".repeat(63));
    for (mesh, member) in [(MESH, MEMBER), ("any-mesh", "any-member")] {
        let hello = Hello {
            mesh_id: mesh.into(),
            member_id: member.into(),
            pubkey: identity.clone(),
            session_id: "s".into(),
            pid: 1,
            cwd: "/".into(),
            timestamp: NOW,
            signature: forged_signature.clone(),
            display_name: None,
            role: Default::default(),
            client: None,
        };
        assert_eq!(
            verify_hello(&hello, NOW).err(),
            Some(HelloRejection::BadSignature)
        );
    }
}

#[test]
fn rejection_codes_are_the_protocol_codes_in_order() {
    let codes: Vec<_> = HelloRejection::ALL.iter().map(|r| r.code()).collect();
    assert_eq!(
        codes,
        [
            "timestamp_skew",
            "malformed",
            "bad_signature",
            "unauthorized",
            "replayed"
        ]
    );
    for r in HelloRejection::ALL {
        let sentence = r.to_string();
        assert!(!sentence.is_empty() && !sentence.contains('\n'), "{r:?}");
    }
}
