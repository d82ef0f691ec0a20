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
use claudemesh_protocol::limits::MAX_OUTBOUND_QUEUE_BYTES;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

/// Process-wide connection number.
pub type ConnId = u64;

/// Close code used when a connection cannot keep up with its frames.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

#[derive(Default)]
struct CloseSignal {
    notify: Notify,
    reason: Mutex<Option<(u16, String)>>,
}

/// A frame waiting to be written, holding its bytes' share of the
/// connection's byte budget until it is written.
pub struct Queued {
    pub msg: Message,
    pub bytes: OwnedSemaphorePermit,
}

/// Cheap to clone; all clones talk to the same connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    tx: mpsc::Sender<Queued>,
    /// Bytes that may still be queued: [`MAX_OUTBOUND_QUEUE_BYTES`] minus
    /// those of the frames waiting.
    budget: Arc<Semaphore>,
    close: Arc<CloseSignal>,
}

/// The budget a frame takes: its payload, at least one byte, at most the
/// whole budget (so that any frame can be queued on an idle connection).
fn cost(msg: &Message) -> u32 {
    let n = match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) => b.len(),
        Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(c) => c.as_ref().map_or(0, |c| c.reason.len() + 2),
    };
    u32::try_from(n.clamp(1, MAX_OUTBOUND_QUEUE_BYTES)).unwrap_or(u32::MAX)
}

impl ConnHandle {
    /// A handle and the receiving end of its frame queue.
    pub fn new(id: ConnId, capacity: usize) -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(capacity.max(16));
        (
            Self {
                id,
                tx,
                budget: Arc::new(Semaphore::new(MAX_OUTBOUND_QUEUE_BYTES)),
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

    /// Queues any frame without waiting. Over the frame or byte budget the
    /// connection is judged too slow and asked to close.
    pub fn send(&self, msg: Message) -> bool {
        let Ok(bytes) = self.budget.clone().try_acquire_many_owned(cost(&msg)) else {
            self.close(CLOSE_TRY_AGAIN_LATER, "slow_consumer");
            return false;
        };
        match self.tx.try_send(Queued { msg, bytes }) {
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
        let Ok(bytes) = self.budget.clone().acquire_many_owned(cost(&msg)).await else {
            return false;
        };
        self.tx.send(Queued { msg, bytes }).await.is_ok()
    }

    /// Like [`ConnHandle::send_wait`], giving up after `limit`.
    pub async fn send_wait_timeout(&self, msg: Message, limit: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.send_wait(msg)).await,
            Ok(true)
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
