//! The broker wire frames of PROTOCOL.md: one JSON object per WebSocket text
//! frame, tagged by `type`. One enum per direction: [`ClientFrame`]
//! (client → broker) and [`ServerFrame`] (broker → client).
//!
//! Unknown fields are ignored so that newer peers can add them; an unknown
//! `type`, a missing required field or an ill-typed one is a [`FrameError`],
//! never a panic.

mod client;
mod common;
mod error_code;
mod parse;
mod server;

pub use client::*;
pub use common::*;
pub use error_code::ErrorCode;
pub use parse::{FrameError, ParseFailure};
pub use server::*;
