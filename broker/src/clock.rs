//! The broker's clock, injectable so that tests can put a hello exactly on
//! the ±60 000 ms boundary without sleeping or racing the real clock.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, from the system clock or from a
/// function a test supplies.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The operating system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(system_now_ms))
    }

    /// A clock that reads `f`; used by tests to pin or shift time.
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }

    /// Now, in seconds since the Unix epoch (invite expiry is in seconds).
    pub fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
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

/// The system clock in milliseconds; a clock before 1970 reads as 0.
pub fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
