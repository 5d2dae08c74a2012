//! The ledger: every event the simulator published, with the channels it was handed to.
//! It is the ground truth tests compare holdline's output against.

use std::collections::VecDeque;
use std::sync::Arc;

use holdline_proto::EventId;
use serde::Serialize;
use time::OffsetDateTime;

/// One published event.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    /// Publication order, from 1.
    pub seq: u64,
    /// The org it was published in (with more than one org).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<Arc<str>>,
    /// The event id (same function as holdline's output).
    pub id: EventId,
    /// The topic it was published on.
    pub topic: Arc<str>,
    /// When it was published.
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
    /// Channels whose socket was connected, subscribed and handed the event.
    pub delivered_to: Vec<Arc<str>>,
}

/// A bounded log of published events.
#[derive(Debug)]
pub struct Ledger {
    entries: VecDeque<LedgerEntry>,
    capacity: usize,
    next_seq: u64,
}

impl Ledger {
    /// A ledger keeping at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Ledger {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
        }
    }

    /// Reserves the next sequence number.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Appends an entry, dropping the oldest when full.
    pub fn push(&mut self, entry: LedgerEntry) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Entries with `seq > since`, in order, at most `limit`.
    pub fn since(&self, since: u64, limit: usize) -> Vec<LedgerEntry> {
        let mut out: Vec<LedgerEntry> = self
            .entries
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect();
        out.sort_by_key(|e| e.seq);
        out.truncate(limit);
        out
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was published (or everything was dropped).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> LedgerEntry {
        LedgerEntry {
            seq,
            org: None,
            id: EventId::of("t", seq.to_string().as_bytes()),
            topic: Arc::from("t"),
            published_at: OffsetDateTime::UNIX_EPOCH,
            delivered_to: vec![],
        }
    }

    #[test]
    fn keeps_the_newest_entries_within_capacity() {
        let mut ledger = Ledger::new(3);
        for _ in 0..5 {
            let seq = ledger.next_seq();
            ledger.push(entry(seq));
        }
        let seqs: Vec<u64> = ledger.since(0, usize::MAX).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(ledger.since(4, 10).len(), 1);
        assert_eq!(ledger.since(0, 2).len(), 2);
    }
}
