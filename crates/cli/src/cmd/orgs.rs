//! Many orgs in one `listen`: `[[org]]` tables in the config file, each org its own
//! [`Client`] (token sources, REST budget, 20-channel budget, shards), held by its own task
//! so that one org's trouble never reaches another's sockets. An org whose client cannot
//! start or stops on a fatal error (bad or revoked credentials, a missing permission) is
//! logged as an ERROR, retried with backoff, and, once it receives again, reported as a
//! `gap` over its topics for the time it was not receiving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use holdline_client::{Client, ClientConfig, Event, Secret, StateKind};
use holdline_proto::backoff::Backoff;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

use super::config::ConfigError;
use super::listen::{ListenArgs, Lists};
use super::service::ServiceArgs;

/// One `[[org]]` table: who the org's OAuth client is, where its service is, and what to
/// subscribe. What it leaves out comes from the file's top level (timings, redundancy,
/// the service's proxy and certificates); its topics never do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgTable {
    /// The org's name: the records' `org` and the `org` label of its metrics.
    pub name: String,
    pub region: Option<String>,
    pub api_base: Option<String>,
    pub login_base: Option<String>,
    pub client_id: String,
    /// The environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// A file holding the client secret (surrounding whitespace ignored).
    pub client_secret_file: Option<PathBuf>,
    /// The secret itself: only in a file that no one else may read.
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub topics: Vec<String>,
    pub topics_file: Option<PathBuf>,
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub all_queues: bool,
    #[serde(default)]
    pub all_users: bool,
    pub redundancy: Option<usize>,
}

/// Longest name an org may have (it is a label on every per-org series).
const NAME_MAX: usize = 64;

impl OrgTable {
    /// The org's `listen` settings: `base` (the file's top level and the flags) with this
    /// table's service, credentials and topics in place of its own.
    pub fn listen_args(&self, base: &ListenArgs, file: &Path) -> Result<ListenArgs, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: file.to_owned(),
            message: format!("[[org]] {:?}: {message}", self.name),
        };
        let secret = self.secret(file).map_err(invalid)?;
        let service = ServiceArgs {
            region: self.region.clone(),
            api_base: self.api_base.clone(),
            login_base: self.login_base.clone(),
            client_id: Some(self.client_id.clone()),
            client_secret: Some(secret),
            ca_file: None,
            proxy: None,
            resolve: Vec::new(),
        }
        .or(ServiceArgs {
            client_id: None,
            client_secret: None,
            ..base.service.clone()
        });
        let mut args = base.clone();
        args.service = service;
        args.topics = self.topics.clone();
        args.topics_file = self.topics_file.clone();
        args.queues = self.queues.clone();
        args.users = self.users.clone();
        args.all_queues = self.all_queues;
        args.all_users = self.all_users;
        args.redundancy = self.redundancy.or(base.redundancy);
        args.org = Some(self.name.clone());
        args.orgs = Vec::new();
        Ok(args)
    }

    fn secret(&self, file: &Path) -> Result<Secret, String> {
        match (
            &self.client_secret_env,
            &self.client_secret_file,
            &self.client_secret,
        ) {
            (Some(var), None, None) => match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
                _ => Err(format!(
                    "client_secret_env names {var}, which is not set in holdline's environment"
                )),
            },
            (None, Some(path), None) => match std::fs::read_to_string(path) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret::new(value.trim())),
                Ok(_) => Err(format!("client_secret_file {} is empty", path.display())),
                Err(e) => Err(format!(
                    "cannot read client_secret_file {}: {e}",
                    path.display()
                )),
            },
            (None, None, Some(secret)) if private(file) => Ok(secret.clone()),
            (None, None, Some(_)) => Err(format!(
                "client_secret is inline but {} may be read by others: use client_secret_env or \
                 client_secret_file, or chmod 600 the config",
                file.display()
            )),
            (None, None, None) => {
                Err("no secret: set client_secret_env or client_secret_file".into())
            }
            _ => Err(
                "give the secret one way: client_secret_env, client_secret_file or client_secret"
                    .into(),
            ),
        }
    }
}

/// Whether only the owner may read `path`.
fn private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

/// Checks the names of the orgs: present, short, of letters, digits, `-`, `_` and `.`,
/// and each once.
pub fn check_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    file: &Path,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        let message = if name.is_empty() || name.len() > NAME_MAX {
            Some(format!(
                "an org name has 1 to {NAME_MAX} characters, not {:?}",
                name
            ))
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            Some(format!(
                "org name {name:?}: use letters, digits, '-', '_' and '.' (it becomes a label)"
            ))
        } else if !seen.insert(name) {
            Some(format!("two orgs are named {name:?}"))
        } else {
            None
        };
        if let Some(message) = message {
            return Err(ConfigError::Invalid {
                path: file.to_owned(),
                message,
            });
        }
    }
    Ok(())
}

/// What an org's task sends the writer.
pub enum Item {
    Event(Arc<str>, holdline_client::Notification),
    Gap(Arc<str>, holdline_client::Gap),
    /// A gap of the cluster (no holder of the org covered it), with its id.
    ClusterGap(Arc<str>, holdline_client::Gap, String),
    Rejected(Arc<str>, holdline_client::Rejection),
}

/// How an org's first start went, for the rule that `listen` fails only when every org
/// is misconfigured.
#[derive(Debug)]
pub enum FirstStart {
    Live,
    /// It could not start: why, and whether only a change of configuration can help.
    Failed {
        error: String,
        fatal: bool,
    },
}

/// Each org's state, for `/readyz` (with the number of the holder that set it), and the
/// `holdline_org_up` gauge that shows it in `/metrics`, orgs that never started included.
#[derive(Clone, Default)]
pub struct Status {
    map: Arc<std::sync::Mutex<States>>,
    up: prometheus_client::metrics::family::Family<
        Vec<(&'static str, String)>,
        prometheus_client::metrics::gauge::Gauge,
    >,
    /// A cluster node's standing: None while it may hold orgs (holding none is then
    /// fine), else why it holds none. Absent outside a cluster, where no org is not ready.
    cluster: Arc<std::sync::Mutex<Option<Option<String>>>>,
}

impl Status {
    /// Outside a cluster: None. In one: None while this node may hold orgs, else why not.
    pub fn cluster(&self) -> Option<Option<String>> {
        self.cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_cluster(&self, standing: Option<String>) {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(standing);
    }

    fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "holdline_org_up",
            "1 while the org's client runs, 0 while it starts or is down (see /readyz for why)",
            self.up.clone(),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, States> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Each org's state, with the number of the holder that set it.
type States = std::collections::BTreeMap<Arc<str>, (u64, OrgState)>;

/// Where an org is.
#[derive(Clone)]
pub enum OrgState {
    Starting,
    Running(Arc<holdline_client::Stats>),
    /// Not receiving, and why.
    Down(String),
}

/// Every org's state now.
pub fn snapshot(status: &Status) -> Vec<(Arc<str>, OrgState)> {
    let map = status.lock();
    map.iter()
        .map(|(k, (_, v))| (k.clone(), v.clone()))
        .collect()
}

/// Sets an org's state, unless a holder started since in its place set it already.
fn set(status: &Status, name: &Arc<str>, generation: u64, state: OrgState) {
    let up = i64::from(matches!(state, OrgState::Running(_)));
    let mut map = status.lock();
    if map.get(name).is_some_and(|(g, _)| *g > generation) {
        return;
    }
    map.insert(name.clone(), (generation, state));
    status
        .up
        .get_or_create(&vec![("org", name.to_string())])
        .set(up);
}

/// Forgets an org's state if holder `generation` set it (not one started since in its
/// place).
fn clear(status: &Status, name: &Arc<str>, generation: u64) {
    let mut map = status.lock();
    if map.get(name).is_some_and(|(g, _)| *g == generation) {
        map.remove(name);
        status.up.remove(&vec![("org", name.to_string())]);
    }
}

/// Longest wait between an org's attempts to start again.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// How long an org must stay live before a later failure starts its backoff from the
/// shortest wait again (an org that fails just after each start keeps backing off).
const STEADY: Duration = Duration::from_secs(60);

/// One org, held until `stop`: starts its client, forwards its records, moves its topics
/// when told, and on a fatal error or a failed start waits (with backoff) and starts again.
struct Holder {
    name: Arc<str>,
    config: ClientConfig,
    start_timeout: Duration,
    /// A gap owed from this time when the org next receives, and why it was not (a
    /// previous run that did not close its spool; a restart of the org's client).
    owed: Option<(SystemTime, String)>,
    status: Status,
    /// This holder's number: the entries it made in `status` and `metrics` are its own to
    /// remove when it ends.
    generation: u64,
    /// Where each running org's engine series are served.
    metrics: holdline_client::telemetry::metrics::Orgs,
    /// New topic lists for the org (a SIGHUP that changed only them).
    topics: mpsc::UnboundedReceiver<Lists>,
    /// The holder this one replaces (a SIGHUP that changed the org's settings): this one
    /// starts once it has ended, and takes over the gap it owed.
    predecessor: Option<tokio::sync::oneshot::Receiver<Handover>>,
    /// Where a successor waits for this holder's end; when one does, the gap this holder
    /// owes is handed to it instead of written.
    successor: Succession,
    /// In a cluster: where the org's coverage is reported. Its own gaps are then not
    /// written (the first holder writes the cluster's).
    reporting: Option<super::cluster::Reporting>,
}

/// What an org's holder leaves to the one that replaces it.
struct Handover {
    /// Since when a gap is owed (the org was not receiving), and why.
    owed: Option<(SystemTime, String)>,
    /// The topics the org last held.
    held: Arc<[String]>,
}

/// Why an org did not receive, for the gap that reports it.
const NOT_RUNNING: &str =
    "holdline was not running: the previous run stopped without closing its spool";

impl Holder {
    async fn run(
        self,
        out: mpsc::Sender<Item>,
        mut stop: watch::Receiver<bool>,
        first: tokio::sync::oneshot::Sender<FirstStart>,
    ) {
        let Holder {
            name,
            mut config,
            start_timeout,
            owed,
            status,
            generation,
            metrics,
            mut topics,
            predecessor,
            successor,
            reporting,
        } = self;
        let clustered = reporting.is_some();
        let lookback = config.timings.gap_lookback;
        let mut first = Some(first);
        let mut backoff = Backoff::new(Duration::from_secs(1), RETRY_MAX);
        let (mut owed_since, mut why) = match owed {
            Some((since, why)) => (Some(since), why),
            None => (None, String::new()),
        };
        // The topics the org last held, for a gap owed when it stops while down.
        let mut held: Arc<[String]> = Arc::from(Vec::new());
        // The old client of the org ends first (its sockets closed, its last records
        // forwarded), so the two never stream side by side; what it owed is owed here.
        // Told to stop meanwhile, this one ends at once (the old one then reports what it
        // owed itself).
        let left = match predecessor {
            Some(predecessor) => tokio::select! {
                left = predecessor => left.ok(),
                _ = stop.wait_for(|s| *s) => {
                    clear(&status, &name, generation);
                    return;
                }
            },
            None => None,
        };
        if let Some(left) = left {
            held = left.held;
            if let Some((since, reason)) = left.owed
                && owed_since.is_none_or(|mine| since < mine)
            {
                owed_since = Some(since);
                why = reason;
            }
        }
        let mut engine: Option<Arc<holdline_client::Stats>> = None;
        let mut topics_open = true;
        'held: loop {
            if *stop.borrow() {
                break 'held;
            }
            // In a cluster the org's holders share its OAuth client's channels.
            let mut run_config = config.clone();
            let slots = reporting
                .as_ref()
                .map(|r| r.share_channels(&name, &mut run_config));
            let started = tokio::select! {
                started = tokio::time::timeout(start_timeout, Client::start(run_config)) => Some(started),
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(started) = started else {
                if let Some(slots) = slots {
                    slots.release().await;
                }
                break 'held;
            };
            let (handle, mut stream) = match started {
                Ok(Ok(started)) => started,
                failed => {
                    if let Some(slots) = slots {
                        slots.release().await;
                    }
                    let (error, fatal) = match failed {
                        Ok(Err(e)) => (e.to_string(), !e.is_retryable()),
                        _ => (
                            format!("nothing answered within {start_timeout:?} (--start-timeout)"),
                            false,
                        ),
                    };
                    let wait = backoff.next().unwrap_or(RETRY_MAX);
                    tracing::error!(org = %name, error = %error, retry_in = ?wait, "org not receiving: its client could not start");
                    owed_since.get_or_insert_with(SystemTime::now);
                    why = format!("the org's client was not running: {error}");
                    set(&status, &name, generation, OrgState::Down(error.clone()));
                    if let Some(first) = first.take() {
                        let _ = first.send(FirstStart::Failed { error, fatal });
                    }
                    let waited =
                        wait_out(wait, &mut stop, &mut topics, &mut topics_open, &mut config).await;
                    if waited { continue } else { break 'held }
                }
            };
            if let Some(first) = first.take() {
                let _ = first.send(FirstStart::Live);
            }
            let reload = super::listen::Reload::new(&config);
            set(
                &status,
                &name,
                generation,
                OrgState::Running(handle.stats().clone()),
            );
            metrics.add(&name, handle.stats().clone());
            engine = Some(handle.stats().clone());
            let reporter = reporting
                .as_ref()
                .map(|r| (r.node.clone(), r.reporter(&name)));
            let mut report_tick = tokio::time::interval(super::cluster::EVERY);
            let mut stopping = false;
            let mut live_since: Option<tokio::time::Instant> = None;
            // A fatal error, once seen: the client is shut down and what it still holds
            // is forwarded until its stream ends.
            let mut failed: Option<holdline_client::ClientError> = None;
            let ended = loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = report_tick.tick(), if reporter.is_some() => {
                        if let Some((node, reporter)) = &reporter {
                            let (report, topics) = super::cluster::report(node, &stream, None);
                            reporter.send(report, topics);
                        }
                        continue;
                    }
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        handle.shutdown();
                        continue;
                    }
                    lists = topics.recv(), if topics_open && !stopping => {
                        match lists {
                            Some(lists) => {
                                take_lists(&mut config, &lists);
                                reload.apply(lists, &handle);
                            }
                            None => topics_open = false,
                        }
                        continue;
                    }
                };
                let sent = match item {
                    None => break failed.take(),
                    Some(Err(e)) => {
                        if failed.is_none() {
                            owed_since.get_or_insert_with(SystemTime::now);
                            stopping = true;
                            handle.shutdown();
                            failed = Some(e);
                        }
                        Ok(())
                    }
                    Some(Ok(Event::Notification(n))) => {
                        out.send(Item::Event(name.clone(), n)).await
                    }
                    Some(Ok(Event::Gap(g))) if clustered => {
                        // The other holder may have covered it; the cluster's gap-finder
                        // decides from both holders' reports.
                        tracing::warn!(org = %name, from = ?g.from, to = ?g.to, reason = %g.reason, "this node's own sockets missed a window; a gap of the cluster only if no other holder covered it");
                        Ok(())
                    }
                    Some(Ok(Event::Gap(g))) => out.send(Item::Gap(name.clone(), g)).await,
                    Some(Ok(Event::Rejected(r))) => out.send(Item::Rejected(name.clone(), r)).await,
                    Some(Ok(Event::State(change))) => {
                        tracing::info!(org = %name, kind = ?change.kind, channel = change.channel.as_deref().unwrap_or("-"), "{}", change.detail);
                        if change.kind == StateKind::Live {
                            live_since.get_or_insert_with(tokio::time::Instant::now);
                            held = handle.topics().into();
                            if clustered {
                                owed_since = None;
                            }
                            if let Some(since) = owed_since.take() {
                                let reason = match why.is_empty() {
                                    true => NOT_RUNNING.to_owned(),
                                    false => why.clone(),
                                };
                                let gap = super::listen::owed_gap(
                                    handle.topics().into(),
                                    since,
                                    lookback,
                                    reason,
                                );
                                holdline_client::telemetry::notable::gap(handle.stats(), &gap);
                                if out.send(Item::Gap(name.clone(), gap)).await.is_err() {
                                    handle.shutdown();
                                    break 'held;
                                }
                            }
                        }
                        Ok(())
                    }
                };
                if sent.is_err() {
                    // The writer is gone: the process is stopping.
                    handle.shutdown();
                    break 'held;
                }
            };
            if let Some(slots) = slots {
                slots.release().await;
            }
            if let Some((node, reporter)) = reporter {
                let why = match &ended {
                    None => "this node stopped holding the org".to_owned(),
                    Some(e) => format!("the org's client stopped: {e}"),
                };
                let (report, topics) = super::cluster::report(&node, &stream, Some(&why));
                reporter.finish(report, topics).await;
            }
            if live_since.is_some_and(|t| t.elapsed() >= STEADY) {
                backoff.reset();
            }
            match ended {
                None if *stop.borrow() => break 'held,
                None => {
                    why = "the org's client ended by itself".into();
                    tracing::error!(org = %name, "org's client ended by itself; starting it again");
                }
                Some(e) => {
                    why = format!("the org's client was not running: {e}");
                    tracing::error!(org = %name, error = %e, "org not receiving: its client stopped on a fatal error; starting it again with backoff");
                }
            }
            owed_since.get_or_insert_with(SystemTime::now);
            set(&status, &name, generation, OrgState::Down(why.clone()));
            let wait = backoff.next().unwrap_or(RETRY_MAX);
            if !wait_out(wait, &mut stop, &mut topics, &mut topics_open, &mut config).await {
                break 'held;
            }
        }
        clear(&status, &name, generation);
        if let Some(stats) = &engine {
            metrics.remove_engine(&name, stats);
        }
        let successor = successor.end();
        if clustered {
            // The cluster's gap-finder reports the time no holder covered.
            if let Some(successor) = successor {
                let _ = successor.send(Handover { owed: None, held });
            }
            return;
        }
        if let Some(successor) = successor {
            let owed = owed_since.map(|since| (since, why));
            if let Err(Handover { owed, held }) = successor.send(Handover { owed, held }) {
                // The successor is gone (the process is stopping): report it here.
                (owed_since, why) = match owed {
                    Some((since, why)) => (Some(since), why),
                    None => (None, String::new()),
                };
                held_gap(&out, &name, owed_since, &why, held, lookback).await;
            }
            return;
        }
        held_gap(&out, &name, owed_since, &why, held, lookback).await;
    }
}

/// Stopping while down: the time since is reported now, or a clean close of the spool
/// would erase it.
async fn held_gap(
    out: &mpsc::Sender<Item>,
    name: &Arc<str>,
    owed_since: Option<SystemTime>,
    why: &str,
    held: Arc<[String]>,
    lookback: Duration,
) {
    {
        if let Some(since) = owed_since {
            if held.is_empty() {
                tracing::error!(org = %name, "stopping while the org was not receiving, before it ever held a topic: no gap can name its topics");
                return;
            }
            let gap = super::listen::owed_gap(
                held,
                since,
                lookback,
                format!("holdline stopped while the org was not receiving: {why}"),
            );
            let _ = out.send(Item::Gap(name.clone(), gap)).await;
        }
    }
}

/// Waits `wait` before the next start, taking new topic lists meanwhile; false when told
/// to stop.
async fn wait_out(
    wait: Duration,
    stop: &mut watch::Receiver<bool>,
    topics: &mut mpsc::UnboundedReceiver<Lists>,
    topics_open: &mut bool,
    config: &mut ClientConfig,
) -> bool {
    let until = tokio::time::Instant::now() + wait;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            _ = stop.wait_for(|s| *s) => return false,
            lists = topics.recv(), if *topics_open => match lists {
                Some(lists) => take_lists(config, &lists),
                None => *topics_open = false,
            },
        }
    }
}

fn take_lists(config: &mut ClientConfig, lists: &Lists) {
    config.topics = lists.topics.clone();
    config.queues = lists.queues.clone();
    config.users = lists.users.clone();
}

/// Each org `args` describes: its `[[org]]` tables, and the org of the flags and
/// environment when they name a client.
fn org_configs(args: &ListenArgs) -> Result<Vec<(Arc<str>, ClientConfig)>, ConfigError> {
    let file = args.config.clone().unwrap_or_default();
    let mut orgs: Vec<(Arc<str>, ClientConfig)> = Vec::new();
    if args.service.client_id.is_some() {
        let config = args.client_config()?;
        orgs.push((Arc::from(config.org.as_str()), config));
    }
    for table in &args.orgs {
        let config = table.listen_args(args, &file)?.client_config()?;
        orgs.push((Arc::from(table.name.as_str()), config));
    }
    check_names(orgs.iter().map(|(n, _)| &**n), &file)?;
    Ok(orgs)
}

/// Why the first topic of `topics` that is not valid is not.
fn bad_topic(topics: &[String]) -> Option<String> {
    topics
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .find_map(|t| {
            holdline_proto::topic::expand(t)
                .err()
                .map(|e| e.to_string())
        })
}

/// Whether two configurations of an org differ in their topic lists at most, so the
/// running client can be moved instead of started again.
fn only_topics_differ(a: &ClientConfig, b: &ClientConfig) -> bool {
    let bare = |c: &ClientConfig| ClientConfig {
        topics: Vec::new(),
        queues: Vec::new(),
        users: Vec::new(),
        ..c.clone()
    };
    bare(a) == bare(b)
}

/// Where a successor waits for a holder's end.
type SuccessorSlot = Arc<std::sync::Mutex<Waiting>>;

/// Whether a successor waits for a holder's end.
#[derive(Default)]
enum Waiting {
    /// None yet; one may come.
    #[default]
    Open,
    /// One waits for the handover.
    Successor(tokio::sync::oneshot::Sender<Handover>),
    /// The holder has ended (or is ending): a new holder of the org need not wait.
    Ended,
}

/// A holder's end of its [`SuccessorSlot`]. However the holder ends (a panic included),
/// the slot is closed and a successor waiting on it goes on.
struct Succession(SuccessorSlot);

impl Succession {
    /// Closes the slot; the successor waiting on it, if any.
    fn end(&self) -> Option<tokio::sync::oneshot::Sender<Handover>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *slot, Waiting::Ended) {
            Waiting::Successor(tx) => Some(tx),
            Waiting::Open | Waiting::Ended => None,
        }
    }
}

impl Drop for Succession {
    fn drop(&mut self) {
        self.end();
    }
}

/// Where a new holder waits for the end of the one it replaces; None when that one has
/// ended (or another successor already waits).
fn wait_on(slot: &SuccessorSlot) -> Option<tokio::sync::oneshot::Receiver<Handover>> {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    matches!(*slot, Waiting::Open).then(|| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *slot = Waiting::Successor(tx);
        rx
    })
}

/// A running org, as the process holds it.
struct Held {
    config: ClientConfig,
    stop: watch::Sender<bool>,
    topics: mpsc::UnboundedSender<Lists>,
    successor: SuccessorSlot,
    task: tokio::task::JoinHandle<()>,
}

/// An org told to stop whose task may still be closing its sockets.
struct Ending {
    name: Arc<str>,
    successor: SuccessorSlot,
    task: tokio::task::JoinHandle<()>,
}

/// Every org of the process: starts, moves and stops them.
struct Fleet {
    orgs: std::collections::BTreeMap<Arc<str>, Held>,
    ending: Vec<Ending>,
    /// Where the holders send their records; None once stopping.
    out: Option<mpsc::Sender<Item>>,
    status: Status,
    engines: holdline_client::telemetry::metrics::Orgs,
    start_timeout: Duration,
    generation: u64,
    /// In a cluster: this node, what it knows of the others, and every org configured
    /// (of which it holds those assigned to it).
    cluster: Option<ClusterState>,
    /// Back-fills the gaps of every org configured.
    backfill: Option<Arc<super::backfill::Backfill>>,
}

/// A node's part in a cluster.
struct ClusterState {
    id: String,
    view: watch::Receiver<holdline_cluster::View>,
    all: Vec<(Arc<str>, ClientConfig)>,
    /// Every org's name, for the gap-finder.
    names: watch::Sender<Vec<Arc<str>>>,
    reporting: super::cluster::Reporting,
    /// Stops the gap-finder.
    stop_gaps: watch::Sender<bool>,
    /// What the nodes report they cover.
    known: holdline_cluster::ledger::Known,
    lease: Duration,
    /// Orgs this node no longer holds but keeps until another holder covers them, each
    /// with when it stops them anyway.
    handing: std::collections::HashMap<Arc<str>, tokio::time::Instant>,
}

impl ClusterState {
    /// The orgs this node holds now.
    fn assigned(&self) -> Vec<(Arc<str>, ClientConfig)> {
        let view = self.view.borrow().clone();
        let names: Vec<String> = self.all.iter().map(|(n, _)| n.to_string()).collect();
        let mine: std::collections::HashSet<&str> = view
            .mine(&self.id, &names, holdline_cluster::HOLDERS)
            .into_iter()
            .collect();
        self.all
            .iter()
            .filter(|(n, _)| mine.contains(&**n))
            .cloned()
            .collect()
    }
}

impl Fleet {
    /// Starts an org; if a holder of that name is still ending, the new one starts once
    /// it has ended and takes over what it owed.
    fn start(
        &mut self,
        name: Arc<str>,
        config: ClientConfig,
        owed: Option<(SystemTime, String)>,
    ) -> Option<tokio::sync::oneshot::Receiver<FirstStart>> {
        let out = self.out.clone()?;
        self.ending.retain(|e| !e.task.is_finished());
        let predecessor = self
            .ending
            .iter()
            .rev()
            .find(|e| e.name == name)
            .and_then(|e| wait_on(&e.successor));
        let (first, first_rx) = tokio::sync::oneshot::channel();
        let (stop, stopped) = watch::channel(false);
        let (topics, topics_rx) = mpsc::unbounded_channel();
        let successor = SuccessorSlot::default();
        self.generation += 1;
        // Known as starting before its task runs, so `/readyz` never misses it.
        set(&self.status, &name, self.generation, OrgState::Starting);
        let holder = Holder {
            name: name.clone(),
            config: config.clone(),
            start_timeout: self.start_timeout,
            owed,
            status: self.status.clone(),
            generation: self.generation,
            metrics: self.engines.clone(),
            topics: topics_rx,
            predecessor,
            successor: Succession(successor.clone()),
            reporting: self.cluster.as_ref().map(|c| c.reporting.clone()),
        };
        let task = tokio::spawn(holder.run(out, stopped, first));
        self.orgs.insert(
            name,
            Held {
                config,
                stop,
                topics,
                successor,
                task,
            },
        );
        Some(first_rx)
    }

    /// Stops one org: its sockets close with 1000 and its client lets its channels go.
    fn stop_one(&mut self, name: &Arc<str>) {
        if let Some(held) = self.orgs.remove(name) {
            let _ = held.stop.send(true);
            self.ending.push(Ending {
                name: name.clone(),
                successor: held.successor,
                task: held.task,
            });
        }
    }

    /// Stops every org; the holders' senders end the stream once they are done.
    fn stop(&mut self) {
        if let Some(cluster) = &self.cluster {
            let _ = cluster.stop_gaps.send(true);
        }
        let names: Vec<Arc<str>> = self.orgs.keys().cloned().collect();
        for name in &names {
            self.stop_one(name);
        }
        self.out = None;
    }

    /// Every holder's task, to wait for at the end.
    fn tasks(self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = self.ending.into_iter().map(|e| e.task).collect();
        tasks.extend(self.orgs.into_values().map(|h| h.task));
        tasks
    }

    /// SIGHUP: reads the configuration again; orgs added start, orgs removed stop, an org
    /// whose topics alone changed moves them, an org changed otherwise starts again (with a
    /// gap over the moment between), and every other org is left alone.
    fn reload(&mut self, flags: &ListenArgs) {
        if self.out.is_none() {
            return;
        }
        let wanted = match flags.resolved().and_then(|args| org_configs(&args)) {
            Ok(wanted) => wanted,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the configuration is not valid; every org is kept as it is");
                return;
            }
        };
        if let Some(b) = &self.backfill {
            b.set_orgs(&wanted);
        }
        let wanted = match &mut self.cluster {
            Some(cluster) => {
                cluster.all = wanted;
                cluster
                    .names
                    .send_replace(cluster.all.iter().map(|(n, _)| n.clone()).collect());
                let mut wanted = cluster.assigned();
                // Orgs being handed over stay until another holder covers them.
                cluster.handing.retain(|n, _| self.orgs.contains_key(n));
                for name in cluster.handing.keys() {
                    if let Some(held) = self.orgs.get(name)
                        && !wanted.iter().any(|(n, _)| n == name)
                    {
                        wanted.push((name.clone(), held.config.clone()));
                    }
                }
                wanted
            }
            None => wanted,
        };
        self.apply(wanted, "SIGHUP");
    }

    /// The cluster's view changed: holds the orgs now assigned to this node, and only those.
    fn reassign(&mut self) {
        if self.out.is_none() {
            return;
        }
        let Some(cluster) = &self.cluster else { return };
        let view = cluster.view.borrow().clone();
        self.status.set_cluster(view.reason.clone());
        match &view.reason {
            Some(why) => {
                tracing::error!(node = %cluster.id, reason = %why, "this node holds no org")
            }
            None => tracing::info!(node = %cluster.id, members = ?view.members, "cluster members"),
        }
        let mut wanted = cluster.assigned();
        let holding = view.reason.is_none();
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if !holding {
            // It may have been cut off: the others hold its orgs now.
            cluster.handing.clear();
        } else {
            // An org that moved away is kept until another holder covers it.
            let deadline = tokio::time::Instant::now() + cluster.lease * 3;
            for (name, held) in &self.orgs {
                if !wanted.iter().any(|(n, _)| n == name) {
                    cluster.handing.entry(name.clone()).or_insert(deadline);
                    wanted.push((name.clone(), held.config.clone()));
                }
            }
            let assigned: Vec<Arc<str>> = cluster.assigned().into_iter().map(|(n, _)| n).collect();
            cluster.handing.retain(|n, _| !assigned.contains(n));
        }
        self.apply(wanted, "cluster");
    }

    /// Stops each org being handed over once another holder covers it (or it waited too
    /// long for one).
    fn hand_over(&mut self) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let now = tokio::time::Instant::now();
        let done: Vec<(Arc<str>, bool)> = cluster
            .handing
            .iter()
            .filter_map(|(name, deadline)| {
                let covered = cluster
                    .known
                    .covered_elsewhere(name, &cluster.id, cluster.lease);
                (covered || now >= *deadline).then(|| (name.clone(), covered))
            })
            .collect();
        for (name, _) in &done {
            cluster.handing.remove(name);
        }
        for (name, covered) in done {
            match covered {
                true => {
                    tracing::info!(org = %name, "handed over: another holder covers the org; closing its sockets here")
                }
                false => {
                    tracing::warn!(org = %name, "no other holder covered the org in time; closing its sockets here anyway")
                }
            }
            self.stop_one(&name);
        }
    }

    /// Runs exactly the orgs `wanted`: starts the new, stops the gone, moves or restarts
    /// the changed, and leaves the rest alone; `why` names the cause in the log.
    fn apply(&mut self, wanted: Vec<(Arc<str>, ClientConfig)>, why: &str) {
        let names: std::collections::HashSet<Arc<str>> =
            wanted.iter().map(|(n, _)| n.clone()).collect();
        let gone: Vec<Arc<str>> = self
            .orgs
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        let (mut added, mut moved, mut restarted) = (0, 0, 0);
        for name in &gone {
            tracing::info!(org = %name, "{why}: org removed; closing its sockets");
            self.stop_one(name);
        }
        for (name, config) in wanted {
            match self.orgs.get_mut(&name) {
                None => {
                    tracing::info!(org = %name, "{why}: org added; starting it");
                    self.start(name, config, None);
                    added += 1;
                }
                Some(held) if held.config == config => {}
                Some(_) if bad_topic(&config.topics).is_some() => {
                    let error = bad_topic(&config.topics).unwrap_or_default();
                    tracing::error!(org = %name, %error, "{why}: a topic of the org is not valid; the org is kept as it is");
                }
                Some(held) if only_topics_differ(&held.config, &config) => {
                    tracing::info!(org = %name, "{why}: the org's topics changed; moving them");
                    let _ = held.topics.send(super::listen::Lists::of(&config));
                    held.config = config;
                    moved += 1;
                }
                Some(_) => {
                    tracing::info!(org = %name, "{why}: the org's settings changed; starting its client again with them");
                    self.stop_one(&name);
                    let why = format!(
                        "the org's settings changed ({why}) and its client started again with them"
                    );
                    self.start(name, config, Some((SystemTime::now(), why)));
                    restarted += 1;
                }
            }
        }
        tracing::info!(
            orgs = self.orgs.len(),
            added,
            removed = gone.len(),
            moved,
            restarted,
            "{why}: orgs reloaded"
        );
    }
}

/// Runs `listen` over every org of `args` (its `[[org]]` tables, and the org the flags
/// and environment describe when they name a client) until `--duration`, a signal, or
/// every org failing to start for a reason only a change of configuration can fix.
/// `flags` are the settings before the file was read, for SIGHUP to read it again.
pub async fn run(flags: ListenArgs, args: ListenArgs) -> anyhow::Result<()> {
    use anyhow::Context;

    let orgs = org_configs(&args)?;
    let lookback = args.timings()?.gap_lookback;
    let filter = args.filter()?;
    let mut registry = prometheus_client::registry::Registry::default();
    let (mut out, filtered) =
        super::listen::open_output(&args, lookback, filter.is_some(), &mut registry)?;
    let owed_since = out.spooled.as_ref().and_then(|s| s.unclean_since);
    let mut backfilled = match args.backfill()? {
        Some((backfill, records)) => {
            backfill.register(&mut registry);
            backfill.set_orgs(&orgs);
            out.backfill = Some(backfill);
            Some(records)
        }
        None => None,
    };
    let status = Status::default();
    let engines = holdline_client::telemetry::metrics::Orgs::default();
    engines.register(&mut registry);
    status.register(&mut registry);
    let gap_metrics = super::cluster::GapMetrics::default();
    if args.cluster.is_some() {
        gap_metrics.register(&mut registry);
    }
    if let Some(spooled) = &out.spooled {
        spooled.observe(super::spooled::Engines::Orgs(engines.clone()));
    }
    if let Some(addr) = args.metrics_addr {
        let ready = super::observe::Readiness::Orgs(status.clone());
        super::observe::serve(addr, ready, registry).await?;
    }
    let signals = super::Signals::new().context("cannot install the signal handlers")?;
    tracing::info!(orgs = orgs.len(), "starting");

    let (tx, mut rx) = mpsc::channel::<Item>(super::listen::BATCH);
    let mut fleet = Fleet {
        orgs: Default::default(),
        ending: Vec::new(),
        out: Some(tx),
        status,
        engines,
        start_timeout: args.start_timeout(),
        generation: 0,
        cluster: None,
        backfill: out.backfill.clone(),
    };
    let mut firsts = Vec::with_capacity(orgs.len());
    let joined = match &args.cluster {
        Some(url) => {
            let id = args.node.clone().unwrap_or_else(host_name);
            let lease = args.cluster_lease.unwrap_or(CLUSTER_LEASE);
            let parsed = holdline_cluster::ClusterUrl::parse(url).map_err(super::UsageError)?;
            let joined = holdline_cluster::join(&parsed, &id, lease)
                .await
                .map_err(|e| super::UsageError(format!("cannot join the cluster: {e}")))?;
            tracing::info!(node = %id, cluster = %holdline_cluster::node::shown(&parsed.servers), lease = ?lease, orgs = orgs.len(), "joined the cluster; holding the orgs assigned to this node");
            fleet.status.set_cluster(Some("joining".to_owned()));
            let (names, names_rx) = watch::channel(orgs.iter().map(|(n, _)| n.clone()).collect());
            let (stop_gaps, gaps_stopped) = watch::channel(false);
            let known = joined.coverage.follow();
            if let Some(out) = fleet.out.clone() {
                let finder = super::cluster::GapFinder {
                    known: known.clone(),
                    coverage: joined.coverage.clone(),
                    id: id.clone(),
                    view: joined.view.clone(),
                    orgs: names_rx,
                    lease,
                    out,
                    metrics: gap_metrics.clone(),
                    stop: gaps_stopped,
                };
                tokio::spawn(finder.run());
            }
            fleet.cluster = Some(ClusterState {
                reporting: super::cluster::Reporting {
                    node: id.clone(),
                    coverage: joined.coverage.clone(),
                    channels: joined.channels.clone(),
                    made: joined.made.clone(),
                    channel_audit: args.channel_audit.unwrap_or(holdline_client::DEFAULT_AUDIT),
                },
                id,
                view: joined.view.clone(),
                all: orgs,
                names,
                stop_gaps,
                known,
                lease,
                handing: Default::default(),
            });
            Some(joined)
        }
        None => {
            for (name, config) in orgs {
                let owed = owed_since.map(|since| (since, String::new()));
                if let Some(first) = fleet.start(name.clone(), config, owed) {
                    firsts.push((name, first));
                }
            }
            None
        }
    };
    let mut view = joined.as_ref().map(|j| j.view.clone());
    let mut joined = joined;
    let mut leaving: Option<tokio::task::JoinHandle<()>> = None;
    // The process fails only when no org could start for a reason of configuration (a
    // cluster node holds what it is given, possibly nothing).
    let (refused, mut all_refused) = tokio::sync::oneshot::channel::<String>();
    let clustered = joined.is_some();
    tokio::spawn(async move {
        if clustered {
            return;
        }
        let mut reasons = Vec::new();
        for (name, first) in firsts {
            match first.await {
                Ok(FirstStart::Failed { error, fatal: true }) => {
                    reasons.push(format!("{name}: {error}"))
                }
                _ => return,
            }
        }
        let _ = refused.send(reasons.join("; "));
    });
    // Signals are watched beside the output (which may be blocked on a full stdout), so
    // that a second one exits at once even during the final drain.
    let (signalled, mut signal) = mpsc::unbounded_channel();
    tokio::spawn(forward_signals(signals, signalled));

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut hand_tick = tokio::time::interval(super::cluster::EVERY);
    let mut refusal_open = true;
    let result: anyhow::Result<()> = loop {
        let item = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() && fleet.out.is_some() => {
                fleet.stop();
                continue;
            }
            Some(signal) = signal.recv() => {
                match signal {
                    super::Signal::Stop => {
                        // A cluster node gives its lease up first: the others take its
                        // orgs while its own sockets close.
                        if let Some(joined) = joined.take() {
                            leaving = Some(tokio::spawn(joined.leave()));
                        }
                        fleet.stop()
                    }
                    super::Signal::Reload => fleet.reload(&flags),
                }
                continue;
            }
            changed = async { match view.as_mut() {
                Some(v) => v.changed().await.is_ok(),
                None => std::future::pending().await,
            } } => {
                if changed {
                    fleet.reassign();
                } else {
                    // The membership task ended: without a lease this node holds nothing.
                    view = None;
                    if fleet.out.is_some() {
                        tracing::error!("the cluster membership task ended; this node holds no org");
                        fleet.status.set_cluster(Some("the cluster membership task ended".to_owned()));
                        fleet.apply(Vec::new(), "cluster");
                    }
                }
                continue;
            }
            _ = hand_tick.tick(), if fleet.cluster.as_ref().is_some_and(|c| !c.handing.is_empty()) => {
                fleet.hand_over();
                continue;
            }
            reasons = &mut all_refused, if refusal_open => match reasons {
                Ok(reasons) => {
                    fleet.stop();
                    break Err(super::UsageError(format!("no org could start: {reasons}")).into());
                }
                // Some org started (or is still trying): nothing more to wait for here.
                Err(_) => { refusal_open = false; continue; }
            },
            item = rx.recv() => item,
            // A back-fill's records, when no event waits.
            Some(line) = super::listen::next_backfilled(&mut backfilled) => {
                out.backfilled(&line, filter.as_ref(), &filtered);
                if let Err(e) = out.flush().await {
                    break Err(e);
                }
                continue;
            }
        };
        let mut item = item;
        let mut taken = 0;
        let ended = loop {
            let Some(next) = item else { break true };
            write(&mut out, next, filter.as_ref(), &filtered);
            taken += 1;
            if taken >= super::listen::BATCH || out.buf.len() >= out.flush_bytes() {
                break false;
            }
            match rx.try_recv() {
                Ok(next) => item = Some(next),
                Err(_) => break false,
            }
        };
        if let Err(e) = out.flush().await {
            break Err(e);
        }
        if ended {
            break Ok(());
        }
    };
    fleet.stop();
    // What the holders still send while their sockets close.
    while let Some(item) = rx.recv().await {
        write(&mut out, item, filter.as_ref(), &filtered);
    }
    for task in fleet.tasks() {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "an org's task died");
        }
    }
    if let Some(joined) = joined {
        joined.leave().await;
    }
    if let Some(leaving) = leaving {
        let _ = leaving.await;
    }
    super::listen::close_backfill(&mut out, &mut backfilled, filter.as_ref(), &filtered);
    out.finish(result).await
}

/// How long a node's lease lasts without renewal unless told.
const CLUSTER_LEASE: Duration = Duration::from_secs(10);

/// The host's name, for the id of a cluster node.
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "holdline".to_owned())
}

/// Passes signals on to the writer loop; the second SIGINT/SIGTERM exits at once.
async fn forward_signals(mut signals: super::Signals, to: mpsc::UnboundedSender<super::Signal>) {
    let mut stopping = false;
    loop {
        let signal = signals.next().await;
        match signal {
            super::Signal::Stop if stopping => super::listen::exit_at_once(),
            super::Signal::Stop => {
                stopping = true;
                tracing::info!("stopping: closing every socket (a second signal exits at once)");
            }
            super::Signal::Reload => {}
        }
        if to.send(signal).is_err() {
            return;
        }
    }
}

/// One record into the output, unless the filter leaves it out.
fn write(
    out: &mut super::listen::Output,
    item: Item,
    filter: Option<&holdline_proto::filter::Filter>,
    filtered: &super::listen::Filtered,
) {
    match item {
        Item::Event(org, n) => out.event(&n, &org, filter, filtered),
        Item::Gap(org, gap) => out.gap(&gap, &org, None, filter, filtered),
        Item::ClusterGap(org, gap, id) => out.gap(&gap, &org, Some(&id), filter, filtered),
        Item::Rejected(org, r) => out.rejected(&r, &org, filter, filtered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handover() -> Handover {
        Handover {
            owed: None,
            held: Arc::from(vec!["v2.users.u1.presence".to_owned()]),
        }
    }

    #[test]
    fn a_successor_gets_what_the_holder_leaves() {
        let slot = SuccessorSlot::default();
        let holder = Succession(slot.clone());
        let mut waiting = wait_on(&slot).expect("the holder has not ended");
        assert!(wait_on(&slot).is_none(), "one successor at a time");
        holder
            .end()
            .expect("a successor waits")
            .send(handover())
            .ok()
            .unwrap();
        let left = waiting.try_recv().expect("handed over");
        assert_eq!(left.held.len(), 1);
    }

    #[test]
    fn a_holder_that_ended_keeps_no_one_waiting() {
        let slot = SuccessorSlot::default();
        let holder = Succession(slot.clone());
        assert!(holder.end().is_none());
        // The holder's task may not have finished yet: a new holder must not wait on it.
        assert!(wait_on(&slot).is_none());
    }

    #[test]
    fn a_holder_that_dies_lets_its_successor_go_on() {
        let slot = SuccessorSlot::default();
        let holder = Succession(slot.clone());
        let mut waiting = wait_on(&slot).unwrap();
        drop(holder);
        assert!(matches!(
            waiting.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
    }
}
