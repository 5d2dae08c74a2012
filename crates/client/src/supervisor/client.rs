//! The public face: [`Client::start`] checks the configuration, gets a first token per
//! redundant slot (so bad credentials fail at once), plans the shards, starts the slots and
//! returns a cheap cloneable [`ClientHandle`] plus the [`EventStream`]. The supervisor
//! behind the handle moves only what it must when topics change at run time.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdline_proto::topic;
use tokio::sync::{mpsc, watch};

use crate::channel::slot::{self, SlotCmd, SlotCtx};
use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::rest::api::Api;
use crate::rest::auth::TokenSource;
use crate::socket::liveness::LivenessConfig;
use crate::socket::session::SessionConfig;
use crate::stream::dedupe::Dedupe;
use crate::stream::event::{StateChange, StateKind};
use crate::stream::{EventStream, Inbound};
use crate::supervisor::plan::{Plan, single_topics};
use crate::telemetry::stats::Stats;

/// Channels one OAuth client may hold.
pub const CHANNEL_BUDGET: usize = 20;
/// Channels kept free for rollovers (rollovers are staggered, so one at a time).
pub const ROLLOVER_SPARES: usize = 1;
/// Messages queued between the sockets and the stream's consumer; each is one batch of
/// up to [`crate::socket::session::BATCH_MAX`] notifications, or a coverage or state change. A
/// full queue holds the sockets back (TCP pushes back on the server) rather than growing
/// memory: at 8 × 64 frames of up to 8 KB, a few MiB at most. (4,096 single frames let a
/// firehose push peak RSS to 50 MiB with no gain in events/s.)
const QUEUE: usize = 8;

/// Starts clients.
pub struct Client;

/// A handle on a running client: change topics, read counters, shut down.
#[derive(Clone)]
pub struct ClientHandle {
    sup: Arc<Mutex<Supervisor>>,
    stats: Arc<Stats>,
    api: Arc<Api>,
    stop: watch::Sender<bool>,
}

/// What every slot is started with.
struct Template {
    apis: Vec<Arc<Api>>,
    session: SessionConfig,
    config: ClientConfig,
    /// The stream's queue; dropped at shutdown so the stream can end.
    out: Option<mpsc::Sender<Inbound>>,
    stats: Arc<Stats>,
    session_ids: Arc<AtomicU64>,
}

/// The plan and the slots that carry it out.
struct Supervisor {
    plan: Plan,
    slots: Vec<Vec<mpsc::UnboundedSender<SlotCmd>>>,
    template: Template,
}

/// Channels `shards` shards need with `redundancy`, rollover spares included.
pub fn channels_needed(shards: usize, redundancy: usize) -> usize {
    shards * redundancy + ROLLOVER_SPARES
}

fn over_budget(plan: &Plan, redundancy: usize, per_channel: usize) -> Option<ClientError> {
    let needed = channels_needed(plan.live_shards(), redundancy);
    if needed <= CHANNEL_BUDGET {
        return None;
    }
    let shards_fit = (CHANNEL_BUDGET - ROLLOVER_SPARES) / redundancy;
    let entries: usize = plan.shards.iter().map(|s| s.len()).sum();
    Some(ClientError::Config(format!(
        "{} topics ({entries} subscription entries after combining) need {} channels of {per_channel} \
         entries × redundancy {redundancy} + {ROLLOVER_SPARES} rollover spare = {needed} channels, but an OAuth \
         client may hold {CHANNEL_BUDGET}. With redundancy {redundancy} at most {} entries fit ({shards_fit} channels); \
         lower --redundancy, subscribe fewer topics, or use a second OAuth client",
        plan.topics().len(),
        plan.live_shards(),
        shards_fit * per_channel
    )))
}

impl Client {
    /// Validates the configuration, authenticates and starts every slot.
    pub async fn start(config: ClientConfig) -> Result<(ClientHandle, EventStream), ClientError> {
        let named = !config.queues.is_empty()
            || !config.users.is_empty()
            || config.all_queues
            || config.all_users;
        let mut topics = if named && config.topics.is_empty() {
            Vec::new()
        } else {
            validate_topics(&config.topics)?
        };
        let redundancy = config.redundancy.max(1);
        let tls = crate::tls::client_config(config.ca_file.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .user_agent(concat!("holdline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        let stats = Arc::new(Stats::default());
        // One token per redundant slot: revoking one token takes down one socket per shard.
        let mut apis = Vec::with_capacity(redundancy);
        for _ in 0..redundancy {
            let auth = TokenSource::new(
                http.clone(),
                &config.endpoints,
                config.credentials.clone(),
                config.timings,
            );
            auth.observe(stats.clone());
            auth.token().await?;
            apis.push(Arc::new(
                Api::new(
                    http.clone(),
                    config.endpoints.api_base(),
                    auth,
                    config.timings,
                )
                .observed(stats.clone()),
            ));
        }
        let api = apis[0].clone();
        let tracked = crate::rest::resolve::tracked_topics(&api, &config).await?;
        if named {
            topics.extend(
                crate::rest::resolve::conversation_topics(&api, &config.queues, &config.users)
                    .await?,
            );
            topics.extend(tracked.iter().cloned());
            topics = validate_topics(&topics)?;
        }
        let per_channel = config
            .topics_per_channel
            .clamp(1, topic::MAX_TOPICS_PER_CHANNEL);
        let plan = Plan::build(&topics, per_channel);
        if let Some(err) = over_budget(&plan, redundancy, per_channel) {
            return Err(err);
        }
        let (out, rx) = mpsc::channel(QUEUE);
        budget_notice(&api, &plan, redundancy, &out).await;
        let session = SessionConfig {
            liveness: LivenessConfig {
                ping_every: config.timings.ping_interval,
                pong_timeout: config.timings.pong_timeout,
                watchdog: config.timings.watchdog,
            },
            connect_timeout: config.timings.connect_timeout,
            max_frame_bytes: config.max_frame_bytes,
            tls,
            stats: stats.clone(),
            shard: 0,
            slot: 0,
        };
        let dedupe = Dedupe::new(config.dedupe_window, config.dedupe_max_ids);
        let stream = EventStream::new(rx, dedupe, config.timings.gap_lookback, stats.clone());
        let template = Template {
            apis,
            session,
            config: config.clone(),
            out: Some(out),
            stats: stats.clone(),
            session_ids: Arc::new(AtomicU64::new(1)),
        };
        let mut sup = Supervisor {
            plan,
            slots: Vec::new(),
            template,
        };
        let all: BTreeSet<usize> = (0..sup.plan.shards.len()).collect();
        sup.apply(&all);
        let (stop, stopped) = watch::channel(false);
        let handle = ClientHandle {
            sup: Arc::new(Mutex::new(sup)),
            stats,
            api,
            stop,
        };
        if config.all_queues || config.all_users {
            tokio::spawn(crate::rest::resolve::track(
                handle.clone(),
                config,
                tracked,
                stopped,
            ));
        }
        Ok((handle, stream))
    }
}

/// Says so when this OAuth client's other channels plus ours exceed the budget: creating
/// ours will evict the least recently used of the others.
async fn budget_notice(api: &Api, plan: &Plan, redundancy: usize, out: &mpsc::Sender<Inbound>) {
    let needed = channels_needed(plan.live_shards(), redundancy);
    let Ok(existing) = api.list_channels(true).await else {
        return;
    };
    let total = existing.len() + needed;
    tracing::info!(
        needed,
        existing = existing.len(),
        budget = CHANNEL_BUDGET,
        "channel budget"
    );
    if total > CHANNEL_BUDGET {
        let detail = format!(
            "this OAuth client already holds {} channels and holdline needs {needed}: creating them evicts the {} \
             least recently used (unconnected first). If another program uses this client, give holdline its own",
            existing.len(),
            total - CHANNEL_BUDGET
        );
        tracing::warn!("{detail}");
        let _ = out.try_send(Inbound::State(StateChange {
            kind: StateKind::Budget,
            channel: None,
            detail,
        }));
    }
}

impl Supervisor {
    /// Brings the slots of `changed` shards in line with the plan: new shards get slots,
    /// emptied shards stop theirs, the others get their new topic list.
    fn apply(&mut self, changed: &BTreeSet<usize>) {
        let redundancy = self.template.config.redundancy.max(1);
        for &idx in changed {
            let shard = &self.plan.shards[idx];
            let entries: Arc<[String]> = shard.entries().into();
            while self.slots.len() <= idx {
                self.slots.push(Vec::new());
            }
            if entries.is_empty() {
                for slot in self.slots[idx].drain(..) {
                    let _ = slot.send(SlotCmd::Shutdown);
                }
            } else if self.slots[idx].is_empty() {
                self.slots[idx] = (0..redundancy)
                    .filter_map(|k| self.spawn(idx, k, entries.clone()))
                    .collect();
            } else {
                for slot in &self.slots[idx] {
                    let _ = slot.send(SlotCmd::SetTopics(entries.clone()));
                }
            }
        }
    }

    fn spawn(
        &self,
        shard: usize,
        slot: usize,
        topics: Arc<[String]>,
    ) -> Option<mpsc::UnboundedSender<SlotCmd>> {
        let t = &self.template;
        let out = t.out.clone()?;
        let redundancy = t.config.redundancy.max(1);
        let (tx, cmds) = mpsc::unbounded_channel();
        let ordinal = shard * redundancy + slot;
        let ctx = SlotCtx {
            api: t.apis[slot % t.apis.len()].clone(),
            session: t.session.clone(),
            timings: t.config.timings,
            shard,
            slot,
            out,
            stats: t.stats.clone(),
            session_ids: t.session_ids.clone(),
            start_delay: stagger_start(slot),
            stagger: ordinal as f64 / CHANNEL_BUDGET as f64,
        };
        tokio::spawn(slot::run(ctx, topics, cmds));
        Some(tx)
    }
}

/// Redundant slots connect a little apart so their sockets never share a fate at start.
fn stagger_start(slot: usize) -> Duration {
    Duration::from_millis(250) * slot as u32
}

/// Checks every topic locally (so a typo fails before any network call) and drops repeats.
pub fn validate_topics(topics: &[String]) -> Result<Vec<String>, ClientError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in topics {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        topic::expand(name).map_err(|e| ClientError::Config(e.to_string()))?;
        if seen.insert(name.to_owned()) {
            out.push(name.to_owned());
        }
    }
    if out.is_empty() {
        return Err(ClientError::Config(
            "no topics to subscribe: give --topic, --topics-file, --queue, --user, --all-queues or --all-users"
                .to_owned(),
        ));
    }
    Ok(out)
}

impl ClientHandle {
    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The REST API the client uses (for look-ups such as queue names).
    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Every single topic held now.
    pub fn topics(&self) -> Vec<String> {
        self.lock().plan.topics()
    }

    /// Shards that hold topics now.
    pub fn shards(&self) -> usize {
        self.lock().plan.live_shards()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Supervisor> {
        self.sup.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds topics: into their entity's shard, the fullest shard with room, or a new
    /// shard when the channel budget allows. Nothing changes when it does not.
    pub fn add_topics(&self, topics: &[String]) -> Result<(), ClientError> {
        let topics = validate_topics(topics)?;
        let mut sup = self.lock();
        let mut plan = sup.plan.clone();
        let changed = plan.add(&topics);
        let redundancy = sup.template.config.redundancy.max(1);
        let per_channel = sup
            .template
            .config
            .topics_per_channel
            .clamp(1, topic::MAX_TOPICS_PER_CHANNEL);
        if let Some(err) = over_budget(&plan, redundancy, per_channel) {
            return Err(err);
        }
        sup.plan = plan;
        sup.apply(&changed);
        Ok(())
    }

    /// Removes topics wherever they are; a shard left empty stops its slots.
    pub fn remove_topics(&self, topics: &[String]) {
        let mut sup = self.lock();
        let changed = sup.plan.remove(&single_topics(topics));
        sup.apply(&changed);
    }

    /// Closes every socket with 1000; the stream ends once they are closed.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        let mut sup = self.lock();
        sup.template.out = None;
        for slot in sup.slots.iter_mut().flat_map(|s| s.drain(..)) {
            let _ = slot.send(SlotCmd::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_checked_and_deduplicated() {
        let user = "6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11";
        let ok = validate_topics(&[
            format!("v2.users.{user}.presence"),
            format!("v2.users.{user}.presence"),
            " ".into(),
        ])
        .unwrap();
        assert_eq!(ok.len(), 1);
        let err = validate_topics(&[format!("v2.conversations.{user}")]).unwrap_err();
        assert!(
            matches!(err, ClientError::Config(ref m) if m.contains("did you mean")),
            "{err}"
        );
        assert!(matches!(validate_topics(&[]), Err(ClientError::Config(_))));
    }

    #[test]
    fn the_budget_error_says_how_much_fits() {
        let topics: Vec<String> = (0..25_000)
            .map(|n| format!("v2.routing.queues.00000000-0000-4000-8000-{n:012}.conversations"))
            .collect();
        let plan = Plan::build(&topics, 1000);
        let err = over_budget(&plan, 2, 1000).expect("25 shards × 2 do not fit");
        assert!(
            err.to_string().contains("at most 9000 entries fit"),
            "{err}"
        );
        assert!(over_budget(&Plan::build(&topics[..9000], 1000), 2, 1000).is_none());
        assert!(over_budget(&Plan::build(&topics[..9001], 1000), 2, 1000).is_some());
    }
}
