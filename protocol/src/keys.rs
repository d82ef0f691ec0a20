//! Member keys: ed25519 keypairs, one per (mesh, member).
//!
//! The secret half zeroizes on drop and never prints its bytes: `Debug` and
//! `Display` show only the public key, so a stray `{:?}` in a log line
//! cannot leak it.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::encoding::decode_lower_hex;

/// Why a key or signature could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a public key must be 64 lowercase hex characters")]
    PublicKeyEncoding,
    #[error("the public key is not a valid ed25519 point")]
    PublicKeyPoint,
    #[error("a signature must be 128 lowercase hex characters")]
    SignatureEncoding,
    #[error("a secret key seed must be 32 bytes")]
    SeedLength,
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// An ed25519 member secret key. Zeroized on drop (the inner
/// `SigningKey` is `ZeroizeOnDrop`); never printed.
#[derive(Clone)]
pub struct MemberSecretKey(SigningKey);

/// The only field is a `SigningKey`, which wipes itself on drop, so the
/// wrapper does too. The assertion below keeps this marker honest should
/// the field's type ever change.
impl ZeroizeOnDrop for MemberSecretKey {}

const _: () = {
    const fn inner_zeroizes_on_drop<T: ZeroizeOnDrop>() {}
    inner_zeroizes_on_drop::<SigningKey>();
};

impl MemberSecretKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(&seed))
    }

    /// The key whose 32-byte ed25519 seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// Parses a seed from a byte slice, as read back from a keystore.
    pub fn from_seed_slice(seed: &[u8]) -> Result<Self, KeyError> {
        let seed: &[u8; 32] = seed.try_into().map_err(|_| KeyError::SeedLength)?;
        Ok(Self::from_seed(seed))
    }

    /// The 32-byte seed, for storing in a keystore. Wrapped so that the copy
    /// is wiped too.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> MemberPublicKey {
        MemberPublicKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }

    /// The X25519 secret for `crypto_box`, as libsodium's
    /// `crypto_sign_ed25519_sk_to_curve25519` gives it (clamped).
    pub fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        let mut scalar = Zeroizing::new(self.0.to_scalar_bytes());
        scalar[0] &= 248;
        scalar[31] &= 127;
        scalar[31] |= 64;
        scalar
    }
}

impl fmt::Debug for MemberSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MemberSecretKey(public {}, secret redacted)",
            self.public_key()
        )
    }
}

impl fmt::Display for MemberSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<secret key for {}>", self.public_key())
    }
}

/// An ed25519 member public key; travels as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberPublicKey(VerifyingKey);

impl MemberPublicKey {
    /// Parses the wire form: exactly 64 lowercase hex characters of a valid
    /// ed25519 point.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = decode_lower_hex::<32>(s).ok_or(KeyError::PublicKeyEncoding)?;
        Self::from_bytes(&bytes)
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::PublicKeyPoint)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// True when `signature` is this key's signature of `message`.
    ///
    /// Strict verification, as libsodium's `crypto_sign_verify_detached`
    /// does it: a small-order public key or `R` is refused. The lax check
    /// accepts, for the identity key, a fixed signature over every message.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0.verify_strict(message, &sig).is_ok()
    }

    /// The X25519 public key for `crypto_box`, as libsodium's
    /// `crypto_sign_ed25519_pk_to_curve25519` gives it.
    pub fn x25519_public(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }
}

impl fmt::Display for MemberPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MemberPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberPublicKey({})", self.to_hex())
    }
}

/// A 64-byte ed25519 signature; travels as 128 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        decode_lower_hex::<64>(s)
            .map(Self)
            .ok_or(KeyError::SignatureEncoding)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let key = MemberSecretKey::from_seed(&[7u8; 32]);
        let seed_hex = hex::encode(key.seed().as_ref());
        let scalar_hex = hex::encode(key.x25519_secret().as_ref());
        for shown in [format!("{key:?}"), format!("{key}"), format!("{key:#?}")] {
            assert!(!shown.contains(&seed_hex), "{shown}");
            assert!(!shown.contains(&scalar_hex), "{shown}");
            assert!(shown.contains(&key.public_key().to_hex()));
        }
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let key = MemberSecretKey::generate().unwrap();
        let sig = key.sign(b"hello");
        assert!(key.public_key().verify(b"hello", &sig));
        assert!(!key.public_key().verify(b"hellO", &sig));
        let parsed = Signature::from_hex(&sig.to_hex()).unwrap();
        assert_eq!(parsed, sig);
    }

    #[test]
    fn generated_keys_differ() {
        let a = MemberSecretKey::generate().unwrap();
        let b = MemberSecretKey::generate().unwrap();
        assert_ne!(a.public_key(), b.public_key());
    }

    #[test]
    fn public_key_parsing_is_strict() {
        let pk = MemberSecretKey::from_seed(&[1u8; 32]).public_key();
        assert_eq!(MemberPublicKey::from_hex(&pk.to_hex()).unwrap(), pk);
        assert_eq!(
            MemberPublicKey::from_hex(&pk.to_hex().to_uppercase()),
            Err(KeyError::PublicKeyEncoding)
        );
        assert_eq!(
            MemberPublicKey::from_hex(&pk.to_hex()[..63]),
            Err(KeyError::PublicKeyEncoding)
        );
        assert_eq!(
            MemberSecretKey::from_seed_slice(&[0u8; 31]).map(|_| ()),
            Err(KeyError::SeedLength)
        );
    }
}
