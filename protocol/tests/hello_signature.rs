//! The seven hello-signature regressions of issue 2: each builds a hello
//! with a real key, breaks one thing, and checks the reason code PROTOCOL.md
//! gives for it, through both the typed and the raw-JSON entry points.

mod common;

use claudemesh_protocol::hello::{
    self, HelloRejection, VerifiedHello, signed_hello, verify_hello, verify_hello_value,
};
use claudemesh_protocol::wire::{ClientFrame, Hello};
use common::{MEMBER, MESH, NOW, alice, bob};

fn alice_hello(timestamp: i64) -> Hello {
    signed_hello(
        &alice(),
        MESH,
        MEMBER,
        "sess-1",
        4242,
        "/home/u/project",
        timestamp,
    )
}

/// Verifies `hello` at `now` both as a typed hello and as the JSON frame a
/// broker would read, and checks the two agree.
fn verify_both(hello: &Hello, now: i64) -> Result<VerifiedHello, HelloRejection> {
    let typed = verify_hello(hello, now);
    let frame = serde_json::to_value(ClientFrame::Hello(hello.clone())).unwrap();
    let from_value = verify_hello_value(&frame, now);
    assert_eq!(
        typed.as_ref().map(|v| v.pubkey).map_err(|e| *e),
        from_value.as_ref().map(|v| v.pubkey).map_err(|e| *e),
        "verify_hello and verify_hello_value disagree on {frame}"
    );
    typed
}

fn assert_rejected(hello: &Hello, now: i64, reason: HelloRejection, code: &str) {
    let err = verify_both(hello, now).expect_err("the hello must be rejected");
    assert_eq!(err, reason);
    assert_eq!(err.code(), code);
}

#[test]
fn valid_signature_is_accepted() {
    let key = alice();
    let hello = alice_hello(NOW);
    let verified = verify_both(&hello, NOW).expect("a freshly signed hello verifies");
    assert_eq!(verified.pubkey, key.public_key());
    assert_eq!(verified.hello, hello);
    assert_eq!(verified.signature.to_hex(), hello.signature);
    // The signature is libsodium's for the same canonical string.
    assert_eq!(
        hello.signature,
        "41cbd344a56c9620753d7a01f40ef5565419401a12dd8e4d6cd80d13c3b72e97\
         020fb49b96b8eb108bd60f8eb6fc4a599509a3dda6e545b85337ebf82228ec0c"
    );
    // Anywhere inside the window.
    assert!(verify_both(&hello, NOW + 59_999).is_ok());
    assert!(verify_both(&hello, NOW - 59_999).is_ok());
}

#[test]
fn signature_from_wrong_key_is_bad_signature() {
    let mut hello = alice_hello(NOW);
    let canonical = hello::canonical(MESH, MEMBER, &hello.pubkey, NOW);
    hello.signature = bob().sign(canonical.as_bytes()).to_hex();
    assert_rejected(&hello, NOW, HelloRejection::BadSignature, "bad_signature");

    // Bob's own hello, with Alice's pubkey swapped in.
    let mut swapped = signed_hello(&bob(), MESH, MEMBER, "sess-1", 1, "/", NOW);
    swapped.pubkey = alice().public_key().to_hex();
    assert_rejected(&swapped, NOW, HelloRejection::BadSignature, "bad_signature");
}

#[test]
fn timestamp_older_than_60_s_is_timestamp_skew() {
    for age in [60_001, 61_000, 3_600_000, NOW] {
        let hello = alice_hello(NOW - age);
        assert_rejected(&hello, NOW, HelloRejection::TimestampSkew, "timestamp_skew");
    }
}

#[test]
fn timestamp_more_than_60_s_ahead_is_timestamp_skew() {
    for ahead in [60_001, 61_000, 3_600_000, i64::MAX - NOW] {
        let hello = alice_hello(NOW + ahead);
        assert_rejected(&hello, NOW, HelloRejection::TimestampSkew, "timestamp_skew");
    }
}

#[test]
fn tampered_mesh_id_is_bad_signature() {
    let mut hello = alice_hello(NOW);
    hello.mesh_id = "mesh_OTHER".into();
    assert_rejected(&hello, NOW, HelloRejection::BadSignature, "bad_signature");

    // The other signed fields are covered just the same.
    let mut member = alice_hello(NOW);
    member.member_id = "mem_mallory".into();
    assert_rejected(&member, NOW, HelloRejection::BadSignature, "bad_signature");
    let mut time = alice_hello(NOW);
    time.timestamp += 1;
    assert_rejected(&time, NOW, HelloRejection::BadSignature, "bad_signature");
}

#[test]
fn malformed_hex_pubkey_is_malformed() {
    let good = alice_hello(NOW).pubkey;
    let bad = [
        good.to_uppercase(),
        format!("zz{}", &good[2..]),
        good[..63].to_owned(),
        format!("{good}0"),
        format!("0x{}", &good[2..]),
        format!(" {}", &good[1..]),
        String::new(),
    ];
    for pubkey in bad {
        let mut hello = alice_hello(NOW);
        hello.pubkey = pubkey;
        assert_rejected(&hello, NOW, HelloRejection::Malformed, "malformed");
    }
}

#[test]
fn malformed_signature_length_is_malformed() {
    let good = alice_hello(NOW).signature;
    let bad = [
        good[..126].to_owned(),
        good[..127].to_owned(),
        format!("{good}00"),
        format!("{good}0"),
        String::new(),
    ];
    for signature in bad {
        let mut hello = alice_hello(NOW);
        hello.signature = signature;
        assert_rejected(&hello, NOW, HelloRejection::Malformed, "malformed");
    }
}
