//! Invite links: round trip, one test per failing check with its join error
//! code, and the property that any single-byte change to a valid link
//! fails verification.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use claudemesh_protocol::invite::{
    self, Invite, InviteError, InviteRole, LINK_PREFIX, decode, decode_and_verify,
};
use claudemesh_protocol::{MemberPublicKey, MemberSecretKey};
use common::{alice, bob};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Unix seconds: the invites below expire an hour after this.
const NOW_SECS: i64 = 1_764_168_000;
const EXPIRES: i64 = NOW_SECS + 3_600;

fn owner() -> MemberSecretKey {
    alice()
}

fn sample() -> Invite {
    Invite::signed(
        &owner(),
        "mesh_7Hq2",
        "acme-payments",
        "wss://mesh.acme.example/ws",
        "inv_01",
        InviteRole::Member,
        EXPIRES,
    )
}

/// Invites whose JSON lengths cover every remainder mod 3, so that links
/// with 0, 2 and 4 trailing bits in their last base64 character are all
/// exercised.
fn samples() -> Vec<Invite> {
    let invites: Vec<_> = ["a", "ab", "abc", "team-x"]
        .into_iter()
        .enumerate()
        .map(|(i, slug)| {
            Invite::signed(
                &owner(),
                "m",
                slug,
                if i % 2 == 0 {
                    "wss://b.example/ws"
                } else {
                    "ws://127.0.0.1:7878/ws"
                },
                "i",
                if i % 2 == 0 {
                    InviteRole::Member
                } else {
                    InviteRole::Admin
                },
                EXPIRES,
            )
        })
        .chain([sample()])
        .collect();
    let remainders: std::collections::BTreeSet<_> = invites
        .iter()
        .map(|i| serde_json::to_vec(i).unwrap().len() % 3)
        .collect();
    assert_eq!(remainders.len(), 3, "every JSON length mod 3 is covered");
    invites
}

/// A link for an arbitrary JSON payload.
fn link_of(payload: &Value) -> String {
    format!(
        "{LINK_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

fn payload_of(invite: &Invite) -> Value {
    serde_json::to_value(invite).unwrap()
}

fn fails_with(link: &str, expected: InviteError, code: &str) {
    let err = decode_and_verify(link, NOW_SECS).expect_err(link);
    assert_eq!(err, expected, "{link}");
    assert_eq!(err.code(), code, "{err}");
    let sentence = err.to_string();
    assert!(!sentence.is_empty() && !sentence.contains('\n'));
}

#[test]
fn signed_invite_round_trips_through_its_link() {
    for invite in samples() {
        let link = invite.to_link();
        assert!(link.starts_with("ic://join/"));
        assert!(!link.contains('='), "no padding");
        assert_eq!(decode(&link).unwrap(), invite);
        assert_eq!(decode_and_verify(&link, NOW_SECS).unwrap(), invite);
        assert_eq!(invite.verify(NOW_SECS).unwrap(), owner().public_key());
        // Surrounding whitespace from a copy and paste is tolerated.
        assert_eq!(decode(&format!("  {link}\n")).unwrap(), invite);
    }
}

#[test]
fn link_payload_has_the_protocol_shape() {
    let invite = sample();
    let link = invite.to_link();
    let json = URL_SAFE_NO_PAD
        .decode(link.strip_prefix("ic://join/").unwrap())
        .unwrap();
    let payload: Value = serde_json::from_slice(&json).unwrap();
    let owner_pubkey = owner().public_key().to_hex();
    assert_eq!(
        payload,
        json!({
            "v": 1,
            "meshId": "mesh_7Hq2",
            "meshSlug": "acme-payments",
            "broker": "wss://mesh.acme.example/ws",
            "inviteId": "inv_01",
            "role": "member",
            "expiresAt": EXPIRES,
            "ownerPubkey": owner_pubkey,
            "signature": invite.signature,
        })
    );
    let canonical = format!(
        "v1|mesh_7Hq2|acme-payments|wss://mesh.acme.example/ws|inv_01|member|{EXPIRES}|{owner_pubkey}"
    );
    assert_eq!(invite.canonical(), canonical);
    let signature = claudemesh_protocol::Signature::from_hex(&invite.signature).unwrap();
    assert!(
        owner()
            .public_key()
            .verify(canonical.as_bytes(), &signature)
    );
    // The admin role is spelled as PROTOCOL.md has it.
    let mut admin = payload.clone();
    admin["role"] = json!("admin");
    assert_eq!(decode(&link_of(&admin)).unwrap().role, InviteRole::Admin);
}

#[test]
fn wrong_prefix_is_bad_prefix() {
    let link = sample().to_link();
    let payload = link.strip_prefix(LINK_PREFIX).unwrap();
    for bad in [
        payload.to_owned(),
        format!("IC://join/{payload}"),
        format!("ic://join{payload}"),
        format!("ic://Join/{payload}"),
        format!("ic:/join/{payload}"),
        format!("https://join/{payload}"),
        format!("ic://invite/{payload}"),
        String::new(),
    ] {
        fails_with(&bad, InviteError::BadPrefix, "bad_invite");
    }
}

#[test]
fn damaged_base64url_is_bad_encoding() {
    let link = sample().to_link();
    let payload = link.strip_prefix(LINK_PREFIX).unwrap();
    let mut bad = vec![
        format!("{LINK_PREFIX}!!!!"),
        format!("{LINK_PREFIX}{payload}="),
        format!("{LINK_PREFIX}{payload}=="),
        format!("{LINK_PREFIX}a b"),
        format!("{LINK_PREFIX}{}", &payload[..1]),
    ];
    // The standard alphabet's `+` and `/` are not base64url.
    let standard = payload.replace('-', "+").replace('_', "/");
    if standard != payload {
        bad.push(format!("{LINK_PREFIX}{standard}"));
    }
    for link in bad {
        fails_with(&link, InviteError::BadEncoding, "bad_invite");
    }
}

#[test]
fn non_canonical_trailing_bits_are_bad_encoding() {
    let mut checked = 0;
    for invite in samples() {
        let link = invite.to_link();
        let json_len = serde_json::to_vec(&invite).unwrap().len();
        let spare_bits = match json_len % 3 {
            1 => 4,
            2 => 2,
            _ => continue,
        };
        // Set each unused low bit of the last character in turn: the same
        // bytes decode, so only a strict decoder notices.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = *link.as_bytes().last().unwrap();
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        assert_eq!(index & ((1 << spare_bits) - 1), 0, "canonical link");
        for bit in 0..spare_bits {
            let mut bytes = link.clone().into_bytes();
            *bytes.last_mut().unwrap() = alphabet[index | (1 << bit)];
            let bad = String::from_utf8(bytes).unwrap();
            fails_with(&bad, InviteError::BadEncoding, "bad_invite");
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn payload_that_is_not_an_invite_is_bad_payload() {
    let good = payload_of(&sample());
    let mut bad: Vec<String> = vec![
        format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode("not json")),
        format!(
            "{LINK_PREFIX}{}",
            URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x00])
        ),
        format!("{LINK_PREFIX}"),
        link_of(&json!([])),
        link_of(&json!("ic")),
        link_of(&Value::Null),
    ];
    for field in good.as_object().unwrap().keys() {
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove(field);
        bad.push(link_of(&missing));
    }
    for (field, value) in [
        ("v", json!("1")),
        ("v", json!(-1)),
        ("expiresAt", json!("soon")),
        ("expiresAt", json!(1.5)),
        ("role", json!("owner")),
        ("role", json!("Member")),
        ("meshId", json!(5)),
        ("signature", Value::Null),
    ] {
        let mut ill_typed = good.clone();
        ill_typed[field] = value;
        bad.push(link_of(&ill_typed));
    }
    // Trailing garbage after the object.
    let mut trailing = serde_json::to_vec(&sample()).unwrap();
    trailing.extend_from_slice(b"x");
    bad.push(format!("{LINK_PREFIX}{}", URL_SAFE_NO_PAD.encode(trailing)));
    for link in bad {
        let err = decode_and_verify(&link, NOW_SECS).expect_err(&link);
        assert!(matches!(err, InviteError::BadPayload(_)), "{link}: {err:?}");
        assert_eq!(err.code(), "bad_invite");
    }
}

#[test]
fn other_version_is_unsupported_version() {
    for v in [0u32, 2, 99] {
        let mut payload = payload_of(&sample());
        payload["v"] = json!(v);
        fails_with(
            &link_of(&payload),
            InviteError::UnsupportedVersion(v),
            "bad_invite",
        );
    }
    // Even when correctly signed under that version.
    let mut v2 = sample();
    v2.v = 2;
    v2.signature = owner().sign(v2.canonical().as_bytes()).to_hex();
    assert!(v2.canonical().starts_with("v2|"));
    fails_with(
        &v2.to_link(),
        InviteError::UnsupportedVersion(2),
        "bad_invite",
    );
}

#[test]
fn malformed_field_is_bad_field_naming_it() {
    let long = "x".repeat(65);
    let pubkey = owner().public_key().to_hex();
    let signature = sample().signature;
    let cases: Vec<(&str, String)> = vec![
        ("meshId", String::new()),
        ("meshId", long.clone()),
        ("meshId", "mesh|x".into()),
        ("meshSlug", String::new()),
        ("meshSlug", "acme|x".into()),
        ("broker", "https://mesh.acme.example/ws".into()),
        ("broker", "mesh.acme.example".into()),
        ("broker", String::new()),
        ("broker", "WSS://mesh.acme.example/ws".into()),
        ("broker", "wss://mesh|acme/ws".into()),
        ("inviteId", String::new()),
        ("inviteId", long.clone()),
        ("inviteId", "inv|1".into()),
        ("ownerPubkey", pubkey.to_uppercase()),
        ("ownerPubkey", pubkey[..63].into()),
        ("ownerPubkey", format!("{pubkey}00")),
        ("ownerPubkey", String::new()),
        ("signature", signature.to_uppercase()),
        ("signature", signature[..126].into()),
        ("signature", String::new()),
    ];
    for (field, value) in cases {
        let mut payload = payload_of(&sample());
        payload[field] = json!(value);
        let link = link_of(&payload);
        let err = decode(&link).expect_err(&format!("{field} = {value:?}"));
        assert_eq!(err, InviteError::BadField(field), "{field} = {value:?}");
        assert_eq!(err.code(), "bad_invite");
        assert!(err.to_string().contains(field), "{err}");
        fails_with(&link, InviteError::BadField(field), "bad_invite");
    }
    // Both broker schemes are accepted.
    for broker in ["ws://127.0.0.1:7878/ws", "wss://mesh.acme.example/ws"] {
        let invite = Invite::signed(&owner(), "m", "s", broker, "i", InviteRole::Member, EXPIRES);
        assert!(decode_and_verify(&invite.to_link(), NOW_SECS).is_ok());
    }
}

#[test]
fn altered_or_forged_invite_is_bad_signature() {
    let good = payload_of(&sample());
    let mut altered = Vec::new();
    for (field, value) in [
        ("meshId", json!("mesh_OTHER")),
        ("meshSlug", json!("acme-payment")),
        ("broker", json!("wss://evil.example/ws")),
        ("inviteId", json!("inv_02")),
        ("role", json!("admin")),
        ("expiresAt", json!(EXPIRES + 1)),
    ] {
        let mut payload = good.clone();
        payload[field] = value;
        altered.push(payload);
    }
    // Signed by another key but claiming the owner's.
    let mut forged = sample();
    forged.signature = bob().sign(forged.canonical().as_bytes()).to_hex();
    altered.push(payload_of(&forged));
    // Another key's valid invite with the owner key swapped in.
    let mut swapped = Invite::signed(
        &bob(),
        "mesh_7Hq2",
        "acme-payments",
        "wss://mesh.acme.example/ws",
        "inv_01",
        InviteRole::Member,
        EXPIRES,
    );
    swapped.owner_pubkey = owner().public_key().to_hex();
    altered.push(payload_of(&swapped));
    // A small-order owner key with the signature that satisfies the lax
    // verification equation for every message.
    let mut weak = good.clone();
    weak["ownerPubkey"] = json!(format!("01{}", "00".repeat(31)));
    weak["signature"] = json!(format!("01{}", "00".repeat(63)));
    altered.push(weak);
    for payload in altered {
        fails_with(
            &link_of(&payload),
            InviteError::BadSignature,
            "bad_signature",
        );
    }
}

#[test]
fn owner_pubkey_that_is_not_a_point_is_bad_field() {
    let not_a_point = (0u8..=255)
        .map(|b| [b; 32])
        .find(|bytes| MemberPublicKey::from_bytes(bytes).is_err())
        .map(hex::encode)
        .unwrap();
    let mut payload = payload_of(&sample());
    payload["ownerPubkey"] = json!(not_a_point);
    fails_with(
        &link_of(&payload),
        InviteError::BadField("ownerPubkey"),
        "bad_invite",
    );
}

#[test]
fn expiry_is_reached_at_expires_at() {
    let link = sample().to_link();
    assert!(decode_and_verify(&link, EXPIRES - 1).is_ok());
    for now in [EXPIRES, EXPIRES + 1, i64::MAX] {
        let err = decode_and_verify(&link, now).unwrap_err();
        assert_eq!(
            err,
            InviteError::Expired {
                expires_at: EXPIRES
            }
        );
        assert_eq!(err.code(), "expired");
        assert!(err.to_string().contains(&EXPIRES.to_string()));
    }
    // The signature is checked before the expiry.
    let mut payload = payload_of(&sample());
    payload["meshSlug"] = json!("other");
    assert_eq!(
        decode_and_verify(&link_of(&payload), EXPIRES + 10).unwrap_err(),
        InviteError::BadSignature
    );
}

#[test]
fn every_error_maps_to_its_join_code() {
    let cases = [
        (InviteError::BadPrefix, "bad_invite"),
        (InviteError::BadEncoding, "bad_invite"),
        (InviteError::BadPayload("x".into()), "bad_invite"),
        (InviteError::UnsupportedVersion(2), "bad_invite"),
        (InviteError::BadField("meshId"), "bad_invite"),
        (InviteError::BadSignature, "bad_signature"),
        (InviteError::Expired { expires_at: 1 }, "expired"),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err:?}");
    }
}

/// The link with byte `position` replaced by `replacement`, as the string a
/// user would paste (a byte that breaks UTF-8 becomes U+FFFD, itself a
/// change).
fn mutated(link: &str, position: usize, replacement: u8) -> String {
    let mut bytes = link.as_bytes().to_vec();
    bytes[position] = replacement;
    String::from_utf8_lossy(&bytes).into_owned()
}

fn assert_mutation_fails(link: &str, position: usize, replacement: u8) {
    if link.as_bytes()[position] == replacement {
        return;
    }
    let bad = mutated(link, position, replacement);
    assert!(
        decode_and_verify(&bad, NOW_SECS).is_err(),
        "changing byte {position} of {link} to {replacement:#04x} still verifies: {bad}"
    );
}

#[test]
fn every_single_byte_change_fails_exhaustive() {
    // Every base64url character, the characters base64 decoders tend to
    // forgive, whitespace, and a byte that is not UTF-8.
    let mut replacements: Vec<u8> =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec();
    replacements.extend_from_slice(b"+/=. \t\r\n\0|:%{}\"\\");
    replacements.push(0xff);
    for invite in samples() {
        let link = invite.to_link();
        assert!(decode_and_verify(&link, NOW_SECS).is_ok());
        for position in 0..link.len() {
            for &replacement in &replacements {
                assert_mutation_fails(&link, position, replacement);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Any position (a quarter of the cases in the last four characters,
    /// where base64's spare bits live) and any replacement byte.
    #[test]
    fn any_single_byte_change_fails(
        pick in any::<prop::sample::Index>(),
        anywhere in any::<prop::sample::Index>(),
        from_end in 1..=4usize,
        near_end in prop::bool::weighted(0.25),
        replacement in any::<u8>(),
    ) {
        let invites = samples();
        let link = pick.get(&invites).to_link();
        let position = if near_end {
            link.len() - from_end
        } else {
            anywhere.index(link.len())
        };
        prop_assume!(link.as_bytes()[position] != replacement);
        let bad = mutated(&link, position, replacement);
        prop_assert!(
            decode_and_verify(&bad, NOW_SECS).is_err(),
            "byte {} -> {:#04x} still verifies: {}", position, replacement, bad
        );
    }

    /// Whatever the input, decoding answers with a typed error or an invite.
    #[test]
    fn arbitrary_links_never_panic(tail in ".{0,200}") {
        let _ = decode_and_verify(&tail, NOW_SECS);
        let _ = decode_and_verify(&format!("{LINK_PREFIX}{tail}"), NOW_SECS);
    }
}

#[test]
fn links_are_plain_ascii_without_separators() {
    // Links travel through chat and shells: nothing to quote.
    let link = sample().to_link();
    assert!(
        link.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:/".contains(&b))
    );
    assert_eq!(invite::LINK_PREFIX, "ic://join/");
}
