//! Which topics could not have been received, and when (sans-io).
//!
//! Every socket of a shard covers an interval of time: from when it started receiving to
//! a look-back before its last frame, because copies of events published just before may
//! still have been on their way to it (the look-back follows the measured skew between
//! sockets); only a socket closed in order after a full rollover overlap covers to its
//! last frame. Live sockets cover from their start on. A gap is a stretch of time,
//! after the shard was first covered, that no socket's interval covers; each becomes one
//! gap record when the next socket starts covering. Two sockets being live at the same
//! moment is not enough: the one that started later does not cover the time before it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::stream::event::Gap;

/// Ended intervals kept at most (a safety cap; a day of sockets is a few dozen).
const MAX_INTERVALS: usize = 10_000;

/// Past covered runs kept for [`ShardCoverage::cover`] (the newest).
const MAX_RUNS: usize = 64;

/// What one shard covered: the stretches of time in which some socket of it could have
/// received every event, newest last, for a cluster to combine with other nodes' own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCover {
    /// The shard's topics.
    pub topics: Arc<[String]>,
    /// Covered stretches, oldest first; the last ends now (less the look-back) when
    /// `open`, else where coverage stopped.
    pub runs: Vec<(SystemTime, SystemTime)>,
    /// Whether a socket covers the shard now (the last run goes on).
    pub open: bool,
    /// Why coverage stopped, when it is not open.
    pub reason: String,
}

/// Coverage of one shard.
#[derive(Debug)]
pub struct ShardCoverage {
    topics: Arc<[String]>,
    /// Sockets receiving now, with when they started covering.
    live: HashMap<u64, SystemTime>,
    /// Trusted intervals of sockets that ended, with why they ended.
    ended: Vec<(SystemTime, SystemTime, String)>,
    /// Everything before this is covered or already reported.
    watermark: Option<SystemTime>,
    /// Why the last socket that ended did.
    last_reason: String,
    /// Why the socket whose coverage ends at the watermark ended.
    watermark_reason: String,
    lookback: Duration,
    /// Where the covered run the watermark is in began.
    run_start: Option<SystemTime>,
    /// Covered runs that ended in a gap, newest last.
    runs: VecDeque<(SystemTime, SystemTime)>,
}

impl ShardCoverage {
    /// A shard of `topics`; `lookback` is trimmed from the end of every socket.
    pub fn new(topics: Arc<[String]>, lookback: Duration) -> Self {
        ShardCoverage {
            topics,
            live: HashMap::new(),
            ended: Vec::new(),
            watermark: None,
            last_reason: String::new(),
            watermark_reason: String::new(),
            lookback,
            run_start: None,
            runs: VecDeque::new(),
        }
    }

    /// Trims `lookback` from sockets that die from now on (it follows the measured skew).
    pub fn set_lookback(&mut self, lookback: Duration) {
        self.lookback = lookback;
    }

    /// The shard's topics changed (add/remove at run time).
    pub fn set_topics(&mut self, topics: Arc<[String]>) {
        self.topics = topics;
    }

    /// Socket `session` covers from `since`; returns the gaps this closes.
    pub fn live(&mut self, session: u64, since: SystemTime) -> Vec<Gap> {
        self.watermark.get_or_insert(since);
        self.run_start.get_or_insert(since);
        self.live.insert(session, since);
        self.advance()
    }

    /// Socket `session` stopped covering; its last frame arrived at `until`, less the
    /// look-back when `lookback`.
    pub fn ended(
        &mut self,
        session: u64,
        until: Option<SystemTime>,
        lookback: bool,
        reason: &str,
    ) -> Vec<Gap> {
        let Some(since) = self.live.remove(&session) else {
            return Vec::new();
        };
        self.last_reason = reason.to_owned();
        if let Some(until) = until {
            let until = match lookback {
                true => until.checked_sub(self.lookback).unwrap_or(until),
                false => until,
            };
            if until > since {
                if self.ended.len() == MAX_INTERVALS {
                    self.ended.remove(0);
                }
                self.ended.push((since, until, reason.to_owned()));
            }
        }
        self.advance()
    }

    /// Moves the watermark over covered time and reports every hole that is closed.
    fn advance(&mut self) -> Vec<Gap> {
        let mut gaps = Vec::new();
        while let Some(w) = self.watermark {
            if self.live.values().any(|since| *since <= w) {
                break;
            }
            let reach = self
                .ended
                .iter()
                .filter(|(a, b, _)| *a <= w && *b > w)
                .max_by_key(|(_, b, _)| *b);
            if let Some((_, end, reason)) = reach {
                self.watermark_reason = reason.clone();
                self.watermark = Some(*end);
                continue;
            }
            let next = self
                .live
                .values()
                .copied()
                .chain(self.ended.iter().map(|(a, ..)| *a))
                .filter(|a| *a > w)
                .min();
            let Some(to) = next else { break };
            if let Some(start) = self.run_start.replace(to)
                && w > start
            {
                if self.runs.len() == MAX_RUNS {
                    self.runs.pop_front();
                }
                self.runs.push_back((start, w));
            }
            gaps.push(Gap {
                topics: self.topics.clone(),
                from: w,
                to,
                reason: self.reason_at(w),
            });
            self.watermark = Some(to);
        }
        if let Some(w) = self.watermark {
            self.ended.retain(|(_, b, _)| *b > w);
        }
        gaps
    }

    /// Why coverage stopped at `w`: the socket whose interval ends there, else the last
    /// socket that ended.
    fn reason_at(&self, w: SystemTime) -> String {
        let ends_here = self
            .ended
            .iter()
            .find(|(_, b, _)| *b == w)
            .map(|(_, _, r)| r.clone());
        let reason = ends_here.unwrap_or_else(|| self.watermark_reason.clone());
        if reason.is_empty() {
            self.last_reason.clone()
        } else {
            reason
        }
    }

    /// What the shard covered up to `now`; None before any socket covered it.
    pub fn cover(&self, now: SystemTime) -> Option<ShardCover> {
        let (start, w) = (self.run_start?, self.watermark?);
        // After `advance`, a live socket means the shard is covered from the watermark on.
        let open = !self.live.is_empty();
        let end = match open {
            true => now.checked_sub(self.lookback).unwrap_or(now).max(w),
            false => w,
        };
        // A run younger than the look-back covers nothing yet, but it says from when the
        // shard was covered: an outage right after it is still an outage.
        let mut runs: Vec<_> = self.runs.iter().copied().collect();
        runs.push((start, end.max(start)));
        Some(ShardCover {
            topics: self.topics.clone(),
            runs,
            open,
            reason: match open {
                true => String::new(),
                false => self.reason_at(w),
            },
        })
    }

    /// Ends an open hole at `now` (the client stopped while nothing covered the shard).
    pub fn close_outage(&mut self, now: SystemTime) -> Option<Gap> {
        let w = self.watermark?;
        let covered = self.live.values().any(|since| *since <= w)
            || self.ended.iter().any(|(a, b, _)| *a <= w && *b > w);
        if covered {
            return None;
        }
        let reason = format!("{}; still down when the client stopped", self.reason_at(w));
        Some(Gap {
            topics: self.topics.clone(),
            from: w,
            to: now.max(w),
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

    fn shard() -> ShardCoverage {
        ShardCoverage::new(vec!["a".to_owned()].into(), LOOKBACK)
    }

    fn window(gaps: &[Gap]) -> Vec<(SystemTime, SystemTime)> {
        gaps.iter().map(|g| (g.from, g.to)).collect()
    }

    #[test]
    fn start_up_is_not_a_gap() {
        let mut s = shard();
        assert!(s.live(1, t(10)).is_empty());
    }

    #[test]
    fn a_dead_socket_is_a_gap_from_its_last_frame_less_the_lookback_to_the_next_start() {
        let mut s = shard();
        s.live(1, t(10));
        assert!(
            s.ended(1, Some(t(20)), true, "dropped").is_empty(),
            "still open"
        );
        let gaps = s.live(2, t(25));
        assert_eq!(window(&gaps), [(t(20) - LOOKBACK, t(25))]);
        assert_eq!(gaps[0].reason, "dropped");
        assert!(s.live(3, t(26)).is_empty(), "one gap per hole");
    }

    #[test]
    fn a_redundant_socket_that_covered_the_time_means_no_gap() {
        let mut s = shard();
        s.live(1, t(10));
        s.live(2, t(11));
        assert!(s.ended(1, Some(t(20)), true, "drop").is_empty());
        assert!(s.live(3, t(25)).is_empty());
    }

    #[test]
    fn a_socket_that_started_after_the_other_died_does_not_cover_the_time_between() {
        let mut s = shard();
        s.live(1, t(10));
        // Socket 1 stalls at 20; socket 2 (a rollover) starts at 22; socket 1 is found
        // dead only at 24.
        s.live(2, t(22));
        let gaps = s.ended(1, Some(t(20)), true, "dead");
        assert_eq!(window(&gaps), [(t(20) - LOOKBACK, t(22))]);
    }

    #[test]
    fn both_down_gap_starts_at_the_latest_trusted_frame() {
        let mut s = shard();
        s.live(1, t(10));
        s.live(2, t(10));
        s.ended(1, Some(t(32)), true, "drop");
        s.ended(2, Some(t(30)), true, "watchdog");
        let gaps = s.live(3, t(40));
        assert_eq!(window(&gaps), [(t(32) - LOOKBACK, t(40))]);
        assert_eq!(gaps[0].reason, "drop");
    }

    #[test]
    fn an_open_hole_is_closed_at_shutdown_and_only_then() {
        let mut s = shard();
        s.live(1, t(10));
        assert!(s.close_outage(t(15)).is_none(), "covered");
        s.ended(1, Some(t(30)), true, "drop");
        let gap = s.close_outage(t(40)).expect("open at shutdown");
        assert_eq!((gap.from, gap.to), (t(30) - LOOKBACK, t(40)));
        assert!(gap.reason.contains("still down"));
    }

    #[test]
    fn short_lived_sockets_cover_nothing_after_the_lookback() {
        let mut s = shard();
        s.live(1, t(10));
        s.ended(1, Some(t(20)), true, "drop");
        s.live(2, t(21));
        // Socket 2 dies before it was up for longer than the look-back.
        let gaps = s.ended(2, Some(t(21)), true, "drop again");
        assert!(gaps.is_empty(), "still open");
        let gaps = s.live(3, t(30));
        assert_eq!(window(&gaps), [(t(21), t(30))]);
    }

    #[test]
    fn cover_gives_the_runs_between_the_gaps_and_the_open_end() {
        let mut s = shard();
        assert_eq!(s.cover(t(10)), None, "nothing covered yet");
        s.live(1, t(10));
        let c = s.cover(t(10)).unwrap();
        assert_eq!(
            c.runs,
            [(t(10), t(10))],
            "covered from its start, nothing trusted yet"
        );
        let c = s.cover(t(30)).unwrap();
        assert_eq!(c.runs, [(t(10), t(30) - LOOKBACK)]);
        assert!(c.open);
        s.ended(1, Some(t(40)), true, "dropped");
        let c = s.cover(t(45)).unwrap();
        assert_eq!(
            c.runs,
            [(t(10), t(40) - LOOKBACK)],
            "ends where coverage stopped"
        );
        assert!(!c.open);
        assert_eq!(c.reason, "dropped");
        s.live(2, t(50));
        let c = s.cover(t(60)).unwrap();
        assert_eq!(
            c.runs,
            [(t(10), t(40) - LOOKBACK), (t(50), t(60) - LOOKBACK)]
        );
        assert!(c.open);
    }
}
