//! The state every request handler and connection task shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::BrokerConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::net::admission::Admission;
use crate::replay_cache::ReplayCache;
use crate::store::Store;
use crate::writer::Writer;

pub struct Ctx {
    pub config: BrokerConfig,
    pub store: Arc<Store>,
    pub hub: Arc<Hub>,
    pub writer: Writer,
    pub metrics: Arc<Metrics>,
    pub replay: ReplayCache,
    pub tasks: TaskCounter,
    /// The connection caps and counts of the listening socket.
    pub admission: Arc<Admission>,
}

impl Ctx {
    pub fn now_ms(&self) -> i64 {
        self.config.clock.now_ms()
    }
}

/// Counts running connection tasks, so that shutdown can wait for them to
/// finish closing.
#[derive(Default)]
pub struct TaskCounter {
    count: AtomicUsize,
    idle: Notify,
}

/// Decrements the counter when the task ends, however it ends.
pub struct TaskGuard<'a>(&'a TaskCounter);

impl Drop for TaskGuard<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl TaskCounter {
    pub fn enter(&self) -> TaskGuard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        TaskGuard(self)
    }

    /// Waits until no task runs, or `limit` passes.
    pub async fn wait_idle(&self, limit: Duration) {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }
}
