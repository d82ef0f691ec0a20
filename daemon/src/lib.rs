//! claudemeshd: one per-user daemon that holds the member keys, keeps one
//! signed broker connection per joined mesh, and serves every attached
//! Claude Code session over a local socket.
//!
//! The client side (`paths`, `config`, `client`) builds without the server so
//! that the shim stays small; `keystore` is behind the `keys` feature for
//! ctl; the rest is the running daemon, behind `server`.

pub mod client;
pub mod config;
pub mod host;
#[cfg(feature = "keys")]
pub mod keystore;
pub mod paths;

#[cfg(feature = "server")]
pub mod background;
#[cfg(feature = "server")]
pub mod clock;
#[cfg(feature = "server")]
pub mod config_watch;
#[cfg(feature = "server")]
pub mod core;
#[cfg(feature = "server")]
pub mod exit_watch;
#[cfg(feature = "server")]
pub mod ids;
#[cfg(feature = "server")]
pub mod instance_lock;
#[cfg(feature = "server")]
pub mod link;
#[cfg(feature = "server")]
pub mod local_mesh;
#[cfg(feature = "server")]
pub mod logging;
#[cfg(feature = "server")]
pub mod mesh;
#[cfg(feature = "server")]
pub mod process_info;
#[cfg(feature = "server")]
pub mod run;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod sessions;
#[cfg(feature = "server")]
pub mod store;
pub mod transcript;
