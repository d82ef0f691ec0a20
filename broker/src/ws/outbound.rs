//! Writes a connection's queued frames to its socket.
//!
//! It takes everything that is waiting before flushing, so a burst of
//! pushes costs one write system call rather than one per frame. A frame's
//! share of the byte budget is given back once the burst is flushed.
//! A write that makes no progress for [`WRITE_STALL_TIMEOUT_MS`] means the
//! peer stopped reading: the connection is asked to close.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use claudemesh_protocol::limits::WRITE_STALL_TIMEOUT_MS;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::mpsc;

use crate::hub::ConnHandle;
use crate::hub::conn::{CLOSE_TRY_AGAIN_LATER, Queued};

/// Frames written per flush at most.
const MAX_BURST: usize = 256;

/// The longest a gated frame waits (see [`Queued::gate`]): a cluster
/// whose database is away for longer still acknowledges the session,
/// as it did before there were gates.
const GATE_LIMIT: Duration = Duration::from_secs(5);

/// Runs until the queue closes, a close frame has been written, or the
/// peer stops reading.
pub async fn run(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Queued>,
    handle: ConnHandle,
) {
    let stall = Duration::from_millis(WRITE_STALL_TIMEOUT_MS);
    let mut closed = false;
    let mut written = Vec::with_capacity(0);
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(Queued { msg, bytes, gate }) = next.take() {
            if let Some(gate) = gate {
                let _ = tokio::time::timeout(GATE_LIMIT, gate).await;
            }
            let is_close = matches!(msg, Message::Close(_));
            match tokio::time::timeout(stall, sink.feed(msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break 'outer,
                Err(_) => {
                    handle.close(CLOSE_TRY_AGAIN_LATER, "slow_consumer");
                    break 'outer;
                }
            }
            written.push(bytes);
            if is_close {
                closed = true;
                break;
            }
            n += 1;
            if n < MAX_BURST {
                next = rx.try_recv().ok();
            }
        }
        match tokio::time::timeout(stall, sink.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                handle.close(CLOSE_TRY_AGAIN_LATER, "slow_consumer");
                break;
            }
        }
        written.clear();
        if closed {
            break;
        }
    }
    drop(handle);
    // Completes a close handshake the peer started, or sends ours.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sink.close()).await;
}
