//! The supervisor task: runs the redundant slots of every shard and sees every one of
//! them end. A slot told to stop ends quietly; a slot that dies (a panic) has its
//! sockets' coverage ended at their last frames (so its silence becomes a gap), turns
//! `/readyz` 503 until its replacement is receiving, and is restarted with backoff. A
//! slot that keeps dying stops the client with the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, sleep_until};

use crate::channel::machine::SlotConfig;
use crate::channel::task::{self, Exit, SlotBook, SlotCmd, SlotCtx};
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::rest::api::Api;
use crate::rest::backoff::Backoff;
use crate::socket::session::{Batches, SessionConfig};
use crate::stream::{Coverage, Inbound};
use crate::supervisor::budget::{Budget, Owner};
use crate::telemetry::notable;
use crate::telemetry::stats::Stats;

/// Deaths of one slot within [`DEATH_WINDOW`] after which the client gives up.
const MAX_DEATHS: usize = 5;
/// The window in which deaths are counted.
const DEATH_WINDOW: Duration = Duration::from_secs(600);
/// How long a stopping supervisor waits for its slots (each closes its sockets first).
const STOP_WAIT: Duration = Duration::from_millis(1800);

/// Orders from the client handle.
#[derive(Debug)]
pub enum SupCmd {
    /// These shards' entries changed (empty: the shard is gone).
    Apply(Vec<(usize, Arc<[String]>)>),
    /// Stop every slot.
    Shutdown,
    /// Make a slot panic (for the supervision tests only).
    #[doc(hidden)]
    Panic(Owner),
}

/// What every slot is started with.
pub struct Template {
    /// One REST API (and token source) per redundant slot index.
    pub apis: Vec<Arc<Api>>,
    /// How sessions run.
    pub session: SessionConfig,
    /// The client's configuration.
    pub config: ClientConfig,
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
}

/// Channels one OAuth client may hold.
pub const CHANNEL_BUDGET: usize = 20;

struct Slot {
    topics: Arc<[String]>,
    cmds: Option<mpsc::UnboundedSender<SlotCmd>>,
    book: Arc<SlotBook>,
    deaths: Vec<Instant>,
    restart_at: Option<Instant>,
    /// Told to stop: its end is expected and it is not restarted.
    stopping: bool,
    /// Its task is running (not yet seen to end).
    running: bool,
    /// Given topics again while stopping: started afresh once its task has ended.
    revive: bool,
}

/// The supervisor's state.
pub struct Supervisor {
    template: Template,
    slots: BTreeMap<Owner, Slot>,
    tasks: JoinSet<(Owner, Exit)>,
    owners: HashMap<tokio::task::Id, Owner>,
}

impl Supervisor {
    /// A supervisor with no slots yet.
    pub fn new(template: Template) -> Self {
        Supervisor {
            template,
            slots: BTreeMap::new(),
            tasks: JoinSet::new(),
            owners: HashMap::new(),
        }
    }

    /// Runs until told to stop, then stops every slot (within about 2 s).
    pub async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<SupCmd>) {
        loop {
            let restart = self.slots.values().filter_map(|s| s.restart_at).min();
            tokio::select! {
                // Orders from the handle; a dropped handle means stop. recv() is cancel-safe.
                cmd = cmds.recv() => match cmd {
                    Some(SupCmd::Apply(changes)) => self.apply(changes),
                    Some(SupCmd::Shutdown) | None => break,
                    Some(SupCmd::Panic(owner)) => {
                        if let Some(tx) = self.slots.get(&owner).and_then(|s| s.cmds.as_ref()) {
                            let _ = tx.send(SlotCmd::Panic);
                        }
                    }
                },
                // A slot's task ended; join_next_with_id is cancel-safe.
                Some(ended) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    if self.ended(ended) {
                        break;
                    }
                }
                // A dead slot's restart is due.
                _ = sleep_until(restart.unwrap_or_else(Instant::now)), if restart.is_some() => {
                    self.restart_due(Instant::now());
                }
            }
        }
        self.stop().await;
    }

    /// Brings the slots of the changed shards in line with their entries.
    fn apply(&mut self, changes: Vec<(usize, Arc<[String]>)>) {
        let redundancy = self.template.config.redundancy.max(1);
        for (shard, entries) in changes {
            for k in 0..redundancy {
                let owner = (shard, k);
                match self.slots.get_mut(&owner) {
                    Some(slot) if entries.is_empty() && !slot.running => {
                        // Dead and waiting for its restart: nothing to stop.
                        self.slots.remove(&owner);
                    }
                    Some(slot) if entries.is_empty() => {
                        slot.stopping = true;
                        slot.revive = false;
                        slot.restart_at = None;
                        if let Some(tx) = slot.cmds.take() {
                            let _ = tx.send(SlotCmd::Shutdown);
                        }
                    }
                    Some(slot) => {
                        slot.topics = entries.clone();
                        if slot.stopping {
                            // Its task is ending: a new one starts when it has.
                            slot.stopping = false;
                            slot.revive = true;
                        } else if let Some(tx) = &slot.cmds {
                            let _ = tx.send(SlotCmd::SetTopics(entries.clone()));
                        }
                    }
                    None if entries.is_empty() => {}
                    None => {
                        self.slots.insert(
                            owner,
                            Slot {
                                topics: entries.clone(),
                                cmds: None,
                                book: Arc::default(),
                                deaths: Vec::new(),
                                restart_at: None,
                                stopping: false,
                                running: false,
                                revive: false,
                            },
                        );
                        self.spawn(owner, stagger_start(k));
                    }
                }
            }
        }
    }

    fn spawn(&mut self, owner: Owner, start_delay: Duration) {
        let Some(slot) = self.slots.get_mut(&owner) else {
            return;
        };
        let t = &self.template;
        let (shard, k) = owner;
        let redundancy = t.config.redundancy.max(1);
        let ordinal = shard * redundancy + k;
        let (tx, cmds) = mpsc::unbounded_channel();
        let mut session = t.session.clone();
        session.shard = shard;
        session.slot = k;
        let api = t.apis[k % t.apis.len()].clone();
        let ctx = SlotCtx {
            machine: SlotConfig {
                timings: t.config.timings,
                shard,
                slot: k,
                start_delay,
                stagger: ordinal as f64 / CHANNEL_BUDGET as f64,
                client_id: api.auth().client_id().to_owned(),
            },
            api,
            session,
            events: t.events.clone(),
            control: t.control.clone(),
            stats: t.stats.clone(),
            session_ids: t.session_ids.clone(),
            budget: t.budget.clone(),
            book: slot.book.clone(),
        };
        slot.cmds = Some(tx);
        slot.restart_at = None;
        slot.running = true;
        let topics = slot.topics.clone();
        let handle = self.tasks.spawn(async move {
            let exit = task::run(ctx, topics, cmds).await;
            (owner, exit)
        });
        self.owners.insert(handle.id(), owner);
    }

    /// A slot's task ended; true when the client must stop.
    fn ended(&mut self, ended: Result<(tokio::task::Id, (Owner, Exit)), JoinError>) -> bool {
        match ended {
            Ok((id, (owner, exit))) => {
                self.owners.remove(&id);
                // Its channels are no longer used; the service counts them until they expire.
                self.template
                    .budget
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .orphaned(owner);
                if let Some(slot) = self.slots.get_mut(&owner) {
                    slot.running = false;
                    slot.cmds = None;
                    if std::mem::take(&mut slot.revive) {
                        self.spawn(owner, Duration::ZERO);
                    } else if slot.stopping {
                        self.slots.remove(&owner);
                    }
                }
                exit == Exit::Fatal
            }
            Err(e) => {
                let Some(owner) = self.owners.remove(&e.id()) else {
                    return false;
                };
                let why = task::panic_text(e);
                self.died(owner, &why)
            }
        }
    }

    /// A slot's task died: its coverage ends, readiness drops, and it is restarted (or
    /// the client stops if it keeps dying). True when the client must stop.
    fn died(&mut self, owner: Owner, why: &str) -> bool {
        let t = &self.template;
        let Some(slot) = self.slots.get_mut(&owner) else {
            return false;
        };
        notable::task_panicked("slot", why);
        let reason = format!("internal error: the slot's task panicked ({why})");
        for (session, last_frame) in slot.book.sockets() {
            let change = Coverage::Ended {
                session,
                until: last_frame,
                lookback: true,
                reason: reason.clone(),
            };
            let _ = t.control.send(Inbound::Coverage {
                shard: owner.0,
                change,
            });
            if t.stats.socket_gone(session) {
                t.stats.sockets_live.fetch_sub(1, Ordering::Relaxed);
            }
        }
        slot.book.clear();
        let covering = slot.book.covering.swap(false, Ordering::Relaxed);
        if covering {
            t.stats.slots_live.fetch_sub(1, Ordering::Relaxed);
        }
        t.stats.slot_stopped(owner.0, covering);
        t.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .orphaned(owner);
        if !slot.book.failed.swap(true, Ordering::Relaxed) {
            t.stats.slots_failed.fetch_add(1, Ordering::Relaxed);
        }
        // Counted last: whoever sees the count sees everything above done.
        Stats::bump(&t.stats.task_panics);
        slot.cmds = None;
        slot.running = false;
        if slot.stopping {
            self.slots.remove(&owner);
            return false;
        }
        slot.revive = false;
        let now = Instant::now();
        slot.deaths
            .retain(|at| now.duration_since(*at) < DEATH_WINDOW);
        slot.deaths.push(now);
        if slot.deaths.len() > MAX_DEATHS {
            let e = ClientError::Internal(format!(
                "shard {} slot {} died {} times within {:?}; last: {why}",
                owner.0,
                owner.1,
                slot.deaths.len(),
                DEATH_WINDOW
            ));
            tracing::error!(error = %e, "giving up");
            let _ = t.control.send(Inbound::Fatal(e));
            return true;
        }
        let mut backoff = Backoff::new(t.config.timings.backoff_base, t.config.timings.backoff_max);
        let wait = backoff.nth(slot.deaths.len() - 1).unwrap_or_default();
        slot.restart_at = Some(now + wait);
        false
    }

    fn restart_due(&mut self, now: Instant) {
        let due: Vec<Owner> = self
            .slots
            .iter()
            .filter(|(_, s)| s.restart_at.is_some_and(|at| at <= now))
            .map(|(o, _)| *o)
            .collect();
        for owner in due {
            tracing::warn!(
                shard = owner.0,
                slot = owner.1,
                "restarting a slot whose task died"
            );
            self.spawn(owner, Duration::ZERO);
        }
    }

    /// Tells every slot to stop and waits for them (each closes its sockets with 1000).
    async fn stop(mut self) {
        for slot in self.slots.values_mut() {
            slot.stopping = true;
            if let Some(tx) = slot.cmds.take() {
                let _ = tx.send(SlotCmd::Shutdown);
            }
        }
        // Each slot's sockets read for a look-back before they close.
        let measured = Duration::from_micros(Stats::get(&self.template.stats.lookback_micros));
        let drain = self.template.config.timings.gap_lookback.max(measured);
        let deadline = Instant::now() + drain + STOP_WAIT;
        while !self.tasks.is_empty() {
            tokio::select! {
                // Each slot ends after its sockets closed (or its own wait ran out).
                Some(ended) = self.tasks.join_next_with_id() => {
                    let _ = self.ended(ended);
                }
                // Past the deadline the slots are dropped with their sockets.
                _ = sleep_until(deadline) => break,
            }
        }
        self.tasks.abort_all();
    }
}

/// Redundant slots connect a little apart so their sockets never share a fate at start.
fn stagger_start(slot: usize) -> Duration {
    Duration::from_millis(250) * slot as u32
}
