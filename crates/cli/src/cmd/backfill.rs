//! `listen --backfill`: after each gap, and a settle delay (recent analytics data still
//! moves), the org's REST API is asked what the gap's topics could have carried, and the
//! answers join the output as `backfill` records, closed by one `backfill_done` per gap.
//! The work runs beside the sockets, paced to a share of the org's REST budget, and its
//! records are written only when no live event is waiting.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use holdline_client::backfill::{self, GapToFill, Kinds, Pace};
use holdline_client::rest::api::Api;
use holdline_client::rest::auth::TokenSource;
use holdline_client::{ClientConfig, Gap};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::mpsc;

/// Labels of the back-fill counters: the org, and the status or source.
type Labels = Vec<(&'static str, String)>;

/// Back-fill's metrics (one series per org and status or source: bounded by the config).
#[derive(Clone, Default)]
struct Metrics {
    gaps: Family<Labels, Counter>,
    records: Family<Labels, Counter>,
}

/// The service's general limit, calls per minute per token.
const REST_PER_MINUTE: f64 = 300.0;

/// Back-fills of one org that may wait their turn; a gap beyond them is reported as not
/// back-filled (an org whose network flaps should not pile work up without end).
const MOST_WAITING: usize = 8;

/// What `--backfill` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Everything the client is allowed to read; a missing permission is reported once
    /// and that part is not asked for again.
    #[default]
    Auto,
    Off,
    Conversations,
    Users,
    All,
}

impl Mode {
    fn kinds(self) -> Kinds {
        Kinds {
            conversations: matches!(self, Mode::Auto | Mode::All | Mode::Conversations),
            users: matches!(self, Mode::Auto | Mode::All | Mode::Users),
        }
    }
}

/// How back-fill runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub mode: Mode,
    /// How long after a gap ended it is back-filled.
    pub settle: Duration,
    /// The share of the org's REST budget (300 calls a minute) back-fill may use.
    pub share: f64,
}

/// One org's back-fill: its REST API (a token of its own), the pace of its calls, and
/// what it still asks for.
struct OrgFill {
    /// The OAuth client and API base it was made for.
    client: (String, String),
    api: Api,
    /// Back-fills waiting or running.
    waiting: std::sync::atomic::AtomicUsize,
    pace: tokio::sync::Mutex<Pace>,
    kinds: Mutex<Kinds>,
    warned: Mutex<BTreeSet<String>>,
}

/// A back-fill and the records it makes, for the writer to take when no event waits.
pub type Started = (Arc<Backfill>, mpsc::Receiver<Vec<u8>>);

/// Takes gaps, back-fills each after the settle delay, and sends the records to the
/// writer.
pub struct Backfill {
    settings: Settings,
    metrics: Metrics,
    orgs: Mutex<HashMap<String, Arc<OrgFill>>>,
    out: mpsc::Sender<Vec<u8>>,
    /// The gaps waiting for their back-fill or under way: id → org. Whoever takes a gap
    /// out (its task when done, or the process stopping) writes its `backfill_done`.
    pending: Arc<Mutex<HashMap<String, String>>>,
}

impl Backfill {
    /// A back-fill and the records it makes (None with `--backfill off`).
    pub fn new(settings: Settings) -> Option<Started> {
        if settings.mode == Mode::Off {
            return None;
        }
        let (out, records) = mpsc::channel(1024);
        let b = Backfill {
            settings,
            metrics: Metrics::default(),
            orgs: Mutex::default(),
            out,
            pending: Arc::default(),
        };
        Some((Arc::new(b), records))
    }

    /// Adds the back-fill counters to `/metrics`.
    /// The process is stopping: a `backfill_done` (failed) for every gap whose back-fill
    /// has not ended, so that no gap is left without one. A later run does not repeat them.
    pub fn abandon(&self) -> Vec<Vec<u8>> {
        let pending: Vec<(String, String)> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        pending
            .into_iter()
            .map(|(gap, org)| {
                tracing::warn!(org = %org, gap = %gap, "back-fill: stopping before this gap was back-filled");
                self.metrics
                    .gaps
                    .get_or_create(&vec![("org", org.clone()), ("status", "failed".to_owned())])
                    .inc();
                let mut line = Vec::new();
                holdline_proto::record::write_backfill_done(
                    &mut line,
                    &holdline_proto::record::BackfillDoneFields {
                        gap: &gap,
                        org: &org,
                        status: "failed",
                        counts: &[("requests", 0)],
                        reason: Some(
                            "holdline stopped before this gap was back-filled (it was settling or under way); a later run does not repeat it",
                        ),
                    },
                );
                line
            })
            .collect()
    }

    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "holdline_backfill_gaps",
            "Gaps back-filled, by org and how it ended (complete, partial, failed)",
            self.metrics.gaps.clone(),
        );
        registry.register(
            "holdline_backfill_records",
            "Back-fill records written, by org and source",
            self.metrics.records.clone(),
        );
    }

    /// Back-fills `org`'s gaps with the OAuth client of `config` (replacing what it had).
    pub fn add_org(&self, org: &str, config: &ClientConfig) -> anyhow::Result<()> {
        let api = api_for(config)?;
        let per_minute = REST_PER_MINUTE * self.settings.share.clamp(0.01, 1.0);
        let fill = OrgFill {
            client: (
                config.credentials.client_id.clone(),
                config.endpoints.api_base(),
            ),
            api,
            waiting: Default::default(),
            pace: tokio::sync::Mutex::new(Pace::per_minute(per_minute)),
            kinds: Mutex::new(self.settings.mode.kinds()),
            warned: Mutex::default(),
        };
        self.orgs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(org.to_owned(), Arc::new(fill));
        Ok(())
    }

    /// Back-fills the gaps of exactly these orgs from now on (a back-fill under way goes
    /// on). An org whose client cannot be set up is logged and left out.
    pub fn set_orgs(&self, orgs: &[(Arc<str>, ClientConfig)]) {
        let names: BTreeSet<&str> = orgs.iter().map(|(n, _)| &**n).collect();
        self.orgs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|n, _| names.contains(n.as_str()));
        for (name, config) in orgs {
            // An org whose client is the same keeps its pace and what it learnt.
            let same = self
                .orgs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&**name)
                .is_some_and(|f| {
                    f.client
                        == (
                            config.credentials.client_id.clone(),
                            config.endpoints.api_base(),
                        )
                });
            if same {
                continue;
            }
            if let Err(e) = self.add_org(name, config) {
                tracing::error!(org = %name, error = %e, "back-fill off for this org: its REST client cannot be set up");
            }
        }
    }

    /// Back-fills `gap` (named `id`) of `org` once it has settled.
    pub fn gap(&self, org: &str, gap: &Gap, id: &str) {
        let Some(fill) = self
            .orgs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(org)
            .cloned()
        else {
            return;
        };
        let job = GapToFill {
            id: id.to_owned(),
            org: org.to_owned(),
            topics: gap.topics.to_vec(),
            from: gap.from,
            to: gap.to,
        };
        use std::sync::atomic::Ordering;
        if fill.waiting.fetch_add(1, Ordering::Relaxed) >= MOST_WAITING {
            fill.waiting.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(org = %org, gap = %id, "back-fill: {MOST_WAITING} back-fills of this org are waiting already; this gap is not back-filled");
            let mut line = Vec::new();
            holdline_proto::record::write_backfill_done(
                &mut line,
                &holdline_proto::record::BackfillDoneFields {
                    gap: id,
                    org,
                    status: "failed",
                    counts: &[("requests", 0)],
                    reason: Some(&format!(
                        "{MOST_WAITING} back-fills of this org were waiting already"
                    )),
                },
            );
            let out = self.out.clone();
            tokio::spawn(async move { out.send(line).await });
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), org.to_owned());
        let pending = self.pending.clone();
        let settle = self.settings.settle;
        let auto = self.settings.mode == Mode::Auto;
        let out = self.out.clone();
        let metrics = self.metrics.clone();
        let wait = (job.to + settle)
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(settle);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let kinds = *fill.kinds.lock().unwrap_or_else(|p| p.into_inner());
            let mut pace = fill.pace.lock().await;
            let mut lines = Vec::new();
            let outcome =
                backfill::fill(&fill.api, &job, kinds, &mut pace, &mut |l| lines.push(l)).await;
            drop(pace);
            fill.waiting.fetch_sub(1, Ordering::Relaxed);
            let missing = &outcome.missing;
            if !missing.is_empty() {
                let mut warned = fill.warned.lock().unwrap_or_else(|p| p.into_inner());
                let new: Vec<&String> = missing
                    .iter()
                    .filter(|p| warned.insert((*p).clone()))
                    .collect();
                if !new.is_empty() {
                    tracing::warn!(org = %job.org, missing = ?new, auto, "back-fill: the OAuth client lacks permissions; {}", if auto { "those parts are not asked for again" } else { "grant them, or set --backfill to what it may read" });
                }
                if auto {
                    let mut kinds = fill.kinds.lock().unwrap_or_else(|p| p.into_inner());
                    if missing
                        .iter()
                        .any(|p| p == "analytics:conversationDetail:view")
                    {
                        kinds.conversations = false;
                    }
                    if missing.iter().any(|p| p == "analytics:userDetail:view") {
                        kinds.users = false;
                    }
                }
            }
            let status = outcome.status;
            tracing::info!(org = %job.org, gap = %job.id, status, records = lines.len().saturating_sub(1), requests = outcome.requests, "back-fill done");
            metrics
                .gaps
                .get_or_create(&vec![
                    ("org", job.org.clone()),
                    ("status", status.to_owned()),
                ])
                .inc();
            for (source, n) in &outcome.records {
                metrics
                    .records
                    .get_or_create(&vec![
                        ("org", job.org.clone()),
                        ("source", (*source).to_owned()),
                    ])
                    .inc_by(*n);
            }
            // Stopping, the process has written this gap's end already.
            let mine = pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&job.id)
                .is_some();
            if !mine {
                return;
            }
            for line in lines {
                if out.send(line).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The REST API as `config`'s OAuth client, through its proxy and trust settings, with a
/// token of its own.
fn api_for(config: &ClientConfig) -> anyhow::Result<Api> {
    let tls = holdline_client::tls::client_config(config.ca_file.as_deref())?;
    let proxy = holdline_client::proxy::ProxyRules::new(&config.proxy)?;
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .proxy(proxy.for_reqwest())
        .user_agent(concat!("holdline/", env!("CARGO_PKG_VERSION")));
    for r in &config.resolve {
        builder = builder.resolve(&r.host, std::net::SocketAddr::new(r.addr, r.port));
    }
    let http = builder.build()?;
    let auth = TokenSource::new(
        http.clone(),
        &config.endpoints,
        config.credentials.clone(),
        config.timings,
    );
    Ok(Api::new(
        http,
        config.endpoints.api_base(),
        auth,
        config.timings,
    ))
}
