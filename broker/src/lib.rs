//! claudemesh-broker: the routing server of PROTOCOL.md.
//!
//! It verifies every hello, holds mesh membership, presence and the
//! offline queue, and routes ciphertext it cannot read. It runs standalone
//! (`claudemesh-broker serve`) and embedded in the daemon for the local
//! mesh ([`start`] on a loopback port, [`admin::Admin`] to enroll keys).
//!
//! Map of the crate, one concern per module:
//!
//! - [`config`], [`clock`]: what a broker is told, and its (injectable) clock;
//! - [`server`]: start and graceful shutdown;
//! - [`http`]: the one port's routes (`/ws`, `/v1/join`, `/v1/leave`,
//!   `/metrics`, `/healthz`);
//! - [`ws`]: one task per WebSocket connection;
//! - [`hello`]: the five hello checks; [`replay_cache`]: the signatures
//!   they have accepted (check 5);
//! - [`hub`]: live presence (connections, sessions, names, groups, grace);
//! - [`router`]: what a `to` names; [`delivery`]: acks, pushes, receipts;
//! - [`writer`]: the group-commit database writer; [`store`]: all SQL;
//! - [`cluster`]: what other nodes on the same PostgreSQL announce;
//! - [`admin`], [`cli`]: administration of a data directory;
//! - [`net`]: admission of TCP connections (caps, deadline, open-file limit);
//! - [`metrics`], [`logging`], [`shutdown`].

pub mod admin;
pub mod cli;
pub mod clock;
mod cluster;
pub mod config;
mod ctx;
mod delivery;
mod hello;
mod http;
mod hub;
mod ids;
pub mod logging;
pub mod metrics;
pub mod net;
mod replay_cache;
mod router;
mod server;
pub mod shutdown;
pub mod store;
mod writer;
mod ws;

pub use clock::Clock;
pub use config::BrokerConfig;
pub use server::{RunningBroker, start};
