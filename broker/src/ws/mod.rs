//! The WebSocket endpoint `/ws`: one task per connection.
//!
//! - [`connection`]: the life of a connection (hello, attach, read loop,
//!   close, departure);
//! - [`frames`]: what each client frame does once the hello is accepted;
//! - [`outbound`]: the task that writes queued frames to the socket.

pub mod connection;
pub mod frames;
pub mod outbound;

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;

use claudemesh_protocol::limits::MAX_FRAME_BYTES;

use crate::ctx::Ctx;

/// The WebSocket layer refuses messages above this hard cap outright.
/// Frames between 1 MiB and the cap are read and then refused by the
/// broker itself, which can still close cleanly with 1009 (a frame refused
/// by the WebSocket layer leaves unread bytes behind, and the close may
/// be lost to a connection reset).
pub const HARD_CAP_BYTES: usize = 2 * MAX_FRAME_BYTES;

pub async fn upgrade(State(ctx): State<Arc<Ctx>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(HARD_CAP_BYTES)
        .max_frame_size(HARD_CAP_BYTES)
        .on_upgrade(move |socket| connection::run(socket, ctx))
}
