//! Counters of what the client saw, shared by every task and read by status displays and
//! the metrics endpoint. Hot-path counters are relaxed atomics; the rare, labelled ones
//! (REST calls, per-shard health, per-socket state) sit behind short-lived locks.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdline_proto::topic::Family;

/// Topic families a counter is kept for, in [`family_index`] order; the last slot counts
/// topics of no known family.
pub const FAMILIES: [Family; 18] = [
    Family::UserConversations,
    Family::QueueConversations,
    Family::QueueMembers,
    Family::Presence,
    Family::RoutingStatus,
    Family::Activity,
    Family::ConversationSummary,
    Family::Station,
    Family::DetailEvents,
    Family::AgentState,
    Family::QueueObservations,
    Family::QueueActivity,
    Family::UserAggregates,
    Family::ConversationMetrics,
    Family::Transcription,
    Family::AgentChecklist,
    Family::System,
    Family::ChannelMetadata,
];

/// The counter slot of a topic's family (`FAMILIES.len()` for an unknown topic).
pub fn family_index(topic: &str) -> usize {
    holdline_proto::topic::classify(topic)
        .ok()
        .and_then(|m| FAMILIES.iter().position(|f| *f == m.family()))
        .unwrap_or(FAMILIES.len())
}

/// Why a slot had to connect again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The connection broke (reset, read error, no close frame).
    Drop,
    /// No pong or no frame in time: a half-open or stalled socket.
    Stall,
    /// The server closed the socket.
    Close,
    /// The channel was taken over (`no_longer_subscribed`).
    Evicted,
    /// The token behind the channel was revoked.
    Revoked,
    /// The channel was gone (expired or deleted).
    ChannelGone,
    /// Connecting failed.
    ConnectFailed,
}

impl Cause {
    /// Every cause, in label order.
    pub const ALL: [Cause; 7] = [
        Cause::Drop,
        Cause::Stall,
        Cause::Close,
        Cause::Evicted,
        Cause::Revoked,
        Cause::ChannelGone,
        Cause::ConnectFailed,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Drop => "drop",
            Cause::Stall => "stall",
            Cause::Close => "close",
            Cause::Evicted => "evicted",
            Cause::Revoked => "revoked",
            Cause::ChannelGone => "channel_gone",
            Cause::ConnectFailed => "connect_failed",
        }
    }
}

/// A histogram with fixed bucket bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

/// Ping round trips: 1 ms to 10 s.
pub const RTT_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Histogram {
    /// An empty histogram over `bounds` (ascending upper bounds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// (upper bound, cumulative count) per bucket, `+Inf` last; the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64) {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            out.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), total));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (out, sum)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(RTT_BOUNDS)
    }
}

/// A shard's slots: how many exist and how many cover the shard now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardHealth {
    pub slots: usize,
    pub covering: usize,
}

/// A socket that is receiving.
#[derive(Debug, Clone)]
pub struct SocketState {
    pub shard: usize,
    pub slot: usize,
    pub channel: String,
    /// The last heartbeat, or when the socket went live if none came yet.
    pub last_heartbeat: SystemTime,
}

/// Counters. Every plain counter only grows; gauges say so.
#[derive(Debug, Default)]
pub struct Stats {
    /// Notification frames received (before de-duplication).
    pub frames: AtomicU64,
    /// Events emitted (after de-duplication).
    pub emitted: AtomicU64,
    /// Frames received per topic family ([`FAMILIES`] order, unknown last).
    pub frames_by_family: [AtomicU64; 19],
    /// Events emitted per topic family.
    pub emitted_by_family: [AtomicU64; 19],
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Duplicates whose bytes differed from the first copy's (serialised differently).
    pub near_duplicates: AtomicU64,
    /// Gauge: the largest arrival skew of one event on two sockets seen recently, µs.
    pub arrival_skew_micros: AtomicU64,
    /// Gauge: the look-back trimmed from a dead socket's coverage now, µs.
    pub lookback_micros: AtomicU64,
    /// Gauge: how long event ids are remembered for de-duplication now, µs.
    pub dedupe_window_micros: AtomicU64,
    /// Server heartbeats.
    pub heartbeats: AtomicU64,
    /// Pongs.
    pub pongs: AtomicU64,
    /// Ping round trips.
    pub ping_rtt: Histogram,
    /// Frames that were not JSON objects.
    pub malformed: AtomicU64,
    /// Messages over the size limit.
    pub oversized: AtomicU64,
    /// Frames of unknown shape.
    pub unknown: AtomicU64,
    /// Gap records emitted.
    pub gaps: AtomicU64,
    /// Total width of the gaps, microseconds.
    pub gap_micros: AtomicU64,
    /// Sockets opened after the first (all causes).
    pub reconnects: AtomicU64,
    /// Reconnects per cause ([`Cause::ALL`] order).
    pub reconnects_by_cause: [AtomicU64; 7],
    /// Channel rollovers.
    pub rollovers: AtomicU64,
    /// Sockets that ended as planned (replaced at a rollover or a hand-over).
    pub socket_ends_planned: AtomicU64,
    /// Sockets that ended otherwise (dropped, dead, closed by the server, refused).
    pub socket_ends_unplanned: AtomicU64,
    /// `socket_closing` notices handled.
    pub socket_closings: AtomicU64,
    /// Tokens fetched (the first and every renewal).
    pub tokens_fetched: AtomicU64,
    /// 429 answers waited out, and the total wait in microseconds.
    pub rate_limited: AtomicU64,
    pub rate_limited_micros: AtomicU64,
    /// Gauge: sockets currently receiving.
    pub sockets_live: AtomicI64,
    /// Gauge: slots (channels holding a shard) that cover their shard now; every slot
    /// covering means no shard can be missing anything.
    pub slots_live: AtomicI64,
    /// Gauge: channels the service counts against the OAuth client (in use, being
    /// created, replaced but not yet expired, and an earlier run's).
    pub channels_held: AtomicI64,
    /// Channels created.
    pub channels_created: AtomicU64,
    /// Gauge: slots whose task died and whose replacement is not receiving yet.
    pub slots_failed: AtomicI64,
    /// Tasks that died unexpectedly (a panic), each followed by a restart.
    pub task_panics: AtomicU64,
    /// Unix milliseconds of the last heartbeat (0: none yet).
    pub last_heartbeat_ms: AtomicU64,
    /// REST calls by what they did and the status answered (0: no answer).
    pub rest_calls: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Per shard: slots and covering slots.
    pub shards: Mutex<BTreeMap<usize, ShardHealth>>,
    /// Receiving sockets by session number.
    pub sockets: Mutex<BTreeMap<u64, SocketState>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave a counter map inconsistent in a way that matters.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records a heartbeat now on `session`'s socket.
    pub fn heartbeat(&self, session: u64) {
        Stats::bump(&self.heartbeats);
        let now = SystemTime::now();
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_heartbeat_ms.store(ms, Ordering::Relaxed);
        if let Some(s) = lock(&self.sockets).get_mut(&session) {
            s.last_heartbeat = now;
        }
    }

    /// A reconnect for `cause`.
    pub fn reconnect(&self, cause: Cause) {
        Stats::bump(&self.reconnects);
        let i = Cause::ALL.iter().position(|c| *c == cause).unwrap_or(0);
        Stats::bump(&self.reconnects_by_cause[i]);
    }

    /// A REST call answered with `status` (0 when no answer came).
    pub fn rest_call(&self, what: &'static str, status: u16) {
        *lock(&self.rest_calls).entry((what, status)).or_default() += 1;
    }

    /// A 429 waited out for `wait`.
    pub fn rate_limited(&self, wait: Duration) {
        Stats::bump(&self.rate_limited);
        self.rate_limited_micros
            .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
    }

    /// A gap of `width` was reported.
    pub fn gap(&self, width: Duration) {
        Stats::bump(&self.gaps);
        self.gap_micros
            .fetch_add(width.as_micros() as u64, Ordering::Relaxed);
    }

    /// A slot of `shard` started.
    pub fn slot_started(&self, shard: usize) {
        lock(&self.shards).entry(shard).or_default().slots += 1;
    }

    /// A slot of `shard` ended (covering or not).
    pub fn slot_stopped(&self, shard: usize, was_covering: bool) {
        let mut shards = lock(&self.shards);
        if let Some(h) = shards.get_mut(&shard) {
            h.slots = h.slots.saturating_sub(1);
            if was_covering {
                h.covering = h.covering.saturating_sub(1);
            }
            if h.slots == 0 {
                shards.remove(&shard);
            }
        }
    }

    /// A slot of `shard` started or stopped covering it.
    pub fn slot_covering(&self, shard: usize, covering: bool) {
        let mut shards = lock(&self.shards);
        let h = shards.entry(shard).or_default();
        if covering {
            h.covering += 1;
        } else {
            h.covering = h.covering.saturating_sub(1);
        }
    }

    /// Shards with no covering slot (empty: every shard is covered).
    pub fn shards_down(&self) -> Vec<usize> {
        lock(&self.shards)
            .iter()
            .filter(|(_, h)| h.covering == 0)
            .map(|(id, _)| *id)
            .collect()
    }

    /// How many shards exist.
    pub fn shard_count(&self) -> usize {
        lock(&self.shards).len()
    }

    /// A socket started receiving.
    pub fn socket_live(&self, session: u64, state: SocketState) {
        lock(&self.sockets).insert(session, state);
    }

    /// A receiving socket ended; false when it was not receiving.
    pub fn socket_gone(&self, session: u64) -> bool {
        lock(&self.sockets).remove(&session).is_some()
    }

    /// The receiving sockets now.
    pub fn socket_states(&self) -> Vec<SocketState> {
        lock(&self.sockets).values().cloned().collect()
    }

    /// REST calls so far.
    pub fn rest_snapshot(&self) -> Vec<((&'static str, u16), u64)> {
        lock(&self.rest_calls)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        let (buckets, sum) = h.snapshot();
        assert_eq!(buckets, vec![(0.01, 1), (0.1, 2), (f64::INFINITY, 3)]);
        assert!((sum - 0.555).abs() < 1e-9);
    }

    #[test]
    fn a_shard_is_down_until_one_of_its_slots_covers_and_forgotten_when_its_slots_end() {
        let s = Stats::default();
        s.slot_started(0);
        s.slot_started(0);
        s.slot_started(1);
        assert_eq!(s.shards_down(), vec![0, 1]);
        s.slot_covering(0, true);
        s.slot_covering(1, true);
        assert!(s.shards_down().is_empty());
        s.slot_covering(1, false);
        assert_eq!(s.shards_down(), vec![1]);
        s.slot_stopped(1, false);
        assert!(s.shards_down().is_empty(), "a removed shard is not down");
        assert_eq!(s.shard_count(), 1);
    }

    #[test]
    fn families_and_causes_have_a_slot_each() {
        let s = Stats::default();
        assert_eq!(s.frames_by_family.len(), FAMILIES.len() + 1);
        assert_eq!(s.reconnects_by_cause.len(), Cause::ALL.len());
        assert_eq!(
            family_index("v2.users.6f1c1e52-9b7e-4c57-8a8f-2f1f5d0a3b11.presence"),
            3
        );
        assert_eq!(family_index("not.a.topic"), FAMILIES.len());
        s.reconnect(Cause::Stall);
        assert_eq!(Stats::get(&s.reconnects_by_cause[1]), 1);
        assert_eq!(Stats::get(&s.reconnects), 1);
    }
}
