//! One slot: a channel's life, end to end. Create → subscribe → connect → live; then
//! - `socket_closing`: a second socket on the same `connectUri` before the old one goes
//!   (the service drops the old one when the new one attaches), no gap;
//! - channel or token near expiry: a fresh channel (with a token that outlives it) is
//!   subscribed and live before the old socket is retired, overlap de-duplicated, no gap;
//! - a drop, a dead socket, eviction, `no_longer_subscribed`, `token_revoked`: reconnect
//!   with backoff, `HEAD` the channel, reuse it or create a new one, re-subscribe from our
//!   own topic list, and report the window in which nothing was received.
//!
//! The slot tells the stream when it starts and stops receiving; the stream turns that
//! into gap records (see `coverage`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::config::Timings;
use crate::error::ClientError;
use crate::rest::api::{Api, ApiError};
use crate::rest::auth::Token;
use crate::rest::backoff::Backoff;
use crate::socket::session::{self, Ended, Report, SessionConfig, SessionHandle};
use crate::stream::event::{StateChange, StateKind};
use crate::stream::{Coverage, Inbound};
use crate::telemetry::stats::{Cause, Stats};

/// Orders from the client handle.
#[derive(Debug)]
pub enum SlotCmd {
    /// Replace the slot's topics.
    SetTopics(Arc<[String]>),
    /// Close every socket and stop.
    Shutdown,
}

/// What a slot shares with the client.
#[derive(Clone)]
pub struct SlotCtx {
    /// The REST API.
    pub api: Arc<Api>,
    /// How sessions run.
    pub session: SessionConfig,
    /// Lifecycle durations.
    pub timings: Timings,
    /// Shard index.
    pub shard: usize,
    /// Slot index within the shard.
    pub slot: usize,
    /// The stream's queue.
    pub out: mpsc::Sender<Inbound>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Session numbers, unique per client.
    pub session_ids: Arc<AtomicU64>,
    /// Wait this long before the first channel (staggers redundant slots).
    pub start_delay: Duration,
    /// This slot's share of the rollover spread, in [0, 1): its margin is stretched by it so
    /// that no two slots roll over at once (and one spare channel is enough).
    pub stagger: f64,
}

#[derive(Debug, Clone)]
struct Chan {
    id: Arc<str>,
    uri: String,
    rollover_at: Instant,
    /// The margin in use for this channel (its replacement's token must outlive twice it).
    margin: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A second socket on the same channel after `socket_closing`.
    Closing,
    /// A socket on a fresh channel before the old one expires.
    Rollover,
}

struct Next {
    chan: Chan,
    session: SessionHandle,
    purpose: Purpose,
    /// When the trigger (the `socket_closing` notice, or the rollover) happened.
    since: Instant,
    /// When its upgrade completed.
    connected_at: Option<Instant>,
}

/// How close in time the replacement's upgrade and the old socket's close must be for the
/// close to count as caused by the replacement (the service answers the upgrade, then drops
/// the old socket; the two reports can reach the slot in either order).
const KICK_WINDOW: Duration = Duration::from_millis(250);

/// The current socket was closed while its same-channel replacement was still connecting,
/// sooner than the service closes for maintenance. If the replacement's upgrade completed
/// within [`KICK_WINDOW`] of that close, the replacement's attach caused it: the service
/// handed every event over in order, so the old socket's coverage runs to its last frame
/// and the new one's starts no later. Otherwise it was a real outage.
struct Deferred {
    session: u64,
    last_frame: Option<SystemTime>,
    reason: String,
    ended_at: Instant,
}

/// Runs a slot until shutdown or a fatal error.
pub async fn run(ctx: SlotCtx, topics: Arc<[String]>, cmds: mpsc::UnboundedReceiver<SlotCmd>) {
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let backoff = Backoff::new(ctx.timings.backoff_base, ctx.timings.backoff_max);
    let mut slot = Slot {
        ctx,
        topics,
        reports_tx,
        chan: None,
        chan_dead: false,
        current: None,
        next: None,
        retiring: Vec::new(),
        overlapping: Vec::new(),
        live: HashSet::new(),
        deferred: None,
        recover_at: None,
        backoff,
        ever_live: false,
        rejected_reported: HashSet::new(),
        outbox: Vec::new(),
        spare: None,
        split: HashSet::new(),
        covering: false,
        loss: None,
    };
    slot.ctx.stats.slot_started(slot.ctx.shard);
    slot.run(reports, cmds).await;
    let was_covering = std::mem::take(&mut slot.covering);
    slot.ctx.stats.slot_stopped(slot.ctx.shard, was_covering);
}

struct Slot {
    ctx: SlotCtx,
    topics: Arc<[String]>,
    reports_tx: mpsc::UnboundedSender<Report>,
    chan: Option<Chan>,
    chan_dead: bool,
    current: Option<SessionHandle>,
    next: Option<Next>,
    retiring: Vec<SessionHandle>,
    /// Replaced sockets still receiving until their deadline (events in flight on them).
    overlapping: Vec<(SessionHandle, Instant)>,
    live: HashSet<u64>,
    deferred: Option<Deferred>,
    recover_at: Option<Instant>,
    backoff: Backoff,
    ever_live: bool,
    rejected_reported: HashSet<String>,
    outbox: Vec<Inbound>,
    /// A channel created but not yet in use (its subscribe failed); reused on retry.
    spare: Option<Chan>,
    /// Combined entries the service rejected as a whole; sent as their parts.
    split: HashSet<String>,
    /// Whether this slot counts in the live-slot gauge.
    covering: bool,
    /// Why the slot's last live socket was lost (counted when it is live again).
    loss: Option<Cause>,
}

impl Slot {
    async fn run(
        &mut self,
        mut reports: mpsc::UnboundedReceiver<Report>,
        mut cmds: mpsc::UnboundedReceiver<SlotCmd>,
    ) {
        self.recover_at = Some(Instant::now() + self.ctx.start_delay);
        self.coverage(Coverage::Topics(
            crate::supervisor::plan::single_topics(&self.topics).into(),
        ));
        loop {
            let rollover_at = self
                .chan
                .as_ref()
                .filter(|_| self.next.is_none() && self.current.is_some() && !self.chan_dead)
                .map(|c| c.rollover_at);
            let overlap_ends = self.overlapping.iter().map(|(_, at)| *at).min();
            let result = tokio::select! {
                // Orders from the handle; a dropped handle means shut down.
                cmd = cmds.recv() => match cmd {
                    Some(SlotCmd::SetTopics(topics)) => self.set_topics(topics).await,
                    Some(SlotCmd::Shutdown) | None => {
                        self.shutdown(&mut reports).await;
                        return;
                    }
                },
                // What the sockets saw; the slot holds a sender, so this never ends.
                Some(report) = reports.recv() => {
                    self.on_report(report);
                    Ok(())
                }
                // Time to (re)connect.
                _ = sleep_until(self.recover_at.unwrap_or_else(Instant::now)), if self.recover_at.is_some() => {
                    self.recover_at = None;
                    self.recover().await
                }
                // Time to roll over to a fresh channel.
                _ = sleep_until(rollover_at.unwrap_or_else(Instant::now)), if rollover_at.is_some() => {
                    self.rollover().await
                }
                // A replaced socket's overlap is over: close it.
                _ = sleep_until(overlap_ends.unwrap_or_else(Instant::now)), if overlap_ends.is_some() => {
                    self.end_overlaps();
                    Ok(())
                }
            };
            self.sync_covering();
            self.flush_outbox().await;
            if let Err(fatal) = result {
                tracing::error!(shard = self.ctx.shard, slot = self.ctx.slot, error = %fatal, "slot stopped");
                let _ = self.ctx.out.send(Inbound::Fatal(fatal)).await;
                self.shutdown(&mut reports).await;
                return;
            }
        }
    }

    fn state(&mut self, kind: StateKind, channel: Option<Arc<str>>, detail: String) {
        self.outbox.push(Inbound::State(StateChange {
            kind,
            channel,
            detail,
        }));
    }

    fn coverage(&mut self, change: Coverage) {
        self.outbox.push(Inbound::Coverage {
            shard: self.ctx.shard,
            change,
        });
    }

    /// Sends what the last step produced, in order (coverage changes must never be
    /// reordered or lost).
    async fn flush_outbox(&mut self) {
        for msg in std::mem::take(&mut self.outbox) {
            let _ = self.ctx.out.send(msg).await;
        }
    }

    fn spawn_session(&self, chan: &Chan) -> SessionHandle {
        let id = self.ctx.session_ids.fetch_add(1, Ordering::Relaxed);
        let mut cfg = self.ctx.session.clone();
        cfg.shard = self.ctx.shard;
        cfg.slot = self.ctx.slot;
        session::spawn(
            cfg,
            id,
            chan.uri.clone(),
            chan.id.clone(),
            self.reports_tx.clone(),
            self.ctx.out.clone(),
        )
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Connected { session, at } => self.on_connected(session, at),
            Report::Live { session, at } => self.on_live(session, at),
            Report::SocketClosing { session } => {
                let is_current = self.current.as_ref().is_some_and(|c| c.id == session);
                if let (true, None, Some(chan)) = (is_current, &self.next, self.chan.clone()) {
                    self.state(
                        StateKind::SocketClosing,
                        Some(chan.id.clone()),
                        "maintenance announced; opening a new socket on the same channel".into(),
                    );
                    let session = self.spawn_session(&chan);
                    self.next = Some(Next {
                        chan,
                        session,
                        purpose: Purpose::Closing,
                        since: Instant::now(),
                        connected_at: None,
                    });
                }
            }
            Report::ChannelGone {
                session,
                why,
                cause,
            } => {
                let on_current = self.current.as_ref().is_some_and(|c| c.id == session);
                if on_current {
                    self.loss.get_or_insert(cause);
                    self.chan_dead = true;
                    let chan = self.chan.as_ref().map(|c| c.id.clone());
                    crate::telemetry::notable::channel_lost(chan.as_deref(), cause, &why);
                    self.state(StateKind::ChannelLost, chan, why);
                    if let Some(current) = self.current.take() {
                        self.retire(current, "channel lost", false);
                    }
                    self.recover_at.get_or_insert_with(Instant::now);
                }
            }
            Report::Ended {
                session,
                last_frame,
                why,
                at,
            } => self.on_ended(session, last_frame, why, at),
        }
    }

    /// A socket's upgrade completed; settles a deferred close of the socket it replaces.
    fn on_connected(&mut self, session: u64, at: Instant) {
        let Some(next) = self.next.as_mut().filter(|n| n.session.id == session) else {
            return;
        };
        next.connected_at = Some(at);
        if self
            .deferred
            .as_ref()
            .is_some_and(|d| at > d.ended_at + KICK_WINDOW)
        {
            // The old socket was gone well before the new one attached: a real hole.
            self.release_deferred();
        }
    }

    /// Reports a deferred close as an ordinary end of coverage.
    fn release_deferred(&mut self) {
        if let Some(d) = self.deferred.take() {
            self.coverage(Coverage::Ended {
                session: d.session,
                until: d.last_frame,
                lookback: true,
                reason: d.reason.clone(),
            });
            self.note_down(&d.reason);
        }
    }

    fn on_live(&mut self, session: u64, at: SystemTime) {
        let was_live = !self.live.is_empty() || self.deferred.is_some();
        self.live.insert(session);
        let is_next = self.next.as_ref().is_some_and(|n| n.session.id == session);
        let mut since = at;
        if let Some(d) = self.deferred.take().filter(|_| is_next) {
            // Handed over by the service: no hole between the two sockets.
            since = d.last_frame.map_or(at, |l| l.min(at));
            self.coverage(Coverage::Ended {
                session: d.session,
                until: d.last_frame,
                lookback: false,
                reason: d.reason,
            });
        }
        self.coverage(Coverage::Live { session, since });
        if is_next {
            self.promote();
        }
        if self.current.as_ref().is_some_and(|c| c.id == session) {
            self.backoff.reset();
        }
        if !was_live {
            let cause = self.loss.take();
            if self.ever_live {
                crate::telemetry::notable::reconnected(
                    &self.ctx.stats,
                    cause.unwrap_or(Cause::Drop),
                    self.ctx.shard,
                    self.ctx.slot,
                );
            }
            self.ever_live = true;
            let chan = self.chan.as_ref().map(|c| c.id.clone());
            self.state(
                StateKind::Live,
                chan,
                format!("receiving {} topics", self.topics.len()),
            );
        }
    }

    /// Retires the replaced sockets whose overlap is over.
    fn end_overlaps(&mut self) {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.overlapping)
            .into_iter()
            .partition(|(_, at)| *at <= now);
        self.overlapping = keep;
        for (session, _) in due {
            self.retire(session, "rollover", false);
        }
    }

    /// Closes a session politely. From now on it no longer counts as receiving: a server
    /// may stop sending to a socket being closed, so it covers nothing after this.
    ///
    /// `handed_over`: its replacement on the same channel is already receiving, so the
    /// service has moved delivery to it in order and nothing is in flight between them.
    fn retire(&mut self, mut session: SessionHandle, reason: &'static str, handed_over: bool) {
        session.retire(reason);
        if self.live.remove(&session.id) {
            let reason = format!("socket closed by holdline ({reason})");
            self.coverage(Coverage::Ended {
                session: session.id,
                until: Some(SystemTime::now()),
                lookback: !handed_over,
                reason,
            });
        }
        self.retiring.push(session);
    }

    fn promote(&mut self) {
        let Some(next) = self.next.take() else { return };
        if let Some(old) = self.current.take() {
            if next.purpose == Purpose::Rollover {
                // Keep reading the old socket a while: events published before the new
                // channel was subscribed may still be on their way to it.
                self.overlapping
                    .push((old, Instant::now() + self.ctx.timings.overlap));
            } else {
                self.retire(old, "replaced", true);
            }
        }
        if next.purpose == Purpose::Rollover {
            crate::telemetry::notable::rollover(&self.ctx.stats, self.ctx.shard, self.ctx.slot);
            // The old channel is left to expire; it no longer counts as ours.
            self.held(-1);
            let old = self
                .chan
                .as_ref()
                .map(|c| c.id.to_string())
                .unwrap_or_default();
            self.state(
                StateKind::RolledOver,
                Some(next.chan.id.clone()),
                format!("rolled over from {old}"),
            );
        }
        self.chan = Some(next.chan);
        self.chan_dead = false;
        self.current = Some(next.session);
    }

    fn on_ended(&mut self, session: u64, last_frame: Option<SystemTime>, why: Ended, at: Instant) {
        let was_live = self.live.remove(&session);
        if let Ended::ConnectFailed {
            status: Some(401 | 403 | 404 | 410),
            ..
        } = why
        {
            self.chan_dead = true;
        }
        let was_current = self.current.as_ref().is_some_and(|c| c.id == session);
        let was_next = self.next.as_ref().is_some_and(|n| n.session.id == session);
        self.retiring.retain(|s| s.id != session);
        self.overlapping.retain(|(s, _)| s.id != session);
        if why != Ended::Retired {
            crate::telemetry::notable::socket_ended(self.chan.as_ref().map(|c| &*c.id), &why);
        }
        if was_current {
            self.current = None;
        }
        if was_next {
            let next = self.next.take();
            if next.is_some_and(|n| n.purpose == Purpose::Rollover) {
                self.retry_rollover();
            }
            // A replacement that never went live settles a deferred close as a real end.
            self.release_deferred();
        }
        if was_live {
            let grace = self.ctx.timings.closing_grace;
            let kick_candidate = was_current
                && matches!(why, Ended::Closed { .. })
                && self.next.as_ref().is_some_and(|n| {
                    n.purpose == Purpose::Closing
                        && at - n.since < grace
                        && n.connected_at.is_none_or(|c| c <= at + KICK_WINDOW)
                });
            // The slot is down (no hand-over pending): remember why, for the reconnect.
            if !kick_candidate && self.live.is_empty() && why != Ended::Retired {
                self.loss.get_or_insert(why.cause());
            }
            if kick_candidate {
                // Decided when the replacement connects or goes live.
                self.deferred = Some(Deferred {
                    session,
                    last_frame,
                    reason: why.to_string(),
                    ended_at: at,
                });
            } else {
                self.coverage(Coverage::Ended {
                    session,
                    until: last_frame,
                    lookback: true,
                    reason: why.to_string(),
                });
                self.note_down(&why.to_string());
            }
        }
        if self.current.is_none() && self.next.is_none() && self.recover_at.is_none() {
            let delay = if was_live {
                Duration::ZERO
            } else {
                self.backoff.next().unwrap_or_default()
            };
            self.recover_at = Some(Instant::now() + delay);
        }
    }

    /// Keeps the live-slot gauge in line with whether this slot covers its shard now.
    fn sync_covering(&mut self) {
        let covering = !self.live.is_empty() || self.deferred.is_some();
        if covering != self.covering {
            self.covering = covering;
            self.ctx
                .stats
                .slots_live
                .fetch_add(if covering { 1 } else { -1 }, Ordering::Relaxed);
            self.ctx.stats.slot_covering(self.ctx.shard, covering);
        }
    }

    /// Says so when nothing of this slot is receiving any more.
    fn note_down(&mut self, reason: &str) {
        if self.live.is_empty() && self.deferred.is_none() {
            tracing::debug!(shard = self.ctx.shard, slot = self.ctx.slot, %reason, "slot down");
            let chan = self.chan.as_ref().map(|c| c.id.clone());
            self.state(StateKind::Down, chan, reason.to_owned());
        }
    }

    fn retry_rollover(&mut self) {
        let wait = self.backoff.next().unwrap_or_default();
        if let Some(chan) = self.chan.as_mut() {
            chan.rollover_at = Instant::now() + wait;
        }
    }

    /// Connects again: the same channel if it still exists, else a new one.
    async fn recover(&mut self) -> Result<(), ClientError> {
        if self.current.is_some() || self.next.is_some() {
            return Ok(());
        }
        let reusable = match (&self.chan, self.chan_dead) {
            (Some(chan), false) => match self.ctx.api.channel_exists(&chan.id).await {
                Ok(exists) => exists.then(|| chan.clone()),
                Err(e) => return self.retry_later(e),
            },
            _ => None,
        };
        let chan = match reusable {
            Some(chan) => {
                // Restore from our own state: re-subscribe every topic (never trust the
                // server to have kept them); this also extends the channel's life.
                if let Err(e) = self.subscribe(&chan.id).await {
                    return self.retry_later_client(e);
                }
                chan
            }
            None => match self.replace_channel().await {
                Ok(chan) => chan,
                Err(e) => return self.retry_later_client(e),
            },
        };
        self.current = Some(self.spawn_session(&chan));
        self.chan = Some(chan);
        self.chan_dead = false;
        Ok(())
    }

    fn retry_later(&mut self, e: ApiError) -> Result<(), ClientError> {
        self.retry_later_client(e.into())
    }

    fn retry_later_client(&mut self, e: ClientError) -> Result<(), ClientError> {
        let retryable = matches!(&e, ClientError::Api(a) if !a.is_fatal())
            || matches!(&e, ClientError::Auth(a) if !a.is_fatal());
        if !retryable {
            return Err(e);
        }
        let wait = self.backoff.next().unwrap_or_default();
        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "could not connect; retrying");
        self.recover_at = Some(Instant::now() + wait);
        Ok(())
    }

    /// Rolls over to a fresh channel before this one (or its token) expires.
    async fn rollover(&mut self) -> Result<(), ClientError> {
        let margin = self
            .chan
            .as_ref()
            .map_or(self.ctx.timings.rollover_margin, |c| c.margin);
        match self.new_channel(margin * 2).await {
            Ok(chan) => {
                let session = self.spawn_session(&chan);
                self.next = Some(Next {
                    chan,
                    session,
                    purpose: Purpose::Rollover,
                    since: Instant::now(),
                    connected_at: None,
                });
                Ok(())
            }
            Err(e) => {
                let fatal = !matches!(&e, ClientError::Api(a) if !a.is_fatal())
                    && !matches!(&e, ClientError::Auth(a) if !a.is_fatal());
                if fatal {
                    return Err(e);
                }
                tracing::warn!(error = %e, "rollover failed; retrying");
                self.retry_rollover();
                Ok(())
            }
        }
    }

    /// Creates and subscribes a channel whose token lasts at least `token_life`. A channel
    /// created earlier whose subscribe failed is reused rather than creating another: a
    /// retry loop must never pile up channels that would evict our own live ones.
    async fn new_channel(&mut self, token_life: Duration) -> Result<Chan, ClientError> {
        let spare = match self.spare.take() {
            Some(spare) => match self.ctx.api.channel_exists(&spare.id).await {
                Ok(true) => Some(spare),
                Ok(false) => {
                    self.held(-1);
                    None
                }
                Err(e) => {
                    self.spare = Some(spare);
                    return Err(e.into());
                }
            },
            None => None,
        };
        let chan = match spare {
            Some(chan) => chan,
            None => {
                self.ctx.api.auth().token_lasting(token_life).await?;
                let (channel, token) = self.ctx.api.create_channel().await?;
                let held = self.held(1);
                tracing::info!(
                    channel = %channel.id,
                    shard = self.ctx.shard,
                    slot = self.ctx.slot,
                    held,
                    budget = crate::CHANNEL_BUDGET,
                    "channel created"
                );
                let (rollover_at, margin) = rollover_at(
                    &channel.expires,
                    &token,
                    self.ctx.timings.rollover_margin,
                    self.ctx.timings.gap_lookback * 2,
                    self.ctx.stagger,
                );
                Chan {
                    id: Arc::from(channel.id),
                    uri: channel.connect_uri,
                    rollover_at,
                    margin,
                }
            }
        };
        self.spare = Some(chan.clone());
        self.subscribe(&chan.id).await?;
        self.spare = None;
        Ok(chan)
    }

    /// The entries to subscribe: the plan's, with combined entries that were rejected sent
    /// as their parts.
    fn effective_topics(&self) -> Vec<String> {
        self.topics
            .iter()
            .flat_map(|t| {
                if self.split.contains(t) {
                    crate::supervisor::plan::single_topics(std::slice::from_ref(t))
                } else {
                    vec![t.clone()]
                }
            })
            .collect()
    }

    /// A new channel in place of one that is gone (or none yet).
    async fn replace_channel(&mut self) -> Result<Chan, ClientError> {
        if self.chan.take().is_some() {
            self.held(-1);
        }
        self.new_channel(Duration::ZERO).await
    }

    /// Counts channels this process holds; returns the new total.
    fn held(&self, delta: i64) -> i64 {
        self.ctx
            .stats
            .channels_held
            .fetch_add(delta, Ordering::Relaxed)
            + delta
    }

    /// Puts our topic list on the channel (restoring state from our side, never the server's).
    async fn subscribe(&mut self, channel: &str) -> Result<(), ClientError> {
        if self.topics.is_empty() {
            self.ctx.api.clear_subscriptions(channel).await?;
            return Ok(());
        }
        let mut result = self
            .ctx
            .api
            .set_subscriptions(channel, &self.effective_topics())
            .await?;
        // A combined topic is rejected whole when one part is forbidden; send those parts
        // one by one so the permitted ones still stream.
        let combined: Vec<String> = result
            .rejected
            .iter()
            .filter(|r| r.topic.contains('?'))
            .map(|r| r.topic.clone())
            .collect();
        if !combined.is_empty() {
            self.split.extend(combined);
            result = self
                .ctx
                .api
                .set_subscriptions(channel, &self.effective_topics())
                .await?;
        }
        let fresh: Vec<_> = result
            .rejected
            .iter()
            .filter(|r| !self.rejected_reported.contains(&r.topic))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            let detail: Vec<String> = fresh
                .iter()
                .map(|r| format!("{} (missing {})", r.topic, r.missing_permissions.join(", ")))
                .collect();
            tracing::warn!(rejected = %detail.join("; "), "topics rejected by the service");
            self.state(
                StateKind::Rejected,
                Some(Arc::from(channel)),
                detail.join("; "),
            );
            self.rejected_reported
                .extend(fresh.into_iter().map(|r| r.topic));
        }
        if result.permitted.is_empty() {
            return Err(ClientError::Permission(format!(
                "the OAuth client {:?} may not subscribe any of the {} topics asked for ({}); add the missing permissions to its role",
                self.ctx.api.auth().client_id(),
                self.topics.len(),
                result
                    .rejected
                    .iter()
                    .map(|r| format!("{}: {}", r.topic, r.missing_permissions.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        Ok(())
    }

    async fn set_topics(&mut self, topics: Arc<[String]>) -> Result<(), ClientError> {
        self.topics = topics.clone();
        self.coverage(Coverage::Topics(
            crate::supervisor::plan::single_topics(&topics).into(),
        ));
        let channels: Vec<Arc<str>> = self
            .chan
            .iter()
            .map(|c| c.id.clone())
            .chain(self.next.iter().map(|n| n.chan.id.clone()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for id in channels {
            if let Err(e) = self.subscribe(&id).await {
                if matches!(&e, ClientError::Api(a) if !a.is_fatal()) {
                    // The next recovery re-subscribes from the new list anyway.
                    tracing::warn!(error = %e, "could not update subscriptions yet");
                } else {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Closes every socket with 1000 and waits briefly for the closes to finish.
    async fn shutdown(&mut self, reports: &mut mpsc::UnboundedReceiver<Report>) {
        if self.covering {
            self.ctx.stats.slots_live.fetch_sub(1, Ordering::Relaxed);
        }
        let held = [
            self.chan.is_some(),
            self.next.is_some(),
            self.spare.is_some(),
        ]
        .iter()
        .filter(|h| **h)
        .count();
        self.held(-(held as i64));
        let mut open: HashSet<u64> = HashSet::new();
        for handle in self
            .current
            .iter_mut()
            .chain(self.next.iter_mut().map(|n| &mut n.session))
            .chain(self.retiring.iter_mut())
            .chain(self.overlapping.iter_mut().map(|(s, _)| s))
        {
            handle.retire("shutdown");
            open.insert(handle.id);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !open.is_empty() {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(Report::Ended { session, .. })) => {
                    open.remove(&session);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// When to roll over: `margin` before the channel or its token expires, whichever comes
/// first. The margin is capped at a quarter of the remaining life but kept at least `floor`
/// (the old socket must outlive the new one's start by more than the gap look-back), then
/// stretched by `stagger` (in [0, 1)) so slots spread their rollovers. Returns the instant
/// and the margin.
fn rollover_at(
    expires: &str,
    token: &Token,
    margin: Duration,
    floor: Duration,
    stagger: f64,
) -> (Instant, Duration) {
    let now = Instant::now();
    let token_left = token.expires.saturating_duration_since(now);
    let channel_left =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|at| {
                let left = at - time::OffsetDateTime::now_utc();
                Duration::try_from(left).unwrap_or(Duration::ZERO)
            })
            .unwrap_or(token_left);
    let life = token_left.min(channel_left);
    let margin = margin.min(life / 4).max(floor.min(life / 2));
    let margin = margin
        .mul_f64(1.0 + stagger.clamp(0.0, 0.99))
        .min(life.mul_f64(0.9));
    (now + life - margin, margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollover_margin_is_capped_at_a_quarter_of_the_life() {
        let in_a_day = time::OffsetDateTime::now_utc() + time::Duration::hours(24);
        let expires = in_a_day
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let token = crate::rest::auth::test_token(Duration::from_secs(48 * 3600));
        let (at, margin) = rollover_at(
            &expires,
            &token,
            Duration::from_secs(300),
            Duration::ZERO,
            0.0,
        );
        assert_eq!(margin, Duration::from_secs(300));
        let left = at - Instant::now();
        assert!(
            left > Duration::from_secs(24 * 3600 - 310)
                && left < Duration::from_secs(24 * 3600 - 290),
            "{left:?}"
        );
        let short = crate::rest::auth::test_token(Duration::from_secs(8));
        let (at, margin) = rollover_at(
            &expires,
            &short,
            Duration::from_secs(300),
            Duration::ZERO,
            0.0,
        );
        assert!(margin <= Duration::from_secs(2));
        let left = at - Instant::now();
        assert!(
            left > Duration::from_millis(5900) && left <= Duration::from_secs(6),
            "{left:?}"
        );
        let (_, floored) = rollover_at(
            &expires,
            &short,
            Duration::from_secs(300),
            Duration::from_secs(3),
            0.0,
        );
        assert_eq!(
            floored,
            Duration::from_secs(3),
            "the old socket outlives the new one's start by the floor"
        );
        let (_, stretched) = rollover_at(
            &expires,
            &short,
            Duration::from_secs(300),
            Duration::ZERO,
            0.5,
        );
        let expected = margin.mul_f64(1.5);
        let diff = stretched.abs_diff(expected);
        assert!(
            diff < Duration::from_millis(5),
            "a staggered slot rolls over earlier: {stretched:?}"
        );
    }
}
