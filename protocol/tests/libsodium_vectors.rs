//! Key conversion and `crypto_box_easy` against libsodium's own output.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use claudemesh_protocol::MemberPublicKey;
use claudemesh_protocol::envelope::{self, EnvelopeError, open_with_nonce, seal_with_nonce};
use claudemesh_protocol::limits::NONCE_BYTES;
use common::{BoxVector, key_from_seed, vectors};

fn b64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).expect("vector base64")
}

fn nonce(v: &BoxVector) -> [u8; NONCE_BYTES] {
    b64(&v.nonce_b64).try_into().expect("24-byte nonce")
}

fn opens(v: &BoxVector) -> bool {
    v.opens.unwrap_or(true)
}

#[test]
fn key_conversion_matches_libsodium() {
    for v in vectors().key_conversion {
        let key = key_from_seed(&v.seed);
        let public = key.public_key();
        assert_eq!(
            public.to_hex(),
            v.ed25519_pubkey,
            "ed25519 pubkey of {}",
            v.seed
        );
        assert_eq!(
            hex::encode(public.x25519_public()),
            v.x25519_pubkey,
            "crypto_sign_ed25519_pk_to_curve25519 of {}",
            v.ed25519_pubkey
        );
        assert_eq!(
            hex::encode(key.x25519_secret().as_ref()),
            v.x25519_secret,
            "crypto_sign_ed25519_sk_to_curve25519 of {}",
            v.seed
        );
        // The public half alone, as a peer sees it on the wire, converts the same.
        let parsed = MemberPublicKey::from_hex(&v.ed25519_pubkey).unwrap();
        assert_eq!(hex::encode(parsed.x25519_public()), v.x25519_pubkey);
    }
}

#[test]
fn sealing_with_the_vector_nonce_gives_libsodiums_ciphertext() {
    let mut sealed = 0;
    for v in vectors().boxes.iter().filter(|v| opens(v)) {
        let sender = key_from_seed(&v.sender_seed);
        let recipient = key_from_seed(&v.recipient_seed);
        assert_eq!(sender.public_key().to_hex(), v.sender_ed25519_pubkey);
        assert_eq!(recipient.public_key().to_hex(), v.recipient_ed25519_pubkey);
        let boxed = seal_with_nonce(
            v.plaintext_utf8.as_bytes(),
            &nonce(v),
            &recipient.public_key(),
            &sender,
        );
        assert_eq!(boxed.len(), v.plaintext_utf8.len() + 16, "tag + ciphertext");
        assert_eq!(STANDARD.encode(&boxed), v.ciphertext_b64, "{v:?}");
        sealed += 1;
    }
    assert!(sealed >= 4, "too few box vectors that open");
}

#[test]
fn opening_each_vector_gives_its_plaintext() {
    for v in vectors().boxes.iter().filter(|v| opens(v)) {
        let sender = key_from_seed(&v.sender_seed);
        let recipient = key_from_seed(&v.recipient_seed);
        // As it travels in a push: base64 nonce and ciphertext.
        let plaintext = envelope::open(
            &v.nonce_b64,
            &v.ciphertext_b64,
            &sender.public_key(),
            &recipient,
        )
        .unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(String::from_utf8(plaintext).unwrap(), v.plaintext_utf8);
        // crypto_box's shared key is symmetric: the sender can open it too.
        let again = open_with_nonce(
            &b64(&v.ciphertext_b64),
            &nonce(v),
            &recipient.public_key(),
            &sender,
        )
        .unwrap();
        assert_eq!(again, v.plaintext_utf8.as_bytes());
    }
}

#[test]
fn tampered_vector_is_an_error() {
    let tampered: Vec<_> = vectors().boxes.into_iter().filter(|v| !opens(v)).collect();
    assert!(!tampered.is_empty(), "the vectors carry a tampered box");
    for v in tampered {
        let sender = key_from_seed(&v.sender_seed);
        let recipient = key_from_seed(&v.recipient_seed);
        assert_eq!(
            envelope::open(
                &v.nonce_b64,
                &v.ciphertext_b64,
                &sender.public_key(),
                &recipient
            ),
            Err(EnvelopeError::Forged),
            "{:?}",
            v.name
        );
    }
}

#[test]
fn every_corruption_of_a_vector_box_is_an_error_not_a_panic() {
    for v in vectors().boxes.iter().filter(|v| opens(v)) {
        let sender = key_from_seed(&v.sender_seed).public_key();
        let recipient = key_from_seed(&v.recipient_seed);
        let boxed = b64(&v.ciphertext_b64);
        let nonce = nonce(v);
        // Every byte of tag and ciphertext, a few ways each.
        for i in 0..boxed.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = boxed.clone();
                bad[i] ^= flip;
                assert_eq!(
                    open_with_nonce(&bad, &nonce, &sender, &recipient),
                    Err(EnvelopeError::Forged),
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
        // Every byte of the nonce.
        for i in 0..NONCE_BYTES {
            let mut bad = nonce;
            bad[i] ^= 1;
            assert_eq!(
                open_with_nonce(&boxed, &bad, &sender, &recipient),
                Err(EnvelopeError::Forged)
            );
        }
        // Truncated, extended, and shorter than a tag.
        for len in 0..boxed.len() {
            assert_eq!(
                open_with_nonce(&boxed[..len], &nonce, &sender, &recipient),
                Err(EnvelopeError::Forged),
                "truncated to {len}"
            );
        }
        let mut longer = boxed.clone();
        longer.push(0);
        assert!(open_with_nonce(&longer, &nonce, &sender, &recipient).is_err());
        // The wrong recipient, or the wrong claimed sender.
        let stranger = key_from_seed(&"42".repeat(32));
        assert!(open_with_nonce(&boxed, &nonce, &sender, &stranger).is_err());
        assert!(open_with_nonce(&boxed, &nonce, &stranger.public_key(), &recipient).is_err());
    }
}

#[test]
fn bad_base64_in_a_push_is_a_typed_error() {
    let v = &vectors().boxes[0];
    let sender = key_from_seed(&v.sender_seed).public_key();
    let recipient = key_from_seed(&v.recipient_seed);
    let open = |n: &str, c: &str| envelope::open(n, c, &sender, &recipient);
    // A nonce of the wrong length, unpadded, or not base64 at all.
    assert_eq!(
        open("AAAA", &v.ciphertext_b64),
        Err(EnvelopeError::BadNonce)
    );
    assert_eq!(open("", &v.ciphertext_b64), Err(EnvelopeError::BadNonce));
    assert_eq!(open("*", &v.ciphertext_b64), Err(EnvelopeError::BadNonce));
    let unpadded = v.ciphertext_b64.trim_end_matches('=');
    assert_ne!(unpadded, v.ciphertext_b64, "the first vector is padded");
    assert_eq!(
        open(&v.nonce_b64, unpadded),
        Err(EnvelopeError::BadCiphertext)
    );
    assert_eq!(open(&v.nonce_b64, "%%%"), Err(EnvelopeError::BadCiphertext));
    // URL-safe alphabet is not the standard one.
    let url_safe = v.ciphertext_b64.replace('+', "-").replace('/', "_");
    if url_safe != v.ciphertext_b64 {
        assert_eq!(
            open(&v.nonce_b64, &url_safe),
            Err(EnvelopeError::BadCiphertext)
        );
    }
}

#[test]
fn a_fresh_envelope_opens_and_names_its_recipient() {
    let v = &vectors().boxes[0];
    let sender = key_from_seed(&v.sender_seed);
    let recipient = key_from_seed(&v.recipient_seed);
    let env = envelope::seal(b"{\"text\":\"hi\"}", &recipient.public_key(), &sender).unwrap();
    assert_eq!(env.member, v.recipient_ed25519_pubkey);
    assert_eq!(b64(&env.nonce).len(), NONCE_BYTES);
    let opened = envelope::open(
        &env.nonce,
        &env.ciphertext,
        &sender.public_key(),
        &recipient,
    );
    assert_eq!(opened.unwrap(), b"{\"text\":\"hi\"}");
}
