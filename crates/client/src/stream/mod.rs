//! The consumer side: notifications arrive in batches on one bounded queue (so a slow
//! consumer holds the sockets back, and TCP the server); coverage changes, state changes
//! and fatal errors arrive on an unbounded control queue, so no control loop ever waits
//! on the consumer. The stream de-duplicates notifications, turns coverage changes into
//! gap records and hands the caller one [`Event`] at a time. One hop from socket to
//! caller, no copy of the body.

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
        /// True when the socket died (events just before `until` may have been in
        /// flight to it); false when it ended in order (the server's close frame, a
        /// clean close of holdline's own, or a hand-over the service made).
        lookback: bool,
        /// Why.
        reason: String,
    },
    /// The shard's topics changed.
    Topics(Arc<[String]>),
}

/// What the control loops send to the stream.
#[derive(Debug)]
pub enum Inbound {
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
    events: mpsc::Receiver<Vec<Notification>>,
    control: mpsc::UnboundedReceiver<Inbound>,
    events_open: bool,
    control_open: bool,
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

/// One thing taken off the queues.
enum Taken {
    Batch(Vec<Notification>),
    Control(Inbound),
}

impl EventStream {
    pub(crate) fn new(
        events: mpsc::Receiver<Vec<Notification>>,
        control: mpsc::UnboundedReceiver<Inbound>,
        dedupe: Dedupe,
        lookback: Duration,
        stats: Arc<Stats>,
    ) -> Self {
        EventStream {
            events,
            control,
            events_open: true,
            control_open: true,
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
            let taken = match self.try_take() {
                Poll::Ready(Some(taken)) => taken,
                Poll::Ready(None) => {
                    self.finish();
                    continue;
                }
                Poll::Pending => {
                    let (events_open, control_open) = (self.events_open, self.control_open);
                    tokio::select! {
                        biased;
                        // Control first: coverage and state changes are rare and small.
                        // Both recv() calls are cancel-safe.
                        c = self.control.recv(), if control_open => match c {
                            Some(c) => Taken::Control(c),
                            None => { self.control_open = false; continue; }
                        },
                        b = self.events.recv(), if events_open => match b {
                            Some(b) => Taken::Batch(b),
                            None => { self.events_open = false; continue; }
                        },
                    }
                }
            };
            if let Some(out) = self.emit(taken) {
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
            let taken = match self.try_take() {
                Poll::Ready(Some(taken)) => taken,
                Poll::Ready(None) => {
                    self.finish();
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            };
            if let Some(out) = self.emit(taken) {
                return Poll::Ready(Some(out));
            }
        }
    }

    /// Whatever is queued, control first; `Ready(None)` once both queues are closed.
    fn try_take(&mut self) -> Poll<Option<Taken>> {
        if self.control_open {
            match self.control.try_recv() {
                Ok(c) => return Poll::Ready(Some(Taken::Control(c))),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => self.control_open = false,
            }
        }
        if self.events_open {
            match self.events.try_recv() {
                Ok(b) => return Poll::Ready(Some(Taken::Batch(b))),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => self.events_open = false,
            }
        }
        if self.events_open || self.control_open {
            Poll::Pending
        } else {
            Poll::Ready(None)
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

    fn emit(&mut self, taken: Taken) -> Option<Result<Event, ClientError>> {
        let out = match taken {
            Taken::Batch(batch) => {
                self.batch = batch.into_iter();
                self.batch_at = Instant::now();
                self.next_in_batch()
            }
            Taken::Control(c) => self.handle(c),
        }?;
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
        self.events.len() + self.control.len() + self.gaps.len() + self.batch.len()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    fn handle(&mut self, inbound: Inbound) -> Option<Result<Event, ClientError>> {
        match inbound {
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
