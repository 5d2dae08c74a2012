//! Which topics could not have been received, and when (sans-io).
//!
//! A shard of topics is held by one or more slots (channels with their sockets). The shard
//! is covered while at least one slot is receiving. When the last receiving slot goes
//! down, the outage starts at the latest frame any slot received, less a small look-back
//! for events that were still in flight when the socket died; it ends when a slot is
//! receiving again. Each outage becomes exactly one gap record. Before the shard was first
//! covered nothing was expected, so start-up is never a gap.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::event::Gap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Never,
    Live,
    Down,
}

/// Coverage of one shard.
#[derive(Debug)]
pub struct ShardCoverage {
    topics: Arc<[String]>,
    slots: Vec<SlotState>,
    covered_until: Option<SystemTime>,
    outage: Option<(SystemTime, String)>,
    lookback: Duration,
}

impl ShardCoverage {
    /// A shard of `topics` held by `slots` slots.
    pub fn new(topics: Arc<[String]>, slots: usize, lookback: Duration) -> Self {
        ShardCoverage {
            topics,
            slots: vec![SlotState::Never; slots.max(1)],
            covered_until: None,
            outage: None,
            lookback,
        }
    }

    /// The shard's topics changed (add/remove at run time).
    pub fn set_topics(&mut self, topics: Arc<[String]>) {
        self.topics = topics;
    }

    fn any_live(&self) -> bool {
        self.slots.contains(&SlotState::Live)
    }

    /// Slot `slot` is receiving since `at`; returns the gap this closes, if any.
    pub fn live(&mut self, slot: usize, at: SystemTime) -> Option<Gap> {
        let covered = self.any_live();
        if let Some(state) = self.slots.get_mut(slot) {
            *state = SlotState::Live;
        }
        if covered {
            return None;
        }
        let (from, reason) = self.outage.take()?;
        Some(Gap {
            topics: self.topics.clone(),
            from,
            to: at.max(from),
            reason,
        })
    }

    /// Slot `slot` stopped receiving; its last frame arrived at `last_frame`.
    pub fn down(&mut self, slot: usize, last_frame: Option<SystemTime>, reason: &str) {
        let was_live = self.slots.get(slot) == Some(&SlotState::Live);
        if let Some(state) = self.slots.get_mut(slot)
            && *state == SlotState::Live
        {
            *state = SlotState::Down;
        }
        if let Some(at) = last_frame {
            self.covered_until = Some(self.covered_until.map_or(at, |c| c.max(at)));
        }
        if was_live && !self.any_live() {
            let end = self.covered_until.unwrap_or_else(SystemTime::now);
            let from = end.checked_sub(self.lookback).unwrap_or(end);
            self.outage = Some((from, reason.to_owned()));
        }
    }

    /// Ends an open outage at `now` (the client stopped while the shard was down).
    pub fn close_outage(&mut self, now: SystemTime) -> Option<Gap> {
        let (from, reason) = self.outage.take()?;
        let reason = format!("{reason}; still down when the client stopped");
        Some(Gap {
            topics: self.topics.clone(),
            from,
            to: now.max(from),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOKBACK: Duration = Duration::from_millis(500);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn shard(slots: usize) -> ShardCoverage {
        ShardCoverage::new(vec!["a".to_owned()].into(), slots, LOOKBACK)
    }

    #[test]
    fn start_up_is_not_a_gap() {
        let mut s = shard(1);
        assert_eq!(s.live(0, t(10)), None);
    }

    #[test]
    fn one_slot_outage_is_one_gap_from_last_frame_to_live() {
        let mut s = shard(1);
        s.live(0, t(10));
        s.down(0, Some(t(20)), "socket dropped");
        let gap = s.live(0, t(25)).expect("a gap");
        assert_eq!((gap.from, gap.to), (t(20) - LOOKBACK, t(25)));
        assert_eq!(gap.reason, "socket dropped");
        assert_eq!(s.live(0, t(26)), None, "only one gap per outage");
    }

    #[test]
    fn a_redundant_slot_that_stays_up_means_no_gap() {
        let mut s = shard(2);
        s.live(0, t(10));
        s.live(1, t(11));
        s.down(0, Some(t(20)), "drop");
        assert_eq!(s.live(0, t(25)), None);
    }

    #[test]
    fn both_slots_down_gap_starts_at_the_latest_frame_either_got() {
        let mut s = shard(2);
        s.live(0, t(10));
        s.live(1, t(10));
        // Slot 1's socket died silently at 30 but is only detected after slot 0's drop.
        s.down(0, Some(t(32)), "drop");
        s.down(1, Some(t(30)), "watchdog");
        let gap = s.live(1, t(40)).unwrap();
        assert_eq!((gap.from, gap.to), (t(32) - LOOKBACK, t(40)));
        assert_eq!(gap.reason, "watchdog");
    }

    #[test]
    fn a_slot_that_never_went_live_changes_nothing() {
        let mut s = shard(2);
        s.live(0, t(10));
        s.down(1, None, "connect failed");
        assert!(s.close_outage(t(20)).is_none());
        s.down(0, Some(t(30)), "drop");
        let gap = s.close_outage(t(40)).expect("outage open at shutdown");
        assert_eq!((gap.from, gap.to), (t(30) - LOOKBACK, t(40)));
    }
}
