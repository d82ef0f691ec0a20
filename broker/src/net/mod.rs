//! Accepting TCP connections without letting strangers exhaust the broker.
//!
//! - [`admission`]: the global and per-IP caps on connections that have not
//!   authenticated yet, and the slot each such connection holds;
//! - [`stream`]: the accepted stream, closed at a deadline until its hello
//!   succeeds (slow headers, slow bodies, idle keep-alive);
//! - [`listener`]: the axum listener that puts the two together;
//! - [`fdlimit`]: raising the open-file limit at start.

pub mod admission;
pub mod fdlimit;
pub mod listener;
pub mod stream;
