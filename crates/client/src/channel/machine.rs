//! One slot's channel life as a plain state machine (sans-io): the task feeds it socket
//! reports, REST results and the clock, and carries out the [`Action`]s it returns. It
//! never waits on anything, so a REST outage cannot delay its handling of a socket.
//!
//! - Start: create a channel, subscribe our topics, connect.
//! - A socket drops on a channel that should still be alive: dial its `connectUri` at
//!   once (the socket needs no token) and restore the subscriptions beside it. `HEAD` and
//!   a new channel only when the upgrade is refused or the channel is known gone.
//! - `socket_closing`: a rollover to a fresh channel at once, while the warned socket still
//!   receives; a second socket on the same channel only if no fresh one is receiving
//!   half-way through the grace (REST down, no channel to spare).
//! - Channel or token near expiry: a fresh channel is created, subscribed and receiving
//!   before the old socket is let go (it keeps receiving for the overlap).
//! - Coverage follows each socket's own clock: from its first frame (a look-back later
//!   when it takes a channel over from an earlier socket) to a look-back before its last.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::channel::rollover::{MAX_LIFE, rollover_at};
use crate::config::Timings;
use crate::error::ClientError;
use crate::rest::api::{ApiError, Rejected, Subscribed};
use crate::rest::backoff::Backoff;
use crate::socket::session::{Ended, Report};
use crate::stream::Coverage;
use crate::stream::event::{StateChange, StateKind};
use crate::telemetry::notable;
use crate::telemetry::stats::{Cause, Stats};

/// How close in time a replacement's upgrade and the old socket's close must be for the
/// close to count as caused by the replacement (the service answers the upgrade, then
/// drops the old socket; the two reports can reach the slot in either order).
pub const KICK_WINDOW: Duration = Duration::from_millis(250);

/// What the machine needs to know about its place in the client.
#[derive(Debug, Clone)]
pub struct SlotConfig {
    /// Lifecycle durations.
    pub timings: Timings,
    /// Shard index.
    pub shard: usize,
    /// Slot index within the shard.
    pub slot: usize,
    /// Wait this long before the first channel (staggers redundant slots).
    pub start_delay: Duration,
    /// This slot's share of the rollover spread, in [0, 1).
    pub stagger: f64,
    /// The OAuth client id, for messages.
    pub client_id: String,
}

/// What the task must do.
#[derive(Debug)]
pub enum Action {
    /// Open socket `session` on `uri`.
    Connect {
        /// Session number.
        session: u64,
        /// The channel.
        channel: Arc<str>,
        /// Its `connectUri`.
        uri: Arc<str>,
    },
    /// Close socket `session` with 1000 (it keeps delivering until the close completes).
    Retire {
        /// Session number.
        session: u64,
        /// The close reason.
        reason: &'static str,
    },
    /// Start a REST call; its result comes back through [`Machine::on_rest`] with `op`.
    Rest {
        /// The call's number.
        op: u64,
        /// What to call.
        call: RestCall,
    },
    /// Tell the stream.
    Coverage(Coverage),
    /// Tell the stream.
    State(StateChange),
    /// The OAuth client's channel budget changed.
    Budget(BudgetNote),
    /// Topics the service refused, each reported once.
    Rejected(Vec<Rejected>),
    /// Stop: retrying cannot help.
    Fatal(ClientError),
}

/// A REST call the machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestCall {
    /// `HEAD` the channel.
    Check {
        /// The channel.
        channel: Arc<str>,
    },
    /// A fresh token that lasts at least `token_life`, then `POST` a channel.
    Create {
        /// How long the new channel's token must last.
        token_life: Duration,
        /// When it is needed by (now, for a slot that is down): the channel budget serves
        /// the most urgent first.
        needed_by: Instant,
    },
    /// `PUT` these subscriptions (`DELETE` them when empty).
    Subscribe {
        /// The channel.
        channel: Arc<str>,
        /// The entries.
        topics: Vec<String>,
    },
}

/// A channel the service created.
#[derive(Debug, Clone)]
pub struct NewChannel {
    /// Its id.
    pub id: Arc<str>,
    /// Its `connectUri`.
    pub uri: Arc<str>,
    /// How long it lives from now, by its `expires` (None when unreadable).
    pub channel_left: Option<Duration>,
    /// How long the token it belongs to lives from now.
    pub token_left: Duration,
}

/// Why no channel was created.
#[derive(Debug)]
pub enum CreateFailed {
    /// Creating one now would evict a live channel of ours; try again at `retry_at`.
    Budget {
        /// When something may have been released.
        retry_at: Instant,
    },
    /// The REST calls failed.
    Rest(ClientError),
}

/// A REST call's result.
#[derive(Debug)]
pub enum RestDone {
    /// `HEAD`: whether the channel exists.
    Checked(Result<bool, ApiError>),
    /// `POST` channel.
    Created(Result<NewChannel, CreateFailed>),
    /// `PUT` subscriptions.
    Subscribed(Result<Subscribed, ClientError>),
}

/// A change to what the service counts against the OAuth client's 20 channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BudgetNote {
    /// No longer used, but the service counts it until `until` (it expires then).
    Retired {
        /// The channel.
        channel: Arc<str>,
        /// Its expiry.
        until: Instant,
    },
    /// Gone from the service (evicted, expired, refused): it counts no more.
    Gone {
        /// The channel.
        channel: Arc<str>,
    },
}

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The socket of the channel in use.
    Current,
    /// A second socket on the same channel after `socket_closing`.
    Replacement,
    /// The socket on the next channel of a rollover.
    Rollover,
    /// A replaced socket still receiving until this instant (events in flight).
    Overlapping(Instant),
    /// Being closed.
    Retiring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChanState {
    /// Believed alive.
    Usable,
    /// Its upgrade was refused: `HEAD` it before trusting it again.
    Suspect,
    /// Known gone.
    Gone,
}

#[derive(Debug, Clone)]
struct Chan {
    id: Arc<str>,
    uri: Arc<str>,
    /// Its life as the service gave it; re-subscribing renews it.
    ttl: Duration,
    expires: Instant,
    /// Its token's expiry (channels die with their token).
    token_expires: Instant,
    rollover_at: Instant,
    /// The margin in use (its replacement's token must outlive twice it).
    margin: Duration,
    state: ChanState,
    /// Our topic list is on it.
    subscribed: bool,
    /// The topics changed while a subscribe was in flight: subscribe again after it.
    dirty: bool,
    /// A failed refresh of its subscriptions is retried then.
    refresh_at: Option<Instant>,
    /// A socket was opened on it (a later one restores the subscriptions beside it).
    used: bool,
    /// The plan's entries the service last confirmed on it.
    topics: Option<Arc<[String]>>,
}

#[derive(Debug, Clone)]
struct Sock {
    chan: Arc<str>,
    role: Role,
    opened: Instant,
    connected_at: Option<Instant>,
    /// Its coverage is open in the stream.
    covering: bool,
    /// A replacement on its own channel began receiving then (the hand-over is not
    /// trusted: this socket's coverage gets the look-back like any other's).
    handed_over: Option<SystemTime>,
    /// Another socket was dialled on this channel before: this one takes its delivery
    /// over from a socket the service may still count as attached.
    takes_over: bool,
    /// Retired at the end of a full rollover overlap (at least twice the look-back after
    /// its successor began receiving).
    overlapped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The channel in use (or none yet).
    Recover,
    /// The next channel of a rollover.
    Rollover,
}

#[derive(Debug, Clone)]
enum Op {
    Check(Arc<str>),
    Create(Purpose),
    /// `then`: what the subscribe is for (None: a refresh).
    Subscribe {
        chan: Arc<str>,
        then: Option<Purpose>,
        /// The plan's entries it puts on the channel.
        topics: Arc<[String]>,
    },
}

/// The current socket was closed by the server while its same-channel replacement was
/// still connecting, sooner than the service closes for maintenance. If the replacement's
/// upgrade completed within [`KICK_WINDOW`] of that close, the replacement's attach caused
/// it: the old socket's coverage ends a look-back before its last frame and the new one's
/// starts a look-back after its first (the hand-over is not trusted). Otherwise it was a
/// real outage.
#[derive(Debug, Clone)]
struct Deferred {
    session: u64,
    /// The channel both sockets are on.
    chan: Arc<str>,
    last_frame: Option<SystemTime>,
    reason: String,
    ended_at: Instant,
}

/// One slot's channel life.
pub struct Machine {
    cfg: SlotConfig,
    stats: Arc<Stats>,
    session_ids: Arc<AtomicU64>,
    topics: Arc<[String]>,
    /// The entries the shard's coverage names: those confirmed on the channel in use
    /// (topics being added count once the service has them, not before).
    covered_topics: Arc<[String]>,
    /// Since when the slot has needed a channel to recover (its place in the budget's
    /// queue, kept while it waits).
    down_since: Option<Instant>,
    /// Combined entries the service rejected as a whole; sent as their parts.
    split: HashSet<String>,
    rejected_reported: HashSet<String>,
    chan: Option<Chan>,
    /// A rollover's channel until it is promoted.
    next: Option<Chan>,
    /// Channels let go while a socket of ours is still on them (a rollover's overlap): the
    /// budget hears of them once that socket has closed, since the service does not
    /// evict a connected channel before an unconnected one.
    leaving: Vec<Chan>,
    sockets: BTreeMap<u64, Sock>,
    ops: HashMap<u64, Op>,
    next_op: u64,
    recover_at: Option<Instant>,
    deferred: Option<Deferred>,
    /// A `socket_closing` being answered by a rollover: the socket it warned, and when to
    /// fall back to a second socket on the same channel if no fresh one is receiving.
    closing: Option<(u64, Instant)>,
    /// Channels a socket of this slot was dialled on: another socket on one of them
    /// takes the channel over from a socket the service may still count as attached
    /// (an upgrade counts, even if the socket died before its first frame).
    dialled: HashSet<Arc<str>>,
    backoff: Backoff,
    ever_live: bool,
    /// Why the slot's last live socket was lost (counted when it is live again).
    loss: Option<Cause>,
    /// Whether this slot counts in the live-slot gauge.
    covering: bool,
    stopping: bool,
    out: Vec<Action>,
}

impl Machine {
    /// A slot of `topics` that starts connecting `cfg.start_delay` after `now`.
    pub fn new(
        cfg: SlotConfig,
        stats: Arc<Stats>,
        session_ids: Arc<AtomicU64>,
        topics: Arc<[String]>,
        now: Instant,
    ) -> Self {
        let backoff = Backoff::new(cfg.timings.backoff_base, cfg.timings.backoff_max);
        let mut m = Machine {
            recover_at: Some(now + cfg.start_delay),
            cfg,
            stats,
            session_ids,
            covered_topics: topics.clone(),
            down_since: None,
            topics,
            split: HashSet::new(),
            rejected_reported: HashSet::new(),
            chan: None,
            next: None,
            leaving: Vec::new(),
            sockets: BTreeMap::new(),
            ops: HashMap::new(),
            next_op: 1,
            deferred: None,
            closing: None,
            dialled: HashSet::new(),
            backoff,
            ever_live: false,
            loss: None,
            covering: false,
            stopping: false,
            out: Vec::new(),
        };
        let topics = crate::supervisor::plan::single_topics(&m.topics).into();
        m.coverage(Coverage::Topics(topics));
        m
    }

    /// The actions produced so far, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// Whether some socket of this slot covers its shard now.
    pub fn is_covering(&self) -> bool {
        self.covering
    }

    /// The role of socket `session`, if it is still open.
    #[cfg(test)]
    pub fn role(&self, session: u64) -> Option<Role> {
        self.sockets.get(&session).map(|s| s.role)
    }

    /// Whether the coverage of ended socket `session` waits to be settled (see
    /// [`Deferred`]): it must still be ended if the slot dies meanwhile.
    pub fn defers(&self, session: u64) -> bool {
        self.deferred.as_ref().is_some_and(|d| d.session == session)
    }

    /// The next instant at which [`Machine::on_tick`] has something to do.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.stopping {
            return None;
        }
        let rollover = self.rollover_due_at();
        let overlaps = self.sockets.values().filter_map(|s| match s.role {
            Role::Overlapping(until) => Some(until),
            _ => None,
        });
        let deferred = self
            .deferred
            .as_ref()
            .map(|d| d.ended_at + self.cfg.timings.closing_grace);
        let refresh = [&self.chan, &self.next]
            .into_iter()
            .flatten()
            .filter_map(|c| c.refresh_at);
        let closing = self.closing.map(|(_, at)| at);
        [self.recover_at, rollover, deferred, closing]
            .into_iter()
            .flatten()
            .chain(overlaps)
            .chain(refresh)
            .min()
    }

    /// Time passed.
    pub fn on_tick(&mut self, now: Instant) {
        if self.stopping {
            return;
        }
        if self.recover_at.is_some_and(|at| at <= now) {
            self.recover_at = None;
            self.recover(now);
        }
        if self.rollover_due_at().is_some_and(|at| at <= now) {
            self.rollover(now);
        }
        if self.closing.is_some_and(|(_, at)| at <= now) {
            self.closing_fallback(now);
        }
        let due: Vec<u64> = self
            .sockets
            .iter()
            .filter(|(_, s)| matches!(s.role, Role::Overlapping(until) if until <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(s) = self.sockets.get_mut(&id) {
                s.overlapped = true;
            }
            self.retire(id, "rollover");
        }
        if self
            .deferred
            .as_ref()
            .is_some_and(|d| d.ended_at + self.cfg.timings.closing_grace <= now)
        {
            // The replacement never went live within the grace: a real hole.
            self.release_deferred();
        }
        let refresh: Vec<Arc<str>> = [&mut self.chan, &mut self.next]
            .into_iter()
            .flatten()
            .filter(|c| c.refresh_at.is_some_and(|at| at <= now))
            .map(|c| {
                c.refresh_at = None;
                c.id.clone()
            })
            .collect();
        for id in refresh {
            self.subscribe(id, None);
        }
        self.ensure_progress(now);
        self.sync_covering();
    }

    /// What a socket saw.
    pub fn on_report(&mut self, report: Report, now: Instant) {
        match report {
            Report::Connected { session, at } => self.on_connected(session, at),
            Report::Live { session, at } => self.on_live(session, at, now),
            Report::SocketClosing { session } => self.on_closing(session, now),
            Report::ChannelGone {
                session,
                why,
                cause,
                at,
            } => self.on_gone(session, why, cause, at, now),
            Report::Ended {
                session,
                last_frame,
                why,
                at,
            } => self.on_ended(session, last_frame, why, at, now),
        }
        if !self.stopping {
            self.ensure_progress(now);
        }
        self.sync_covering();
    }

    /// A REST call finished.
    pub fn on_rest(&mut self, op: u64, done: RestDone, now: Instant) {
        let Some(kind) = self.ops.remove(&op) else {
            return;
        };
        if self.stopping {
            return;
        }
        match (kind, done) {
            (Op::Check(chan), RestDone::Checked(result)) => self.on_checked(chan, result, now),
            (Op::Create(purpose), RestDone::Created(result)) => {
                self.on_created(purpose, result, now)
            }
            (Op::Subscribe { chan, then, topics }, RestDone::Subscribed(result)) => {
                self.on_subscribed(chan, then, topics, result, now)
            }
            (kind, done) => {
                tracing::error!(?kind, ?done, "REST result of another call; ignored");
            }
        }
        self.ensure_progress(now);
        self.sync_covering();
    }

    /// Replaces the slot's topics.
    pub fn set_topics(&mut self, topics: Arc<[String]>) {
        self.topics = topics;
        if self.chan.is_none() {
            // Nothing subscribed yet: the first channel gets the new list.
            self.confirm(self.topics.clone());
        }
        let ids: Vec<Arc<str>> = [&self.chan, &self.next]
            .into_iter()
            .flatten()
            .filter(|c| c.state != ChanState::Gone)
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            if self.subscribe_in_flight(&id) {
                if let Some(c) = self.chan_mut(&id) {
                    c.dirty = true;
                }
            } else {
                self.subscribe(id, None);
            }
        }
    }

    /// Closes every socket; REST calls in flight are abandoned. Coverage is left as it
    /// is: the client is stopping, not losing anything (the slot's task has let its
    /// sockets read for [`Machine::drain_time`] first, so what was published before the
    /// stop has arrived).
    pub fn shutdown(&mut self) {
        self.stopping = true;
        self.recover_at = None;
        self.ops.clear();
        let ids: Vec<u64> = self.sockets.keys().copied().collect();
        for id in ids {
            self.out.push(Action::Retire {
                session: id,
                reason: "shutdown",
            });
        }
        if self.covering {
            self.covering = false;
            self.stats.slots_live.fetch_sub(1, Ordering::Relaxed);
            self.stats.slot_covering(self.cfg.shard, false);
        }
    }

    /// How long the sockets keep reading once told to stop: copies of events published
    /// just before the stop may still be on their way (a copy can be seconds late), and
    /// the look-back bounds how late. Nothing to wait for while no socket covers.
    pub fn drain_time(&self) -> Duration {
        match self.covering {
            true => self.lookback(),
            false => Duration::ZERO,
        }
    }

    /// True once [`Machine::shutdown`] was called and every socket has ended.
    pub fn is_stopped(&self) -> bool {
        self.stopping && self.sockets.is_empty()
    }

    fn coverage(&mut self, change: Coverage) {
        self.out.push(Action::Coverage(change));
    }

    fn state(&mut self, kind: StateKind, channel: Option<Arc<str>>, detail: String) {
        self.out.push(Action::State(StateChange {
            kind,
            channel,
            detail,
        }));
    }

    fn fatal(&mut self, e: ClientError) {
        tracing::error!(shard = self.cfg.shard, slot = self.cfg.slot, error = %e, "slot stopped");
        self.out.push(Action::Fatal(e));
    }

    fn chan_mut(&mut self, id: &str) -> Option<&mut Chan> {
        [&mut self.chan, &mut self.next]
            .into_iter()
            .flatten()
            .chain(self.leaving.iter_mut())
            .find(|c| &*c.id == id)
    }

    fn has_role(&self, role: Role) -> bool {
        self.sockets.values().any(|s| s.role == role)
    }

    fn create_in_flight(&self, purpose: Purpose) -> bool {
        self.ops
            .values()
            .any(|o| matches!(o, Op::Create(p) if *p == purpose))
    }

    fn subscribe_in_flight(&self, chan: &str) -> bool {
        self.ops
            .values()
            .any(|o| matches!(o, Op::Subscribe { chan: c, .. } if &**c == chan))
    }

    fn check_in_flight(&self, chan: &str) -> bool {
        self.ops
            .values()
            .any(|o| matches!(o, Op::Check(c) if &**c == chan))
    }

    fn rest(&mut self, kind: Op, call: RestCall) {
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(op, kind);
        self.out.push(Action::Rest { op, call });
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

    fn subscribe(&mut self, chan: Arc<str>, then: Option<Purpose>) {
        let topics = self.effective_topics();
        self.rest(
            Op::Subscribe {
                chan: chan.clone(),
                then,
                topics: self.topics.clone(),
            },
            RestCall::Subscribe {
                channel: chan,
                topics,
            },
        );
    }

    fn connect(&mut self, chan: &Chan, role: Role, now: Instant) -> u64 {
        let session = self.session_ids.fetch_add(1, Ordering::Relaxed);
        let current: Vec<Arc<str>> = [&self.chan, &self.next]
            .into_iter()
            .flatten()
            .map(|c| c.id.clone())
            .collect();
        self.dialled
            .retain(|c| current.contains(c) || *c == chan.id);
        let takes_over = !self.dialled.insert(chan.id.clone());
        self.sockets.insert(
            session,
            Sock {
                chan: chan.id.clone(),
                role,
                opened: now,
                connected_at: None,
                covering: false,
                handed_over: None,
                takes_over,
                overlapped: false,
            },
        );
        self.out.push(Action::Connect {
            session,
            channel: chan.id.clone(),
            uri: chan.uri.clone(),
        });
        session
    }

    /// Closes socket `session` politely; its coverage ends when it has (at its last
    /// frame).
    fn retire(&mut self, session: u64, reason: &'static str) {
        if let Some(s) = self.sockets.get_mut(&session)
            && s.role != Role::Retiring
        {
            s.role = Role::Retiring;
            self.out.push(Action::Retire { session, reason });
        }
    }

    fn retry_later(&mut self, now: Instant, what: &str, e: &dyn std::fmt::Display) {
        let wait = self.backoff.next().unwrap_or_default();
        tracing::warn!(shard = self.cfg.shard, slot = self.cfg.slot, error = %e, retry_in_ms = wait.as_millis() as u64, "{what}; retrying");
        self.recover_at = Some(self.recover_at.map_or(now + wait, |at| at.min(now + wait)));
    }

    /// Stops using `old`: the service counts it until it expires, unless it is gone.
    fn let_go(&mut self, old: Chan, now: Instant) {
        if self.sockets.values().any(|s| s.chan == old.id) {
            self.leaving.push(old);
            return;
        }
        let until = old.expires.min(old.token_expires);
        let note = if old.state == ChanState::Gone {
            return;
        } else if until <= now {
            BudgetNote::Gone { channel: old.id }
        } else {
            BudgetNote::Retired {
                channel: old.id,
                until,
            }
        };
        self.out.push(Action::Budget(note));
    }

    /// The socket (or the notice) says channel `id` is gone.
    fn channel_gone(&mut self, id: &Arc<str>) {
        if let Some(c) = self.chan_mut(id)
            && c.state != ChanState::Gone
        {
            c.state = ChanState::Gone;
            self.out.push(Action::Budget(BudgetNote::Gone {
                channel: id.clone(),
            }));
        }
    }

    // ---- recovery -------------------------------------------------------------------

    /// Gets a socket receiving again: the channel in use if it should be alive, else a
    /// rollover's channel, else a new one.
    fn recover(&mut self, now: Instant) {
        if self.stopping
            || self.has_role(Role::Current)
            || self.has_role(Role::Replacement)
            || self.has_role(Role::Rollover)
        {
            return;
        }
        if let Some(chan) = self.chan.clone() {
            let alive = chan.expires > now && chan.token_expires > now;
            match chan.state {
                ChanState::Usable if alive => {
                    if !chan.subscribed {
                        if !self.subscribe_in_flight(&chan.id) {
                            self.subscribe(chan.id.clone(), Some(Purpose::Recover));
                        }
                        return;
                    }
                    if let Some(topics) = chan.topics.clone() {
                        self.confirm(topics);
                    }
                    self.connect(&chan, Role::Current, now);
                    // After a drop, restore from our own state beside the socket, which
                    // needs no REST to attach; this also renews the channel's life.
                    if chan.used && !self.subscribe_in_flight(&chan.id) {
                        self.subscribe(chan.id.clone(), None);
                    }
                    if let Some(c) = self.chan.as_mut() {
                        c.used = true;
                    }
                    return;
                }
                ChanState::Suspect if alive => {
                    if !self.check_in_flight(&chan.id) {
                        self.rest(
                            Op::Check(chan.id.clone()),
                            RestCall::Check {
                                channel: chan.id.clone(),
                            },
                        );
                    }
                    return;
                }
                _ => {
                    self.channel_gone(&chan.id);
                    self.chan = None;
                }
            }
        }
        if let Some(next) = self.next.take() {
            if next.state == ChanState::Usable && next.expires > now {
                // The rollover's channel takes over: nothing is left to overlap with.
                self.chan = Some(next);
                return self.recover(now);
            }
            self.let_go(next, now);
        }
        if self.create_in_flight(Purpose::Recover) || self.create_in_flight(Purpose::Rollover) {
            return;
        }
        let needed_by = *self.down_since.get_or_insert(now);
        self.create(Purpose::Recover, Duration::ZERO, needed_by);
    }

    fn create(&mut self, purpose: Purpose, token_life: Duration, needed_by: Instant) {
        self.rest(
            Op::Create(purpose),
            RestCall::Create {
                token_life,
                needed_by,
            },
        );
    }

    fn on_checked(&mut self, chan: Arc<str>, result: Result<bool, ApiError>, now: Instant) {
        match result {
            Ok(true) => {
                if let Some(c) = self.chan_mut(&chan) {
                    c.state = ChanState::Usable;
                }
                self.retry_later(now, "the channel exists but refused the socket", &chan);
            }
            Ok(false) => {
                self.channel_gone(&chan);
                self.recover(now);
            }
            Err(e) if !e.is_fatal() => self.retry_later(now, "could not check the channel", &e),
            Err(e) => self.fatal(e.into()),
        }
    }

    fn on_created(
        &mut self,
        purpose: Purpose,
        result: Result<NewChannel, CreateFailed>,
        now: Instant,
    ) {
        let new = match result {
            Ok(new) => new,
            Err(CreateFailed::Budget { retry_at }) => {
                tracing::info!(
                    shard = self.cfg.shard,
                    slot = self.cfg.slot,
                    "the OAuth client's channel budget is full of live channels; waiting"
                );
                match purpose {
                    Purpose::Recover => self.recover_at = Some(retry_at),
                    Purpose::Rollover => {
                        if let Some(c) = self.chan.as_mut() {
                            c.rollover_at = retry_at;
                        }
                    }
                }
                return;
            }
            Err(CreateFailed::Rest(e)) if e.is_retryable() => {
                match purpose {
                    Purpose::Recover => self.retry_later(now, "could not create a channel", &e),
                    Purpose::Rollover => self.retry_rollover(now, &e),
                }
                return;
            }
            Err(CreateFailed::Rest(e)) => return self.fatal(e),
        };
        let token_left = new.token_left.min(MAX_LIFE);
        let ttl = new.channel_left.unwrap_or(token_left).min(MAX_LIFE);
        let life = ttl.min(token_left);
        let (rollover_at, margin) = rollover_at(
            now,
            life,
            self.cfg.timings.rollover_margin,
            self.lookback() * 2,
            self.cfg.stagger,
        );
        let chan = Chan {
            id: new.id.clone(),
            uri: new.uri,
            ttl,
            expires: now + ttl,
            token_expires: now + token_left,
            rollover_at,
            margin,
            state: ChanState::Usable,
            subscribed: false,
            dirty: false,
            refresh_at: None,
            used: false,
            topics: None,
        };
        tracing::info!(channel = %chan.id, shard = self.cfg.shard, slot = self.cfg.slot, "channel created");
        let old = match purpose {
            Purpose::Recover => self.chan.replace(chan),
            Purpose::Rollover => self.next.replace(chan),
        };
        if let Some(old) = old {
            self.let_go(old, now);
        }
        self.subscribe(new.id, Some(purpose));
    }

    /// The shard's coverage names `topics` from now on.
    fn confirm(&mut self, topics: Arc<[String]>) {
        if topics != self.covered_topics {
            self.covered_topics = topics;
            let singles = crate::supervisor::plan::single_topics(&self.covered_topics).into();
            self.coverage(Coverage::Topics(singles));
        }
    }

    fn on_subscribed(
        &mut self,
        chan: Arc<str>,
        then: Option<Purpose>,
        topics: Arc<[String]>,
        result: Result<Subscribed, ClientError>,
        now: Instant,
    ) {
        let result = match result {
            Ok(result) => result,
            Err(ClientError::Api(ApiError::NotFound { .. })) => {
                self.channel_gone(&chan);
                if self.next.as_ref().is_some_and(|n| n.id == chan) {
                    self.next = None;
                    self.retry_rollover(now, &"the new channel is gone");
                } else {
                    self.recover(now);
                }
                return;
            }
            Err(e) if e.is_retryable() => {
                match then {
                    Some(Purpose::Recover) => self.retry_later(now, "could not subscribe", &e),
                    Some(Purpose::Rollover) => self.retry_rollover(now, &e),
                    None => {
                        let wait = self.backoff.next().unwrap_or_default();
                        tracing::warn!(error = %e, "could not update subscriptions yet; retrying");
                        if let Some(c) = self.chan_mut(&chan) {
                            c.refresh_at = Some(now + wait);
                        }
                    }
                }
                return;
            }
            Err(e) => return self.fatal(e),
        };
        // A combined topic is rejected whole when one part is forbidden; send those parts
        // one by one so the permitted ones still stream.
        let combined: Vec<String> = result
            .rejected
            .iter()
            .filter(|r| r.topic.contains('?') && !self.split.contains(&r.topic))
            .map(|r| r.topic.clone())
            .collect();
        if !combined.is_empty() {
            self.split.extend(combined);
            return self.subscribe(chan, then);
        }
        self.report_rejected(&chan, &result);
        if result.permitted.is_empty() && !self.topics.is_empty() {
            let detail = result
                .rejected
                .iter()
                .map(|r| format!("{}: {}", r.topic, r.missing_permissions.join(", ")))
                .collect::<Vec<_>>()
                .join("; ");
            return self.fatal(ClientError::Permission(format!(
                "the OAuth client {:?} may not subscribe any of the {} topics asked for ({detail}); add the missing permissions to its role",
                self.cfg.client_id,
                self.topics.len(),
            )));
        }
        let Some(c) = self.chan_mut(&chan) else {
            return;
        };
        c.subscribed = true;
        c.expires = now + c.ttl;
        c.topics = Some(topics.clone());
        if self.chan.as_ref().is_some_and(|c| c.id == chan) {
            self.confirm(topics);
        }
        let Some(c) = self.chan_mut(&chan) else {
            return;
        };
        if std::mem::take(&mut c.dirty) {
            self.subscribe(chan.clone(), None);
        }
        match then {
            Some(Purpose::Recover) => self.recover(now),
            Some(Purpose::Rollover) => self.connect_next(now),
            None => {}
        }
    }

    fn report_rejected(&mut self, chan: &Arc<str>, result: &Subscribed) {
        let fresh: Vec<_> = result
            .rejected
            .iter()
            .filter(|r| !self.rejected_reported.contains(&r.topic))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        let detail: Vec<String> = fresh
            .iter()
            .map(|r| format!("{} (missing {})", r.topic, r.missing_permissions.join(", ")))
            .collect();
        tracing::warn!(rejected = %detail.join("; "), "topics rejected by the service");
        self.state(StateKind::Rejected, Some(chan.clone()), detail.join("; "));
        self.rejected_reported
            .extend(fresh.iter().map(|r| r.topic.clone()));
        self.out.push(Action::Rejected(fresh));
    }

    // ---- rollover -------------------------------------------------------------------

    /// When the channel in use is due to be replaced (None while a rollover runs or no
    /// socket is up).
    fn rollover_due_at(&self) -> Option<Instant> {
        let chan = self.chan.as_ref()?;
        let busy = self.has_role(Role::Rollover)
            || self.create_in_flight(Purpose::Rollover)
            || self
                .next
                .as_ref()
                .is_some_and(|n| self.subscribe_in_flight(&n.id));
        let up = self.has_role(Role::Current);
        // A suspect channel is rolled over too: a fresh one is what it needs.
        (!busy && up && chan.state != ChanState::Gone).then_some(chan.rollover_at)
    }

    fn rollover(&mut self, now: Instant) {
        if self.next.as_ref().is_some_and(|n| n.subscribed) {
            return self.connect_next(now);
        }
        if let Some(next) = self.next.clone() {
            return self.subscribe(next.id, Some(Purpose::Rollover));
        }
        let (margin, needed_by) = self
            .chan
            .as_ref()
            .map_or((self.cfg.timings.rollover_margin, now), |c| {
                (c.margin, c.expires.min(c.token_expires))
            });
        self.create(Purpose::Rollover, margin * 2, needed_by);
    }

    fn connect_next(&mut self, now: Instant) {
        if self.has_role(Role::Rollover) {
            return;
        }
        if let Some(next) = self.next.clone() {
            if !self.has_role(Role::Current) && !self.has_role(Role::Replacement) {
                // Nothing to overlap with any more: the next channel is simply the one in use.
                self.next = None;
                if let Some(old) = self.chan.replace(next) {
                    self.let_go(old, now);
                }
                return self.recover(now);
            }
            self.connect(&next, Role::Rollover, now);
        }
    }

    fn retry_rollover(&mut self, now: Instant, e: &dyn std::fmt::Display) {
        let wait = self.backoff.next().unwrap_or_default();
        tracing::warn!(shard = self.cfg.shard, slot = self.cfg.slot, error = %e, retry_in_ms = wait.as_millis() as u64, "rollover failed; retrying");
        match self.chan.as_mut() {
            Some(c) => c.rollover_at = now + wait,
            // Nothing left to roll over from: the next channel is recovered into use.
            None => self.recover_at = Some(now + wait),
        }
    }

    /// The look-back now: the configured floor, widened by the stream from the measured
    /// arrival skew between sockets.
    fn lookback(&self) -> Duration {
        let measured = Duration::from_micros(Stats::get(&self.stats.lookback_micros));
        self.cfg.timings.gap_lookback.max(measured)
    }

    /// The rollover's socket is receiving: it becomes the current one; the old socket
    /// keeps receiving for the overlap, and the old channel counts until it expires.
    fn promote_rollover(&mut self, session: u64, now: Instant) {
        let Some(next) = self.next.take() else { return };
        // The old socket stays up beyond the look-back trimmed from its end, so the two
        // cover without a hole and its late copies arrive.
        let until = now
            + self
                .cfg
                .timings
                .overlap
                .max(self.lookback().saturating_mul(2));
        for s in self.sockets.values_mut() {
            if matches!(s.role, Role::Current | Role::Replacement) {
                s.role = Role::Overlapping(until);
            }
        }
        if let Some(s) = self.sockets.get_mut(&session) {
            s.role = Role::Current;
        }
        let old = self.chan.replace(next.clone());
        if let Some(topics) = next.topics.clone() {
            self.confirm(topics);
        }
        notable::rollover(&self.stats, self.cfg.shard, self.cfg.slot);
        let from = old.as_ref().map(|c| c.id.to_string()).unwrap_or_default();
        if let Some(old) = old {
            self.let_go(old, now);
        }
        self.state(
            StateKind::RolledOver,
            Some(next.id.clone()),
            format!("rolled over from {from}"),
        );
    }

    // ---- socket reports -------------------------------------------------------------

    fn on_connected(&mut self, session: u64, at: Instant) {
        let Some(s) = self.sockets.get_mut(&session) else {
            return;
        };
        s.connected_at = Some(at);
        if s.role == Role::Replacement
            && self
                .deferred
                .as_ref()
                .is_some_and(|d| at > d.ended_at + KICK_WINDOW)
        {
            // The old socket was gone well before the new one attached: a real hole.
            self.release_deferred();
        }
    }

    fn on_live(&mut self, session: u64, at: SystemTime, now: Instant) {
        let was_covering = self.covering_now();
        let Some(s) = self.sockets.get_mut(&session) else {
            return;
        };
        if s.role == Role::Retiring {
            return;
        }
        s.covering = true;
        let role = s.role;
        let takes_over = s.takes_over;
        let chan = s.chan.clone();
        let mut since = at;
        self.down_since = None;
        let same_channel = self.deferred.as_ref().is_some_and(|d| {
            d.chan == chan && matches!(role, Role::Replacement | Role::Overlapping(_))
        });
        if same_channel && let Some(d) = self.deferred.take() {
            // Handed over by the service, which may lose what was in flight to the old
            // socket and what it published just after (UNKNOWN): the old socket gets the
            // look-back, and the new one covers from a look-back after its first frame.
            self.coverage(Coverage::Ended {
                session: d.session,
                until: d.last_frame,
                lookback: true,
                reason: d.reason,
            });
        }
        // A socket on a channel that had one before (a redial, a replacement) takes its
        // delivery over from a socket the service may still count as attached, and that
        // may lose what was published just after (UNKNOWN): it covers from a look-back
        // after its first frame.
        if takes_over || role == Role::Replacement {
            since = at.checked_add(self.lookback()).unwrap_or(at);
        }
        self.coverage(Coverage::Live { session, since });
        match role {
            Role::Replacement => self.promote_replacement(session, at),
            Role::Rollover => self.promote_rollover(session, now),
            _ => {}
        }
        if self
            .sockets
            .get(&session)
            .is_some_and(|s| s.role == Role::Current)
        {
            self.backoff.reset();
        }
        if !was_covering {
            let cause = self.loss.take();
            if self.ever_live {
                notable::reconnected(
                    &self.stats,
                    cause.unwrap_or(Cause::Drop),
                    self.cfg.shard,
                    self.cfg.slot,
                );
            }
            self.ever_live = true;
            let chan = self.chan.as_ref().map(|c| c.id.clone());
            let all = crate::supervisor::plan::single_topics(&self.topics);
            let refused = all
                .iter()
                .filter(|t| self.rejected_reported.contains(*t))
                .count();
            let detail = match refused {
                0 => format!("receiving {} topics", all.len()),
                n => format!("receiving {} topics ({n} rejected)", all.len() - n),
            };
            self.state(StateKind::Live, chan, detail);
        }
    }

    /// The same-channel replacement is receiving: the service has moved delivery to it, so
    /// the old socket is closed as handed over.
    fn promote_replacement(&mut self, session: u64, at: SystemTime) {
        let old: Vec<u64> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.role == Role::Current)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            if let Some(s) = self.sockets.get_mut(&id) {
                s.handed_over = Some(at);
            }
            self.retire(id, "replaced");
        }
        if let Some(s) = self.sockets.get_mut(&session) {
            s.role = Role::Current;
        }
    }

    fn on_closing(&mut self, session: u64, now: Instant) {
        let current = self
            .sockets
            .get(&session)
            .is_some_and(|s| s.role == Role::Current);
        if !current || self.has_role(Role::Replacement) {
            return;
        }
        let Some(chan) = self.chan.clone() else {
            return;
        };
        if chan.state != ChanState::Usable {
            // A second socket on a doubtful channel is no hand-over: move to a fresh one.
            if let Some(c) = self.chan.as_mut() {
                c.rollover_at = c.rollover_at.min(now);
            }
            return;
        }
        // Make-before-break on a fresh channel: the warned socket keeps receiving through
        // the grace while a new channel is created and connected, so nothing rests on how
        // the service moves a channel's delivery from one socket to the next (UNKNOWN).
        // Only if that cannot be done in half the grace, a second socket on this channel.
        self.closing
            .get_or_insert((session, now + self.cfg.timings.closing_grace / 2));
        self.state(
            StateKind::SocketClosing,
            Some(chan.id.clone()),
            "maintenance announced; moving to a fresh channel".into(),
        );
        if self.rollover_due_at().is_some() {
            if let Some(c) = self.chan.as_mut() {
                c.rollover_at = now;
            }
            self.rollover(now);
        }
    }

    /// No fresh channel is receiving half-way through a `socket_closing` grace: a second
    /// socket on the same channel, whose hand-over is not trusted (see `on_live`).
    fn closing_fallback(&mut self, now: Instant) {
        let Some((session, _)) = self.closing.take() else {
            return;
        };
        let warned = self
            .sockets
            .get(&session)
            .is_some_and(|s| s.role == Role::Current);
        if !warned || self.has_role(Role::Replacement) {
            return;
        }
        if self.has_role(Role::Rollover) {
            // The fresh channel's socket is connecting: look again a quarter of the
            // grace later, in case it fails.
            self.closing = Some((session, now + self.cfg.timings.closing_grace / 4));
            return;
        }
        let Some(chan) = self.chan.clone().filter(|c| c.state == ChanState::Usable) else {
            return;
        };
        tracing::warn!(
            shard = self.cfg.shard,
            slot = self.cfg.slot,
            channel = %chan.id,
            "no fresh channel in time for the maintenance close; opening a new socket on the same channel"
        );
        self.connect(&chan, Role::Replacement, now);
    }

    fn on_gone(&mut self, session: u64, why: String, cause: Cause, at: SystemTime, now: Instant) {
        let Some(s) = self.sockets.get(&session).cloned() else {
            return;
        };
        if s.covering {
            // Nothing more arrives on this socket: its coverage ends with the notice.
            self.coverage(Coverage::Ended {
                session,
                until: Some(at),
                lookback: true,
                reason: why.clone(),
            });
            if let Some(s) = self.sockets.get_mut(&session) {
                s.covering = false;
            }
        }
        self.retire(session, "channel lost");
        let on_next = self.next.as_ref().is_some_and(|n| n.id == s.chan);
        self.channel_gone(&s.chan);
        if on_next {
            self.next = None;
            return self.retry_rollover(now, &why);
        }
        if matches!(s.role, Role::Current | Role::Replacement) {
            self.loss.get_or_insert(cause);
            notable::channel_lost(Some(&s.chan), cause, &why);
            self.state(StateKind::ChannelLost, Some(s.chan.clone()), why.clone());
            self.note_down(&why);
            self.recover(now);
        }
    }

    fn on_ended(
        &mut self,
        session: u64,
        last_frame: Option<SystemTime>,
        why: Ended,
        at: Instant,
        now: Instant,
    ) {
        let Some(s) = self.sockets.remove(&session) else {
            return;
        };
        if !self.sockets.values().any(|o| o.chan == s.chan)
            && let Some(i) = self.leaving.iter().position(|c| c.id == s.chan)
        {
            let old = self.leaving.swap_remove(i);
            self.let_go(old, now);
        }
        // A refused upgrade makes the channel suspect, unless another socket of ours is
        // receiving on it right now.
        let proven = self
            .sockets
            .values()
            .any(|o| o.chan == s.chan && o.covering);
        if let Ended::ConnectFailed {
            status: Some(401 | 403 | 404 | 410),
            ..
        } = why
            && !proven
            && let Some(c) = self.chan_mut(&s.chan)
            && c.state == ChanState::Usable
        {
            c.state = ChanState::Suspect;
        }
        // A socket closed because holdline moved on (a rollover, a hand-over to its
        // replacement) is the plan working; anything else is worth a warning.
        let planned = matches!(why, Ended::Retired { .. })
            || matches!(s.role, Role::Retiring | Role::Overlapping(_))
            || s.handed_over.is_some()
            || (s.role == Role::Current && self.has_role(Role::Replacement));
        if planned {
            notable::socket_replaced(&self.stats, &s.chan, &why);
        } else {
            notable::socket_ended(&self.stats, &s.chan, &why);
        }
        if self.stopping {
            return;
        }
        if s.covering {
            self.end_coverage(session, &s, last_frame, &why, at);
        }
        match s.role {
            // A replacement that never went live settles a deferred close as a real end.
            Role::Replacement => self.release_deferred(),
            Role::Rollover => {
                if let Some(next) = self
                    .next
                    .as_ref()
                    .filter(|n| n.state == ChanState::Suspect)
                    .map(|n| n.id.clone())
                {
                    self.channel_gone(&next);
                    self.next = None;
                }
                self.retry_rollover(now, &why);
            }
            _ => {}
        }
        let carried = matches!(s.role, Role::Current | Role::Replacement | Role::Rollover);
        let carrying = self.has_role(Role::Current)
            || self.has_role(Role::Replacement)
            || self.has_role(Role::Rollover);
        if carried && !carrying {
            // At once after losing a receiving socket; after a backoff when it never was.
            let wait = if s.covering {
                Duration::ZERO
            } else {
                self.backoff.next().unwrap_or_default()
            };
            let at = now + wait;
            self.recover_at = Some(self.recover_at.map_or(at, |r| r.min(at)));
        }
    }

    /// A covering socket ended: its coverage ends a look-back before its last frame. A
    /// server close right after our replacement attached is settled
    /// when the replacement connects (see [`Deferred`]).
    fn end_coverage(
        &mut self,
        session: u64,
        s: &Sock,
        last_frame: Option<SystemTime>,
        why: &Ended,
        at: Instant,
    ) {
        let grace = self.cfg.timings.closing_grace;
        let kick_candidate = s.role == Role::Current
            && matches!(why, Ended::Closed { .. })
            && self.sockets.values().any(|r| {
                r.role == Role::Replacement
                    && at.saturating_duration_since(r.opened) < grace
                    && r.connected_at.is_none_or(|c| c <= at + KICK_WINDOW)
            });
        if kick_candidate {
            // At most one close waits to be settled; an older one is settled as it stands.
            self.release_deferred();
            self.deferred = Some(Deferred {
                session,
                chan: s.chan.clone(),
                last_frame,
                reason: why.to_string(),
                ended_at: at,
            });
            return;
        }
        // A socket's coverage ends a look-back before its last frame: copies of events
        // published just before may still have been on their way to it (the service's
        // lateness is not known, and a copy can be seconds late), and it may be the only
        // socket that had those published before the next one connected. The exception is
        // a socket holdline closed in order after a full rollover overlap: everything only
        // it had was published before its successor began receiving, at least twice the
        // look-back before the close, so it has arrived; its coverage runs to its last
        // frame, and a quiet shard's last frame may be long before the close.
        let exact = s.overlapped && matches!(why, Ended::Retired { clean: true });
        self.coverage(Coverage::Ended {
            session,
            until: last_frame,
            lookback: !exact,
            reason: why.to_string(),
        });
        if matches!(s.role, Role::Current | Role::Replacement)
            && !matches!(why, Ended::Retired { .. })
        {
            if !self.covering_now() {
                self.loss.get_or_insert(why.cause());
            }
            self.note_down(&why.to_string());
        }
    }

    /// Reports a deferred close as what it was after all: the socket in use closed by the
    /// server, with no hand-over.
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

    fn covering_now(&self) -> bool {
        self.sockets.values().any(|s| s.covering) || self.deferred.is_some()
    }

    /// Makes sure a slot with no socket on the way has something that will bring one:
    /// a REST call that leads to a socket, or a wake-up to try again.
    fn ensure_progress(&mut self, now: Instant) {
        let carrying = self.has_role(Role::Current)
            || self.has_role(Role::Replacement)
            || self.has_role(Role::Rollover);
        let leading = self.ops.values().any(|o| match o {
            Op::Check(_) | Op::Create(_) => true,
            Op::Subscribe { then, .. } => then.is_some(),
        });
        if !carrying && !leading && self.recover_at.is_none() {
            let wait = self.backoff.next().unwrap_or_default();
            self.recover_at = Some(now + wait);
        }
    }

    /// Keeps the live-slot gauge in line with whether this slot covers its shard now.
    fn sync_covering(&mut self) {
        if self.stopping {
            return;
        }
        let covering = self.covering_now();
        if covering != self.covering {
            self.covering = covering;
            self.stats
                .slots_live
                .fetch_add(if covering { 1 } else { -1 }, Ordering::Relaxed);
            self.stats.slot_covering(self.cfg.shard, covering);
        }
    }

    /// Says so when nothing of this slot is receiving any more.
    fn note_down(&mut self, reason: &str) {
        if !self.covering_now() {
            tracing::debug!(shard = self.cfg.shard, slot = self.cfg.slot, %reason, "slot down");
            let chan = self.chan.as_ref().map(|c| c.id.clone());
            self.state(StateKind::Down, chan, reason.to_owned());
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
