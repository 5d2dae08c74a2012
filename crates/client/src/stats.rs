//! Counters of what the client saw, shared by every task and read by status displays.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counters. Every field only grows, except `sockets_live` and the last-heartbeat time.
#[derive(Debug, Default)]
pub struct Stats {
    /// Notification frames received (before de-duplication).
    pub frames: AtomicU64,
    /// Events emitted (after de-duplication).
    pub emitted: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Server heartbeats.
    pub heartbeats: AtomicU64,
    /// Pongs.
    pub pongs: AtomicU64,
    /// Frames that were not JSON objects.
    pub malformed: AtomicU64,
    /// Messages over the size limit.
    pub oversized: AtomicU64,
    /// Frames of unknown shape.
    pub unknown: AtomicU64,
    /// Gap records emitted.
    pub gaps: AtomicU64,
    /// Sockets opened after the first.
    pub reconnects: AtomicU64,
    /// Channel rollovers.
    pub rollovers: AtomicU64,
    /// `socket_closing` notices handled.
    pub socket_closings: AtomicU64,
    /// Sockets currently receiving.
    pub sockets_live: AtomicI64,
    /// Slots (channels holding a shard) that cover their shard now; every slot covering
    /// means no shard can be missing anything.
    pub slots_live: AtomicI64,
    /// Channels this process created and still holds (in use, rolling over or spare).
    pub channels_held: AtomicI64,
    /// Unix milliseconds of the last heartbeat (0: none yet).
    pub last_heartbeat_ms: AtomicU64,
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

    /// Records a heartbeat now.
    pub fn heartbeat(&self) {
        Stats::bump(&self.heartbeats);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_heartbeat_ms.store(ms, Ordering::Relaxed);
    }
}
