//! The WebSocket endpoint `/ws`: one task per connection.
//!
//! - [`connection`]: the life of a connection (hello, attach, read loop,
//!   close, departure);
//! - [`handlers`]: what each client frame does once the hello is accepted
//!   (`send` and the receipts in their own modules);
//! - [`outbound`]: the task that writes queued frames to the socket.

pub mod connection;
pub mod handlers;
pub mod outbound;
mod receipts;
mod send;

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;

use claudemesh_protocol::limits::MAX_FRAME_BYTES;

use crate::ctx::Ctx;
use crate::net::listener::ConnSlot;

/// The WebSocket layer refuses messages above this hard cap outright.
/// Frames between 1 MiB and the cap are read and then refused by the
/// broker itself, which can still close cleanly with 1009 (a frame refused
/// by the WebSocket layer leaves unread bytes behind, and the close may
/// be lost to a connection reset).
pub const HARD_CAP_BYTES: usize = 2 * MAX_FRAME_BYTES;

/// Bytes read from the socket at a time. tungstenite's default (128 KiB,
/// allocated per connection) made an idle connection cost ~137 KB; a
/// larger frame still grows the buffer while it is read.
const READ_CHUNK_BYTES: usize = 2048;

/// Frames are buffered up to this before a write; the outbound task
/// flushes after each burst anyway.
const WRITE_BUFFER_BYTES: usize = 8192;

pub async fn upgrade(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(slot): ConnectInfo<ConnSlot>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(HARD_CAP_BYTES)
        .max_frame_size(HARD_CAP_BYTES)
        .read_buffer_size(READ_CHUNK_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| connection::run(socket, ctx, slot.0))
}
