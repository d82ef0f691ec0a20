//! The shared, I/O-free rules of claudemesh.
//!
//! Everything here is pure: wire frames (`wire`), the signed hello
//! (`hello`), signed leave requests (`leave`), invite links (`invite`),
//! member keys (`keys`), end-to-end envelopes (`envelope`) and the
//! daemon<->shim frames (`ipc`). The broker, daemon, shim and ctl wrap these
//! in their own I/O. The normative text is `shared/PROTOCOL.md`; where it is
//! silent, `docs/protocol.md` records the choice made here.

#![forbid(unsafe_code)]

pub mod critical_thread;
pub mod encoding;
pub mod envelope;
mod error_code;
pub mod hello;
pub mod invite;
pub mod ipc;
pub mod keys;
pub mod leave;
pub mod limits;
pub mod wire;

pub use keys::{MemberPublicKey, MemberSecretKey, Signature};

/// Milliseconds since the Unix epoch, the unit of every protocol timestamp.
pub type UnixMillis = i64;

/// The wire protocol version this crate implements.
pub const PROTOCOL_VERSION: u32 = 1;
