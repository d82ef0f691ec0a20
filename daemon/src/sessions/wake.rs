//! The `wait_wake` requests armed for one session (`docs/ipc.md`): each is
//! woken, without polling, when a message for the session is stored, when
//! the session ends, and when a hook of the session shows its messages.

use std::sync::Arc;

use claudemesh_protocol::ipc::WakeLevel;
use claudemesh_protocol::wire::Priority;
use tokio::sync::Notify;

/// One armed `wait_wake`. Shared by every session of its Claude Code
/// process (one per mesh), so one notification reaches it whichever
/// session it is for.
pub struct WakeWaiter {
    pub level: WakeLevel,
    pub notify: Notify,
}

impl WakeWaiter {
    pub fn new(level: WakeLevel) -> Arc<WakeWaiter> {
        Arc::new(WakeWaiter {
            level,
            notify: Notify::new(),
        })
    }
}

/// A session's wake state.
#[derive(Default)]
pub struct WakeState {
    waiters: Vec<Arc<WakeWaiter>>,
    /// Bumped each time a hook of the session asks for its messages: the
    /// session is in a turn, so a wait armed before is over.
    pub turns: u64,
}

impl WakeState {
    pub fn arm(&mut self, waiter: &Arc<WakeWaiter>) {
        self.waiters.push(waiter.clone());
    }

    pub fn disarm(&mut self, waiter: &Arc<WakeWaiter>) {
        self.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
    }

    /// Wakes every armed wait (each looks for itself at what changed).
    pub fn notify_all(&self) {
        for w in &self.waiters {
            w.notify.notify_one();
        }
    }

    /// Whether an armed wait takes a message of `priority`: then it is not
    /// pushed as a channel event (the wake shows it; a push may be dropped).
    pub fn takes(&self, priority: Priority) -> bool {
        self.waiters.iter().any(|w| w.level.wakes_for(priority))
    }

    pub fn armed(&self) -> usize {
        self.waiters.len()
    }
}
