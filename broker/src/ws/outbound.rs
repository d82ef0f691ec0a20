//! Writes a connection's queued frames to its socket.
//!
//! It takes everything that is waiting before flushing, so a burst of
//! pushes costs one write system call rather than one per frame.

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::mpsc;

/// Frames written per flush at most.
const MAX_BURST: usize = 256;

/// Runs until the queue closes or a close frame has been written.
pub async fn run(mut sink: SplitSink<WebSocket, Message>, mut rx: mpsc::Receiver<Message>) {
    let mut closed = false;
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(msg) = next.take() {
            let is_close = matches!(msg, Message::Close(_));
            if sink.feed(msg).await.is_err() {
                break 'outer;
            }
            if is_close {
                closed = true;
                break;
            }
            n += 1;
            if n < MAX_BURST {
                next = rx.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() || closed {
            break;
        }
    }
    // Completes a close handshake the peer started, or sends ours.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sink.close()).await;
}
