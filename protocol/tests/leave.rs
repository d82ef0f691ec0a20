//! The signed `POST /v1/leave` request reuses the hello's checks and codes.

mod common;

use claudemesh_protocol::hello::{self, HelloRejection};
use claudemesh_protocol::leave::{self, LeaveRequest};
use common::{MEMBER, MESH, NOW, alice, bob};
use serde_json::json;

#[test]
fn signed_leave_verifies_in_the_protocol_shape() {
    let key = alice();
    let req = LeaveRequest::signed(&key, MESH, MEMBER, NOW);
    assert_eq!(req.verify(NOW).unwrap(), key.public_key());
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({
            "meshId": MESH,
            "memberId": MEMBER,
            "pubkey": key.public_key().to_hex(),
            "timestamp": NOW,
            "signature": req.signature,
        })
    );
    let parsed: LeaveRequest = serde_json::from_value(serde_json::to_value(&req).unwrap()).unwrap();
    assert_eq!(parsed, req);
    assert_eq!(
        leave::canonical(MESH, MEMBER, &req.pubkey, NOW),
        format!("leave|{MESH}|{MEMBER}|{}|{NOW}", req.pubkey)
    );
}

#[test]
fn hello_and_leave_signatures_are_not_interchangeable() {
    let key = alice();
    let hello_sig = hello::sign(&key, MESH, MEMBER, NOW).to_hex();
    let mut req = LeaveRequest::signed(&key, MESH, MEMBER, NOW);
    assert_ne!(req.signature, hello_sig);
    req.signature = hello_sig;
    assert_eq!(req.verify(NOW), Err(HelloRejection::BadSignature));
}

#[test]
fn leave_skew_window_is_the_hellos() {
    let key = alice();
    for (offset, ok) in [
        (60_000, true),
        (-60_000, true),
        (60_001, false),
        (-60_001, false),
    ] {
        let req = LeaveRequest::signed(&key, MESH, MEMBER, NOW + offset);
        let expected = if ok {
            Ok(key.public_key())
        } else {
            Err(HelloRejection::TimestampSkew)
        };
        assert_eq!(req.verify(NOW), expected, "offset {offset}");
    }
}

#[test]
fn leave_failures_use_the_hello_codes_in_order() {
    let good = LeaveRequest::signed(&alice(), MESH, MEMBER, NOW);

    let mut wrong_key = good.clone();
    wrong_key.signature = bob()
        .sign(leave::canonical(MESH, MEMBER, &good.pubkey, NOW).as_bytes())
        .to_hex();
    assert_eq!(wrong_key.verify(NOW), Err(HelloRejection::BadSignature));

    let mut tampered = good.clone();
    tampered.mesh_id = "mesh_OTHER".into();
    assert_eq!(tampered.verify(NOW), Err(HelloRejection::BadSignature));

    let mut upper = good.clone();
    upper.pubkey = upper.pubkey.to_uppercase();
    assert_eq!(upper.verify(NOW).unwrap_err().code(), "malformed");

    let mut short = good.clone();
    short.signature.truncate(126);
    assert_eq!(short.verify(NOW), Err(HelloRejection::Malformed));
    // Skew is checked first.
    assert_eq!(
        short.verify(NOW + 60_001),
        Err(HelloRejection::TimestampSkew)
    );

    // 64 hex characters that are not a point: passes the shape check, fails
    // the signature check.
    let not_a_point = (0u8..=255)
        .map(|b| [b; 32])
        .find(|b| claudemesh_protocol::MemberPublicKey::from_bytes(b).is_err())
        .map(hex::encode)
        .unwrap();
    let mut off_curve = good;
    off_curve.pubkey = not_a_point;
    assert_eq!(off_curve.verify(NOW), Err(HelloRejection::BadSignature));
}
