//! The client side of the local socket, shared by the shim and ctl.
//!
//! A [`DaemonClient`] is one connection to the daemon: it says hello
//! (checking both sides speak the same [`IPC_VERSION`]), then carries
//! requests (several may be in flight at once; a reader task matches answers
//! to requests by `id`) and the events the daemon pushes to an attached
//! session. One connection carries at most one session.
//!
//! [`DaemonClient::connect_or_start`] also starts the daemon when nothing
//! answers: see `client/start.rs` for how that stays safe when ten shims do it
//! at once.
//!
//! This module builds with none of the daemon's optional features: it uses
//! only tokio, interprocess, serde_json, thiserror, tracing and the protocol
//! crate, so that the shim stays small.
//!
//! [`IPC_VERSION`]: claudemesh_protocol::ipc::IPC_VERSION

mod connection;
mod error;
mod start;

pub use connection::{DaemonClient, Welcome};
pub use error::ClientError;
pub use start::{
    DAEMON_EXE_ENV, EXIT_ALREADY_RUNNING, START_TIMEOUT, daemon_log_path, find_daemon_exe,
};
