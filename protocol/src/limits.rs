//! Numeric limits fixed by PROTOCOL.md, in one place so that every side
//! enforces the same numbers.

/// A hello (or leave request) is accepted only within this many
/// milliseconds of the verifier's clock, in either direction.
pub const HELLO_SKEW_MS: i64 = 60_000;

/// A client that has not sent `hello` within this long is closed.
pub const HELLO_TIMEOUT_MS: u64 = 10_000;

/// Frames larger than this close the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// `meshId`, `memberId`, `sessionId` and send `id` are at most this long.
pub const MAX_ID_CHARS: usize = 64;

/// Undelivered messages wait this long for their member.
pub const QUEUE_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A session whose connection dropped stays listed this long.
pub const PRESENCE_GRACE_MS: u64 = 60_000;

/// A connection silent for this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 75_000;

/// Length of an envelope nonce in bytes.
pub const NONCE_BYTES: usize = 24;
