//! Polling with a deadline: the end-to-end tests wait for things that
//! happen asynchronously, and fail with a message when they never do. The
//! deadlines are generous on purpose: they bound a hang, they do not
//! measure speed.

use std::time::{Duration, Instant};

pub const DEFAULT: Duration = Duration::from_secs(30);

/// Calls `probe` until it returns `Some`, or panics with `what` after
/// `limit`.
pub fn until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
