//! Member secret keys are wiped on drop and never reach an error message.

mod common;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use claudemesh_protocol::envelope::{self, EnvelopeError};
use claudemesh_protocol::hello::{HelloRejection, signed_hello, verify_hello};
use claudemesh_protocol::invite::{self, Invite, InviteError, InviteRole};
use claudemesh_protocol::keys::KeyError;
use claudemesh_protocol::leave::LeaveRequest;
use claudemesh_protocol::wire::{ClientFrame, FrameError, ServerFrame};
use claudemesh_protocol::{MemberPublicKey, MemberSecretKey, Signature};
use common::{alice, bob};
use zeroize::ZeroizeOnDrop;

fn zeroizes_on_drop<T: ZeroizeOnDrop>(_: &T) {}

#[test]
fn secret_key_and_its_copies_zeroize_on_drop() {
    // Compile-time: these calls only type-check if the bound holds.
    fn bound<T: ZeroizeOnDrop>() {}
    bound::<MemberSecretKey>();
    bound::<ed25519_dalek::SigningKey>();
    let key = alice();
    zeroizes_on_drop(&key);
    zeroizes_on_drop(&key.clone());
    zeroizes_on_drop(&key.seed());
    zeroizes_on_drop(&key.x25519_secret());
    // The seed copy is the seed.
    assert_eq!(
        MemberSecretKey::from_seed(&key.seed()).public_key(),
        key.public_key()
    );
}

/// Every text form in which a secret could leak: hex (either case), both
/// base64 alphabets, and Rust's `{:?}` of the byte array; any 8-byte window
/// of the secret counts.
fn leak_patterns(secret: &[u8]) -> Vec<String> {
    let mut patterns = Vec::new();
    for window in secret.windows(8).step_by(4) {
        patterns.push(hex::encode(window));
        patterns.push(hex::encode_upper(window));
        patterns.push(format!("{:?}", window).trim_matches(['[', ']']).to_owned());
    }
    // Base64 of the secret embedded at any offset: one encoding per
    // alignment, whole 4-character groups only.
    for offset in 0..3 {
        for encoded in [
            STANDARD.encode(&secret[offset..]),
            URL_SAFE_NO_PAD.encode(&secret[offset..]),
        ] {
            for start in (0..encoded.len().saturating_sub(16)).step_by(4) {
                patterns.push(encoded[start..start + 12].to_owned());
            }
        }
    }
    patterns
}

/// The secret forms of a key: the ed25519 seed (libsodium's 64-byte secret
/// key is this seed followed by the public key) and the X25519 scalar.
fn secrets_of(key: &MemberSecretKey) -> Vec<Vec<u8>> {
    vec![key.seed().to_vec(), key.x25519_secret().to_vec()]
}

/// The first leak pattern of `key`'s secrets found in `shown`.
fn leak_in(shown: &str, key: &MemberSecretKey) -> Option<String> {
    secrets_of(key)
        .iter()
        .flat_map(|secret| leak_patterns(secret))
        .find(|pattern| shown.contains(pattern.as_str()))
}

fn assert_no_leak(shown: &str, key: &MemberSecretKey) {
    if let Some(pattern) = leak_in(shown, key) {
        panic!("secret bytes ({pattern}) appear in: {shown}");
    }
}

/// Every error the crate can produce from operations that handle `key`,
/// plus each variant built directly, with its Display and Debug forms.
fn every_error_text(key: &MemberSecretKey) -> Vec<String> {
    let other = if key.public_key() == bob().public_key() {
        alice()
    } else {
        bob()
    };
    let stranger = MemberSecretKey::from_seed(&[9; 32]);
    let mut texts = Vec::new();
    let mut push = |display: String, debug: String| {
        assert!(!display.is_empty());
        texts.push(display);
        texts.push(debug);
    };

    // Keys.
    let seed = key.seed();
    let key_errors = [
        MemberSecretKey::from_seed_slice(&seed[..31])
            .map(|_| ())
            .unwrap_err(),
        MemberSecretKey::from_seed_slice(&[seed.as_slice(), &[0]].concat())
            .map(|_| ())
            .unwrap_err(),
        MemberPublicKey::from_hex(&hex::encode(seed.as_slice()).to_uppercase()).unwrap_err(),
        MemberPublicKey::from_hex(&hex::encode(seed.as_slice())[..63]).unwrap_err(),
        Signature::from_hex(&hex::encode(seed.as_slice())).unwrap_err(),
        KeyError::PublicKeyPoint,
        KeyError::Random("entropy source unavailable".into()),
    ];
    for e in key_errors {
        push(e.to_string(), format!("{e:?}"));
    }

    // Envelopes sealed and opened with the key.
    let sealed = envelope::seal(b"{\"text\":\"hi\"}", &other.public_key(), key).unwrap();
    let envelope_errors = [
        envelope::open(&sealed.nonce, &sealed.ciphertext, &key.public_key(), key).unwrap_err(),
        envelope::open(
            &sealed.nonce,
            &sealed.ciphertext,
            &key.public_key(),
            &stranger,
        )
        .unwrap_err(),
        envelope::open("AAAA", &sealed.ciphertext, &key.public_key(), &other).unwrap_err(),
        envelope::open(&sealed.nonce, "%", &key.public_key(), &other).unwrap_err(),
        EnvelopeError::from(KeyError::PublicKeyPoint),
        EnvelopeError::Random("entropy source unavailable".into()),
    ];
    for e in envelope_errors {
        push(e.to_string(), format!("{e:?}"));
    }

    // Hellos and leave requests signed with the key.
    let mut hello = signed_hello(key, "m", "mem", "s", 1, "/", 0);
    hello.mesh_id = "other".into();
    let rejection = verify_hello(&hello, 0).unwrap_err();
    assert_eq!(rejection, HelloRejection::BadSignature);
    push(rejection.to_string(), format!("{rejection:?}"));
    for r in HelloRejection::ALL {
        push(r.to_string(), format!("{r:?}"));
    }
    let mut leave = LeaveRequest::signed(key, "m", "mem", 0);
    leave.member_id = "other".into();
    let e = leave.verify(0).unwrap_err();
    push(e.to_string(), format!("{e:?}"));

    // Invites signed with the key.
    let invite = Invite::signed(key, "m", "s", "wss://b/ws", "i", InviteRole::Admin, 10);
    let link = invite.to_link();
    let mut altered = invite.clone();
    altered.mesh_slug = "t".into();
    let invite_errors = [
        invite::decode_and_verify(&link, 10).unwrap_err(),
        invite::decode_and_verify(&altered.to_link(), 0).unwrap_err(),
        invite::decode_and_verify(&link[1..], 0).unwrap_err(),
        invite::decode_and_verify(&format!("{link}="), 0).unwrap_err(),
        invite::decode_and_verify(&link[..link.len() - 8], 0).unwrap_err(),
        InviteError::UnsupportedVersion(2),
        InviteError::BadField("ownerPubkey"),
    ];
    for e in invite_errors {
        push(e.to_string(), format!("{e:?}"));
    }

    // Frames carrying the key's public values.
    let hello_json = ClientFrame::Hello(signed_hello(key, "m", "mem", "s", 1, "/", 0)).to_json();
    for text in [
        hello_json.replace("\"pid\":1", "\"pid\":\"x\""),
        hello_json.replace("\"type\":\"hello\"", "\"type\":\"helo\""),
        hello_json[..hello_json.len() - 1].to_owned(),
    ] {
        let e = ClientFrame::parse(&text).unwrap_err();
        push(e.to_string(), format!("{e:?}"));
        let e = ServerFrame::parse(&text).unwrap_err();
        push(e.to_string(), format!("{e:?}"));
    }
    for e in [FrameError::NotObject, FrameError::MissingType] {
        push(e.to_string(), format!("{e:?}"));
    }
    texts
}

#[test]
fn no_error_message_contains_secret_bytes() {
    for key in [alice(), bob(), MemberSecretKey::generate().unwrap()] {
        let texts = every_error_text(&key);
        assert!(texts.len() > 40);
        for text in &texts {
            assert_no_leak(text, &key);
        }
        // The key's own printed forms, too.
        for shown in [format!("{key}"), format!("{key:?}"), format!("{key:#?}")] {
            assert_no_leak(&shown, &key);
        }
    }
}

#[test]
fn the_leak_check_itself_catches_a_leak() {
    // Guard against a check that can never fail.
    let key = alice();
    let seed = key.seed();
    let scalar = key.x25519_secret();
    for leaked in [
        hex::encode(seed.as_slice()),
        format!("oops {}", &hex::encode_upper(seed.as_slice())[20..40]),
        format!("oops {}", STANDARD.encode(scalar.as_slice())),
        URL_SAFE_NO_PAD.encode(&scalar[8..]),
        format!("{:?}", seed.as_slice()),
    ] {
        assert!(leak_in(&leaked, &key).is_some(), "{leaked}");
    }
    assert_eq!(leak_in(&key.public_key().to_hex(), &key), None);
}
