//! How far apart the sockets are: the arrival skew of one event on two sockets, kept as the
//! largest seen recently, and the look-back and de-duplication window it implies (sans-io).
//!
//! A socket that dies may still have had events in flight for as long as its delivery
//! lags the fastest socket, so the look-back trimmed from its coverage is the configured
//! floor plus the largest recent skew. A duplicate arrives up to that skew after the first
//! copy, so the de-duplication window is kept at least twice the look-back.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Skews are remembered this long, then forgotten bucket by bucket.
pub const MEMORY: Duration = Duration::from_secs(600);
/// Width of one bucket of the sliding maximum.
const BUCKET: Duration = Duration::from_secs(30);
/// A larger skew is taken as this: a copy minutes late is a redelivery, not a slow
/// socket, and must not widen every gap by minutes.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// The sliding maximum of arrival skews.
#[derive(Debug)]
pub struct Skew {
    floor: Duration,
    min_window: Duration,
    buckets: VecDeque<(Instant, Duration)>,
}

impl Skew {
    /// With the configured look-back `floor` and de-duplication window.
    pub fn new(floor: Duration, min_window: Duration) -> Self {
        Skew {
            floor,
            min_window,
            buckets: VecDeque::new(),
        }
    }

    /// Notes a skew measured at `now`; true when the largest recent skew grew.
    pub fn note(&mut self, skew: Duration, now: Instant) -> bool {
        let skew = skew.min(MAX_SKEW);
        let before = self.largest(now);
        match self.buckets.back_mut() {
            Some((start, max)) if now.saturating_duration_since(*start) < BUCKET => {
                *max = (*max).max(skew);
            }
            _ => self.buckets.push_back((now, skew)),
        }
        skew > before
    }

    /// The largest skew seen within [`MEMORY`] of `now`.
    pub fn largest(&mut self, now: Instant) -> Duration {
        while let Some((start, _)) = self.buckets.front() {
            if now.saturating_duration_since(*start) < MEMORY {
                break;
            }
            self.buckets.pop_front();
        }
        self.buckets
            .iter()
            .map(|(_, m)| *m)
            .max()
            .unwrap_or_default()
    }

    /// The look-back for a socket that dies now.
    pub fn lookback(&mut self, now: Instant) -> Duration {
        self.floor.saturating_add(self.largest(now))
    }

    /// How long ids must be remembered now.
    pub fn window(&mut self, now: Instant) -> Duration {
        self.min_window.max(self.lookback(now).saturating_mul(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_lookback_is_the_floor_plus_the_largest_recent_skew() {
        let mut k = Skew::new(S(1), S(10));
        let t = Instant::now();
        assert_eq!(k.lookback(t), S(1));
        assert!(k.note(S(7), t));
        assert!(!k.note(S(3), t + S(40)), "smaller skews do not lower it");
        assert_eq!(k.lookback(t + S(41)), S(8));
        assert_eq!(k.window(t + S(41)), S(16));
    }

    #[test]
    fn old_skews_are_forgotten() {
        let mut k = Skew::new(S(1), S(10));
        let t = Instant::now();
        k.note(S(7), t);
        k.note(S(3), t + S(300));
        assert_eq!(k.largest(t + MEMORY - S(1)), S(7));
        assert_eq!(k.largest(t + MEMORY + S(1)), S(3));
        assert_eq!(k.largest(t + S(300) + MEMORY + S(1)), Duration::ZERO);
        assert_eq!(
            k.window(t + S(2000)),
            S(10),
            "never below the configured window"
        );
    }

    #[test]
    fn absurd_skews_are_capped() {
        let mut k = Skew::new(S(1), S(10));
        let t = Instant::now();
        k.note(S(86_400), t);
        assert_eq!(k.lookback(t), S(1) + MAX_SKEW);
    }
}
