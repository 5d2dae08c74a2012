//! holdline's records: one JSON object per line, written by [`write_event`],
//! [`write_gap`] and [`write_rejected`] and read back by [`read`] (everything) or [`head`]
//! (what a sink routes on). Writer and reader live side by side and are tested against
//! each other, so nothing downstream guesses at the format.
//!
//! ```json
//! {"kind":"event","id":"…","topic":"…","received_at":"…","org":"…","channel":"…","correlation_id":"…","body":{…}}
//! {"kind":"gap","id":"…","topics":["…"],"from":"…","to":"…","org":"…","reason":"…"}
//! {"kind":"rejected","topic":"…","org":"…","missing_permissions":["…"],"reason":"…"}
//! {"kind":"backfill","id":"…","gap":"…","org":"…","topic":"…","source":"…","entity":"…","as_of":"…","body":{…}}
//! {"kind":"backfill_done","id":"…","gap":"…","org":"…","status":"…","counts":{…},"reason":"…"}
//! ```
//!
//! A `backfill` record is the state of one entity (a conversation, a user) the REST API
//! gave after a gap, not the events the gap lost; `backfill_done` closes a gap's
//! back-fill (`complete`, `partial` or `failed`, `reason` when not complete). Their `id`
//! is `<gap>/<source>/<entity>` and `<gap>/done`, so a repeat is recognised.
//!
//! `id` is 16 lowercase hex digits ([`EventId`]); times are UTC RFC 3339 with
//! microseconds; `correlation_id` and `reason` (of `rejected`) are left out when absent;
//! `body` is the event body exactly as the service sent it. A gap's `id` is
//! `gap:<org>:<shard>:<from>` ([`gap_id`]: the shard named by its topics, `from` in
//! microseconds), so that the gap two nodes of a cluster both report is stored once and a
//! back-fill names the gap it repairs; a process's own gap adds `-<to>`, since gaps after
//! restarts may start alike. Gaps written before holdline named them have none.

mod read;
mod write;

use std::time::SystemTime;

use crate::EventId;

pub use read::{
    Backfill, BackfillDone, Event, Gap, Head, Record, RecordError, Rejected, head, parse_rfc3339,
    read,
};
pub use write::{
    write_backfill, write_backfill_done, write_event, write_gap, write_rejected, write_rfc3339,
    write_str,
};

/// What an event record is written from.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    pub id: EventId,
    /// The topic's bytes as received (UTF-8).
    pub topic: &'a [u8],
    pub received_at: SystemTime,
    pub org: &'a str,
    pub channel: &'a str,
    /// The correlation id's bytes as received (UTF-8), if the frame had one.
    pub correlation_id: Option<&'a [u8]>,
    /// The event body: one JSON value, copied in as it is.
    pub body: &'a [u8],
}

/// What a gap record is written from.
#[derive(Debug, Clone, Copy)]
pub struct GapFields<'a> {
    /// The gap's id ([`gap_id`]); none in records of older versions.
    pub id: Option<&'a str>,
    pub topics: &'a [String],
    pub from: SystemTime,
    pub to: SystemTime,
    pub org: &'a str,
    pub reason: &'a str,
}

/// What a rejected-topic record is written from.
#[derive(Debug, Clone, Copy)]
pub struct RejectedFields<'a> {
    pub topic: &'a str,
    pub org: &'a str,
    pub missing_permissions: &'a [String],
    pub reason: Option<&'a str>,
}

/// The name of a shard of `topics`: the same for the same topics in any order.
pub fn shard_key(topics: &[impl AsRef<str>]) -> String {
    let mut sorted: Vec<&str> = topics.iter().map(AsRef::as_ref).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for t in sorted {
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    format!("{:016x}", h.digest())
}

/// The id of `org`'s gap over `topics` from `from`: `gap:<org>:<shard>:<from µs>`.
pub fn gap_id(org: &str, topics: &[impl AsRef<str>], from: SystemTime) -> String {
    let micros = from
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("gap:{org}:{}:{micros}", shard_key(topics))
}

/// What a back-fill record is written from.
#[derive(Debug, Clone, Copy)]
pub struct BackfillFields<'a> {
    /// The id of the gap it repairs.
    pub gap: &'a str,
    pub org: &'a str,
    /// The gap's topic the entity belongs to.
    pub topic: &'a str,
    /// Which call said it: `analytics.conversations`, `conversations`, `analytics.users`,
    /// `presence`, `routingstatus`.
    pub source: &'a str,
    /// The conversation or user id.
    pub entity: &'a str,
    /// When the REST API was asked.
    pub as_of: SystemTime,
    /// One JSON value, as the API returned it.
    pub body: &'a [u8],
}

/// What closes a gap's back-fill.
#[derive(Debug, Clone, Copy)]
pub struct BackfillDoneFields<'a> {
    pub gap: &'a str,
    pub org: &'a str,
    /// `complete`, `partial` or `failed`.
    pub status: &'a str,
    /// Records by source, and the REST calls made (`requests`).
    pub counts: &'a [(&'a str, u64)],
    pub reason: Option<&'a str>,
}

#[cfg(test)]
mod tests;
