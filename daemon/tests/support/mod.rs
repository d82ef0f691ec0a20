//! Shared by the daemon's integration tests: a test client over the local
//! socket, real `claudemeshd` processes in private homes, an in-process
//! broker with enrollment, and a relay helper process (a session whose
//! Claude Code is another process).
#![allow(dead_code)]

pub mod broker;
pub mod client;
pub mod daemon;
pub mod relay;
pub mod tmpfs;

use std::time::Duration;

#[allow(unused_imports)]
pub use broker::TestBroker;
#[allow(unused_imports)]
pub use daemon::{Daemon, Home};
#[allow(unused_imports)]
pub use relay::{Relay, RelayMode};

/// Polls `check` until it returns `Some` or `limit` passes.
pub async fn eventually<T>(
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
