//! Harness for the end-to-end tests in `tests/tests/`: it runs the real
//! binaries (`claudemesh-broker`, `claudemeshd`, `claudemesh-shim`,
//! `claudemesh-ctl`) as separate processes, each daemon in its own home,
//! and drives shims as MCP clients over their stdio.

#![forbid(unsafe_code)]

pub mod bins;
pub mod broker;
pub mod claude;
pub mod home;
pub mod inbox;
pub mod logs;
pub mod mcp;
pub mod process;
pub mod rpc;
pub mod scenario;
pub mod wait;
