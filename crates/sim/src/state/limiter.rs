//! Per-token rate limit (reference §2.3: 300 requests per minute per client-credentials
//! token): a token bucket refilled continuously, answering how long to wait when empty.

use std::collections::HashMap;

use tokio::time::Instant;

/// Token buckets keyed by access token.
#[derive(Debug)]
pub struct Limiter {
    per_minute: u32,
    buckets: HashMap<String, (f64, Instant)>,
}

impl Limiter {
    /// A limiter allowing `per_minute` calls per token (0 = unlimited).
    pub fn new(per_minute: u32) -> Self {
        Limiter {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    /// Takes one call from `token`'s budget, or says how many seconds until one is free.
    pub fn take(&mut self, token: &str, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_sec = capacity / 60.0;
        let (level, last) = self
            .buckets
            .entry(token.to_owned())
            .or_insert((capacity, now));
        *level =
            (*level + now.saturating_duration_since(*last).as_secs_f64() * per_sec).min(capacity);
        *last = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *level) / per_sec).ceil().max(1.0) as u64)
        }
    }

    /// Forgets the bucket of a token that no longer exists.
    pub fn forget(&mut self, token: &str) {
        self.buckets.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Duration;

    #[test]
    fn budget_runs_out_then_refills() {
        let mut limiter = Limiter::new(60);
        let now = Instant::now();
        for _ in 0..60 {
            assert_eq!(limiter.take("t", now), Ok(()));
        }
        assert_eq!(limiter.take("t", now), Err(1));
        assert_eq!(limiter.take("other", now), Ok(()));
        assert_eq!(limiter.take("t", now + Duration::from_millis(1100)), Ok(()));
    }

    #[test]
    fn zero_means_unlimited() {
        let mut limiter = Limiter::new(0);
        let now = Instant::now();
        assert!((0..10_000).all(|_| limiter.take("t", now).is_ok()));
    }
}
