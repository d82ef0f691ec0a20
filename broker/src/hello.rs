//! Verifying a `hello`: PROTOCOL.md's five checks, in order.
//!
//! Checks 1–3 (`timestamp_skew`, `malformed`, `bad_signature`) are the
//! protocol crate's; this module adds 4 (`unauthorized`, against the member
//! table) and 5 (`replayed`). An accepted signature is remembered in memory
//! (the fast answer, and atomic between two connections racing with the
//! same hello) and in the database (so that it is still refused after a
//! restart) until its timestamp can no longer pass check 1.

use serde_json::Value;

use claudemesh_protocol::hello::{HelloRejection, verify_hello_value};
use claudemesh_protocol::limits::HELLO_SKEW_MS;
use claudemesh_protocol::wire::Hello;

use crate::ctx::Ctx;
use crate::store::{MemberInfo, StoreError};

/// Why a hello did not get through.
#[derive(Debug, thiserror::Error)]
pub enum HelloFailure {
    #[error("{0}")]
    Rejected(HelloRejection),
    /// The broker could not check (database trouble): close 1011.
    #[error("the broker could not verify the hello: {0}")]
    Internal(StoreError),
    /// The database server cannot be reached: close 1013, try again later.
    #[error("the broker cannot reach its database: {0}")]
    Unavailable(StoreError),
}

impl From<StoreError> for HelloFailure {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e)
        } else {
            Self::Internal(e)
        }
    }
}

impl From<HelloRejection> for HelloFailure {
    fn from(r: HelloRejection) -> Self {
        Self::Rejected(r)
    }
}

/// Runs the five checks; on success the hello and its member.
pub async fn verify(ctx: &Ctx, frame: &Value) -> Result<(Hello, MemberInfo), HelloFailure> {
    let now = ctx.now_ms();
    let verified = verify_hello_value(frame, now)?;
    let hello = verified.hello;

    let member = ctx
        .store
        .member_by_pubkey(&hello.mesh_id, &hello.pubkey)
        .await?;
    let member = match member {
        Some(m) if !m.revoked && m.id == hello.member_id => m,
        _ => return Err(HelloRejection::Unauthorized.into()),
    };

    // A hello stays acceptable while its timestamp is within the skew of
    // the clock, so its signature must be remembered until then.
    let expires_at = hello.timestamp.saturating_add(HELLO_SKEW_MS);
    if !ctx.replay.insert(&hello.signature, expires_at, now) {
        return Err(HelloRejection::Replayed.into());
    }
    match ctx
        .writer
        .remember_hello(hello.signature.clone(), expires_at)
        .await
    {
        Ok(true) => Ok((hello, member)),
        Ok(false) => Err(HelloRejection::Replayed.into()),
        Err(e) => Err(e.into()),
    }
}
