//! The consumer side: everything the tasks produce arrives on one queue; the stream
//! de-duplicates notifications, turns coverage changes into gap records and hands the
//! caller one [`Event`] at a time. One hop from socket to caller, no copy of the body.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::coverage::ShardCoverage;
use crate::dedupe::Dedupe;
use crate::error::ClientError;
use crate::event::{Event, Gap, Notification, StateChange};
use crate::stats::Stats;

/// A coverage change of one slot.
#[derive(Debug, Clone)]
pub enum Coverage {
    /// The slot is receiving.
    Live {
        /// Since when.
        at: SystemTime,
    },
    /// The slot stopped receiving.
    Down {
        /// Its last frame.
        last_frame: Option<SystemTime>,
        /// Why.
        reason: String,
    },
    /// The shard's topics changed.
    Topics(Arc<[String]>),
}

/// What the tasks send to the stream.
#[derive(Debug)]
pub enum Inbound {
    /// A notification as received (maybe a duplicate).
    Event(Notification),
    /// A slot's coverage changed.
    Coverage {
        /// Shard index.
        shard: usize,
        /// Slot index within the shard.
        slot: usize,
        /// What changed.
        change: Coverage,
    },
    /// A state change worth showing.
    State(StateChange),
    /// A slot hit an error retrying cannot fix.
    Fatal(ClientError),
}

/// The stream of events.
pub struct EventStream {
    rx: mpsc::Receiver<Inbound>,
    dedupe: Dedupe,
    shards: Vec<ShardCoverage>,
    redundancy: usize,
    lookback: std::time::Duration,
    stats: Arc<Stats>,
    finished: bool,
    closing_gaps: Vec<Gap>,
}

impl EventStream {
    pub(crate) fn new(
        rx: mpsc::Receiver<Inbound>,
        dedupe: Dedupe,
        redundancy: usize,
        lookback: std::time::Duration,
        stats: Arc<Stats>,
    ) -> Self {
        EventStream {
            rx,
            dedupe,
            shards: Vec::new(),
            redundancy,
            lookback,
            stats,
            finished: false,
            closing_gaps: Vec::new(),
        }
    }

    /// The next event; `None` once the client has shut down; `Some(Err)` when it cannot go
    /// on (the stream ends after that).
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        if self.finished {
            return self.final_gap();
        }
        loop {
            let Some(inbound) = self.rx.recv().await else {
                return self.final_gap();
            };
            if let Some(out) = self.handle(inbound) {
                if out.is_err() {
                    self.finished = true;
                }
                return Some(out);
            }
        }
    }

    /// After the last socket closed: a shard that was down when the client stopped gets a
    /// gap up to now, since nothing it missed can ever arrive.
    fn final_gap(&mut self) -> Option<Result<Event, ClientError>> {
        if self.closing_gaps.is_empty() && !self.finished {
            let now = SystemTime::now();
            self.closing_gaps = self
                .shards
                .iter_mut()
                .filter_map(|s| s.close_outage(now))
                .collect();
            self.closing_gaps.reverse();
        }
        self.finished = true;
        let gap = self.closing_gaps.pop()?;
        Stats::bump(&self.stats.gaps);
        Some(Ok(Event::Gap(gap)))
    }

    /// Items waiting to be handled (a writer flushes when this reaches zero).
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn handle(&mut self, inbound: Inbound) -> Option<Result<Event, ClientError>> {
        match inbound {
            Inbound::Event(n) => {
                if self.dedupe.first_time(n.id, Instant::now()) {
                    Stats::bump(&self.stats.emitted);
                    Some(Ok(Event::Notification(n)))
                } else {
                    Stats::bump(&self.stats.duplicates);
                    None
                }
            }
            Inbound::Coverage {
                shard,
                slot,
                change,
            } => {
                // Shards appear as the supervisor plans them.
                while self.shards.len() <= shard {
                    let empty: Arc<[String]> = Arc::new([]);
                    self.shards
                        .push(ShardCoverage::new(empty, self.redundancy, self.lookback));
                }
                let coverage = &mut self.shards[shard];
                let gap = match change {
                    Coverage::Live { at } => coverage.live(slot, at),
                    Coverage::Down { last_frame, reason } => {
                        coverage.down(slot, last_frame, &reason);
                        None
                    }
                    Coverage::Topics(topics) => {
                        coverage.set_topics(topics);
                        None
                    }
                };
                gap.map(|g: Gap| {
                    Stats::bump(&self.stats.gaps);
                    tracing::error!(topics = g.topics.len(), reason = %g.reason, "gap: events in this window could not be received");
                    Ok(Event::Gap(g))
                })
            }
            Inbound::State(change) => Some(Ok(Event::State(change))),
            Inbound::Fatal(err) => Some(Err(err)),
        }
    }
}
