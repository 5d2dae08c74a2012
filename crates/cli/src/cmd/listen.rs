//! `holdline listen`: streams events as JSON lines on stdout (logs on stderr) and keeps
//! the stream alive through every fault. Credentials and region come from flags, the
//! environment variables Genesys' own tooling uses, or a TOML file, in that order.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

use super::{Signal, Signals, UsageError, duration};

/// `holdline listen` flags.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Region key, domain or URL (eu-west-1, mypurecloud.ie, https://api.mypurecloud.ie).
    #[arg(long, env = "GENESYSCLOUD_REGION")]
    region: Option<String>,
    /// OAuth client id (client-credentials grant).
    #[arg(long, env = "GENESYSCLOUD_OAUTHCLIENT_ID")]
    client_id: Option<String>,
    /// OAuth client secret (prefer the environment variable).
    #[arg(long, env = "GENESYSCLOUD_OAUTHCLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// REST API base instead of a region (the simulator, a proxy, a private deployment).
    #[arg(long)]
    api_base: Option<String>,
    /// Token endpoint base (default: the API base with api. replaced by login.).
    #[arg(long)]
    login_base: Option<String>,
    /// TOML file with any of these settings; flags and environment win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Topic to subscribe (repeatable; combined topics allowed).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// File with one topic per line (# starts a comment).
    #[arg(long)]
    topics_file: Option<PathBuf>,
    /// Queue name whose conversations to subscribe (repeatable).
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// User email whose conversations to subscribe (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// Stop after this long.
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Give up if the first token, look-ups and channel plan take longer than this (a
    /// wrong host, a proxy or a firewall in the way).
    #[arg(long, value_parser = duration)]
    start_timeout: Option<Duration>,
    /// Period of {"message":"ping"} health checks.
    #[arg(long, value_parser = duration)]
    ping_interval: Option<Duration>,
    /// How long a ping may go unanswered.
    #[arg(long, value_parser = duration)]
    pong_timeout: Option<Duration>,
    /// How long a socket may stay silent (2.2 server heartbeats by default).
    #[arg(long, value_parser = duration)]
    watchdog: Option<Duration>,
    /// Roll channels over this long before they or their token expire.
    #[arg(long, value_parser = duration)]
    rollover_margin: Option<Duration>,
    /// Longest delay between reconnect attempts.
    #[arg(long, value_parser = duration)]
    backoff_max: Option<Duration>,
    /// Shortest time the service leaves between socket_closing and the close (about 60s).
    #[arg(long, value_parser = duration)]
    closing_grace: Option<Duration>,
    /// How far before a dead socket's last frame its gap starts (events in flight).
    #[arg(long, value_parser = duration)]
    gap_lookback: Option<Duration>,
    /// How long a socket replaced at rollover keeps receiving (events in flight).
    #[arg(long, value_parser = duration)]
    overlap: Option<Duration>,
    /// Channels (each with its own socket and token) holding every topic; with 2 a single
    /// socket fault loses nothing.
    #[arg(long)]
    redundancy: Option<usize>,
    /// Subscribe every queue's conversations, picking up new queues as they appear.
    #[arg(long)]
    all_queues: bool,
    /// Subscribe every user's conversations, picking up new users as they appear.
    #[arg(long)]
    all_users: bool,
    /// How often --all-queues/--all-users list the org again.
    #[arg(long, value_parser = duration)]
    refresh_every: Option<Duration>,
    /// How long an event id is remembered for de-duplication (must cover the worst delay
    /// between two sockets).
    #[arg(long, value_parser = duration)]
    dedupe_window: Option<Duration>,
    /// Most event ids remembered (about 37 bytes each).
    #[arg(long)]
    dedupe_max_ids: Option<usize>,
    /// Extra PEM root certificates to trust (corporate TLS proxies).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// HTTP proxy for REST and WebSockets, http://[user[:password]@]host:port, or `none`
    /// (default: HTTPS_PROXY, http_proxy, ALL_PROXY and NO_PROXY, as curl reads them).
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Connect to ADDRESS for HOST:PORT instead of what DNS says, as curl's --resolve
    /// (repeatable), e.g. api.example.test:443:127.0.0.1.
    #[arg(long = "resolve", value_name = "HOST:PORT:ADDRESS", value_parser = holdline_client::Resolve::parse)]
    resolve: Vec<holdline_client::Resolve>,
    /// Label for the records' `org` field.
    #[arg(long)]
    org: Option<String>,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address (127.0.0.1:9464
    /// when the flag has no value; off without the flag).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = super::observe::DEFAULT_ADDR)]
    metrics_addr: Option<SocketAddr>,
    /// Spool records durably in this folder before writing them to stdout; after a crash
    /// the next run delivers what stdout had not confirmed and reports the time no run
    /// was receiving as a gap.
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Deliver from the spool to this sink instead of stdout (repeatable; needs --spool):
    /// stdout, file:///path/events.jsonl?max_bytes=N&rotate=1h, https://host/path?secret_env=NAME,
    /// nats://host:4222/subject?stream=NAME, redis://host:6379/stream?maxlen=N,
    /// kafka://host:9092/topic.
    #[arg(long = "sink", value_name = "URL")]
    sinks: Vec<String>,
    /// Most bytes of records the spool holds before holding back (default 1 GiB).
    #[arg(long, value_name = "BYTES")]
    spool_max_bytes: Option<u64>,
    /// How long to hold back while the spool is full before dropping its oldest records
    /// (reported as a gap; default 30s).
    #[arg(long, value_parser = duration)]
    spool_full_wait: Option<Duration>,
    /// Longest wait between tries of a failing sink (the wait doubles from 200ms up to
    /// this; default 10s).
    #[arg(long, value_parser = duration)]
    sink_retry_max: Option<Duration>,
    /// Write only the records this clause keeps (repeatable; every clause must pass),
    /// before the spool: kind=event,gap,rejected; topic=v2.routing.queues.*.conversations
    /// (* is one part); has=/json/pointer or missing=/pointer on the event body;
    /// /pointer=value or /pointer!=value. Gaps are kept whenever one of their topics is.
    #[arg(long = "filter", value_name = "CLAUSE")]
    filters: Vec<String>,
    /// Debug logs (heartbeats, pongs, subscribe replies) on stderr.
    #[arg(long, short)]
    pub verbose: bool,
}

/// A config value that may hold a secret (the client secret, a proxy URL with its
/// password): read like a string, shown as `[redacted]`.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A `[[sink]]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkTable {
    pub url: String,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenFile {
    pub region: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Hidden>,
    pub api_base: Option<String>,
    pub login_base: Option<String>,
    #[serde(default)]
    pub topics: Vec<String>,
    pub topics_file: Option<PathBuf>,
    #[serde(default)]
    pub queues: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    pub redundancy: Option<usize>,
    #[serde(default)]
    pub all_queues: bool,
    #[serde(default)]
    pub all_users: bool,
    pub refresh_every: Option<String>,
    pub dedupe_window: Option<String>,
    pub dedupe_max_ids: Option<usize>,
    pub ca_file: Option<PathBuf>,
    pub proxy: Option<Hidden>,
    #[serde(default)]
    pub resolve: Vec<String>,
    pub org: Option<String>,
    pub metrics_addr: Option<SocketAddr>,
    pub spool: Option<PathBuf>,
    #[serde(default)]
    pub sink: Vec<SinkTable>,
    pub spool_max_bytes: Option<u64>,
    pub spool_full_wait: Option<String>,
    pub sink_retry_max: Option<String>,
    pub ping_interval: Option<String>,
    pub pong_timeout: Option<String>,
    pub watchdog: Option<String>,
    pub rollover_margin: Option<String>,
    pub backoff_max: Option<String>,
    pub closing_grace: Option<String>,
    pub gap_lookback: Option<String>,
    pub overlap: Option<String>,
    pub start_timeout: Option<String>,
    #[serde(default)]
    pub filter: Vec<String>,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Reads and checks a `listen` config file.
pub fn read_file(path: &Path) -> anyhow::Result<ListenFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read config {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| usage(format!("config {} is not valid: {e}", path.display())))
}

fn read_topics(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read topics file {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn file_duration(value: &Option<String>, name: &str) -> anyhow::Result<Option<Duration>> {
    value
        .as_deref()
        .map(|v| duration(v).map_err(|e| usage(format!("{name}: {e}"))))
        .transpose()
}

impl ListenArgs {
    fn file(&self) -> anyhow::Result<ListenFile> {
        match &self.config {
            Some(path) => read_file(path),
            None => Ok(ListenFile::default()),
        }
    }

    /// Where to spool, if anywhere, and its limits: flags, else the file, else defaults.
    fn spool(
        &self,
        file: &ListenFile,
        lookback: Duration,
    ) -> anyhow::Result<Option<(PathBuf, super::spooled::Limits, Vec<SinkConfig>)>> {
        let urls: Vec<String> = if self.sinks.is_empty() {
            file.sink.iter().map(|s| s.url.clone()).collect()
        } else {
            self.sinks.clone()
        };
        let mut sinks = urls
            .iter()
            .map(|u| SinkConfig::parse(u).map_err(usage))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(dir) = self.spool.clone().or_else(|| file.spool.clone()) else {
            if !sinks.is_empty() {
                return Err(usage(
                    "--sink needs --spool DIR: sinks deliver from the durable spool",
                ));
            }
            return Ok(None);
        };
        if sinks.is_empty() {
            sinks.push(SinkConfig::Stdout);
        }
        let full_wait = match (self.spool_full_wait, &file.spool_full_wait) {
            (Some(d), _) => d,
            (None, Some(text)) => duration(text)
                .map_err(|e| usage(format!("spool_full_wait in the config file: {e}")))?,
            (None, None) => Duration::from_secs(30),
        };
        let retry_max = match (self.sink_retry_max, &file.sink_retry_max) {
            (Some(d), _) => d,
            (None, Some(text)) => duration(text)
                .map_err(|e| usage(format!("sink_retry_max in the config file: {e}")))?,
            (None, None) => Duration::from_secs(10),
        };
        let max_bytes = self
            .spool_max_bytes
            .or(file.spool_max_bytes)
            .unwrap_or(1 << 30);
        if max_bytes < 64 * 1024 {
            return Err(usage("--spool-max-bytes must be at least 65536"));
        }
        Ok(Some((
            dir,
            super::spooled::Limits {
                max_bytes,
                full_wait,
                lookback,
                retry_max,
            },
            sinks,
        )))
    }

    /// The output filter, if any: the flags' clauses, else the file's.
    fn filter(&self, file: &ListenFile) -> anyhow::Result<Option<Filter>> {
        let clauses = match self.filters.is_empty() {
            true => &file.filter,
            false => &self.filters,
        };
        Filter::parse(clauses).map_err(|e| usage(e.to_string()))
    }

    /// Where to serve metrics, if anywhere: the flag, else the file.
    fn metrics_addr(&self, file: &ListenFile) -> Option<SocketAddr> {
        self.metrics_addr.or(file.metrics_addr)
    }

    /// Layers defaults, the file, then environment and flags into a client configuration.
    fn client_config(&self, file: &ListenFile) -> anyhow::Result<ClientConfig> {
        let endpoints = self.endpoints(file)?;
        let client_id = self
            .client_id
            .clone()
            .or(file.client_id.clone())
            .ok_or_else(|| {
                usage("no OAuth client id: set GENESYSCLOUD_OAUTHCLIENT_ID or --client-id")
            })?;
        let secret = self.client_secret.clone().or(file.client_secret.clone().map(|h| h.0)).ok_or_else(|| {
            usage("no OAuth client secret: set GENESYSCLOUD_OAUTHCLIENT_SECRET (or --client-secret)")
        })?;
        let mut topics = file.topics.clone();
        if let Some(path) = &file.topics_file {
            topics.extend(read_topics(path)?);
        }
        topics.extend(self.topics.iter().cloned());
        if let Some(path) = &self.topics_file {
            topics.extend(read_topics(path)?);
        }
        let credentials = Credentials {
            client_id,
            client_secret: Secret::new(secret),
        };
        let mut config = ClientConfig::new(endpoints, credentials, topics);
        config.queues = file.queues.iter().chain(&self.queues).cloned().collect();
        config.users = file.users.iter().chain(&self.users).cloned().collect();
        config.redundancy = self
            .redundancy
            .or(file.redundancy)
            .unwrap_or(DEFAULT_REDUNDANCY);
        config.all_queues = self.all_queues || file.all_queues;
        if let Some(window) = self
            .dedupe_window
            .or(file_duration(&file.dedupe_window, "dedupe_window")?)
        {
            config.dedupe_window = window;
        }
        if let Some(max) = self.dedupe_max_ids.or(file.dedupe_max_ids) {
            config.dedupe_max_ids = max.max(1);
        }
        config.all_users = self.all_users || file.all_users;
        if let Some(every) = self
            .refresh_every
            .or(file_duration(&file.refresh_every, "refresh_every")?)
        {
            config.refresh_every = every;
        }
        if config.redundancy == 0 {
            return Err(usage("--redundancy must be at least 1"));
        }
        config.ca_file = self.ca_file.clone().or(file.ca_file.clone());
        config.resolve = file
            .resolve
            .iter()
            .map(|r| holdline_client::Resolve::parse(r).map_err(usage))
            .collect::<Result<Vec<_>, _>>()?;
        config.resolve.extend(self.resolve.iter().cloned());
        config.proxy = super::service::proxy_setting(
            self.proxy
                .as_deref()
                .or(file.proxy.as_ref().map(|h| h.0.as_str())),
        );
        config.org = self
            .org
            .clone()
            .or(file.org.clone())
            .unwrap_or_else(|| "default".to_owned());
        config.timings = self.timings(file)?;
        Ok(config)
    }

    fn endpoints(&self, file: &ListenFile) -> anyhow::Result<Endpoints> {
        Ok(super::service::endpoints(
            self.api_base.clone().or(file.api_base.clone()),
            self.login_base.clone().or(file.login_base.clone()),
            self.region.clone().or(file.region.clone()),
        )?)
    }

    fn timings(&self, file: &ListenFile) -> anyhow::Result<Timings> {
        let mut t = Timings::default();
        let pick = |flag: Option<Duration>,
                    value: &Option<String>,
                    name: &str,
                    slot: &mut Duration|
         -> anyhow::Result<()> {
            if let Some(d) = flag.or(file_duration(value, name)?) {
                *slot = d;
            }
            Ok(())
        };
        pick(
            self.ping_interval,
            &file.ping_interval,
            "ping_interval",
            &mut t.ping_interval,
        )?;
        pick(
            self.pong_timeout,
            &file.pong_timeout,
            "pong_timeout",
            &mut t.pong_timeout,
        )?;
        pick(self.watchdog, &file.watchdog, "watchdog", &mut t.watchdog)?;
        pick(
            self.rollover_margin,
            &file.rollover_margin,
            "rollover_margin",
            &mut t.rollover_margin,
        )?;
        pick(
            self.backoff_max,
            &file.backoff_max,
            "backoff_max",
            &mut t.backoff_max,
        )?;
        pick(
            self.closing_grace,
            &file.closing_grace,
            "closing_grace",
            &mut t.closing_grace,
        )?;
        pick(
            self.gap_lookback,
            &file.gap_lookback,
            "gap_lookback",
            &mut t.gap_lookback,
        )?;
        pick(self.overlap, &file.overlap, "overlap", &mut t.overlap)?;
        for (name, d) in [
            ("ping interval", t.ping_interval),
            ("pong timeout", t.pong_timeout),
            ("watchdog", t.watchdog),
        ] {
            if d.is_zero() {
                return Err(usage(format!("the {name} must be longer than 0")));
            }
        }
        if t.watchdog < t.ping_interval + t.pong_timeout {
            return Err(usage(format!(
                "--watchdog {:?} is shorter than --ping-interval {:?} + --pong-timeout {:?}: a quiet socket \
                 hears nothing but the answers to its pings, so every healthy socket would be declared dead \
                 between two pings. Make the watchdog at least {:?} (the default is 66s: 2.2 server heartbeats)",
                t.watchdog,
                t.ping_interval,
                t.pong_timeout,
                t.ping_interval + t.pong_timeout
            )));
        }
        Ok(t)
    }
}

/// Runs `listen` until `--duration`, a signal, or a fatal error.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let file = args.file()?;
    let config = args.client_config(&file)?;
    let org = config.org.clone();
    tracing::info!(endpoints = %config.endpoints, client_id = %config.credentials.client_id, topics = config.topics.len(), "starting");
    let metrics_addr = args.metrics_addr(&file);
    let lookback = config.timings.gap_lookback;
    let filter = args.filter(&file)?;
    // Each component registers its own series; /metrics serves them all.
    let mut registry = prometheus_client::registry::Registry::default();
    let filtered = Filtered::default();
    if filter.is_some() {
        registry.register(
            "holdline_filtered",
            "Records --filter left out of the output, by kind",
            filtered.0.clone(),
        );
    }
    let spooled = match args.spool(&file, lookback)? {
        Some((dir, limits, sinks)) => {
            let opened = sinks
                .iter()
                .map(holdline_sinks::open)
                .collect::<Result<Vec<_>, _>>()?;
            Some(super::spooled::Spooled::open(
                &dir,
                limits,
                opened,
                &mut registry,
            )?)
        }
        None => None,
    };
    let mut unclean_since = spooled.as_ref().and_then(|s| s.unclean_since);
    let mut signals = Signals::new().context("cannot install the signal handlers")?;
    let reload = Reload::new(&config);
    let start_timeout = args
        .start_timeout
        .or(file_duration(&file.start_timeout, "start_timeout")?)
        .unwrap_or(DEFAULT_START_TIMEOUT);
    let reach = config.endpoints.to_string();
    let (handle, mut stream) = tokio::select! {
        // Starting may retry for a while; a signal meanwhile stops at once.
        started = tokio::time::timeout(start_timeout, Client::start(config)) => match started {
            Ok(started) => started?,
            Err(_) => return Err(usage(format!(
                "could not start within {start_timeout:?} ({reach}): nothing answered in time. Check that the \
                 hosts resolve (DNS), that a proxy is set if the network needs one (HTTPS_PROXY), and that no \
                 firewall drops the traffic; `holdline doctor` checks each hop. --start-timeout sets the limit"
            ))),
        },
        () = stop_signal(&mut signals) => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    holdline_client::telemetry::metrics::register(handle.stats().clone(), &mut registry);
    if let Some(addr) = metrics_addr {
        super::observe::serve(addr, handle.stats().clone(), registry).await?;
    }
    if let Some(spooled) = &spooled {
        spooled.observe(handle.stats().clone());
    }
    if spooled.is_none() {
        widen_stdout_pipe();
    }
    let mut out = Output {
        spooled,
        ..Output::default()
    };
    let deadline = args.duration.map(|d| Instant::now() + d);
    // Signals are watched beside the output, which may be blocked on a full stdout.
    let watcher = tokio::spawn(watch_signals(signals, handle.clone(), args.clone(), reload));
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
        };
        // Take whatever else is ready without waiting, then write the batch in one go:
        // a burst costs one write, and nothing waits once the queue is drained.
        let mut item = item;
        let mut taken = 0;
        let step = loop {
            match item {
                None => break Step::End,
                Some(Ok(Event::Notification(n))) => {
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
                Some(Ok(Event::Gap(gap))) => {
                    if filter.as_ref().is_none_or(|f| f.gap(&gap.topics)) {
                        write_gap(&mut out.buf, &gap);
                        out.ended(None);
                    } else {
                        filtered.inc("gap");
                    }
                }
                Some(Ok(Event::Rejected(r))) => {
                    if filter.as_ref().is_none_or(|f| f.rejected(&r.topic)) {
                        write_rejected(&mut out.buf, &r, &org);
                        out.ended(None);
                    } else {
                        filtered.inc("rejected");
                    }
                }
                Some(Ok(Event::State(change))) => {
                    tracing::info!(kind = ?change.kind, channel = change.channel.as_deref().unwrap_or("-"), "{}", change.detail);
                    if change.kind == StateKind::Live
                        && let Some(since) = unclean_since.take()
                    {
                        let gap = restart_gap(&handle, since, lookback);
                        if filter.as_ref().is_none_or(|f| f.gap(&gap.topics)) {
                            write_gap(&mut out.buf, &gap);
                            out.ended(None);
                        }
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
    let flushed = match out.flush().await {
        Ok(()) => match out.spooled.take() {
            Some(spooled) if result.is_ok() => spooled.close().await,
            Some(spooled) => spooled.close_after_failure().await,
            None => Ok(()),
        },
        Err(e) => Err(e),
    };
    watcher.abort();
    summary(handle.stats());
    match (result, flushed) {
        (Err(e), _) if is_broken_pipe(&e) => Err(stdout_closed()),
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) if is_broken_pipe(&e) => Err(stdout_closed()),
        (Ok(()), flushed) => flushed,
    }
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

/// How long `listen` may take to get its first token and plan its channels.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

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
        ("redundancy", DEFAULT_REDUNDANCY.to_string()),
        ("start_timeout", d(DEFAULT_START_TIMEOUT)),
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

/// Channels holding each shard unless told otherwise: one socket fault costs nothing.
const DEFAULT_REDUNDANCY: usize = 2;

/// Waits for SIGINT or SIGTERM (a SIGHUP before the client runs changes nothing).
async fn stop_signal(signals: &mut Signals) {
    while signals.next().await != Signal::Stop {}
}

/// A second SIGINT/SIGTERM: the user will not wait for the sockets to close.
fn exit_at_once() -> ! {
    tracing::warn!(
        "second signal: exiting at once; events still queued inside holdline are not written          (with --spool, anything spooled is delivered by the next run)"
    );
    std::process::exit(130)
}

/// SIGHUP: reads `--config` and the topics files again and moves only the topics that
/// changed (the resolution of queue and user names runs beside the stream).
struct Reload {
    /// The explicit topics in force (combined ones as their parts), resolved names
    /// included; None until the first reload resolves the starting lists.
    applied: std::sync::Arc<tokio::sync::Mutex<Option<HashSet<String>>>>,
    start: Lists,
    /// Topics the client follows by itself (`--all-queues`, `--all-users`): never removed
    /// by a reload.
    tracked: (bool, bool),
}

/// The topic lists of a configuration.
#[derive(Debug, Clone, Default)]
struct Lists {
    topics: Vec<String>,
    queues: Vec<String>,
    users: Vec<String>,
}

impl Lists {
    fn of(config: &ClientConfig) -> Lists {
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
    fn new(config: &ClientConfig) -> Reload {
        Reload {
            applied: Default::default(),
            start: Lists::of(config),
            tracked: (config.all_queues, config.all_users),
        }
    }

    fn start(&self, args: &ListenArgs, handle: &holdline_client::ClientHandle) {
        let lists = match args.file().and_then(|file| args.client_config(&file)) {
            Ok(config) => Lists::of(&config),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the configuration is not valid; keeping the current topics");
                return;
            }
        };
        tracing::info!("SIGHUP: reading the topic lists again");
        let (applied, start, tracked) = (self.applied.clone(), self.start.clone(), self.tracked);
        let handle = handle.clone();
        tokio::spawn(async move {
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
        });
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
const BATCH: usize = 1024;
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
struct Filtered(
    prometheus_client::metrics::family::Family<
        Vec<(&'static str, &'static str)>,
        prometheus_client::metrics::counter::Counter,
    >,
);

impl Filtered {
    fn inc(&self, kind: &'static str) {
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
struct Output {
    buf: Vec<u8>,
    /// Where each record in `buf` ends.
    ends: Vec<usize>,
    /// When the newest event in `buf` was received.
    newest: Option<std::time::SystemTime>,
    /// With `--spool`, records go there and a thread delivers them to stdout.
    spooled: Option<super::spooled::Spooled>,
}

impl Output {
    /// How many bytes of records to hold before writing them.
    fn flush_bytes(&self) -> usize {
        match self.spooled {
            Some(_) => SPOOL_FLUSH_BYTES,
            None => FLUSH_BYTES,
        }
    }

    /// A record was written into `buf`.
    fn ended(&mut self, received: Option<std::time::SystemTime>) {
        self.ends.push(self.buf.len());
        if received.is_some() {
            self.newest = self.newest.max(received);
        }
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
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
    let from = since.checked_sub(lookback).unwrap_or(since);
    let to = std::time::SystemTime::now().max(from);
    let gap = holdline_client::Gap {
        topics: handle.topics().into(),
        from,
        to,
        reason: "holdline was not running: the previous run stopped without closing its spool"
            .into(),
    };
    holdline_client::telemetry::notable::gap(handle.stats(), &gap);
    gap
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

    /// The metrics address the flags and their config file give.
    fn metrics(args: &ListenArgs) -> Option<SocketAddr> {
        args.metrics_addr(&args.file().unwrap())
    }

    fn parse(args: &[&str]) -> ListenArgs {
        let argv = std::iter::once("listen").chain(args.iter().copied());
        Wrapper::try_parse_from(argv).unwrap().listen
    }

    #[test]
    fn metrics_are_off_unless_asked_and_loopback_when_asked_without_an_address() {
        assert_eq!(metrics(&parse(&[])), None);
        let default: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert_eq!(metrics(&parse(&["--metrics-addr"])), Some(default));
        let chosen: SocketAddr = "0.0.0.0:9999".parse().unwrap();
        assert_eq!(
            metrics(&parse(&["--metrics-addr", "0.0.0.0:9999"])),
            Some(chosen)
        );
        assert!(
            Wrapper::try_parse_from(["listen", "--metrics-addr", "localhost"]).is_err(),
            "an address needs a port"
        );
    }

    #[test]
    fn the_config_files_secrets_never_show_in_debug() {
        let file: ListenFile =
            toml::from_str("client_secret = \"hunter2\"\nproxy = \"http://alice:s3cret@p:3128\"\n")
                .unwrap();
        let shown = format!("{file:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(file.client_secret.unwrap().0, "hunter2");
    }

    #[test]
    fn the_config_file_can_turn_metrics_on() {
        let dir = std::env::temp_dir().join(format!("holdline-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("listen.toml");
        std::fs::write(&path, "metrics_addr = \"127.0.0.1:9100\"\n").unwrap();
        let args = parse(&["--config", path.to_str().unwrap()]);
        assert_eq!(metrics(&args), Some("127.0.0.1:9100".parse().unwrap()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
