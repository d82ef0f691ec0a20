//! The harness of `cluster_failover.rs`.

pub mod check;
pub mod direct;
pub mod world;
