//! claudemeshd: one per-user daemon that holds the member keys, keeps one
//! signed broker connection per joined mesh, and serves every attached
//! Claude Code session over a local socket.
//!
//! The client side (`paths`, `config`, `client`) builds without the server so
//! that the shim stays small; `keystore` is behind the `keys` feature for
//! ctl; the rest is the running daemon, behind `server`.

pub mod client;
pub mod config;
#[cfg(feature = "keys")]
pub mod keystore;
pub mod paths;
