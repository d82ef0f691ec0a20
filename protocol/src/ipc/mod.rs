//! The daemon<->client frames over the local socket (`docs/ipc.md`).
//!
//! Framing is one JSON object per line (`\n`), UTF-8, at most
//! [`MAX_IPC_LINE_BYTES`]. A client (shim, ctl, hook) sends
//! [`RequestFrame`]s, each with a numeric `id`; the daemon answers each with
//! a [`DaemonFrame::Ok`] or [`DaemonFrame::Err`] carrying the same `id`, and
//! pushes [`DaemonFrame::Event`]s at any time to an attached session.
//!
//! The first request on a connection must be [`Request::Hello`]; a client and
//! daemon whose [`IPC_VERSION`]s differ fail there with `version_mismatch`
//! and a message naming both versions. One connection carries at most one
//! session ([`Request::Attach`]): a client cannot act as another session.

mod errors;
mod events;
mod framing;
mod requests;
mod responses;
#[cfg(test)]
mod tests;

pub use errors::*;
pub use events::*;
pub use framing::*;
pub use requests::*;
pub use responses::*;

/// Bumped on any incompatible change to these frames.
pub const IPC_VERSION: u32 = 1;

/// A longer line is refused with `too_large` and the connection closed
/// (the stream cannot be resynchronised inside an over-long line).
pub const MAX_IPC_LINE_BYTES: usize = 4 * 1024 * 1024;

pub use crate::limits::MAX_TEXT_BYTES;
