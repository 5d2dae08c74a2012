//! The de-duplication window: event ids seen recently, bounded by age and by count.
//!
//! The same event arrives twice when two sockets overlap (rollover, socket_closing,
//! redundant channels) or when the service delivers twice. Ids are already 64-bit hashes,
//! so the map uses them as their own hash. Each id keeps what its first copy looked like
//! (a hash of its bytes, when it arrived), so a later copy tells how far apart the sockets
//! are and whether the service serialised the event differently. Memory is about 60 bytes
//! per remembered id (map slot plus queue entry); the default 200,000 ids is about 12 MiB.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

/// What the window knows of an id the first time it arrived.
#[derive(Debug, Clone)]
struct First {
    /// Hash of the first copy's bytes (to tell a re-serialised copy from an exact one).
    bytes: u64,
    /// When the first copy arrived.
    at: SystemTime,
    /// The channel it arrived on.
    channel: Arc<str>,
}

/// How one arrival compares with what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window: emit it.
    First,
    /// Another copy of an event already emitted.
    Duplicate {
        /// How long after the first copy this one arrived, when it came on another
        /// channel (a repeat on the same channel says nothing about the sockets' skew).
        skew: Option<Duration>,
        /// The bytes differ from the first copy's: the same value serialised differently.
        near: bool,
    },
}

/// Ids a new window has room for before it first grows.
const INITIAL: usize = 1024;

/// Ids seen within the window.
#[derive(Debug)]
pub struct Dedupe {
    seen: HashMap<u64, First, BuildHasherDefault<IdHasher>>,
    order: VecDeque<(u64, Instant)>,
    max_entries: usize,
    max_age: Duration,
    duplicates: u64,
    /// The channel of arrivals that name none ([`Dedupe::first_time`]).
    nowhere: Arc<str>,
}

impl Dedupe {
    /// A window remembering ids for `max_age`, and at most `max_entries` of them.
    pub fn new(max_age: Duration, max_entries: usize) -> Self {
        let max_entries = max_entries.max(1);
        Dedupe {
            // Grown as ids arrive: a window sized for a busy org would otherwise keep
            // megabytes for every quiet one.
            seen: HashMap::with_capacity_and_hasher(max_entries.min(INITIAL), Default::default()),
            order: VecDeque::with_capacity(max_entries.min(INITIAL)),
            max_entries,
            max_age,
            duplicates: 0,
            nowhere: Arc::from(""),
        }
    }

    /// True the first time `id` is seen within the window; false for a duplicate.
    pub fn first_time(&mut self, id: EventId, now: Instant) -> bool {
        let channel = self.nowhere.clone();
        self.arrival(id, id.as_u64(), SystemTime::UNIX_EPOCH, &channel, now) == Seen::First
    }

    /// Notes one arrival of `id` (whose bytes hash to `bytes`, received at `at` on
    /// `channel`).
    pub fn arrival(
        &mut self,
        id: EventId,
        bytes: u64,
        at: SystemTime,
        channel: &Arc<str>,
        now: Instant,
    ) -> Seen {
        while let Some(&(old, entered)) = self.order.front() {
            if self.order.len() < self.max_entries
                && now.saturating_duration_since(entered) < self.max_age
            {
                break;
            }
            self.seen.remove(&old);
            self.order.pop_front();
        }
        match self.seen.entry(id.as_u64()) {
            Entry::Vacant(slot) => {
                slot.insert(First {
                    bytes,
                    at,
                    channel: channel.clone(),
                });
                self.order.push_back((id.as_u64(), now));
                Seen::First
            }
            Entry::Occupied(first) => {
                self.duplicates += 1;
                let first = first.get();
                let skew = (first.channel != *channel)
                    .then(|| at.duration_since(first.at).unwrap_or_else(|e| e.duration()));
                Seen::Duplicate {
                    skew,
                    near: first.bytes != bytes,
                }
            }
        }
    }

    /// How long ids are remembered.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Remembers ids for `max_age` from now on.
    pub fn set_max_age(&mut self, max_age: Duration) {
        self.max_age = max_age;
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

    #[test]
    fn a_duplicate_tells_its_skew_and_whether_its_bytes_differ() {
        let mut d = Dedupe::new(Duration::from_secs(60), 100);
        let now = Instant::now();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(d.arrival(id(1), 10, t0, &a, now), Seen::First);
        assert_eq!(
            d.arrival(id(1), 10, t0 + Duration::from_millis(2500), &b, now),
            Seen::Duplicate {
                skew: Some(Duration::from_millis(2500)),
                near: false
            }
        );
        // A copy that arrived on a faster socket but was handed out later still has a skew.
        assert_eq!(
            d.arrival(id(1), 11, t0 - Duration::from_secs(3), &b, now),
            Seen::Duplicate {
                skew: Some(Duration::from_secs(3)),
                near: true
            }
        );
        // A repeat on the first copy's own channel says nothing about the sockets.
        assert_eq!(
            d.arrival(id(1), 10, t0 + Duration::from_secs(30), &a, now),
            Seen::Duplicate {
                skew: None,
                near: false
            }
        );
    }
}
