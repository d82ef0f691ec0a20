//! The daemon's clock, injectable (as the broker's is) so that a test can
//! pin "now" and state a timing rule without sleeping or racing the real
//! clock. Every timestamp the core writes or compares goes through it.

use std::fmt;
use std::sync::Arc;

/// Milliseconds since the Unix epoch, from the system clock or from a
/// function a test supplies.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(crate::ids::now_ms))
    }

    /// A clock that reads `f`; tests pin or shift time with it.
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock(now={})", self.now_ms())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    #[test]
    fn a_test_clock_reads_what_the_test_sets() {
        let now = Arc::new(AtomicI64::new(1_000));
        let seen = now.clone();
        let clock = Clock::from_fn(move || seen.load(Ordering::Relaxed));
        assert_eq!(clock.now_ms(), 1_000);
        now.store(61_000, Ordering::Relaxed);
        assert_eq!(clock.clone().now_ms(), 61_000);
    }

    #[test]
    fn the_system_clock_is_past_2020() {
        assert!(Clock::system().now_ms() > 1_577_836_800_000);
    }
}
