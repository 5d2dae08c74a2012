//! `holdline listen`: streams events as JSON lines on stdout (logs on stderr) and keeps
//! the stream alive through every fault. Credentials and region come from flags, the
//! environment variables Genesys' own tooling uses, or a TOML file, in that order.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use holdline_client::stream::record::{write_event, write_gap, write_rejected};
use holdline_client::{
    Client, ClientConfig, Credentials, Endpoints, Event, Secret, StateKind, Stats, Timings,
};
use holdline_proto::filter::Filter;
use holdline_sinks::SinkConfig;
use serde::Deserialize;
use tokio::time::{Instant, sleep_until};

use super::config::{self, ConfigError, de};
use super::service::ServiceArgs;
use super::{Signal, Signals, duration};

/// `holdline listen` settings: its flags, and under the same names the keys of its
/// `--config` file (with the service settings of [`ServiceArgs`]). Every value is
/// optional here; the defaults live with what they configure ([`ClientConfig::new`],
/// [`Timings::default`], the spool's limits below).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenArgs {
    #[command(flatten)]
    #[serde(skip)]
    pub service: ServiceArgs,
    /// TOML file with any of these settings; flags and environment win over it.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Topic to subscribe (repeatable; combined topics allowed).
    #[arg(long = "topic")]
    #[serde(default)]
    pub topics: Vec<String>,
    /// File with one topic per line (# starts a comment).
    #[arg(long)]
    pub topics_file: Option<PathBuf>,
    /// Queue name whose conversations to subscribe (repeatable).
    #[arg(long = "queue")]
    #[serde(default)]
    pub queues: Vec<String>,
    /// User email whose conversations to subscribe (repeatable).
    #[arg(long = "user")]
    #[serde(default)]
    pub users: Vec<String>,
    /// Stop after this long.
    #[arg(long, value_parser = duration)]
    #[serde(skip)]
    pub duration: Option<Duration>,
    /// Give up if the first token, look-ups and channel plan take longer than this (a
    /// wrong host, a proxy or a firewall in the way).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub start_timeout: Option<Duration>,
    /// Period of {"message":"ping"} health checks.
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub ping_interval: Option<Duration>,
    /// How long a ping may go unanswered.
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub pong_timeout: Option<Duration>,
    /// How long a socket may stay silent (2.2 server heartbeats by default).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub watchdog: Option<Duration>,
    /// Roll channels over this long before they or their token expire.
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub rollover_margin: Option<Duration>,
    /// Longest delay between reconnect attempts.
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub backoff_max: Option<Duration>,
    /// Shortest time the service leaves between socket_closing and the close (about 60s).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub closing_grace: Option<Duration>,
    /// How far before a dead socket's last frame its gap starts (events in flight).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub gap_lookback: Option<Duration>,
    /// How long a socket replaced at rollover keeps receiving (events in flight).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub overlap: Option<Duration>,
    /// Channels (each with its own socket and token) holding every topic; with 2 a single
    /// socket fault loses nothing.
    #[arg(long)]
    pub redundancy: Option<usize>,
    /// Subscribe every queue's conversations, picking up new queues as they appear.
    #[arg(long)]
    #[serde(default)]
    pub all_queues: bool,
    /// Subscribe every user's conversations, picking up new users as they appear.
    #[arg(long)]
    #[serde(default)]
    pub all_users: bool,
    /// How often --all-queues/--all-users list the org again.
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub refresh_every: Option<Duration>,
    /// How long an event id is remembered for de-duplication (must cover the worst delay
    /// between two sockets).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub dedupe_window: Option<Duration>,
    /// Most event ids remembered (about 37 bytes each).
    #[arg(long)]
    pub dedupe_max_ids: Option<usize>,
    /// Label for the records' `org` field.
    #[arg(long)]
    pub org: Option<String>,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address (127.0.0.1:9464
    /// when the flag has no value; off without the flag).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = super::observe::DEFAULT_ADDR)]
    pub metrics_addr: Option<SocketAddr>,
    /// Spool records durably in this folder before writing them to stdout; after a crash
    /// the next run delivers what stdout had not confirmed and reports the time no run
    /// was receiving as a gap.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Deliver from the spool to this sink instead of stdout (repeatable; needs --spool):
    /// stdout, file:///path/events.jsonl?max_bytes=N&rotate=1h, https://host/path?secret_env=NAME,
    /// nats://host:4222/subject?stream=NAME, redis://host:6379/stream?maxlen=N,
    /// kafka://host:9092/topic. In the file: [[sink]] tables with a url.
    #[arg(long = "sink", value_name = "URL")]
    #[serde(rename = "sink", default, deserialize_with = "de::sinks")]
    pub sinks: Vec<String>,
    /// Most bytes of records the spool holds before holding back (default 1 GiB).
    #[arg(long, value_name = "BYTES")]
    pub spool_max_bytes: Option<u64>,
    /// How long to hold back while the spool is full before dropping its oldest records
    /// (reported as a gap; default 30s).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub spool_full_wait: Option<Duration>,
    /// Longest wait between tries of a failing sink (the wait doubles from 200ms up to
    /// this; default 10s).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub sink_retry_max: Option<Duration>,
    /// Write only the records this clause keeps (repeatable; every clause must pass),
    /// before the spool: kind=event,gap,rejected,backfill,backfill_done; topic=v2.routing.queues.*.conversations
    /// (* is one part); has=/json/pointer or missing=/pointer on the event body;
    /// /pointer=value or /pointer!=value. Gaps are kept whenever one of their topics is.
    /// In the file: filter = ["…", …].
    #[arg(long = "filter", value_name = "CLAUSE")]
    #[serde(rename = "filter", default)]
    pub filters: Vec<String>,
    /// Run as one node of a cluster that agrees on work through this NATS JetStream server
    /// (nats://host:4222, or several, comma-separated; 2.10 or later): the nodes that read
    /// the same orgs share them, two nodes holding each org. Options after `?`:
    /// token_env, user + password_env, creds=/path, tls=true, ca_file=/path, replicas=N
    /// (copies of the buckets holdline creates).
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's id in the cluster, unique among the nodes (default: the host name).
    #[arg(long, value_name = "ID")]
    pub node: Option<String>,
    /// How long a node's lease lasts without renewal: a node that dies or loses NATS
    /// gives up its orgs after this (default 10s).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub cluster_lease: Option<Duration>,
    /// In a cluster, how often each holder lists its OAuth client's channels: channels no
    /// holder made (another program's) are left to it (default 60s).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub channel_audit: Option<Duration>,
    /// After each gap, ask the REST API for the state of what its topics carry and write
    /// it as backfill records: auto (what the client may read; a missing permission is
    /// reported once), off, conversations, users, all.
    #[arg(long, value_enum, value_name = "WHAT")]
    #[serde(default)]
    pub backfill: Option<super::backfill::Mode>,
    /// How long after a gap it is back-filled (recent analytics data still moves).
    #[arg(long, value_parser = duration)]
    #[serde(default, deserialize_with = "de::duration")]
    pub backfill_settle: Option<Duration>,
    /// The share of the org's REST budget (300 calls a minute) back-fill may use, 0.01 to 1.
    #[arg(long, value_name = "SHARE")]
    #[serde(default)]
    pub backfill_share: Option<f64>,
    /// Debug logs (heartbeats, pongs, subscribe replies) on stderr.
    #[arg(long, short)]
    #[serde(skip)]
    pub verbose: bool,
    /// The config file's `[[org]]` tables: one org each, beside the one the flags and
    /// environment describe (if they name a client).
    #[arg(skip)]
    #[serde(skip)]
    pub orgs: Vec<super::orgs::OrgTable>,
}

/// Defaults of the spool and its sinks.
const SPOOL_MAX_BYTES: u64 = 1 << 30;
const SPOOL_MIN_BYTES: u64 = 64 * 1024;
const SPOOL_FULL_WAIT: Duration = Duration::from_secs(30);
const SINK_RETRY_MAX: Duration = Duration::from_secs(10);
/// How long `listen` may take to get its first token and plan its channels.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after a gap it is back-filled, unless told.
const BACKFILL_SETTLE: Duration = Duration::from_secs(120);
/// The share of an org's REST budget back-fill may use, unless told.
const BACKFILL_SHARE: f64 = 0.25;
impl ListenArgs {
    /// These settings laid over those of `--config` (if given): a flag or environment
    /// variable wins over the file; topic, queue and user lists add up; sinks and
    /// filters given as flags replace the file's.
    pub fn resolved(&self) -> Result<ListenArgs, ConfigError> {
        let Some(path) = &self.config else {
            return Ok(self.clone());
        };
        let (service, file) = config::read(path)?;
        self.clone().or(service, file)
    }

    fn or(self, service: ServiceArgs, file: ListenArgs) -> Result<ListenArgs, ConfigError> {
        // Destructured so that a new setting cannot be forgotten here.
        let ListenArgs {
            service: _,
            config: _,
            mut topics,
            topics_file,
            mut queues,
            mut users,
            duration: _,
            start_timeout,
            ping_interval,
            pong_timeout,
            watchdog,
            rollover_margin,
            backoff_max,
            closing_grace,
            gap_lookback,
            overlap,
            redundancy,
            all_queues,
            all_users,
            refresh_every,
            dedupe_window,
            dedupe_max_ids,
            org,
            metrics_addr,
            spool,
            sinks,
            spool_max_bytes,
            spool_full_wait,
            sink_retry_max,
            filters,
            cluster,
            node,
            cluster_lease,
            channel_audit,
            backfill,
            backfill_settle,
            backfill_share,
            verbose: _,
            orgs,
        } = file;
        // The file's topics file is read here, the flag's with the rest of the topics.
        if let Some(path) = &topics_file {
            topics.extend(config::read_topics(path)?);
        }
        topics.extend(self.topics);
        queues.extend(self.queues);
        users.extend(self.users);
        let replace = |flags: Vec<String>, file: Vec<String>| match flags.is_empty() {
            true => file,
            false => flags,
        };
        Ok(ListenArgs {
            service: self.service.or(service),
            config: self.config,
            topics,
            topics_file: self.topics_file,
            queues,
            users,
            duration: self.duration,
            start_timeout: self.start_timeout.or(start_timeout),
            ping_interval: self.ping_interval.or(ping_interval),
            pong_timeout: self.pong_timeout.or(pong_timeout),
            watchdog: self.watchdog.or(watchdog),
            rollover_margin: self.rollover_margin.or(rollover_margin),
            backoff_max: self.backoff_max.or(backoff_max),
            closing_grace: self.closing_grace.or(closing_grace),
            gap_lookback: self.gap_lookback.or(gap_lookback),
            overlap: self.overlap.or(overlap),
            redundancy: self.redundancy.or(redundancy),
            all_queues: self.all_queues || all_queues,
            all_users: self.all_users || all_users,
            refresh_every: self.refresh_every.or(refresh_every),
            dedupe_window: self.dedupe_window.or(dedupe_window),
            dedupe_max_ids: self.dedupe_max_ids.or(dedupe_max_ids),
            org: self.org.or(org),
            metrics_addr: self.metrics_addr.or(metrics_addr),
            spool: self.spool.or(spool),
            sinks: replace(self.sinks, sinks),
            spool_max_bytes: self.spool_max_bytes.or(spool_max_bytes),
            spool_full_wait: self.spool_full_wait.or(spool_full_wait),
            sink_retry_max: self.sink_retry_max.or(sink_retry_max),
            filters: replace(self.filters, filters),
            cluster: self.cluster.or(cluster),
            node: self.node.or(node),
            cluster_lease: self.cluster_lease.or(cluster_lease),
            channel_audit: self.channel_audit.or(channel_audit),
            backfill: self.backfill.or(backfill),
            backfill_settle: self.backfill_settle.or(backfill_settle),
            backfill_share: self.backfill_share.or(backfill_share),
            verbose: self.verbose,
            orgs,
        })
    }

    /// Every check that needs no credentials (what `doctor --config` runs).
    pub fn check(&self) -> Result<(), ConfigError> {
        let timings = self.timings()?;
        if self.redundancy == Some(0) {
            return Err(ConfigError::NoRedundancy);
        }
        if let Some(path) = &self.topics_file {
            config::read_topics(path)?;
        }
        self.filter()?;
        self.spool(timings.gap_lookback)?;
        Ok(())
    }

    /// The output filter, if any.
    pub(super) fn filter(&self) -> Result<Option<Filter>, ConfigError> {
        Ok(Filter::parse(&self.filters)?)
    }

    /// How long starting may take.
    /// How back-fill runs (None: off).
    pub(super) fn backfill(&self) -> Result<Option<super::backfill::Started>, ConfigError> {
        let share = self.backfill_share.unwrap_or(BACKFILL_SHARE);
        if !(0.01..=1.0).contains(&share) {
            return Err(ConfigError::BackfillShare(share));
        }
        Ok(super::backfill::Backfill::new(super::backfill::Settings {
            mode: self.backfill.unwrap_or_default(),
            settle: self.backfill_settle.unwrap_or(BACKFILL_SETTLE),
            share,
        }))
    }

    pub(super) fn start_timeout(&self) -> Duration {
        self.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT)
    }

    /// Where to spool, if anywhere, its limits and its sinks.
    pub(super) fn spool(
        &self,
        lookback: Duration,
    ) -> Result<Option<(PathBuf, super::spooled::Limits, Vec<SinkConfig>)>, ConfigError> {
        let mut sinks = self
            .sinks
            .iter()
            .map(|u| SinkConfig::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(dir) = self.spool.clone() else {
            return match sinks.is_empty() {
                true => Ok(None),
                false => Err(ConfigError::SinkWithoutSpool),
            };
        };
        if sinks.is_empty() {
            sinks.push(SinkConfig::Stdout);
        }
        let max_bytes = self.spool_max_bytes.unwrap_or(SPOOL_MAX_BYTES);
        if max_bytes < SPOOL_MIN_BYTES {
            return Err(ConfigError::SpoolTooSmall);
        }
        let limits = super::spooled::Limits {
            max_bytes,
            full_wait: self.spool_full_wait.unwrap_or(SPOOL_FULL_WAIT),
            lookback,
            retry_max: self.sink_retry_max.unwrap_or(SINK_RETRY_MAX),
        };
        Ok(Some((dir, limits, sinks)))
    }

    /// The client's configuration: its defaults with these settings laid over them.
    pub(super) fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        let endpoints = self.service.endpoints()?;
        let credentials = self.service.credentials()?;
        let mut topics = self.topics.clone();
        if let Some(path) = &self.topics_file {
            topics.extend(config::read_topics(path)?);
        }
        let mut config = ClientConfig::new(endpoints, credentials, topics);
        config.queues = self.queues.clone();
        config.users = self.users.clone();
        config.all_queues = self.all_queues;
        config.all_users = self.all_users;
        set(&mut config.redundancy, self.redundancy);
        set(&mut config.refresh_every, self.refresh_every);
        set(&mut config.dedupe_window, self.dedupe_window);
        set(
            &mut config.dedupe_max_ids,
            self.dedupe_max_ids.map(|n| n.max(1)),
        );
        set(&mut config.org, self.org.clone());
        if config.redundancy == 0 {
            return Err(ConfigError::NoRedundancy);
        }
        config.ca_file = self.service.ca_file.clone();
        config.resolve = self.service.resolve.clone();
        config.proxy = self.service.proxy_setting();
        config.timings = self.timings()?;
        Ok(config)
    }

    pub(super) fn timings(&self) -> Result<Timings, ConfigError> {
        let mut t = Timings::default();
        set(&mut t.ping_interval, self.ping_interval);
        set(&mut t.pong_timeout, self.pong_timeout);
        set(&mut t.watchdog, self.watchdog);
        set(&mut t.rollover_margin, self.rollover_margin);
        set(&mut t.backoff_max, self.backoff_max);
        set(&mut t.closing_grace, self.closing_grace);
        set(&mut t.gap_lookback, self.gap_lookback);
        set(&mut t.overlap, self.overlap);
        for (name, d) in [
            ("ping interval", t.ping_interval),
            ("pong timeout", t.pong_timeout),
            ("watchdog", t.watchdog),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if t.watchdog < t.ping_interval + t.pong_timeout {
            return Err(ConfigError::WatchdogTooShort {
                watchdog: t.watchdog,
                ping: t.ping_interval,
                pong: t.pong_timeout,
            });
        }
        Ok(t)
    }
}

/// Overrides a default with a setting that was given.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Runs `listen` until `--duration`, a signal, or a fatal error.
pub async fn run(flags: ListenArgs) -> anyhow::Result<()> {
    let args = flags.resolved()?;
    if !args.orgs.is_empty() || args.cluster.is_some() {
        return super::orgs::run(flags, args).await;
    }
    let config = args.client_config()?;
    let org = config.org.clone();
    tracing::info!(endpoints = %config.endpoints, client_id = %config.credentials.client_id, topics = config.topics.len(), "starting");
    let metrics_addr = args.metrics_addr;
    let lookback = config.timings.gap_lookback;
    let filter = args.filter()?;
    // Each component registers its own series; /metrics serves them all.
    let mut registry = prometheus_client::registry::Registry::default();
    let (mut out, filtered) = open_output(&args, lookback, filter.is_some(), &mut registry)?;
    let mut unclean_since = out.spooled.as_ref().and_then(|s| s.unclean_since);
    let mut backfilled = match args.backfill()? {
        Some((backfill, records)) => {
            backfill.register(&mut registry);
            backfill.add_org(&org, &config)?;
            out.backfill = Some(backfill);
            Some(records)
        }
        None => None,
    };
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    let reload = Reload::new(&config);
    let start_timeout = args.start_timeout();
    let reach = config.endpoints.to_string();
    let (handle, mut stream) = tokio::select! {
        // Starting may retry for a while; a signal meanwhile stops at once.
        started = tokio::time::timeout(start_timeout, Client::start(config)) => match started {
            Ok(started) => started?,
            Err(_) => return Err(super::UsageError(format!(
                "could not start within {start_timeout:?} ({reach}): nothing answered in time. Check that the \
                 hosts resolve (DNS), that a proxy is set if the network needs one (HTTPS_PROXY), and that no \
                 firewall drops the traffic; `holdline doctor` checks each hop. --start-timeout sets the limit"
            )).into()),
        },
        () = stop_signal(&mut signals) => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    holdline_client::telemetry::metrics::register(handle.stats().clone(), &mut registry);
    if let Some(addr) = metrics_addr {
        let ready = super::observe::Readiness::One(handle.stats().clone());
        super::observe::serve(addr, ready, registry).await?;
    }
    if let Some(spooled) = &out.spooled {
        spooled.observe(super::spooled::Engines::One(handle.stats().clone()));
    }
    let deadline = args.duration.map(|d| Instant::now() + d);
    // Signals are watched beside the output, which may be blocked on a full stdout.
    let watcher = tokio::spawn(watch_signals(signals, handle.clone(), flags, reload));
    let mut stopping = false;
    let result = loop {
        let item = tokio::select! {
            biased;
            // --duration reached.
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && !stopping => {
                stopping = true;
                handle.shutdown();
                continue;
            }
            // The next event; EventStream::next is cancel-safe (it only awaits a queue).
            item = stream.next() => item,
            // A back-fill's records, when no event waits.
            Some(line) = next_backfilled(&mut backfilled) => {
                out.backfilled(&line, filter.as_ref(), &filtered);
                if let Err(e) = out.flush().await {
                    break Err(e);
                }
                continue;
            }
        };
        // Take whatever else is ready without waiting, then write the batch in one go:
        // a burst costs one write, and nothing waits once the queue is drained.
        let mut item = item;
        let mut taken = 0;
        let step = loop {
            match item {
                None => break Step::End,
                Some(Ok(Event::Notification(n))) => out.event(&n, &org, filter.as_ref(), &filtered),
                Some(Ok(Event::Gap(gap))) => out.gap(&gap, &org, None, filter.as_ref(), &filtered),
                Some(Ok(Event::Rejected(r))) => out.rejected(&r, &org, filter.as_ref(), &filtered),
                Some(Ok(Event::State(change))) => {
                    tracing::info!(kind = ?change.kind, channel = change.channel.as_deref().unwrap_or("-"), "{}", change.detail);
                    if change.kind == StateKind::Live
                        && let Some(since) = unclean_since.take()
                    {
                        let gap = restart_gap(&handle, since, lookback);
                        out.gap(&gap, &org, None, filter.as_ref(), &filtered);
                    }
                }
                Some(Err(e)) => break Step::Fatal(e),
            }
            taken += 1;
            if taken >= BATCH || out.buf.len() >= out.flush_bytes() {
                break Step::More;
            }
            match stream.try_next() {
                Poll::Ready(next) => item = next,
                Poll::Pending => break Step::More,
            }
        };
        if let Err(e) = out.flush().await {
            break Err(e);
        }
        match step {
            Step::More => {}
            Step::End => break Ok(()),
            Step::Fatal(e) => {
                handle.shutdown();
                break Err(e.into());
            }
        }
    };
    // The gap owed for the run before, if this one never went live: written now, since a
    // clean close of the spool would otherwise erase it.
    if let Some(since) = unclean_since.take() {
        let gap = restart_gap(&handle, since, lookback);
        out.gap(&gap, &org, None, filter.as_ref(), &filtered);
    }
    watcher.abort();
    summary(handle.stats());
    close_backfill(&mut out, &mut backfilled, filter.as_ref(), &filtered);
    out.finish(result).await
}

/// Where `listen` writes: the spool (and its sinks) when asked, else stdout; and the
/// counter of what `--filter` leaves out. Each registers its series in `registry`.
pub(super) fn open_output(
    args: &ListenArgs,
    lookback: Duration,
    filtering: bool,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<(Output, Filtered)> {
    let filtered = Filtered::default();
    if filtering {
        registry.register(
            "holdline_filtered",
            "Records --filter left out of the output, by kind",
            filtered.0.clone(),
        );
    }
    let spooled = match args.spool(lookback)? {
        Some((dir, limits, sinks)) => {
            let opened = sinks
                .iter()
                .map(holdline_sinks::open)
                .collect::<Result<Vec<_>, _>>()?;
            Some(super::spooled::Spooled::open(
                &dir, limits, opened, registry,
            )?)
        }
        None => {
            widen_stdout_pipe();
            None
        }
    };
    Ok((
        Output {
            spooled,
            ..Output::default()
        },
        filtered,
    ))
}

/// Whoever read stdout went away: a stream that nobody reads loses events, so holdline
/// stops with an error that a supervisor restarts it on.
fn stdout_closed() -> anyhow::Error {
    anyhow::anyhow!(
        "stdout was closed by the program reading it; stopping, since events received from now on \
         could not be written (a supervisor should restart holdline; with --spool, anything spooled is \
         delivered by the next run)"
    )
}

/// SIGINT/SIGTERM: close every socket with 1000, drain and exit (within 2 s); a second
/// one exits at once. SIGHUP reads the topic lists again.
async fn watch_signals(
    mut signals: Signals,
    handle: holdline_client::ClientHandle,
    args: ListenArgs,
    reload: Reload,
) {
    let mut stopping = false;
    loop {
        match signals.next().await {
            Signal::Stop if stopping => exit_at_once(),
            Signal::Stop => {
                stopping = true;
                tracing::info!("stopping: closing every socket (a second signal exits at once)");
                handle.shutdown();
            }
            Signal::Reload => reload.start(&args, &handle),
        }
    }
}

/// `listen --help` with the default of every setting that has one (taken from where the
/// default lives) and a few examples.
pub fn help_with_defaults(cmd: clap::Command) -> clap::Command {
    let t = Timings::default();
    let c = ClientConfig::new(
        Endpoints::Custom {
            api_base: String::new(),
            login_base: String::new(),
        },
        Credentials {
            client_id: String::new(),
            client_secret: Secret::new(""),
        },
        Vec::new(),
    );
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let defaults = [
        ("ping_interval", d(t.ping_interval)),
        ("pong_timeout", d(t.pong_timeout)),
        ("watchdog", d(t.watchdog)),
        ("rollover_margin", d(t.rollover_margin)),
        ("backoff_max", d(t.backoff_max)),
        ("closing_grace", d(t.closing_grace)),
        ("gap_lookback", d(t.gap_lookback)),
        ("overlap", d(t.overlap)),
        ("refresh_every", d(c.refresh_every)),
        ("dedupe_window", d(c.dedupe_window)),
        ("dedupe_max_ids", c.dedupe_max_ids.to_string()),
        ("redundancy", c.redundancy.to_string()),
        ("start_timeout", d(DEFAULT_START_TIMEOUT)),
        ("backfill", "auto".to_owned()),
        ("backfill_settle", d(BACKFILL_SETTLE)),
        ("backfill_share", BACKFILL_SHARE.to_string()),
    ];
    let mut cmd = cmd.after_help(LISTEN_EXAMPLES);
    for (id, default) in defaults {
        cmd = cmd.mut_arg(id, |a| {
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            a.help(format!("{help} [default: {default}]"))
        });
    }
    cmd
}

const LISTEN_EXAMPLES: &str = "Examples:
  # Conversations of two queues, credentials from the environment:
  GENESYSCLOUD_REGION=eu-west-1 GENESYSCLOUD_OAUTHCLIENT_ID=… GENESYSCLOUD_OAUTHCLIENT_SECRET=… \\
    holdline listen --queue Support --queue Sales
  # Against the local simulator (start it with `holdline sim`):
  GENESYSCLOUD_OAUTHCLIENT_ID=holdline-demo GENESYSCLOUD_OAUTHCLIENT_SECRET=holdline-demo \\
    holdline listen --api-base http://127.0.0.1:7411 --all-queues
  # Durable, with metrics, into a file that rotates hourly:
  holdline listen --config listen.toml --spool /var/lib/holdline \\
    --sink 'file:///var/log/holdline/events.jsonl?rotate=1h' --metrics-addr";

/// Stopping: what the back-fills sent and the writer has not taken yet, then a failed
/// `backfill_done` for every gap whose back-fill has not ended.
pub(super) fn close_backfill(
    out: &mut Output,
    records: &mut Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
    filter: Option<&Filter>,
    filtered: &Filtered,
) {
    if let Some(rx) = records.as_mut() {
        while let Ok(line) = rx.try_recv() {
            out.backfilled(&line, filter, filtered);
        }
    }
    if let Some(backfill) = out.backfill.clone() {
        for line in backfill.abandon() {
            out.backfilled(&line, filter, filtered);
        }
    }
}

/// The next record of a back-fill, if back-fill is on (never, if not).
pub(super) async fn next_backfilled(
    records: &mut Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
) -> Option<Vec<u8>> {
    match records {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits for SIGINT or SIGTERM (a SIGHUP before the client runs changes nothing).
async fn stop_signal(signals: &mut Signals) {
    while signals.next().await != Signal::Stop {}
}

/// A second SIGINT/SIGTERM: the user will not wait for the sockets to close.
pub(super) fn exit_at_once() -> ! {
    tracing::warn!(
        "second signal: exiting at once; events still queued inside holdline are not written          (with --spool, anything spooled is delivered by the next run)"
    );
    std::process::exit(130)
}

/// SIGHUP: reads `--config` and the topics files again and moves only the topics that
/// changed (the resolution of queue and user names runs beside the stream).
pub(super) struct Reload {
    /// The explicit topics in force (combined ones as their parts), resolved names
    /// included; None until the first reload resolves the starting lists.
    applied: std::sync::Arc<tokio::sync::Mutex<Option<HashSet<String>>>>,
    start: Lists,
    /// Topics the client follows by itself (`--all-queues`, `--all-users`): never removed
    /// by a reload.
    tracked: (bool, bool),
    /// The org it moves, for the log.
    org: String,
}

/// The topic lists of a configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Lists {
    pub(super) topics: Vec<String>,
    pub(super) queues: Vec<String>,
    pub(super) users: Vec<String>,
}

impl Lists {
    pub(super) fn of(config: &ClientConfig) -> Lists {
        Lists {
            topics: config.topics.clone(),
            queues: config.queues.clone(),
            users: config.users.clone(),
        }
    }

    /// Every single topic these lists name (queue and user names looked up).
    async fn resolve(
        &self,
        handle: &holdline_client::ClientHandle,
    ) -> Result<HashSet<String>, holdline_client::ClientError> {
        let mut all = self.topics.clone();
        all.extend(
            holdline_client::rest::resolve::conversation_topics(
                handle.api(),
                &self.queues,
                &self.users,
            )
            .await?,
        );
        let valid = holdline_client::validate_topics(&all)?;
        Ok(holdline_client::single_topics(&valid).into_iter().collect())
    }
}

impl Reload {
    pub(super) fn new(config: &ClientConfig) -> Reload {
        Reload {
            applied: Default::default(),
            start: Lists::of(config),
            tracked: (config.all_queues, config.all_users),
            org: config.org.clone(),
        }
    }

    fn start(&self, args: &ListenArgs, handle: &holdline_client::ClientHandle) {
        let lists = match args.resolved().and_then(|args| args.client_config()) {
            Ok(config) => Lists::of(&config),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the configuration is not valid; keeping the current topics");
                return;
            }
        };
        tracing::info!("SIGHUP: reading the topic lists again");
        self.apply(lists, handle);
    }

    /// Moves the client to the topics `lists` names, beside the stream.
    pub(super) fn apply(&self, lists: Lists, handle: &holdline_client::ClientHandle) {
        let (applied, start, tracked) = (self.applied.clone(), self.start.clone(), self.tracked);
        let handle = handle.clone();
        let span = tracing::info_span!("reload", org = %self.org);
        let task = async move {
            let mut applied = applied.lock().await;
            let old = match applied.take() {
                Some(old) => old,
                // A name of the starting lists may no longer resolve (a queue renamed
                // since): then everything held counts as what was asked for.
                None => start
                    .resolve(&handle)
                    .await
                    .unwrap_or_else(|_| handle.topics().into_iter().collect()),
            };
            match reload(&handle, &old, &lists, tracked).await {
                Ok(new) => *applied = Some(new),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: keeping the current topics");
                    *applied = Some(old);
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }
}

/// Moves the client from the topics `before` to those `new` names; returns the latter.
async fn reload(
    handle: &holdline_client::ClientHandle,
    before: &HashSet<String>,
    new: &Lists,
    (all_queues, all_users): (bool, bool),
) -> Result<HashSet<String>, holdline_client::ClientError> {
    let after = new.resolve(handle).await?;
    let added: Vec<String> = after.difference(before).cloned().collect();
    let followed = |t: &str| {
        let family = holdline_proto::topic::classify(t).ok().map(|m| m.family());
        (all_queues && family == Some(holdline_proto::topic::Family::QueueConversations))
            || (all_users && family == Some(holdline_proto::topic::Family::UserConversations))
    };
    let removed: Vec<String> = before
        .difference(&after)
        .filter(|t| !followed(t))
        .cloned()
        .collect();
    if !added.is_empty() {
        handle.add_topics(&added)?;
    }
    if !removed.is_empty() {
        handle.remove_topics(&removed);
    }
    tracing::info!(
        added = added.len(),
        removed = removed.len(),
        topics = handle.topics().len(),
        "SIGHUP: topics reloaded"
    );
    Ok(after)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Pipe buffer asked for when stdout is a pipe: the most an unprivileged process may set
/// by default (`/proc/sys/fs/pipe-max-size`).
#[cfg(target_os = "linux")]
const STDOUT_PIPE_BYTES: libc::c_int = 1 << 20;

/// Gives stdout a 1 MiB pipe buffer when it is a pipe (Linux; the default is 64 KiB). With
/// the default, a reader that takes its input in bursts lets the pipe fill, and each time
/// holdline's writer sleeps and is woken again: measured 11-15 % more events/s into a
/// reading process with 1 MiB. Not with `--spool`, where a record counts as delivered once
/// it is written, and a small pipe keeps what a crashing reader can lose small. Anything
/// else (a file, a terminal, a refused size) is left as it is.
#[cfg(target_os = "linux")]
fn widen_stdout_pipe() {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdout().as_raw_fd();
    // SAFETY: F_SETPIPE_SZ only resizes the buffer of the pipe behind `fd`; on anything
    // that is not a pipe it fails with EBADF and changes nothing.
    let got = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, STDOUT_PIPE_BYTES) };
    tracing::debug!(bytes = got, "stdout pipe buffer");
}

#[cfg(not(target_os = "linux"))]
fn widen_stdout_pipe() {}

/// Most records taken from the stream before writing and looking at signals again.
pub(super) const BATCH: usize = 1024;
/// Most bytes of records held before writing to stdout. Half of Linux's default pipe: a
/// write that fills the whole pipe puts the writer to sleep until the reader empties it,
/// and on a busy machine that sleep and wake-up cost more than the extra write (measured:
/// 64 KiB writes to a pipe ran 9% slower end to end than 32 KiB ones).
const FLUSH_BYTES: usize = 32 * 1024;
/// Most bytes of records held before committing them to the spool: each commit is a
/// transaction and an fsync, so fewer, larger ones (32 KiB commits: 34,000 events/s
/// against 49,000).
const SPOOL_FLUSH_BYTES: usize = 64 * 1024;

/// Records `--filter` left out of the output, by kind.
#[derive(Clone, Default)]
pub(super) struct Filtered(
    pub(super)  prometheus_client::metrics::family::Family<
        Vec<(&'static str, &'static str)>,
        prometheus_client::metrics::counter::Counter,
    >,
);

impl Filtered {
    pub(super) fn inc(&self, kind: &'static str) {
        self.0.get_or_create(&vec![("kind", kind)]).inc();
    }
}

/// How a batch ended.
enum Step {
    More,
    End,
    Fatal(holdline_client::ClientError),
}

/// Records waiting for stdout; written when the stream has nothing more ready or they pass
/// [`FLUSH_BYTES`] ([`SPOOL_FLUSH_BYTES`] into the spool), so a burst costs one write,
/// and a quiet stream is never held back.
#[derive(Default)]
pub(super) struct Output {
    pub(super) buf: Vec<u8>,
    /// Where each record in `buf` ends.
    ends: Vec<usize>,
    /// When the newest event in `buf` was received.
    newest: Option<std::time::SystemTime>,
    /// With `--spool`, records go there and a thread delivers them to stdout.
    pub(super) spooled: Option<super::spooled::Spooled>,
    /// Where each gap written goes to be back-filled.
    pub(super) backfill: Option<std::sync::Arc<super::backfill::Backfill>>,
}

impl Output {
    /// Writes what is left, closes the spool (cleanly only after a clean run) and says
    /// how the run ended: a closed stdout as itself, whichever step found it.
    pub(super) async fn finish(mut self, result: anyhow::Result<()>) -> anyhow::Result<()> {
        let flushed = match self.flush().await {
            Ok(()) => match self.spooled.take() {
                Some(spooled) if result.is_ok() => spooled.close().await,
                Some(spooled) => spooled.close_after_failure().await,
                None => Ok(()),
            },
            Err(e) => Err(e),
        };
        match (result, flushed) {
            (Err(e), _) if is_broken_pipe(&e) => Err(stdout_closed()),
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) if is_broken_pipe(&e) => Err(stdout_closed()),
            (Ok(()), flushed) => flushed,
        }
    }

    /// How many bytes of records to hold before writing them.
    pub(super) fn flush_bytes(&self) -> usize {
        match &self.spooled {
            Some(spooled) => spooled.batch_bytes(SPOOL_FLUSH_BYTES),
            None => FLUSH_BYTES,
        }
    }

    /// An event into the batch, unless the filter leaves it out.
    pub(super) fn event(
        &mut self,
        n: &holdline_client::Notification,
        org: &str,
        filter: Option<&Filter>,
        filtered: &Filtered,
    ) {
        if filter.is_none_or(|f| f.event(n.topic(), n.body_bytes())) {
            write_event(&mut self.buf, n, org);
            self.ended(Some(n.received_at));
        } else {
            filtered.inc("event");
        }
    }

    /// A gap into the batch, unless the filter leaves out every topic it covers.
    pub(super) fn gap(
        &mut self,
        gap: &holdline_client::Gap,
        org: &str,
        id: Option<&str>,
        filter: Option<&Filter>,
        filtered: &Filtered,
    ) {
        if filter.is_none_or(|f| f.gap(&gap.topics)) {
            write_gap(&mut self.buf, gap, org, id);
            self.ended(None);
            if let Some(b) = &self.backfill {
                let id = id.map_or_else(
                    || holdline_client::stream::record::gap_id(gap, org),
                    str::to_owned,
                );
                b.gap(org, gap, &id);
            }
        } else {
            filtered.inc("gap");
        }
    }

    /// A rejected topic into the batch, unless the filter leaves it out.
    pub(super) fn rejected(
        &mut self,
        r: &holdline_client::Rejection,
        org: &str,
        filter: Option<&Filter>,
        filtered: &Filtered,
    ) {
        if filter.is_none_or(|f| f.rejected(&r.topic)) {
            write_rejected(&mut self.buf, r, org);
            self.ended(None);
        } else {
            filtered.inc("rejected");
        }
    }

    /// A record was written into `buf`.
    /// A back-fill's record (ending in a newline) into the batch, unless the filter
    /// leaves it out.
    pub(super) fn backfilled(&mut self, line: &[u8], filter: Option<&Filter>, filtered: &Filtered) {
        use holdline_proto::record::Head;
        let kept = match (filter, holdline_proto::record::head(line)) {
            (None, _) => true,
            (Some(f), Ok(Head::Backfill { topic, .. })) => f.backfill(&topic),
            (Some(f), Ok(Head::BackfillDone { .. })) => f.backfill_done(),
            (Some(_), _) => true,
        };
        if kept {
            self.buf.extend_from_slice(line);
            self.ended(None);
        } else {
            filtered.inc("backfill");
        }
    }

    fn ended(&mut self, received: Option<std::time::SystemTime>) {
        self.ends.push(self.buf.len());
        if received.is_some() {
            self.newest = self.newest.max(received);
        }
    }

    pub(super) async fn flush(&mut self) -> anyhow::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(spooled) = &self.spooled {
            let mut start = 0;
            let records: Vec<&[u8]> = self
                .ends
                .iter()
                .map(|&end| {
                    let r = &self.buf[start..end];
                    start = end;
                    r
                })
                .collect();
            spooled.append(&records, self.newest).await?;
        } else {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&self.buf).context("writing to stdout")?;
            stdout.flush().context("writing to stdout")?;
        }
        self.buf.clear();
        self.ends.clear();
        self.newest = None;
        Ok(())
    }
}

/// The gap after a run that stopped without closing its spool: nothing was receiving
/// from the newest event it spooled (less the look-back, for events still in flight)
/// until now.
fn restart_gap(
    handle: &holdline_client::ClientHandle,
    since: std::time::SystemTime,
    lookback: Duration,
) -> holdline_client::Gap {
    let gap = owed_gap(
        handle.topics().into(),
        since,
        lookback,
        "holdline was not running: the previous run stopped without closing its spool".into(),
    );
    holdline_client::telemetry::notable::gap(handle.stats(), &gap);
    gap
}

/// The gap over `topics` owed for a time nothing received them: from `since` (less the
/// look-back, for events that were still on their way) until now.
pub(super) fn owed_gap(
    topics: std::sync::Arc<[String]>,
    since: std::time::SystemTime,
    lookback: Duration,
    reason: String,
) -> holdline_client::Gap {
    let from = since.checked_sub(lookback).unwrap_or(since);
    holdline_client::Gap {
        topics,
        from,
        to: std::time::SystemTime::now().max(from),
        reason,
    }
}

fn summary(stats: &Stats) {
    let g = |c: &std::sync::atomic::AtomicU64| Stats::get(c);
    tracing::info!(
        events = g(&stats.emitted),
        duplicates = g(&stats.duplicates),
        gaps = g(&stats.gaps),
        heartbeats = g(&stats.heartbeats),
        reconnects = g(&stats.reconnects),
        rollovers = g(&stats.rollovers),
        malformed = g(&stats.malformed),
        "stopped"
    );
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        listen: ListenArgs,
    }

    fn parse(args: &[&str]) -> ListenArgs {
        let argv = std::iter::once("listen").chain(args.iter().copied());
        Wrapper::try_parse_from(argv).unwrap().listen
    }

    /// The settings the flags and their config file give.
    fn resolved(args: &[&str]) -> Result<ListenArgs, ConfigError> {
        parse(args).resolved()
    }

    fn with_file(text: &str, args: &[&str]) -> Result<ListenArgs, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("listen.toml");
        std::fs::write(&path, text).unwrap();
        let mut all = vec!["--config", path.to_str().unwrap()];
        all.extend_from_slice(args);
        resolved(&all)
    }

    #[test]
    fn metrics_are_off_unless_asked_and_loopback_when_asked_without_an_address() {
        assert_eq!(resolved(&[]).unwrap().metrics_addr, None);
        let default: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(parse(&["--metrics-addr"]).metrics_addr, Some(default));
        let chosen: SocketAddr = "0.0.0.0:9999".parse().unwrap();
        assert_eq!(
            parse(&["--metrics-addr", "0.0.0.0:9999"]).metrics_addr,
            Some(chosen)
        );
        assert!(
            Wrapper::try_parse_from(["listen", "--metrics-addr", "localhost"]).is_err(),
            "an address needs a port"
        );
    }

    #[test]
    fn the_config_file_can_turn_metrics_on() {
        let args = with_file("metrics_addr = \"127.0.0.1:9100\"\n", &[]).unwrap();
        assert_eq!(args.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
    }

    #[test]
    fn flags_win_over_the_file_and_lists_add_up() {
        let file = "region = \"eu-west-1\"\nclient_id = \"file-id\"\nclient_secret = \"s\"\n\
                    topics = [\"a\"]\nwatchdog = \"90s\"\nredundancy = 3\n\
                    resolve = [\"h:443:127.0.0.1\"]\nfilter = [\"kind=gap\"]\n";
        let args = with_file(
            file,
            &[
                "--client-id",
                "flag-id",
                "--topic",
                "b",
                "--resolve",
                "h:80:127.0.0.2",
            ],
        )
        .unwrap();
        assert_eq!(args.service.client_id.as_deref(), Some("flag-id"));
        assert_eq!(args.service.region.as_deref(), Some("eu-west-1"));
        assert_eq!(args.topics, ["a", "b"]);
        assert_eq!(args.service.resolve.len(), 2);
        let config = args.client_config().unwrap();
        assert_eq!(config.redundancy, 3);
        assert_eq!(config.timings.watchdog, Duration::from_secs(90));
        assert!(args.filter().unwrap().is_some());
        let args = with_file(file, &["--filter", "kind=event", "--redundancy", "1"]).unwrap();
        assert_eq!(
            args.filters,
            ["kind=event"],
            "flag filters replace the file's"
        );
        assert_eq!(args.client_config().unwrap().redundancy, 1);
    }

    /// Enough flags to make a client configuration.
    const BASE: [&str; 6] = [
        "--api-base",
        "http://127.0.0.1:1",
        "--client-id",
        "i",
        "--client-secret",
        "s",
    ];

    #[test]
    fn where_the_service_is_comes_from_one_source() {
        let file = "api_base = \"http://file.test\"\nlogin_base = \"http://login.file.test\"\n";
        let args = with_file(file, &["--region", "eu-west-1"]).unwrap();
        assert_eq!(args.service.region.as_deref(), Some("eu-west-1"));
        assert_eq!(args.service.api_base, None, "the flag's region wins");
        let args = with_file(file, &["--api-base", "http://flag.test"]).unwrap();
        assert_eq!(
            args.service.login_base, None,
            "no login base from another source"
        );
        let args = with_file(file, &[]).unwrap();
        assert_eq!(args.service.api_base.as_deref(), Some("http://file.test"));
    }

    #[test]
    fn the_cluster_table_is_the_cluster_flags() {
        let args = with_file(
            "cluster = { url = \"nats://10.0.0.5:4222\", node = \"n1\", lease = \"5s\", channel_audit = \"2m\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(args.cluster.as_deref(), Some("nats://10.0.0.5:4222"));
        assert_eq!(args.node.as_deref(), Some("n1"));
        assert_eq!(args.cluster_lease, Some(Duration::from_secs(5)));
        assert_eq!(args.channel_audit, Some(Duration::from_secs(120)));
        let flags =
            with_file("cluster = { url = \"nats://a:4222\" }\n", &["--node", "n2"]).unwrap();
        assert_eq!(
            flags.node.as_deref(),
            Some("n2"),
            "a flag wins over the file"
        );
        let err = with_file("cluster = { urls = \"x\" }\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("url, node, lease and channel_audit"), "{err}");
    }

    #[test]
    fn the_defaults_are_the_libraries() {
        let args = parse(&BASE);
        let config = args.client_config().unwrap();
        assert_eq!(config.redundancy, holdline_client::DEFAULT_REDUNDANCY);
        assert_eq!(config.timings, Timings::default());
    }

    #[test]
    fn bad_settings_are_typed_errors() {
        let config = |extra: &[&str]| {
            let mut all = BASE.to_vec();
            all.extend_from_slice(extra);
            parse(&all).client_config()
        };
        assert!(matches!(
            config(&["--redundancy", "0"]),
            Err(ConfigError::NoRedundancy)
        ));
        assert!(matches!(
            config(&["--watchdog", "10s"]),
            Err(ConfigError::WatchdogTooShort { .. })
        ));
        assert!(matches!(
            config(&["--ping-interval", "0s"]),
            Err(ConfigError::Zero(_))
        ));
        let no_id = parse(&["--api-base", "http://127.0.0.1:1"]);
        assert!(matches!(
            no_id.client_config(),
            Err(ConfigError::NoClientId)
        ));
        let ftp = parse(&[
            "--api-base",
            "ftp://x",
            "--client-id",
            "i",
            "--client-secret",
            "s",
        ]);
        assert!(matches!(ftp.client_config(), Err(ConfigError::NotHttp(_))));
        let sink = parse(&["--sink", "stdout"]);
        assert!(matches!(
            sink.spool(Duration::ZERO),
            Err(ConfigError::SinkWithoutSpool)
        ));
        let small = parse(&["--spool", "/tmp/x", "--spool-max-bytes", "10"]);
        assert!(matches!(
            small.spool(Duration::ZERO),
            Err(ConfigError::SpoolTooSmall)
        ));
        let bad = parse(&["--spool", "/tmp/x", "--sink", "gopher://x"]);
        assert!(matches!(
            bad.spool(Duration::ZERO),
            Err(ConfigError::Sink(_))
        ));
        assert!(matches!(
            parse(&["--filter", "kind=x"]).filter(),
            Err(ConfigError::Filter(_))
        ));
    }
}
