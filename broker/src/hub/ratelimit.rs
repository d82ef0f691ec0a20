//! Per-member send rate: a token bucket. Over the rate a `send` is refused
//! with `rate_limited`; the connection stays open.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn full(burst: f64) -> Self {
        Self {
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one, refilling at `rate` per second up
    /// to `burst` first.
    pub fn take(&mut self, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused() {
        let mut b = TokenBucket::full(3.0);
        assert!(b.take(0.0, 3.0));
        assert!(b.take(0.0, 3.0));
        assert!(b.take(0.0, 3.0));
        assert!(!b.take(0.0, 3.0));
    }
}
