//! Reconnect delays: exponential, capped, with jitter so that many daemons
//! cut off by the same broker restart do not all knock at once.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    /// A number in [0, 1) for each delay; random except in tests.
    jitter: fn() -> f64,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
            jitter: unit_random,
        }
    }

    /// The same delays with `jitter` in place of the random numbers.
    pub fn with_jitter(self, jitter: fn() -> f64) -> Self {
        Self { jitter, ..self }
    }

    /// The default for broker links: 0.5 s doubling up to 30 s.
    pub fn for_links() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// After a connection that worked: start again from the base.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: uniformly random in [d/2, d], where d doubles with
    /// every attempt up to the cap ("equal jitter": never zero, never
    /// synchronised).
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(16)).unwrap_or(u32::MAX);
        let ceiling = self.base.saturating_mul(factor).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64((self.jitter)().clamp(0.0, 1.0))
    }
}

/// A random number in [0, 1); the quality only has to spread reconnects.
fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2));
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_secs(1), "{late:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    fn lowest() -> f64 {
        0.0
    }

    fn highest() -> f64 {
        1.0 - f64::EPSILON
    }

    fn out_of_range() -> f64 {
        7.0
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn link_delays_double_from_half_a_second_to_thirty() {
        let mut low = Backoff::for_links().with_jitter(lowest);
        let mut high = Backoff::for_links().with_jitter(highest);
        let lows: Vec<u128> = (0..8).map(|_| ms(low.next_delay())).collect();
        let highs: Vec<u128> = (0..8).map(|_| ms(high.next_delay())).collect();
        assert_eq!(lows, [250, 500, 1000, 2000, 4000, 8000, 15000, 15000]);
        // At the top of the jitter a delay is its ceiling (to the nanosecond).
        assert_eq!(highs, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn the_attempt_count_saturates_at_the_cap() {
        let mut b = Backoff::for_links().with_jitter(lowest);
        for _ in 0..10_000 {
            b.next_delay();
        }
        assert_eq!(b.next_delay(), Duration::from_secs(15));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn random_jitter_stays_within_half_and_all_of_the_ceiling() {
        let mut b = Backoff::for_links();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            b.reset();
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(250) && d <= Duration::from_millis(500),
                "{d:?}"
            );
            seen.insert(d);
        }
        // Spread, not one value for every daemon.
        assert!(seen.len() > 100, "{}", seen.len());
    }

    #[test]
    fn a_jitter_out_of_range_cannot_pass_the_ceiling() {
        let mut b = Backoff::for_links().with_jitter(out_of_range);
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }
}
