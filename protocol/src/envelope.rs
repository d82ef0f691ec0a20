//! End-to-end envelopes: libsodium's `crypto_box_easy` between member keys,
//! the ed25519 keys converted to X25519.

use crypto_box::aead::Aead;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};

use crate::encoding::{b64_decode, b64_encode};
use crate::keys::{KeyError, MemberPublicKey, MemberSecretKey};
use crate::limits::NONCE_BYTES;
use crate::wire::Envelope;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the envelope's member is not a valid public key")]
    BadMember,
    #[error(
        "the nonce is not {n} bytes of standard base64",
        n = crate::limits::NONCE_BYTES
    )]
    BadNonce,
    #[error("the ciphertext is not standard base64")]
    BadCiphertext,
    #[error(
        "the envelope does not open with this key: it was tampered with or sealed for someone else"
    )]
    Forged,
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

impl From<KeyError> for EnvelopeError {
    fn from(_: KeyError) -> Self {
        Self::BadMember
    }
}

fn salsa_box(peer: &MemberPublicKey, own: &MemberSecretKey) -> SalsaBox {
    let public = PublicKey::from(peer.x25519_public());
    let secret = SecretKey::from(*own.x25519_secret());
    SalsaBox::new(&public, &secret)
}

/// `crypto_box_easy(plaintext, nonce, recipient_pk, sender_sk)`: the 16-byte
/// tag followed by the ciphertext.
pub fn seal_with_nonce(
    plaintext: &[u8],
    nonce: &[u8; NONCE_BYTES],
    recipient: &MemberPublicKey,
    sender: &MemberSecretKey,
) -> Vec<u8> {
    salsa_box(recipient, sender)
        .encrypt(Nonce::from_slice(nonce), plaintext)
        .expect("XSalsa20-Poly1305 encryption of an in-memory buffer cannot fail")
}

/// `crypto_box_open_easy`; any tampering is [`EnvelopeError::Forged`].
pub fn open_with_nonce(
    boxed: &[u8],
    nonce: &[u8; NONCE_BYTES],
    sender: &MemberPublicKey,
    recipient: &MemberSecretKey,
) -> Result<Vec<u8>, EnvelopeError> {
    salsa_box(sender, recipient)
        .decrypt(Nonce::from_slice(nonce), boxed)
        .map_err(|_| EnvelopeError::Forged)
}

/// Seals `plaintext` for `recipient` under a fresh random nonce, as a wire
/// envelope.
pub fn seal(
    plaintext: &[u8],
    recipient: &MemberPublicKey,
    sender: &MemberSecretKey,
) -> Result<Envelope, EnvelopeError> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| EnvelopeError::Random(e.to_string()))?;
    let ciphertext = seal_with_nonce(plaintext, &nonce, recipient, sender);
    Ok(Envelope {
        member: recipient.to_hex(),
        nonce: b64_encode(&nonce),
        ciphertext: b64_encode(&ciphertext),
    })
}

/// Opens a nonce and ciphertext as they travel in a `push`.
pub fn open(
    nonce_b64: &str,
    ciphertext_b64: &str,
    sender: &MemberPublicKey,
    recipient: &MemberSecretKey,
) -> Result<Vec<u8>, EnvelopeError> {
    let nonce: [u8; NONCE_BYTES] = b64_decode(nonce_b64)
        .and_then(|n| n.try_into().ok())
        .ok_or(EnvelopeError::BadNonce)?;
    let boxed = b64_decode(ciphertext_b64).ok_or(EnvelopeError::BadCiphertext)?;
    open_with_nonce(&boxed, &nonce, sender, recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_nonces_differ() {
        let alice = MemberSecretKey::generate().unwrap();
        let bob = MemberSecretKey::generate().unwrap();
        let a = seal(b"hi bob", &bob.public_key(), &alice).unwrap();
        let b = seal(b"hi bob", &bob.public_key(), &alice).unwrap();
        assert_ne!(a.nonce, b.nonce);
        let opened = open(&a.nonce, &a.ciphertext, &alice.public_key(), &bob).unwrap();
        assert_eq!(opened, b"hi bob");
    }

    #[test]
    fn tampering_and_wrong_keys_are_errors() {
        let alice = MemberSecretKey::generate().unwrap();
        let bob = MemberSecretKey::generate().unwrap();
        let eve = MemberSecretKey::generate().unwrap();
        let env = seal(b"secret", &bob.public_key(), &alice).unwrap();
        let mut raw = b64_decode(&env.ciphertext).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 1;
            let res = open(&env.nonce, &b64_encode(&raw), &alice.public_key(), &bob);
            assert_eq!(res, Err(EnvelopeError::Forged), "byte {i}");
            raw[i] ^= 1;
        }
        assert_eq!(
            open(&env.nonce, &env.ciphertext, &alice.public_key(), &eve),
            Err(EnvelopeError::Forged)
        );
        assert_eq!(
            open("AAAA", &env.ciphertext, &alice.public_key(), &bob),
            Err(EnvelopeError::BadNonce)
        );
        assert_eq!(
            open(&env.nonce, "***", &alice.public_key(), &bob),
            Err(EnvelopeError::BadCiphertext)
        );
        assert_eq!(
            open(&env.nonce, "", &alice.public_key(), &bob),
            Err(EnvelopeError::Forged)
        );
    }
}
