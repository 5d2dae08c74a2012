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
use tokio::sync::mpsc;

/// The service's general limit, calls per minute per token.
const REST_PER_MINUTE: f64 = 300.0;

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
    api: Api,
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
    orgs: Mutex<HashMap<String, Arc<OrgFill>>>,
    out: mpsc::Sender<Vec<u8>>,
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
            orgs: Mutex::default(),
            out,
        };
        Some((Arc::new(b), records))
    }

    /// Back-fills `org`'s gaps with the OAuth client of `config` (replacing what it had).
    pub fn add_org(&self, org: &str, config: &ClientConfig) -> anyhow::Result<()> {
        let api = api_for(config)?;
        let per_minute = REST_PER_MINUTE * self.settings.share.clamp(0.01, 1.0);
        let fill = OrgFill {
            api,
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
        let settle = self.settings.settle;
        let auto = self.settings.mode == Mode::Auto;
        let out = self.out.clone();
        let wait = (job.to + settle)
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(settle);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let kinds = *fill.kinds.lock().unwrap_or_else(|p| p.into_inner());
            let mut pace = fill.pace.lock().await;
            let mut lines = Vec::new();
            let status =
                backfill::fill(&fill.api, &job, kinds, &mut pace, &mut |l| lines.push(l)).await;
            drop(pace);
            let done = lines.last().cloned().unwrap_or_default();
            let missing = missing_permissions(&done);
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
            tracing::info!(org = %job.org, gap = %job.id, status, records = lines.len().saturating_sub(1), "back-fill done");
            for line in lines {
                if out.send(line).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The permissions a `backfill_done` record says are missing.
fn missing_permissions(done: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(done) else {
        return Vec::new();
    };
    let reason = v["reason"].as_str().unwrap_or_default();
    [
        "analytics:conversationDetail:view",
        "analytics:userDetail:view",
        "conversation:communication:view",
    ]
    .into_iter()
    .filter(|p| reason.contains(p))
    .map(str::to_owned)
    .collect()
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
