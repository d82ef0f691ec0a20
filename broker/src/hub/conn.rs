//! A handle on one live WebSocket connection: a bounded queue of frames to
//! write, and a signal asking the connection to close itself.
//!
//! Everything that reaches a connection from elsewhere (pushes, presence
//! events, receipts, a revocation) goes through this handle, so writing
//! never blocks the sender: a connection whose queue is full is too slow to
//! keep up, and is closed rather than allowed to hold memory without bound
//! (its messages stay queued in the database and come back on reconnect).

use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use tokio::sync::{Notify, mpsc};

/// Process-wide connection number.
pub type ConnId = u64;

/// Close code used when a connection cannot keep up with its frames.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

#[derive(Default)]
struct CloseSignal {
    notify: Notify,
    reason: Mutex<Option<(u16, String)>>,
}

/// Cheap to clone; all clones talk to the same connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    tx: mpsc::Sender<Message>,
    close: Arc<CloseSignal>,
}

impl ConnHandle {
    /// A handle and the receiving end of its frame queue.
    pub fn new(id: ConnId, capacity: usize) -> (Self, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(capacity.max(16));
        (
            Self {
                id,
                tx,
                close: Arc::new(CloseSignal::default()),
            },
            rx,
        )
    }

    /// Queues a text frame. False when the connection is gone or too slow
    /// (it is then asked to close).
    pub fn send_text(&self, text: impl Into<Utf8Bytes>) -> bool {
        self.send(Message::Text(text.into()))
    }

    /// Queues any frame without waiting.
    pub fn send(&self, msg: Message) -> bool {
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CLOSE_TRY_AGAIN_LATER, "slow_consumer");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame, waiting for room: for bulk sends from the
    /// connection's own tasks (redelivery), which may wait.
    pub async fn send_wait(&self, msg: Message) -> bool {
        self.tx.send(msg).await.is_ok()
    }

    /// Like [`ConnHandle::send_wait`], giving up after `limit`.
    pub async fn send_wait_timeout(&self, msg: Message, limit: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.tx.send(msg)).await,
            Ok(Ok(()))
        )
    }

    /// Asks the connection to close with `code` and `reason`. The first
    /// request wins; the connection's task sends the close frame.
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut r) = self.close.reason.lock()
            && r.is_none()
        {
            *r = Some((code, reason.to_owned()));
        }
        self.close.notify.notify_one();
    }

    /// Resolves once [`ConnHandle::close`] has been called.
    pub async fn closing(&self) -> (u16, String) {
        loop {
            if let Some(r) = self.close.reason.lock().ok().and_then(|r| r.clone()) {
                return r;
            }
            self.close.notify.notified().await;
        }
    }
}

/// A close frame with a code and a reason.
pub fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}
