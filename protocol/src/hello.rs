//! The signed `hello`: its canonical string, signing, and the stateless
//! part of its verification.
//!
//! PROTOCOL.md orders the checks: `timestamp_skew`, `malformed`,
//! `bad_signature`, then `unauthorized` and `replayed`. The last two need the
//! broker's store, so [`verify_hello_value`] performs the first three and the
//! broker the rest; [`HelloRejection`] names all five so both sides speak
//! the same codes.

use serde_json::Value;

use crate::keys::{MemberPublicKey, MemberSecretKey, Signature};
use crate::limits::{
    HELLO_SKEW_MS, MAX_CLIENT_BYTES, MAX_CWD_BYTES, MAX_DISPLAY_NAME_CHARS, TextError, check_line,
    check_name,
};
use crate::wire::{ErrorCode, Hello};

/// Why a hello was refused, in PROTOCOL.md's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HelloRejection {
    #[error(
        "the hello timestamp is more than {secs} seconds from the broker's clock",
        secs = crate::limits::HELLO_SKEW_MS / 1000
    )]
    TimestampSkew,
    #[error(
        "the hello is malformed: a required field is missing or ill-typed, an id or name has control characters, a field is over its limit, or the key or signature is not lowercase hex of the right length"
    )]
    Malformed,
    #[error("the hello signature does not verify with the given public key")]
    BadSignature,
    #[error("no active member of this mesh has this public key and member id")]
    Unauthorized,
    #[error("this hello signature was already used")]
    Replayed,
}

impl HelloRejection {
    /// All reasons, in verification order.
    pub const ALL: [Self; 5] = [
        Self::TimestampSkew,
        Self::Malformed,
        Self::BadSignature,
        Self::Unauthorized,
        Self::Replayed,
    ];

    /// The reason code used in the error frame, the close reason and the
    /// metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::TimestampSkew => "timestamp_skew",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Unauthorized => "unauthorized",
            Self::Replayed => "replayed",
        }
    }

    /// [`Self::code`] as the error frame's typed code.
    pub fn error_code(self) -> ErrorCode {
        match self {
            Self::TimestampSkew => ErrorCode::TimestampSkew,
            Self::Malformed => ErrorCode::Malformed,
            Self::BadSignature => ErrorCode::BadSignature,
            Self::Unauthorized => ErrorCode::Unauthorized,
            Self::Replayed => ErrorCode::Replayed,
        }
    }
}

/// `${meshId}|${memberId}|${pubkey}|${timestamp}`.
pub fn canonical(mesh_id: &str, member_id: &str, pubkey_hex: &str, timestamp: i64) -> String {
    format!("{mesh_id}|{member_id}|{pubkey_hex}|{timestamp}")
}

/// Signs the hello canonical string with `key`; the pubkey in the string is
/// `key`'s own.
pub fn sign(key: &MemberSecretKey, mesh_id: &str, member_id: &str, timestamp: i64) -> Signature {
    let pubkey = key.public_key().to_hex();
    key.sign(canonical(mesh_id, member_id, &pubkey, timestamp).as_bytes())
}

/// True when `timestamp` is within ±[`HELLO_SKEW_MS`] of `now`, bounds
/// included.
pub fn within_skew(timestamp: i64, now: i64) -> bool {
    now.abs_diff(timestamp) <= HELLO_SKEW_MS as u64
}

/// A hello that passed the stateless checks.
#[derive(Debug, Clone)]
pub struct VerifiedHello {
    pub hello: Hello,
    pub pubkey: MemberPublicKey,
    pub signature: Signature,
}

/// Runs checks 1–3 on a typed hello.
pub fn verify_hello(hello: &Hello, now: i64) -> Result<VerifiedHello, HelloRejection> {
    if !within_skew(hello.timestamp, now) {
        return Err(HelloRejection::TimestampSkew);
    }
    if !crate::encoding::is_valid_id(&hello.mesh_id)
        || !crate::encoding::is_valid_id(&hello.member_id)
        || !crate::encoding::is_valid_id(&hello.session_id)
    {
        return Err(HelloRejection::Malformed);
    }
    if check_hello_texts(hello).is_err() {
        return Err(HelloRejection::Malformed);
    }
    let (pubkey, signature) = decode_key_and_signature(&hello.pubkey, &hello.signature)?;
    let message = canonical(
        &hello.mesh_id,
        &hello.member_id,
        &hello.pubkey,
        hello.timestamp,
    );
    if !pubkey.verify(message.as_bytes(), &signature) {
        return Err(HelloRejection::BadSignature);
    }
    Ok(VerifiedHello {
        hello: hello.clone(),
        pubkey,
        signature,
    })
}

/// The free-text fields of a hello within their limits (part of check 2).
pub fn check_hello_texts(hello: &Hello) -> Result<(), TextError> {
    check_line("cwd", &hello.cwd, MAX_CWD_BYTES)?;
    if let Some(name) = &hello.display_name {
        check_name("displayName", name, MAX_DISPLAY_NAME_CHARS)?;
    }
    if let Some(client) = &hello.client {
        check_line("client", client, MAX_CLIENT_BYTES)?;
    }
    Ok(())
}

/// Check 2 (both fields are lowercase hex of the right length, else
/// `malformed`), then the key half of check 3: 64 hex characters that are
/// not an ed25519 point pass check 2, and no signature verifies under them,
/// so they are `bad_signature`.
pub(crate) fn decode_key_and_signature(
    pubkey_hex: &str,
    signature_hex: &str,
) -> Result<(MemberPublicKey, Signature), HelloRejection> {
    let signature = Signature::from_hex(signature_hex).map_err(|_| HelloRejection::Malformed)?;
    if !crate::encoding::is_lower_hex(pubkey_hex, 64) {
        return Err(HelloRejection::Malformed);
    }
    let pubkey = MemberPublicKey::from_hex(pubkey_hex).map_err(|_| HelloRejection::BadSignature)?;
    Ok((pubkey, signature))
}

/// Runs checks 1–3 on a hello frame as it came off the wire.
///
/// The timestamp is looked at before anything else, so that a stale hello
/// is `timestamp_skew` even when another field is also wrong; a timestamp
/// that is missing or not an integer is `malformed`.
pub fn verify_hello_value(frame: &Value, now: i64) -> Result<VerifiedHello, HelloRejection> {
    let timestamp = frame
        .get("timestamp")
        .and_then(Value::as_i64)
        .ok_or(HelloRejection::Malformed)?;
    if !within_skew(timestamp, now) {
        return Err(HelloRejection::TimestampSkew);
    }
    let hello: Hello =
        serde_json::from_value(frame.clone()).map_err(|_| HelloRejection::Malformed)?;
    verify_hello(&hello, now)
}

/// Builds a signed hello frame for `key`.
#[allow(clippy::too_many_arguments)]
pub fn signed_hello(
    key: &MemberSecretKey,
    mesh_id: &str,
    member_id: &str,
    session_id: &str,
    pid: u32,
    cwd: &str,
    timestamp: i64,
) -> Hello {
    Hello {
        mesh_id: mesh_id.to_owned(),
        member_id: member_id.to_owned(),
        pubkey: key.public_key().to_hex(),
        session_id: session_id.to_owned(),
        pid,
        cwd: cwd.to_owned(),
        timestamp,
        signature: sign(key, mesh_id, member_id, timestamp).to_hex(),
        display_name: None,
        role: Default::default(),
        client: None,
    }
}
