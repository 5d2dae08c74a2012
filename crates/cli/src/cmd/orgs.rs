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
use super::listen::ListenArgs;
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

/// Each org's state, for `/readyz`.
pub type Status = Arc<std::sync::Mutex<std::collections::BTreeMap<Arc<str>, OrgState>>>;

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
    let map = status.lock().unwrap_or_else(|p| p.into_inner());
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn set(status: &Status, name: &Arc<str>, state: OrgState) {
    let mut map = status.lock().unwrap_or_else(|p| p.into_inner());
    map.insert(name.clone(), state);
}

/// Longest wait between an org's attempts to start again.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// One org, held until `stop`: starts its client, forwards its records, and on a
/// fatal error or a failed start waits (with backoff) and starts again.
pub struct Holder {
    pub name: Arc<str>,
    pub config: ClientConfig,
    pub start_timeout: Duration,
    /// The time from which a gap is owed when the org next receives (a previous run
    /// that did not close its spool).
    pub owed_since: Option<SystemTime>,
    pub status: Status,
    /// Where each running org's engine series are served.
    pub metrics: holdline_client::telemetry::metrics::Orgs,
}

impl Holder {
    pub async fn run(
        self,
        out: mpsc::Sender<Item>,
        mut stop: watch::Receiver<bool>,
        first: tokio::sync::oneshot::Sender<FirstStart>,
    ) {
        let Holder {
            name,
            config,
            start_timeout,
            mut owed_since,
            status,
            metrics,
        } = self;
        set(&status, &name, OrgState::Starting);
        let lookback = config.timings.gap_lookback;
        let mut first = Some(first);
        let mut backoff = Backoff::new(Duration::from_secs(1), RETRY_MAX);
        // Why the org was last not receiving, for the gap that reports it.
        let mut why = String::new();
        // The topics the org last held, for a gap owed when it stops while down.
        let mut held: Arc<[String]> = Arc::from(Vec::new());
        'held: loop {
            if *stop.borrow() {
                break 'held;
            }
            let started = tokio::select! {
                started = tokio::time::timeout(start_timeout, Client::start(config.clone())) => started,
                _ = stop.wait_for(|s| *s) => break 'held,
            };
            let (handle, mut stream) = match started {
                Ok(Ok(started)) => started,
                failed => {
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
                    why = error.clone();
                    set(&status, &name, OrgState::Down(error.clone()));
                    if let Some(first) = first.take() {
                        let _ = first.send(FirstStart::Failed { error, fatal });
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => continue,
                        _ = stop.wait_for(|s| *s) => break 'held,
                    }
                }
            };
            if let Some(first) = first.take() {
                let _ = first.send(FirstStart::Live);
            }
            set(&status, &name, OrgState::Running(handle.stats().clone()));
            metrics.add(&name, handle.stats().clone());
            let mut stopping = false;
            // A fatal error, once seen: the client is shut down and what it still holds
            // is forwarded until its stream ends.
            let mut failed: Option<holdline_client::ClientError> = None;
            let ended = loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        handle.shutdown();
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
                    Some(Ok(Event::Gap(g))) => out.send(Item::Gap(name.clone(), g)).await,
                    Some(Ok(Event::Rejected(r))) => out.send(Item::Rejected(name.clone(), r)).await,
                    Some(Ok(Event::State(change))) => {
                        tracing::info!(org = %name, kind = ?change.kind, channel = change.channel.as_deref().unwrap_or("-"), "{}", change.detail);
                        if change.kind == StateKind::Live {
                            backoff.reset();
                            held = handle.topics().into();
                            if let Some(since) = owed_since.take() {
                                let from = since.checked_sub(lookback).unwrap_or(since);
                                let reason = match why.is_empty() {
                                    true => "holdline was not running: the previous run stopped without closing its spool".to_owned(),
                                    false => format!("the org's client was not running: {why}"),
                                };
                                let gap = holdline_client::Gap {
                                    topics: handle.topics().into(),
                                    from,
                                    to: SystemTime::now().max(from),
                                    reason,
                                };
                                holdline_client::telemetry::notable::gap(handle.stats(), &gap);
                                if out.send(Item::Gap(name.clone(), gap)).await.is_err() {
                                    handle.shutdown();
                                    return;
                                }
                            }
                        }
                        Ok(())
                    }
                };
                if sent.is_err() {
                    // The writer is gone: the process is stopping.
                    handle.shutdown();
                    return;
                }
            };
            match ended {
                None if *stop.borrow() => break 'held,
                None => {
                    why = "its client ended by itself".into();
                    tracing::error!(org = %name, "org's client ended by itself; starting it again");
                }
                Some(e) => {
                    why = e.to_string();
                    tracing::error!(org = %name, error = %e, "org not receiving: its client stopped on a fatal error; starting it again with backoff");
                }
            }
            owed_since.get_or_insert_with(SystemTime::now);
            set(&status, &name, OrgState::Down(why.clone()));
            let wait = backoff.next().unwrap_or(RETRY_MAX);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break 'held,
            }
        }
        // Stopping while down: the time since is reported now, or a clean close of the
        // spool would erase it.
        if let Some(since) = owed_since {
            if held.is_empty() {
                tracing::error!(org = %name, "stopping while the org was not receiving, before it ever held a topic: no gap can name its topics");
                return;
            }
            let from = since.checked_sub(lookback).unwrap_or(since);
            let gap = holdline_client::Gap {
                topics: held,
                from,
                to: SystemTime::now().max(from),
                reason: format!("the org's client was not running when holdline stopped: {why}"),
            };
            let _ = out.send(Item::Gap(name, gap)).await;
        }
    }
}

/// Runs `listen` over every org of `args` (its `[[org]]` tables, and the org the flags
/// and environment describe when they name a client) until `--duration`, a signal, or
/// every org failing to start for a reason only a change of configuration can fix.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use holdline_client::stream::record::{write_event, write_gap, write_rejected};

    let file = args.config.clone().unwrap_or_default();
    let mut orgs: Vec<(Arc<str>, ClientConfig)> = Vec::new();
    if args.service.client_id.is_some() {
        let config = args.client_config()?;
        orgs.push((Arc::from(config.org.as_str()), config));
    }
    for table in &args.orgs {
        let config = table.listen_args(&args, &file)?.client_config()?;
        orgs.push((Arc::from(table.name.as_str()), config));
    }
    check_names(orgs.iter().map(|(n, _)| &**n), &file)?;
    let lookback = args.timings()?.gap_lookback;
    let filter = args.filter()?;
    let mut registry = prometheus_client::registry::Registry::default();
    let (mut out, filtered) =
        super::listen::open_output(&args, lookback, filter.is_some(), &mut registry)?;
    let owed_since = out.spooled.as_ref().and_then(|s| s.unclean_since);
    let status = Status::default();
    let engines = holdline_client::telemetry::metrics::Orgs::default();
    engines.register(&mut registry);
    if let Some(addr) = args.metrics_addr {
        let ready = super::observe::Readiness::Orgs(status.clone());
        super::observe::serve(addr, ready, registry).await?;
    }
    let mut signals = super::Signals::new().context("cannot install the signal handlers")?;
    tracing::info!(orgs = orgs.len(), "starting");

    let (tx, mut rx) = mpsc::channel::<Item>(super::listen::BATCH);
    let (stop, stopped) = watch::channel(false);
    let mut firsts = Vec::with_capacity(orgs.len());
    let mut holders = Vec::with_capacity(orgs.len());
    for (name, config) in orgs {
        let (first, first_rx) = tokio::sync::oneshot::channel();
        firsts.push((name.clone(), first_rx));
        let holder = Holder {
            name,
            config,
            start_timeout: args.start_timeout(),
            owed_since,
            status: status.clone(),
            metrics: engines.clone(),
        };
        holders.push(tokio::spawn(holder.run(tx.clone(), stopped.clone(), first)));
    }
    drop(tx);
    // The process fails only when no org could start for a reason of configuration.
    let (refused, mut all_refused) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
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

    // One record into the output, unless the filter leaves it out.
    let write = |out: &mut super::listen::Output, item: Item| match item {
        Item::Event(org, n) => {
            if filter
                .as_ref()
                .is_none_or(|f| f.event(n.topic(), n.body_bytes()))
            {
                write_event(&mut out.buf, &n, &org);
                out.ended(Some(n.received_at));
            } else {
                filtered.inc("event");
            }
        }
        Item::Gap(org, gap) => {
            if filter.as_ref().is_none_or(|f| f.gap(&gap.topics)) {
                write_gap(&mut out.buf, &gap, &org);
                out.ended(None);
            } else {
                filtered.inc("gap");
            }
        }
        Item::Rejected(org, r) => {
            if filter.as_ref().is_none_or(|f| f.rejected(&r.topic)) {
                write_rejected(&mut out.buf, &r, &org);
                out.ended(None);
            } else {
                filtered.inc("rejected");
            }
        }
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut stopping = false;
    let mut refusal_open = true;
    let result: anyhow::Result<()> = loop {
        let item = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() && !stopping => {
                stopping = true;
                let _ = stop.send(true);
                continue;
            }
            signal = signals.next() => {
                match signal {
                    super::Signal::Stop if stopping => super::listen::exit_at_once(),
                    super::Signal::Stop => {
                        stopping = true;
                        tracing::info!("stopping: closing every socket (a second signal exits at once)");
                        let _ = stop.send(true);
                    }
                    super::Signal::Reload => tracing::warn!("SIGHUP: [[org]] tables are not re-read yet; restart holdline to change them"),
                }
                continue;
            }
            reasons = &mut all_refused, if refusal_open => match reasons {
                Ok(reasons) => {
                    let _ = stop.send(true);
                    break Err(super::UsageError(format!("no org could start: {reasons}")).into());
                }
                // Some org started (or is still trying): nothing more to wait for here.
                Err(_) => { refusal_open = false; continue; }
            },
            item = rx.recv() => item,
        };
        let mut item = item;
        let mut taken = 0;
        let ended = loop {
            let Some(next) = item else { break true };
            write(&mut out, next);
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
    let _ = stop.send(true);
    // What the holders still send while their sockets close.
    while let Some(item) = rx.recv().await {
        write(&mut out, item);
    }
    for holder in holders {
        if let Err(e) = holder.await {
            tracing::error!(error = %e, "an org's task died");
        }
    }
    out.finish(result).await
}
