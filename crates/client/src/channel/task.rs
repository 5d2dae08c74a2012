//! The task that runs one slot's [`Machine`]: it owns the slot's sockets (each a task in
//! a `JoinSet`, so a socket that dies is seen), runs the REST calls the machine asks for
//! as futures in flight beside everything else, and carries out the machine's actions.
//! Socket reports, commands, REST results and the clock are each one `select!` branch;
//! none waits on another, so a 60 s `Retry-After` never delays a socket's news or a
//! shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, sleep_until};

use crate::channel::machine::{
    Action, BudgetNote, CreateFailed, Machine, NewChannel, RestCall, RestDone, SlotConfig,
};
use crate::error::ClientError;
use crate::rest::api::{Api, Subscribed};
use crate::rest::auth::Token;
use crate::socket::session::{
    self, Batches, Ended, Report, SessionConfig, SessionHandle, SocketClock,
};
use crate::stream::event::Rejection;
use crate::stream::{Coverage, Inbound};
use crate::supervisor::budget::{Budget, Owner, Reservation};
use crate::telemetry::stats::Stats;

/// How long a stopping slot waits for its sockets' closes (the whole stop must fit in 2 s).
const SHUTDOWN_WAIT: Duration = Duration::from_millis(1500);

/// Orders from the supervisor.
#[derive(Debug)]
pub enum SlotCmd {
    /// Replace the slot's topics.
    SetTopics(Arc<[String]>),
    /// Close every socket and stop.
    Shutdown,
    /// Panic (for the supervision tests only).
    #[doc(hidden)]
    Panic,
}

/// What the supervisor can still read of a slot after its task died: the clocks of its
/// sockets (so their coverage can be ended at their last frames) and whether it covered.
#[derive(Debug, Default)]
pub struct SlotBook {
    sockets: Mutex<HashMap<u64, Arc<SocketClock>>>,
    /// The slot covers its shard.
    pub covering: AtomicBool,
    /// The slot's task died and its replacement is not receiving yet.
    pub failed: AtomicBool,
}

impl SlotBook {
    /// The sockets the slot had open, with their last frames.
    pub fn sockets(&self) -> Vec<(u64, Option<SystemTime>)> {
        lock(&self.sockets)
            .iter()
            .map(|(id, clock)| (*id, clock.last_frame()))
            .collect()
    }

    /// Forgets every socket (after the supervisor ended their coverage).
    pub fn clear(&self) {
        lock(&self.sockets).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a slot shares with the client.
#[derive(Clone)]
pub struct SlotCtx {
    /// The REST API (with this slot's token source).
    pub api: Arc<Api>,
    /// How sessions run.
    pub session: SessionConfig,
    /// The machine's settings.
    pub machine: SlotConfig,
    /// Where notifications go.
    pub events: Batches,
    /// Where coverage, state and fatal errors go.
    pub control: mpsc::UnboundedSender<Inbound>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Session numbers, unique per client.
    pub session_ids: Arc<AtomicU64>,
    /// The OAuth client's channels.
    pub budget: Arc<Mutex<Budget>>,
    /// What outlives this task.
    pub book: Arc<SlotBook>,
}

/// How the slot's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Told to stop.
    Stopped,
    /// A fatal error (already sent to the stream).
    Fatal,
}

/// A REST call's operation, its outcome, and for a channel created the token behind it.
type RestResult = (u64, RestDone, Option<(Arc<str>, Token)>);

struct Task {
    ctx: SlotCtx,
    owner: Owner,
    sessions: HashMap<u64, SessionHandle>,
    /// Socket task id → session number, to name a socket whose task panicked.
    task_ids: HashMap<tokio::task::Id, u64>,
    sockets: JoinSet<u64>,
    /// REST calls in flight: the operation, its outcome, and for a channel just created
    /// its id and the token that created it.
    rest: JoinSet<RestResult>,
    /// The token each of our channels was created with: calls on a channel use it while
    /// it lasts (a service may scope channels to the token that created them).
    channel_tokens: HashMap<Arc<str>, Token>,
    reports: mpsc::UnboundedSender<Report>,
}

/// Runs a slot until told to stop or a fatal error.
pub async fn run(
    ctx: SlotCtx,
    topics: Arc<[String]>,
    mut cmds: mpsc::UnboundedReceiver<SlotCmd>,
) -> Exit {
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let owner = (ctx.machine.shard, ctx.machine.slot);
    let mut m = Machine::new(
        ctx.machine.clone(),
        ctx.stats.clone(),
        ctx.session_ids.clone(),
        topics,
        Instant::now(),
    );
    let mut t = Task {
        ctx,
        owner,
        sessions: HashMap::new(),
        task_ids: HashMap::new(),
        sockets: JoinSet::new(),
        rest: JoinSet::new(),
        channel_tokens: HashMap::new(),
        reports: reports_tx,
    };
    t.ctx.stats.slot_started(owner.0);
    let mut exit = t.apply(&mut m);
    // Once told to stop, the sockets go on reading until then (see Machine::drain_time).
    let mut drain_until: Option<Instant> = None;
    while exit.is_none() {
        let wake = match (m.next_wake(), drain_until) {
            (Some(w), Some(d)) => Some(w.min(d)),
            (w, d) => w.or(d),
        };
        if drain_until.is_some_and(|d| d <= Instant::now()) {
            break;
        }
        tokio::select! {
            // Orders from the supervisor; a dropped sender means stop. recv() is cancel-safe.
            cmd = cmds.recv(), if drain_until.is_none() => match cmd {
                Some(SlotCmd::SetTopics(topics)) => m.set_topics(topics),
                Some(SlotCmd::Shutdown) | None => {
                    let drain = m.drain_time();
                    if drain.is_zero() {
                        break;
                    }
                    drain_until = Some(Instant::now() + drain);
                }
                Some(SlotCmd::Panic) => panic!("a panic injected by a test"),
            },
            // What the sockets saw; the task holds a sender, so this never ends. Cancel-safe.
            Some(report) = reports.recv() => t.on_report(&mut m, report),
            // A REST call finished; join_next is cancel-safe.
            Some(done) = t.rest.join_next(), if !t.rest.is_empty() => match done {
                Ok((op, done, created)) => {
                    if let Some((channel, token)) = created {
                        t.remember_token(channel, token);
                    }
                    m.on_rest(op, done, Instant::now());
                }
                // A panic in a REST call is a bug: it takes the slot down, and the
                // supervisor records the gap and restarts it.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            },
            // A socket task ended; one that panicked never reported, so it is reported here.
            Some(ended) = t.sockets.join_next_with_id(), if !t.sockets.is_empty() => {
                t.socket_task_ended(&mut m, ended);
            }
            // The machine's next timer, or the end of the drain.
            _ = sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                if drain_until.is_some_and(|d| d <= Instant::now()) {
                    break;
                }
                m.on_tick(Instant::now());
            }
        }
        exit = t.apply(&mut m);
    }
    t.stop(&mut m, &mut reports).await;
    t.ctx.stats.slot_stopped(owner.0, false);
    exit.unwrap_or(Exit::Stopped)
}

impl Task {
    fn on_report(&mut self, m: &mut Machine, report: Report) {
        let ended = match &report {
            Report::Ended { session, .. } => Some(*session),
            _ => None,
        };
        m.on_report(report, Instant::now());
        if let Some(session) = ended {
            self.sessions.remove(&session);
            // The book keeps a socket whose coverage is still open (a close waiting to be
            // settled), so a death of this task still ends it.
            if !m.defers(session) {
                lock(&self.ctx.book.sockets).remove(&session);
            }
        }
    }

    fn socket_task_ended(
        &mut self,
        m: &mut Machine,
        ended: Result<(tokio::task::Id, u64), JoinError>,
    ) {
        let (id, panic) = match ended {
            Ok((id, _)) => (id, None),
            Err(e) => (e.id(), e.is_panic().then(|| panic_text(e))),
        };
        let Some(session) = self.task_ids.remove(&id) else {
            return;
        };
        let Some(why) = panic else { return };
        let last_frame = self
            .sessions
            .get(&session)
            .and_then(|h| h.clock.last_frame());
        if self.ctx.stats.socket_gone(session) {
            self.ctx.stats.sockets_live.fetch_sub(1, Ordering::Relaxed);
        }
        crate::telemetry::notable::task_panicked("socket", &why);
        self.on_report(
            m,
            Report::Ended {
                session,
                last_frame,
                why: Ended::Dropped(format!(
                    "internal error: the socket's task panicked ({why})"
                )),
                at: Instant::now(),
            },
        );
    }

    /// Carries out what the machine asked for (and what that led to); `Some` when the
    /// slot must stop.
    fn apply(&mut self, m: &mut Machine) -> Option<Exit> {
        let mut exit = None;
        loop {
            let actions = m.take_actions();
            if actions.is_empty() {
                break;
            }
            for action in actions {
                tracing::trace!(shard = self.owner.0, slot = self.owner.1, ?action, "action");
                match action {
                    Action::Connect {
                        session,
                        channel,
                        uri,
                    } => self.connect(session, channel, uri),
                    Action::Retire { session, reason } => {
                        if let Some(h) = self.sessions.get_mut(&session) {
                            h.retire(reason);
                        }
                    }
                    Action::Rest { op, call } => self.rest(m, op, call),
                    Action::Coverage(change) => {
                        if let Coverage::Ended { session, .. } = &change {
                            lock(&self.ctx.book.sockets).remove(session);
                        }
                        let shard = self.owner.0;
                        let _ = self.ctx.control.send(Inbound::Coverage { shard, change });
                    }
                    Action::State(change) => {
                        let _ = self.ctx.control.send(Inbound::State(change));
                    }
                    Action::Budget(note) => self.budget(note),
                    Action::Rejected(topics) => {
                        for r in topics {
                            let _ = self.ctx.control.send(Inbound::Rejected(Rejection {
                                topic: r.topic,
                                missing_permissions: r.missing_permissions,
                                reason: r.reason,
                            }));
                        }
                    }
                    Action::Fatal(e) => {
                        let _ = self.ctx.control.send(Inbound::Fatal(e));
                        exit = Some(Exit::Fatal);
                    }
                }
            }
        }
        let held = lock(&self.ctx.budget).held(Instant::now());
        let stats = &self.ctx.stats;
        stats.channels_held.store(held as i64, Ordering::Relaxed);
        let covering = m.is_covering();
        let book = &self.ctx.book;
        book.covering.store(covering, Ordering::Relaxed);
        if covering && book.failed.swap(false, Ordering::Relaxed) {
            self.ctx.stats.slots_failed.fetch_sub(1, Ordering::Relaxed);
        }
        exit
    }

    fn connect(&mut self, session: u64, channel: Arc<str>, uri: Arc<str>) {
        let handle = session::spawn(
            self.ctx.session.clone(),
            session,
            uri,
            channel,
            self.reports.clone(),
            self.ctx.events.clone(),
            &mut self.sockets,
        );
        self.task_ids.insert(handle.task_id(), session);
        lock(&self.ctx.book.sockets).insert(session, handle.clock.clone());
        self.sessions.insert(session, handle);
    }

    fn budget(&mut self, note: BudgetNote) {
        let mut b = lock(&self.ctx.budget);
        match note {
            BudgetNote::Retired { channel, until } => b.retired(channel, until),
            BudgetNote::Gone { channel } => b.gone(&channel),
        }
    }

    fn remember_token(&mut self, channel: Arc<str>, token: Token) {
        let now = Instant::now();
        self.channel_tokens.retain(|_, t| t.expires > now);
        self.channel_tokens.insert(channel, token);
    }

    /// The API for calls on `channel`: with the token that created it, while it lasts.
    fn api_for(&self, channel: &str) -> Arc<Api> {
        match self.channel_tokens.get(channel) {
            Some(token) => Arc::new(self.ctx.api.pinned_to(token.clone())),
            None => self.ctx.api.clone(),
        }
    }

    fn rest(&mut self, m: &mut Machine, op: u64, call: RestCall) {
        let api = self.ctx.api.clone();
        match call {
            RestCall::Check { channel } => {
                let api = self.api_for(&channel);
                self.rest.spawn(async move {
                    (
                        op,
                        RestDone::Checked(api.channel_exists(&channel).await),
                        None,
                    )
                });
            }
            RestCall::Subscribe { channel, topics } => {
                let api = self.api_for(&channel);
                self.rest.spawn(async move {
                    (
                        op,
                        RestDone::Subscribed(subscribe(&api, &channel, &topics).await),
                        None,
                    )
                });
            }
            RestCall::Create {
                token_life,
                needed_by,
            } => {
                let now = Instant::now();
                match Budget::try_reserve(&self.ctx.budget, self.owner, needed_by, now) {
                    Ok(reservation) => {
                        let owner = self.owner;
                        let stats = self.ctx.stats.clone();
                        self.rest.spawn(async move {
                            match create(&api, token_life, reservation, owner, &stats).await {
                                Ok((new, token)) => {
                                    let pin = Some((new.id.clone(), token));
                                    (op, RestDone::Created(Ok(new)), pin)
                                }
                                Err(e) => (op, RestDone::Created(Err(e)), None),
                            }
                        });
                    }
                    Err(retry_at) => {
                        m.on_rest(
                            op,
                            RestDone::Created(Err(CreateFailed::Budget { retry_at })),
                            now,
                        );
                    }
                }
            }
        }
    }

    /// Closes every socket with 1000 and waits briefly for the closes; REST calls in
    /// flight are dropped at once.
    async fn stop(&mut self, m: &mut Machine, reports: &mut mpsc::UnboundedReceiver<Report>) {
        self.rest.abort_all();
        m.shutdown();
        let _ = self.apply(m);
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !m.is_stopped() {
            tokio::select! {
                // Each socket reports how it ended; recv() is cancel-safe.
                Some(report) = reports.recv() => self.on_report(m, report),
                // A socket task that ended without a report (panic) is counted here.
                Some(ended) = self.sockets.join_next_with_id(), if !self.sockets.is_empty() => {
                    self.socket_task_ended(m, ended);
                }
                // Sockets whose close did not finish in time are dropped with the set.
                _ = sleep_until(deadline) => break,
            }
        }
        self.sockets.abort_all();
    }
}

/// `PUT` the topics (`DELETE` them when there are none).
async fn subscribe(api: &Api, channel: &str, topics: &[String]) -> Result<Subscribed, ClientError> {
    if topics.is_empty() {
        api.clear_subscriptions(channel).await?;
        return Ok(Subscribed::default());
    }
    Ok(api.set_subscriptions(channel, topics).await?)
}

/// A token that lasts `token_life`, then a channel on it (and the token it belongs to).
async fn create(
    api: &Api,
    token_life: Duration,
    reservation: Reservation,
    owner: Owner,
    stats: &Stats,
) -> Result<(NewChannel, Token), CreateFailed> {
    let failed = |e: ClientError| CreateFailed::Rest(e);
    api.auth()
        .token_lasting(token_life)
        .await
        .map_err(|e| failed(e.into()))?;
    let (channel, token) = api.create_channel().await.map_err(|e| failed(e.into()))?;
    let now = Instant::now();
    let channel_left = crate::rest::api::left_until(&channel.expires);
    let token_left = token.expires.saturating_duration_since(now);
    let until = now
        + channel_left
            .unwrap_or(token_left)
            .min(token_left)
            .min(crate::channel::rollover::MAX_LIFE);
    let id: Arc<str> = channel.id.into();
    reservation.created(id.clone(), owner, until);
    Stats::bump(&stats.channels_created);
    let new = NewChannel {
        id,
        uri: channel.connect_uri.into(),
        channel_left,
        token_left,
    };
    Ok((new, token))
}

/// What a panic said.
pub fn panic_text(e: JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => panic_payload(&*payload),
        Err(e) => e.to_string(),
    }
}

/// The message of a panic payload.
pub fn panic_payload(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
