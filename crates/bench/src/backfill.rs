//! What a back-fill costs: the embedded simulator runs a contact centre of a given size
//! for a while, then gaps of several lengths, each ending a second ago, over every topic
//! of the org (its queues' conversations and every agent's conversations, presence,
//! routing status and activity), are back-filled. Counted: the entities back-filled and
//! the REST calls made, and from those the time the back-fill takes at the default share
//! of the REST budget (a quarter of 300 calls a minute).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use holdline_client::backfill::{self, GapToFill, Kinds, Pace};
use holdline_client::rest::api::Api;
use holdline_client::rest::auth::TokenSource;
use holdline_client::{Credentials, Endpoints, Secret, Timings};
use holdline_sim::{SimConfig, Simulator};

/// Calls a minute at the default `--backfill-share` (0.25 of 300).
pub const DEFAULT_PACE: f64 = 75.0;

/// One org size.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub queues: usize,
    pub agents: usize,
    /// Events a second the contact centre publishes.
    pub rate: f64,
}

/// One gap's back-fill.
pub struct Row {
    pub size: Size,
    pub gap: Duration,
    /// Records by source.
    pub records: BTreeMap<String, u64>,
    pub requests: u64,
    pub status: String,
}

fn topics(sim: &Simulator) -> Vec<String> {
    let org = &sim.core().org;
    let mut topics: Vec<String> = org
        .queues
        .iter()
        .map(|q| format!("v2.routing.queues.{}.conversations", q.id))
        .collect();
    topics.extend(org.agents.iter().map(|a| {
        format!(
            "v2.users.{}?conversations&presence&routingStatus&activity",
            a.id
        )
    }));
    topics
}

/// Runs a contact centre of `size` for the longest of `gaps` (and a second), then
/// back-fills a gap of each length.
pub async fn run(size: Size, gaps: &[Duration]) -> Result<Vec<Row>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(
        listener,
        SimConfig {
            rate: size.rate,
            queues: size.queues,
            agents: size.agents,
            // Calls are counted here, not limited: the pace is applied to the count.
            rate_limit_per_minute: 1_000_000,
            ..SimConfig::default()
        },
    )
    .context("starting the simulator")?;
    let longest = gaps.iter().max().copied().unwrap_or_default();
    tokio::time::sleep(longest + Duration::from_secs(2)).await;
    let endpoints = Endpoints::Custom {
        api_base: sim.url().to_owned(),
        login_base: sim.url().to_owned(),
    };
    let credentials = Credentials {
        client_id: "holdline-demo".into(),
        client_secret: Secret::new("holdline-demo"),
    };
    let http = reqwest::Client::new();
    let timings = Timings::default();
    let auth = TokenSource::new(http.clone(), &endpoints, credentials, timings);
    let api = Api::new(http, endpoints.api_base(), auth, timings);
    let topics = topics(&sim);
    let mut rows = Vec::new();
    for &gap in gaps {
        let to = SystemTime::now() - Duration::from_secs(1);
        let job = GapToFill {
            id: format!("gap:bench:{}", gap.as_secs()),
            org: "bench".into(),
            topics: topics.clone(),
            from: to - gap,
            to,
        };
        let mut lines = Vec::new();
        let mut pace = Pace::per_minute(1e9);
        let kinds = Kinds {
            conversations: true,
            users: true,
        };
        let outcome = backfill::fill(&api, &job, kinds, &mut pace, &mut |l| lines.push(l)).await;
        let records: BTreeMap<String, u64> = outcome
            .records
            .iter()
            .map(|(s, n)| ((*s).to_owned(), *n))
            .collect();
        let requests = outcome.requests;
        let status = outcome.status;
        rows.push(Row {
            size,
            gap,
            records,
            requests,
            status: status.to_owned(),
        });
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| org (queues, agents, events/s) | gap | conversations | open conversations | users | REST calls | at 75 calls/min | status |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let n = |k: &str| r.records.get(k).copied().unwrap_or(0);
        let minutes = r.requests as f64 / DEFAULT_PACE;
        out.push_str(&format!(
            "| {}, {}, {:.0} | {} s | {} | {} | {} | {} | {:.0} s | {} |\n",
            r.size.queues,
            r.size.agents,
            r.size.rate,
            r.gap.as_secs(),
            n("analytics.conversations"),
            n("conversations"),
            n("analytics.users"),
            r.requests,
            minutes * 60.0,
            r.status
        ));
    }
    out
}
