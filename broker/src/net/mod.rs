//! Accepting TCP connections without letting strangers exhaust the broker.
//!
//! - [`admission`]: the global and per-IP caps on connections that have not
//!   authenticated yet (the oldest evicted when full), the open-file budget,
//!   and the slot each connection holds;
//! - [`stream`]: the accepted stream, closed at a deadline until its hello
//!   succeeds (slow headers, slow bodies, idle keep-alive);
//! - [`listener`]: the axum listener that puts the two together;
//! - [`proxy`]: the client address a trusted proxy passes on (PROXY v2
//!   header, `X-Forwarded-For`), parsed;
//! - [`forwarded`]: the HTTP middleware that counts a request under its
//!   `X-Forwarded-For` client;
//! - [`fdlimit`]: raising the open-file limit at start, and sizing the caps
//!   from it.

pub mod admission;
pub mod fdlimit;
pub mod forwarded;
pub mod listener;
pub mod proxy;
pub mod stream;
