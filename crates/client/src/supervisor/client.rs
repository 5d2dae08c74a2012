//! The public face: [`Client::start`] checks the configuration, gets a first token per
//! redundant slot (so bad credentials fail at once), plans the shards, starts the slots and
//! returns a cheap cloneable [`ClientHandle`] plus the [`EventStream`]. The supervisor
//! behind the handle moves only what it must when topics change at run time.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use holdline_proto::topic;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::proxy::ProxyRules;
use crate::rest::api::Api;
use crate::rest::auth::TokenSource;
use crate::socket::liveness::LivenessConfig;
use crate::socket::session::SessionConfig;
use crate::stream::dedupe::Dedupe;
use crate::stream::event::{StateChange, StateKind};
use crate::stream::{EventStream, Inbound};
use crate::supervisor::budget::{Budget, ChannelShare};
use crate::supervisor::plan::{Plan, single_topics};
use crate::supervisor::slots::{SupCmd, Supervisor, Template};
use crate::telemetry::stats::Stats;

pub use crate::supervisor::slots::CHANNEL_BUDGET;

/// Channels kept free for rollovers (rollovers are staggered, so one at a time).
pub const ROLLOVER_SPARES: usize = 1;
/// Batches of notifications queued between the sockets and the stream's consumer; each
/// is up to [`crate::socket::session::BATCH_MAX`] notifications. A full queue holds the
/// sockets back (TCP pushes back on the server) rather than growing memory: at 8 × 64
/// frames of up to 8 KB, a few MiB at most. (4,096 single frames let a firehose push peak
/// RSS to 50 MiB with no gain in events/s.)
const QUEUE: usize = 8;

/// Starts clients.
pub struct Client;

/// A handle on a running client: change topics, read counters, shut down.
#[derive(Clone)]
pub struct ClientHandle {
    inner: Arc<Shared>,
}

struct Shared {
    plan: Mutex<Plan>,
    config: ClientConfig,
    sup: mpsc::UnboundedSender<SupCmd>,
    stats: Arc<Stats>,
    api: Arc<Api>,
    stop: watch::Sender<bool>,
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

fn per_channel(config: &ClientConfig) -> usize {
    config
        .topics_per_channel
        .clamp(1, topic::MAX_TOPICS_PER_CHANNEL)
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
        let proxy = Arc::new(
            ProxyRules::new(&config.proxy).map_err(|e| ClientError::Config(e.to_string()))?,
        );
        preflight(&proxy, &config).await?;
        let mut builder = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .proxy(proxy.for_reqwest())
            .user_agent(concat!("holdline/", env!("CARGO_PKG_VERSION")));
        for r in &config.resolve {
            builder = builder.resolve(&r.host, std::net::SocketAddr::new(r.addr, r.port));
        }
        let http = builder
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
        let per_channel = per_channel(&config);
        let plan = Plan::build(&topics, per_channel);
        if let Some(err) = over_budget(&plan, redundancy, per_channel) {
            return Err(err);
        }
        let (events, events_rx) = mpsc::channel(QUEUE);
        let (control, control_rx) = mpsc::unbounded_channel();
        let budget = Arc::new(Mutex::new(match &config.channel_share {
            Some(share) => Budget::shared(CHANNEL_BUDGET, share.0.clone()),
            None => Budget::new(CHANNEL_BUDGET),
        }));
        budget_notice(&api, &plan, redundancy, &control, &budget).await;
        let session = SessionConfig {
            liveness: LivenessConfig {
                ping_every: config.timings.ping_interval,
                pong_timeout: config.timings.pong_timeout,
                watchdog: config.timings.watchdog,
            },
            connect_timeout: config.timings.connect_timeout,
            max_frame_bytes: config.max_frame_bytes,
            tls,
            proxy,
            resolve: config.resolve.clone().into(),
            stats: stats.clone(),
            shard: 0,
            slot: 0,
        };
        let dedupe = Dedupe::new(config.dedupe_window, config.dedupe_max_ids);
        let stream = EventStream::new(
            events_rx,
            control_rx,
            dedupe,
            config.timings.gap_lookback,
            stats.clone(),
        );
        let template = Template {
            apis,
            session,
            config: config.clone(),
            events,
            control: control.clone(),
            stats: stats.clone(),
            session_ids: Arc::new(AtomicU64::new(1)),
            budget,
        };
        let (sup_tx, sup_rx) = mpsc::unbounded_channel();
        let everything: Vec<(usize, Arc<[String]>)> = plan
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.entries().into()))
            .collect();
        let _ = sup_tx.send(SupCmd::Apply(everything));
        tokio::spawn(supervise(Supervisor::new(template), sup_rx, control));
        let (stop, stopped) = watch::channel(false);
        let handle = ClientHandle {
            inner: Arc::new(Shared {
                plan: Mutex::new(plan),
                config: config.clone(),
                sup: sup_tx,
                stats,
                api,
                stop,
            }),
        };
        if let Some(share) = &config.channel_share {
            tokio::spawn(audit(
                handle.inner.api.clone(),
                share.0.clone(),
                stopped.clone(),
            ));
        }
        if config.all_queues || config.all_users {
            let tracker = crate::rest::resolve::track(handle.clone(), config, tracked, stopped);
            tokio::spawn(async move {
                if let Err(panic) = std::panic::AssertUnwindSafe(tracker).catch_unwind().await {
                    let why = crate::channel::task::panic_payload(&*panic);
                    crate::telemetry::notable::task_panicked("queue and user tracker", &why);
                }
            });
        }
        Ok((handle, stream))
    }
}

/// When a proxy is in force, opens one tunnel through it to the login host first: the
/// proxy's refusal then names the proxy and what to do, instead of surfacing as an
/// unreadable transport error of the first REST call.
async fn preflight(proxy: &ProxyRules, config: &ClientConfig) -> Result<(), ClientError> {
    let login = config.endpoints.login_base();
    let Ok(url) = reqwest::Url::parse(&login) else {
        return Ok(());
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Ok(());
    };
    let Some(p) = proxy.for_url(url.scheme(), host) else {
        return Ok(());
    };
    // host_str keeps an IPv6 address's brackets, as CONNECT wants them.
    let host = host.to_owned();
    match p.tunnel(&host, port, config.timings.connect_timeout).await {
        Ok(_) => {
            tracing::info!(proxy = %p, "through the proxy");
            Ok(())
        }
        Err(e) => Err(ClientError::Config(e.to_string())),
    }
}

/// Runs the supervisor; if it panics (a bug), the stream ends with the reason rather
/// than going quiet.
async fn supervise(
    sup: Supervisor,
    cmds: mpsc::UnboundedReceiver<SupCmd>,
    control: mpsc::UnboundedSender<Inbound>,
) {
    if let Err(panic) = std::panic::AssertUnwindSafe(sup.run(cmds))
        .catch_unwind()
        .await
    {
        let why = crate::channel::task::panic_payload(&*panic);
        crate::telemetry::notable::task_panicked("supervisor", &why);
        let _ = control.send(Inbound::Fatal(ClientError::Internal(format!(
            "the supervisor panicked ({why})"
        ))));
    }
}

/// Counts this OAuth client's other channels (an earlier run's, another program's) into
/// the budget, and says so when they plus ours exceed it: creating ours will evict the
/// least recently used of the others.
async fn budget_notice(
    api: &Api,
    plan: &Plan,
    redundancy: usize,
    control: &mpsc::UnboundedSender<Inbound>,
    budget: &Mutex<Budget>,
) {
    let needed = channels_needed(plan.live_shards(), redundancy);
    let share = budget.lock().unwrap_or_else(|p| p.into_inner()).share();
    if let Some(share) = share {
        // The other holders' channels are theirs; the cluster grants this one its share,
        // from a cap less the channels that are no holder's.
        list_into(api, &share).await;
        return;
    }
    let Ok(existing) = api.list_channels(true).await else {
        return;
    };
    let now = Instant::now();
    let expires = existing.iter().map(|c| {
        let left =
            crate::rest::api::left_until(&c.expires).unwrap_or(crate::channel::rollover::MAX_LIFE);
        now + left
    });
    budget
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .foreign(expires);
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
        let _ = control.send(Inbound::State(StateChange {
            kind: StateKind::Budget,
            channel: None,
            detail,
        }));
    }
}

/// Lists every channel of the OAuth client into `share`.
async fn list_into(api: &Api, share: &ChannelShare) {
    match api.list_channels(true).await {
        Ok(existing) => {
            let now = std::time::SystemTime::now();
            share.listed(
                existing
                    .iter()
                    .map(|c| {
                        let left = crate::rest::api::left_until(&c.expires)
                            .unwrap_or(crate::channel::rollover::MAX_LIFE);
                        crate::supervisor::budget::unix_secs(now + left)
                    })
                    .collect(),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "the OAuth client's channels could not be listed: channels another program holds are not counted until they can")
        }
    }
}

/// Lists the OAuth client's channels every [`ChannelShare::audit`] until the client
/// stops, so the cluster finds channels that another program holds.
async fn audit(api: Arc<Api>, share: Arc<ChannelShare>, mut stopped: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(share.audit()) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        list_into(&api, &share).await;
    }
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
        &self.inner.stats
    }

    /// The REST API the client uses (for look-ups such as queue names).
    pub fn api(&self) -> &Arc<Api> {
        &self.inner.api
    }

    /// Every single topic held now.
    pub fn topics(&self) -> Vec<String> {
        self.plan().topics()
    }

    /// Shards that hold topics now.
    pub fn shards(&self) -> usize {
        self.plan().live_shards()
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.inner.plan.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, plan: &Plan, changed: &BTreeSet<usize>) {
        let changes = changed
            .iter()
            .map(|&i| (i, plan.shards[i].entries().into()))
            .collect();
        let _ = self.inner.sup.send(SupCmd::Apply(changes));
    }

    /// Adds topics: into their entity's shard, the fullest shard with room, or a new
    /// shard when the channel budget allows. Nothing changes when it does not.
    pub fn add_topics(&self, topics: &[String]) -> Result<(), ClientError> {
        let topics = validate_topics(topics)?;
        let mut plan = self.plan();
        let mut next = plan.clone();
        let changed = next.add(&topics);
        let config = &self.inner.config;
        if let Some(err) = over_budget(&next, config.redundancy.max(1), per_channel(config)) {
            return Err(err);
        }
        *plan = next;
        self.apply(&plan, &changed);
        Ok(())
    }

    /// Removes topics wherever they are; a shard left empty stops its slots.
    pub fn remove_topics(&self, topics: &[String]) {
        let mut plan = self.plan();
        let changed = plan.remove(&single_topics(topics));
        self.apply(&plan, &changed);
    }

    /// Makes `topics` the whole list held: adds what is new, removes what is gone, and
    /// leaves every other shard's sockets alone.
    pub fn set_topics(&self, topics: &[String]) -> Result<(), ClientError> {
        let wanted: HashSet<String> = validate_topics(topics)?
            .iter()
            .flat_map(|t| single_topics(std::slice::from_ref(t)))
            .collect();
        let held: HashSet<String> = self.topics().into_iter().collect();
        let added: Vec<String> = wanted.difference(&held).cloned().collect();
        let removed: Vec<String> = held.difference(&wanted).cloned().collect();
        if !added.is_empty() {
            self.add_topics(&added)?;
        }
        if !removed.is_empty() {
            self.remove_topics(&removed);
        }
        Ok(())
    }

    /// Makes the task of slot `slot` of shard `shard` panic, as a bug would: for tests of
    /// the supervision (a gap, readiness, the restart). Not for use otherwise.
    #[doc(hidden)]
    pub fn inject_slot_panic(&self, shard: usize, slot: usize) {
        let _ = self.inner.sup.send(SupCmd::Panic((shard, slot)));
    }

    /// Closes every socket with 1000 and stops, within about 2 s whatever REST is doing;
    /// the stream ends once the sockets are closed.
    pub fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
        let _ = self.inner.sup.send(SupCmd::Shutdown);
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
