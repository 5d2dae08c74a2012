//! Reconnect and retry delays: capped exponential backoff with jitter, reset after a
//! success. The one backoff of holdline: token and REST retries, socket reconnects, slot
//! restarts and sink retries all use it. An iterator, so its sequence is tested directly.

use std::time::Duration;

/// Delays of `base`, `2·base`, `4·base` … capped at `max`, each jittered into the upper
/// half of its step (so a fleet of clients does not retry in lockstep).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    jitter: bool,
    seed: u64,
}

impl Backoff {
    /// A jittered backoff.
    pub fn new(base: Duration, max: Duration) -> Self {
        // A per-process random seed (the standard library's hash keys), no clock needed.
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1
        };
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
            jitter: true,
            seed,
        }
    }

    /// The same sequence without jitter (for tests and predictable tools).
    pub fn exact(base: Duration, max: Duration) -> Self {
        Backoff {
            jitter: false,
            ..Backoff::new(base, max)
        }
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    fn random_unit(&mut self) -> f64 {
        // xorshift64*: cheap, and quality does not matter for jitter.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        let x = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let step = self
            .base
            .checked_mul(1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        if !self.jitter {
            return Some(step);
        }
        let half = step / 2;
        Some(half + half.mul_f64(self.random_unit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_up_to_the_cap() {
        let seq: Vec<Duration> = Backoff::exact(MS(100), MS(1000)).take(6).collect();
        assert_eq!(
            seq,
            [MS(100), MS(200), MS(400), MS(800), MS(1000), MS(1000)]
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::exact(MS(100), MS(1000));
        b.nth(3);
        b.reset();
        assert_eq!(b.next(), Some(MS(100)));
        assert_eq!(b.attempts(), 1);
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_each_step() {
        let exact: Vec<Duration> = Backoff::exact(MS(100), MS(5000)).take(12).collect();
        let jittered: Vec<Duration> = Backoff::new(MS(100), MS(5000)).take(12).collect();
        for (e, j) in exact.iter().zip(&jittered) {
            assert!(*j >= *e / 2 && j <= e, "{j:?} not in [{:?}, {e:?}]", *e / 2);
        }
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::exact(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(b.nth(1000), Some(Duration::from_secs(30)));
    }
}
