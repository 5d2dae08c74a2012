//! The de-duplication window: event ids seen recently, bounded by age and by count.
//!
//! The same event arrives twice when two sockets overlap (rollover, socket_closing,
//! redundant channels) or when the service delivers twice. Ids are already 64-bit hashes,
//! so the set uses them as their own hash. Memory is about 40 bytes per remembered id
//! (set slot plus queue entry); the default 200,000 ids is about 8 MiB.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use holdline_proto::EventId;
use tokio::time::Instant;

/// Passes a u64 key through as its own hash (the key is already xxh3).
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Ids seen within the window.
#[derive(Debug)]
pub struct Dedupe {
    seen: HashSet<u64, BuildHasherDefault<IdHasher>>,
    order: VecDeque<(u64, Instant)>,
    max_entries: usize,
    max_age: Duration,
    duplicates: u64,
}

impl Dedupe {
    /// A window remembering ids for `max_age`, and at most `max_entries` of them.
    pub fn new(max_age: Duration, max_entries: usize) -> Self {
        let max_entries = max_entries.max(1);
        Dedupe {
            seen: HashSet::with_capacity_and_hasher(max_entries.min(1 << 16), Default::default()),
            order: VecDeque::with_capacity(max_entries.min(1 << 16)),
            max_entries,
            max_age,
            duplicates: 0,
        }
    }

    /// True the first time `id` is seen within the window; false for a duplicate.
    pub fn first_time(&mut self, id: EventId, now: Instant) -> bool {
        while let Some(&(old, at)) = self.order.front() {
            if self.order.len() < self.max_entries
                && now.saturating_duration_since(at) < self.max_age
            {
                break;
            }
            self.seen.remove(&old);
            self.order.pop_front();
        }
        if self.seen.insert(id.as_u64()) {
            self.order.push_back((id.as_u64(), now));
            true
        } else {
            self.duplicates += 1;
            false
        }
    }

    /// Duplicates dropped so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> EventId {
        EventId::from(n)
    }

    #[test]
    fn a_repeat_within_the_window_is_a_duplicate() {
        let mut d = Dedupe::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        assert!(d.first_time(id(1), now));
        assert!(!d.first_time(id(1), now + Duration::from_secs(59)));
        assert_eq!(d.duplicates(), 1);
    }

    #[test]
    fn ids_older_than_the_window_are_forgotten() {
        let mut d = Dedupe::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        d.first_time(id(1), now);
        assert!(d.first_time(id(1), now + Duration::from_secs(61)));
    }

    #[test]
    fn the_window_never_holds_more_than_its_cap() {
        let mut d = Dedupe::new(Duration::from_secs(3600), 3);
        let now = Instant::now();
        for n in 0..10 {
            d.first_time(id(n), now);
        }
        assert_eq!(d.len(), 3);
        assert!(
            d.first_time(id(0), now),
            "oldest id was dropped for the cap"
        );
        assert!(!d.first_time(id(9), now));
    }

    proptest! {
        /// Against a model: within a window large enough for the whole run, an id is new
        /// exactly when it was never seen before.
        #[test]
        fn matches_a_set_when_nothing_expires(ids in prop::collection::vec(0u64..50, 0..300)) {
            let mut d = Dedupe::new(Duration::from_secs(3600), 10_000);
            let mut model = std::collections::HashSet::new();
            let now = Instant::now();
            for n in ids {
                prop_assert_eq!(d.first_time(id(n), now), model.insert(n));
            }
        }
    }
}
