//! A handle on one live WebSocket connection: a bounded queue of frames to
//! write, and a signal asking the connection to close itself.
//!
//! Everything that reaches a connection from elsewhere (pushes, presence
//! events, receipts, a revocation) goes through this handle, so writing
//! never blocks the sender: a connection whose queue is full is too slow to
//! keep up, and is closed rather than allowed to hold memory without bound
//! (its messages stay queued in the database and come back on reconnect).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use claudemesh_protocol::limits::MAX_OUTBOUND_QUEUE_BYTES;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// Process-wide connection number.
pub type ConnId = u64;

/// Close code used when a connection cannot keep up with its frames.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// What every clone of a handle shares besides the queue.
#[derive(Default)]
struct HandleShared {
    notify: Notify,
    reason: Mutex<Option<(u16, String)>>,
    recent: Mutex<RecentPushes>,
}

/// A frame waiting to be written, holding its bytes' share of the
/// connection's byte budget until it is written.
pub struct Queued {
    pub msg: Message,
    pub bytes: OwnedSemaphorePermit,
    /// Written only once this resolves (or is dropped): a frame that
    /// acknowledges a session waits for its presence to be committed in
    /// a cluster (see [`crate::hub::Hub::presence_committed`]). The
    /// frames behind it wait too, so the order holds.
    pub gate: Option<oneshot::Receiver<()>>,
}

/// Pushes a connection has been given lately, so that a message reaching
/// it by two paths (live, and the redelivery read; in a cluster the
/// order of commits across nodes cannot tell them apart) goes out once.
/// Bounded: a duplicate can only come from the short race between the
/// two paths, long after which the entry is no longer needed.
#[derive(Default)]
struct RecentPushes {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

/// Pushes remembered per connection (well above what its outbound queue
/// can hold at once).
const RECENT_PUSHES: usize = 4096;

impl RecentPushes {
    /// False when `key` is remembered already; else remembers it,
    /// forgetting the oldest beyond [`RECENT_PUSHES`].
    fn remember(&mut self, key: String) -> bool {
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > RECENT_PUSHES
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// Cheap to clone; all clones talk to the same connection.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    tx: mpsc::Sender<Queued>,
    /// Bytes that may still be queued: [`MAX_OUTBOUND_QUEUE_BYTES`] minus
    /// those of the frames waiting.
    budget: Arc<Semaphore>,
    shared: Arc<HandleShared>,
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
                shared: Arc::new(HandleShared::default()),
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
        self.send_after(None, msg)
    }

    /// Queues a text frame to be written once `gate` resolves (at once
    /// when `None`); the frames queued after it wait behind it.
    pub fn send_text_after(
        &self,
        gate: Option<oneshot::Receiver<()>>,
        text: impl Into<Utf8Bytes>,
    ) -> bool {
        self.send_after(gate, Message::Text(text.into()))
    }

    fn send_after(&self, gate: Option<oneshot::Receiver<()>>, msg: Message) -> bool {
        let Ok(bytes) = self.budget.clone().try_acquire_many_owned(cost(&msg)) else {
            self.close(CLOSE_TRY_AGAIN_LATER, "slow_consumer");
            return false;
        };
        match self.tx.try_send(Queued { msg, bytes, gate }) {
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
        let queued = Queued {
            msg,
            bytes,
            gate: None,
        };
        self.tx.send(queued).await.is_ok()
    }

    /// Like [`ConnHandle::send_wait`], giving up after `limit`.
    pub async fn send_wait_timeout(&self, msg: Message, limit: std::time::Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.send_wait(msg)).await,
            Ok(true)
        )
    }

    /// True when a push of `message_id` naming `sessions` (none: the
    /// whole member) would tell this connection something new; false for
    /// a repeat, which must not be sent. A push naming sessions is new
    /// while one of them has not been named by an earlier push of that
    /// message here, whichever read sent it first: so a daemon that opens
    /// a session right after its hello gets each message once, though
    /// the redeliveries of the hello and of the `session_open` both read
    /// it.
    pub fn first_push(&self, message_id: &str, sessions: &[String]) -> bool {
        let mut r = self.shared.recent.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.is_empty() {
            return r.remember(format!("{message_id}/"));
        }
        let mut new = false;
        for s in sessions {
            new |= r.remember(format!("{message_id}/{s}"));
        }
        new
    }

    /// Asks the connection to close with `code` and `reason`. The first
    /// request wins; the connection's task sends the close frame.
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut r) = self.shared.reason.lock()
            && r.is_none()
        {
            *r = Some((code, reason.to_owned()));
        }
        self.shared.notify.notify_one();
    }

    /// Resolves once [`ConnHandle::close`] has been called.
    pub async fn closing(&self) -> (u16, String) {
        loop {
            if let Some(r) = self.shared.reason.lock().ok().and_then(|r| r.clone()) {
                return r;
            }
            self.shared.notify.notified().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_naming_a_session_is_not_repeated_for_that_session() {
        let (h, _rx) = ConnHandle::new(1, 16);
        let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // The hello's redelivery sends m1 naming s1 and s2; the
        // session_open redelivery of s1 reads it too: a repeat.
        assert!(h.first_push("m1", &s(&["s1", "s2"])));
        assert!(!h.first_push("m1", &s(&["s1", "s2"])));
        assert!(!h.first_push("m1", &s(&["s2"])));
        // The other order: the session's read first, then the hello's.
        assert!(h.first_push("m2", &s(&["s1"])));
        assert!(!h.first_push("m2", &s(&["s1"])));
        // A push naming a session not named before is new.
        assert!(h.first_push("m2", &s(&["s1", "s3"])));
        // A whole-member push is remembered on its own.
        assert!(h.first_push("m3", &[]));
        assert!(!h.first_push("m3", &[]));
        assert!(h.first_push("m3", &s(&["s1"])));
    }

    #[test]
    fn pushes_are_remembered_up_to_the_bound() {
        let (h, _rx) = ConnHandle::new(1, 16);
        for i in 0..=RECENT_PUSHES {
            assert!(h.first_push(&format!("m{i}"), &[]));
        }
        // The oldest is forgotten, the newest kept.
        assert!(h.first_push("m0", &[]));
        assert!(!h.first_push(&format!("m{RECENT_PUSHES}"), &[]));
    }
}
