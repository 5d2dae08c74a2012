//! The consumer side: notifications arrive in batches on one bounded queue (so a slow
//! consumer holds the sockets back, and TCP the server); coverage changes, state changes
//! and fatal errors arrive on an unbounded control queue, so no control loop ever waits
//! on the consumer. The stream de-duplicates notifications, turns coverage changes into
//! gap records and hands the caller one [`Event`] at a time. One hop from socket to
//! caller, no copy of the body.

pub mod coverage;
pub mod dedupe;
pub mod event;
pub mod record;
pub mod skew;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::Instant;

use crate::error::ClientError;
use crate::stream::coverage::{ShardCover, ShardCoverage};
use crate::stream::dedupe::{Dedupe, Seen};
use crate::stream::event::{Event, Gap, Notification, Rejection, StateChange};
use crate::stream::skew::Skew;
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
        /// Its coverage ends a look-back before `until` (false only for a socket closed
        /// in order after a full rollover overlap).
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
    /// A topic the service refused.
    Rejected(Rejection),
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
    /// Arrival skew between sockets, and the look-back and window it implies.
    skew: Skew,
    stats: Arc<Stats>,
    /// When the last socket closed: no shard covers anything after it.
    finished: Option<SystemTime>,
    /// The error that stops the client, handed out after everything received before it.
    fatal: Option<ClientError>,
    /// Topics already reported rejected (every redundant slot hears of each).
    rejected: std::collections::HashSet<String>,
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
        let skew = Skew::new(lookback, dedupe.max_age());
        let stream = EventStream {
            events,
            control,
            events_open: true,
            control_open: true,
            dedupe,
            shards: Vec::new(),
            skew,
            stats,
            finished: None,
            fatal: None,
            rejected: Default::default(),
            gaps: VecDeque::new(),
            batch: Vec::new().into_iter(),
            batch_at: Instant::now(),
        };
        stream.publish_window(lookback, stream.dedupe.max_age(), Duration::ZERO);
        stream
    }

    /// The look-back and de-duplication window for now, from the recent skew.
    fn refresh_window(&mut self, now: Instant) -> Duration {
        let lookback = self.skew.lookback(now);
        let window = self.skew.window(now);
        self.dedupe.set_max_age(window);
        let skew = self.skew.largest(now);
        self.publish_window(lookback, window, skew);
        lookback
    }

    fn publish_window(&self, lookback: Duration, window: Duration, skew: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.stats.lookback_micros.store(micros(lookback), Relaxed);
        self.stats
            .dedupe_window_micros
            .store(micros(window), Relaxed);
        self.stats.arrival_skew_micros.store(micros(skew), Relaxed);
    }

    /// The next event; `None` once the client has shut down; `Some(Err)` when it cannot go
    /// on, after every event received before that (the stream ends after it).
    /// Cancel-safe: it only waits on queues.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, ClientError>>> {
        self.drive(|this| this.poll_take(cx))
    }

    /// Hands out what is pending (a gap, the rest of a batch), else takes the next thing
    /// off the queues with `take` until something comes of it.
    fn drive(
        &mut self,
        mut take: impl FnMut(&mut Self) -> Poll<Option<Taken>>,
    ) -> Poll<Option<Result<Event, ClientError>>> {
        loop {
            if let Some(done) = self.gap_or_end() {
                return Poll::Ready(done);
            }
            if let Some(out) = self.next_in_batch() {
                return Poll::Ready(Some(out));
            }
            let taken = match take(self) {
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

    /// The next thing queued, control first; `Ready(None)` once both queues are closed.
    fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Option<Taken>> {
        if self.control_open {
            match self.control.poll_recv(cx) {
                Poll::Ready(Some(c)) => return Poll::Ready(Some(Taken::Control(c))),
                Poll::Ready(None) => self.control_open = false,
                Poll::Pending => {}
            }
        }
        if self.events_open {
            match self.events.poll_recv(cx) {
                Poll::Ready(Some(b)) => return Poll::Ready(Some(Taken::Batch(b))),
                Poll::Ready(None) => self.events_open = false,
                Poll::Pending => {}
            }
        }
        if self.events_open || self.control_open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }

    /// Like [`EventStream::next`] without waiting: `Poll::Pending` when nothing that
    /// would produce an event is queued. Duplicates are consumed on the way, so a writer
    /// that batches output can flush exactly when this says `Pending`.
    pub fn try_next(&mut self) -> Poll<Option<Result<Event, ClientError>>> {
        // try_recv rather than a poll: it neither waits nor spends the task's budget.
        self.drive(Self::try_take)
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
        while let Some(n) = self.batch.next() {
            let at = self.batch_at;
            match self
                .dedupe
                .arrival(n.id, n.bytes_hash(), n.received_at, &n.channel, at)
            {
                Seen::First => {
                    Stats::bump(&self.stats.emitted);
                    if let Some(c) = self.stats.emitted_by_family.get(n.family) {
                        Stats::bump(c);
                    }
                    return Some(Ok(Event::Notification(n)));
                }
                Seen::Duplicate { skew, near } => {
                    Stats::bump(&self.stats.duplicates);
                    if near {
                        Stats::bump(&self.stats.near_duplicates);
                    }
                    if let Some(skew) = skew
                        && self.skew.note(skew, at)
                    {
                        self.refresh_window(at);
                    }
                }
            }
        }
        None
    }

    /// A gap waiting to be handed out, or the end of the stream.
    fn gap_or_end(&mut self) -> Option<Option<Result<Event, ClientError>>> {
        if let Some(gap) = self.gaps.pop_front() {
            crate::telemetry::notable::gap(&self.stats, &gap);
            return Some(Some(Ok(Event::Gap(gap))));
        }
        // Not finished: nothing to hand out yet.
        self.finished?;
        Some(self.fatal.take().map(Err))
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
        Some(out)
    }

    /// After the last socket closed: a shard that was down when the client stopped gets a
    /// gap up to now, since nothing it missed can ever arrive.
    fn finish(&mut self) {
        let now = SystemTime::now();
        self.gaps
            .extend(self.shards.iter_mut().filter_map(|s| s.close_outage(now)));
        self.finished = Some(now);
    }

    /// What each shard has covered so far (for a cluster, which combines its nodes'); once
    /// the stream has ended, up to when its last socket closed, however late it is asked.
    pub fn coverage(&self) -> Vec<ShardCover> {
        let now = self.finished.unwrap_or_else(SystemTime::now);
        self.shards.iter().filter_map(|s| s.cover(now)).collect()
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
                    let lookback = self.skew.lookback(Instant::now());
                    self.shards.push(ShardCoverage::new(Arc::new([]), lookback));
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
                    } => {
                        let trim = self.refresh_window(Instant::now());
                        let coverage = &mut self.shards[shard];
                        coverage.set_lookback(trim);
                        coverage.ended(session, until, lookback, &reason)
                    }
                    Coverage::Topics(topics) => {
                        coverage.set_topics(topics);
                        Vec::new()
                    }
                };
                self.gaps.extend(gaps);
                None
            }
            Inbound::State(change) => Some(Ok(Event::State(change))),
            Inbound::Rejected(r) => self
                .rejected
                .insert(r.topic.clone())
                .then_some(Ok(Event::Rejected(r))),
            // The client stops: its queues close once its sockets have, and the error
            // comes after what they had received.
            Inbound::Fatal(err) => {
                self.fatal.get_or_insert(err);
                None
            }
        }
    }
}

impl futures_util::Stream for EventStream {
    type Item = Result<Event, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::stream::event::StateKind;

    fn notification(body: &str) -> Notification {
        let frame = holdline_proto::frame::notification_json("v2.users.x.presence", body, "c");
        let bytes = bytes::Bytes::from(frame);
        let Ok((text, Ok(holdline_proto::ServerFrame::Notification(n)))) =
            holdline_proto::ServerFrame::parse_payload(&bytes)
        else {
            panic!("a notification")
        };
        Notification::new(&bytes, text, &n, SystemTime::now(), Arc::from("ch"))
    }

    #[tokio::test]
    async fn the_stream_yields_states_and_deduplicated_events_and_ends_with_its_queues() {
        let (events, events_rx) = mpsc::channel(4);
        let (control, control_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let dedupe = Dedupe::new(Duration::from_secs(60), 100);
        let mut stream =
            EventStream::new(events_rx, control_rx, dedupe, Duration::from_secs(1), stats);
        let a = notification(r#"{"n":1}"#);
        events
            .send(vec![a.clone(), a, notification(r#"{"n":2}"#)])
            .await
            .unwrap();
        control
            .send(Inbound::State(StateChange {
                kind: StateKind::Live,
                channel: None,
                detail: String::new(),
            }))
            .unwrap();
        drop((events, control));
        let mut kinds = Vec::new();
        while let Some(item) = StreamExt::next(&mut stream).await {
            kinds.push(match item.unwrap() {
                Event::State(_) => "state".to_owned(),
                Event::Notification(n) => n.body().to_owned(),
                Event::Gap(_) => "gap".to_owned(),
                Event::Rejected(_) => "rejected".to_owned(),
            });
        }
        assert_eq!(kinds, ["state", r#"{"n":1}"#, r#"{"n":2}"#]);
    }

    #[tokio::test]
    async fn a_fatal_error_comes_after_the_events_received_before_it() {
        let (events, events_rx) = mpsc::channel(4);
        let (control, control_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let dedupe = Dedupe::new(Duration::from_secs(60), 100);
        let mut stream =
            EventStream::new(events_rx, control_rx, dedupe, Duration::from_secs(1), stats);
        events.send(vec![notification(r#"{"n":1}"#)]).await.unwrap();
        control
            .send(Inbound::Fatal(ClientError::Internal("test".into())))
            .unwrap();
        events.send(vec![notification(r#"{"n":2}"#)]).await.unwrap();
        drop((events, control));
        let mut seen = Vec::new();
        while let Some(item) = stream.next().await {
            seen.push(match item {
                Ok(Event::Notification(n)) => n.body().to_owned(),
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("error: {e}"),
            });
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(&seen[..2], [r#"{"n":1}"#, r#"{"n":2}"#]);
        assert!(
            seen[2].starts_with("error: internal error: test"),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn coverage_asked_after_the_stream_ended_stops_where_it_ended() {
        let (events, events_rx) = mpsc::channel::<Vec<Notification>>(4);
        let (control, control_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let dedupe = Dedupe::new(Duration::from_secs(60), 100);
        let lookback = Duration::from_millis(10);
        let mut stream = EventStream::new(events_rx, control_rx, dedupe, lookback, stats);
        let since = SystemTime::now() - Duration::from_secs(1);
        control
            .send(Inbound::Coverage {
                shard: 0,
                change: Coverage::Live { session: 1, since },
            })
            .unwrap();
        drop((events, control));
        while stream.next().await.is_some() {}
        let ended = SystemTime::now();
        // Asked later (a report held up by NATS, say), it must not claim the time since.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let cover = stream.coverage();
        let (start, end) = *cover[0].runs.last().unwrap();
        assert_eq!(start, since);
        assert!(
            end <= ended,
            "covered up to {end:?}, past its end {ended:?}"
        );
    }
}
