//! The consumer side: everything the tasks produce arrives on one queue; the stream
//! de-duplicates notifications, turns coverage changes into gap records and hands the
//! caller one [`Event`] at a time. One hop from socket to caller, no copy of the body.

pub(crate) mod coverage;
pub mod dedupe;
pub mod event;
pub mod record;

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use crate::error::ClientError;
use crate::stream::coverage::ShardCoverage;
use crate::stream::dedupe::Dedupe;
use crate::stream::event::{Event, Gap, Notification, StateChange};
use crate::telemetry::stats::Stats;

/// A coverage change of one socket of a shard.
#[derive(Debug, Clone)]
pub enum Coverage {
    /// Socket `session` covers from `since`.
    Live {
        /// Session number (unique per client).
        session: u64,
        /// When it started covering.
        since: SystemTime,
    },
    /// Socket `session` stopped covering.
    Ended {
        /// Session number.
        session: u64,
        /// Its last frame.
        until: Option<SystemTime>,
        /// False only when the service handed its events over to a replacement.
        lookback: bool,
        /// Why.
        reason: String,
    },
    /// The shard's topics changed.
    Topics(Arc<[String]>),
}

/// What the tasks send to the stream.
#[derive(Debug)]
pub enum Inbound {
    /// Notifications as received, in order (maybe duplicates).
    Events(Vec<Notification>),
    /// A socket's coverage changed.
    Coverage {
        /// Shard index.
        shard: usize,
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
    lookback: Duration,
    stats: Arc<Stats>,
    finished: bool,
    /// Gaps found and not yet handed out.
    gaps: VecDeque<Gap>,
    /// The rest of the batch being handed out.
    batch: std::vec::IntoIter<Notification>,
    /// When the batch was taken in: the de-duplication window's clock for all of it.
    batch_at: Instant,
}

impl EventStream {
    pub(crate) fn new(
        rx: mpsc::Receiver<Inbound>,
        dedupe: Dedupe,
        lookback: Duration,
        stats: Arc<Stats>,
    ) -> Self {
        EventStream {
            rx,
            dedupe,
            shards: Vec::new(),
            lookback,
            stats,
            finished: false,
            gaps: VecDeque::new(),
            batch: Vec::new().into_iter(),
            batch_at: Instant::now(),
        }
    }

    /// The next event; `None` once the client has shut down; `Some(Err)` when it cannot go
    /// on (the stream ends after that).
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if let Some(done) = self.gap_or_end() {
                return done;
            }
            if let Some(out) = self.next_in_batch() {
                return Some(out);
            }
            let Some(inbound) = self.rx.recv().await else {
                self.finish();
                continue;
            };
            if let Some(out) = self.emit(inbound) {
                return Some(out);
            }
        }
    }

    /// Like [`EventStream::next`] without waiting: `Poll::Pending` when nothing that
    /// would produce an event is queued. Duplicates are consumed on the way, so a writer
    /// that batches output can flush exactly when this says `Pending`.
    pub fn try_next(&mut self) -> Poll<Option<Result<Event, ClientError>>> {
        loop {
            if let Some(done) = self.gap_or_end() {
                return Poll::Ready(done);
            }
            if let Some(out) = self.next_in_batch() {
                return Poll::Ready(Some(out));
            }
            let inbound = match self.rx.try_recv() {
                Ok(inbound) => inbound,
                Err(TryRecvError::Empty) => return Poll::Pending,
                Err(TryRecvError::Disconnected) => {
                    self.finish();
                    continue;
                }
            };
            if let Some(out) = self.emit(inbound) {
                return Poll::Ready(Some(out));
            }
        }
    }

    /// The next notification of the current batch that is not a duplicate.
    fn next_in_batch(&mut self) -> Option<Result<Event, ClientError>> {
        for n in self.batch.by_ref() {
            if self.dedupe.first_time(n.id, self.batch_at) {
                Stats::bump(&self.stats.emitted);
                if let Some(c) = self.stats.emitted_by_family.get(n.family) {
                    Stats::bump(c);
                }
                return Some(Ok(Event::Notification(n)));
            }
            Stats::bump(&self.stats.duplicates);
        }
        None
    }

    /// A gap waiting to be handed out, or the end of the stream.
    fn gap_or_end(&mut self) -> Option<Option<Result<Event, ClientError>>> {
        if let Some(gap) = self.gaps.pop_front() {
            crate::telemetry::notable::gap(&self.stats, &gap);
            return Some(Some(Ok(Event::Gap(gap))));
        }
        self.finished.then_some(None)
    }

    fn emit(&mut self, inbound: Inbound) -> Option<Result<Event, ClientError>> {
        let out = self.handle(inbound)?;
        if out.is_err() {
            self.finished = true;
        }
        Some(out)
    }

    /// After the last socket closed: a shard that was down when the client stopped gets a
    /// gap up to now, since nothing it missed can ever arrive.
    fn finish(&mut self) {
        let now = SystemTime::now();
        self.gaps
            .extend(self.shards.iter_mut().filter_map(|s| s.close_outage(now)));
        self.finished = true;
    }

    /// Items waiting to be handled (a writer flushes when this reaches zero).
    pub fn pending(&self) -> usize {
        self.rx.len() + self.gaps.len() + self.batch.len()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn handle(&mut self, inbound: Inbound) -> Option<Result<Event, ClientError>> {
        match inbound {
            Inbound::Events(batch) => {
                self.batch = batch.into_iter();
                self.batch_at = Instant::now();
                self.next_in_batch()
            }
            Inbound::Coverage { shard, change } => {
                // Shards appear as the supervisor plans them.
                while self.shards.len() <= shard {
                    self.shards
                        .push(ShardCoverage::new(Arc::new([]), self.lookback));
                }
                tracing::debug!(shard, ?change, "coverage");
                let coverage = &mut self.shards[shard];
                let gaps = match change {
                    Coverage::Live { session, since } => coverage.live(session, since),
                    Coverage::Ended {
                        session,
                        until,
                        lookback,
                        reason,
                    } => coverage.ended(session, until, lookback, &reason),
                    Coverage::Topics(topics) => {
                        coverage.set_topics(topics);
                        Vec::new()
                    }
                };
                self.gaps.extend(gaps);
                None
            }
            Inbound::State(change) => Some(Ok(Event::State(change))),
            Inbound::Fatal(err) => Some(Err(err)),
        }
    }
}
