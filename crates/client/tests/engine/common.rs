#![allow(dead_code)] // shared by several test binaries, each using a part
//! Test harness: a simulator on 127.0.0.1:0, a client with compressed timings, a collector
//! that drains the event stream, and the ledger check.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use holdline_client::{
    Client, ClientConfig, ClientError, ClientHandle, Credentials, Endpoints, Event, Gap, Secret,
    StateKind, Timings,
};
use holdline_proto::EventId;
use holdline_proto::topic::expand;
use holdline_sim::state::ledger::LedgerEntry;
use holdline_sim::{SimConfig, Simulator};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const WAIT: Duration = Duration::from_secs(10);

/// Debug logs of `directives` (an `EnvFilter`) on stderr when `HOLDLINE_SOAK_LOG` is set.
pub fn init_log(directives: &str) {
    if std::env::var_os("HOLDLINE_SOAK_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(directives))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// SplitMix64, so a seed gives the same schedule everywhere.
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

pub async fn sim(config: SimConfig) -> Simulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(listener, config).unwrap()
}

/// Timings for tests: ping every 100 ms, dead after 300 ms without a pong.
pub fn fast_timings() -> Timings {
    Timings {
        ping_interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(300),
        watchdog: Duration::from_millis(600),
        rollover_margin: Duration::from_secs(300),
        closing_grace: Duration::from_millis(200),
        gap_lookback: Duration::from_millis(500),
        overlap: Duration::from_secs(1),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
    }
}

pub fn config(sim: &Simulator, topics: Vec<String>) -> ClientConfig {
    let endpoints = Endpoints::Custom {
        api_base: sim.url().to_owned(),
        login_base: sim.url().to_owned(),
    };
    let credentials = Credentials {
        client_id: "holdline-demo".into(),
        client_secret: Secret::new("holdline-demo"),
    };
    let mut config = ClientConfig::new(endpoints, credentials, topics);
    // One socket per shard: tests that count sockets or want redundancy say so.
    config.redundancy = 1;
    config.timings = fast_timings();
    config
}

/// Every topic of the simulated org: queue conversations and each agent's user topics.
pub fn org_topics(sim: &Simulator) -> Vec<String> {
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

/// What the stream produced, with when each thing arrived.
#[derive(Default)]
pub struct Seen {
    pub events: Vec<(EventId, String)>,
    pub gaps: Vec<Gap>,
    pub states: Vec<(StateKind, String, SystemTime)>,
    pub rejected: Vec<holdline_client::Rejection>,
    pub error: Option<ClientError>,
    pub ended: bool,
}

/// Drains the stream in the background.
pub struct Collector {
    pub seen: Arc<Mutex<Seen>>,
    pub handle: ClientHandle,
    task: JoinHandle<()>,
}

impl Collector {
    pub async fn start(config: ClientConfig) -> Collector {
        let (handle, mut stream) = Client::start(config).await.expect("client starts");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let mut s = sink.lock().unwrap();
                match item {
                    Ok(Event::Notification(n)) => s.events.push((n.id, n.topic().to_owned())),
                    Ok(Event::Gap(g)) => s.gaps.push(g),
                    Ok(Event::State(c)) => s.states.push((c.kind, c.detail, SystemTime::now())),
                    Ok(Event::Rejected(r)) => s.rejected.push(r),
                    Err(e) => s.error = Some(e),
                }
            }
            sink.lock().unwrap().ended = true;
        });
        Collector { seen, handle, task }
    }

    /// Waits until `cond` holds over what was seen.
    pub async fn until(&self, what: &str, cond: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if cond(&self.seen.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// When the client first went live.
    pub async fn live_since(&self) -> SystemTime {
        self.until("the first live socket", |s| {
            s.states.iter().any(|(k, ..)| *k == StateKind::Live)
        })
        .await;
        let seen = self.seen.lock().unwrap();
        seen.states
            .iter()
            .find(|(k, ..)| *k == StateKind::Live)
            .map(|(.., at)| *at)
            .unwrap()
    }

    /// Shuts the client down and waits for the stream to end.
    pub async fn stop(self) -> Seen {
        self.handle.shutdown();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("stream ends after shutdown")
            .unwrap();
        Arc::try_unwrap(self.seen)
            .ok()
            .expect("collector done")
            .into_inner()
            .unwrap()
    }
}

/// The outcome of comparing the output with the ledger over a window.
#[derive(Debug, Default)]
pub struct Verdict {
    pub checked: usize,
    pub emitted: usize,
    pub covered_by_gap: usize,
    pub missing: Vec<LedgerEntry>,
    pub duplicates: usize,
}

/// Every ledger event on a subscribed topic published within `window` must be emitted
/// exactly once or covered by a gap.
pub fn check(
    ledger: &[LedgerEntry],
    topics: &[String],
    seen: &Seen,
    window: (SystemTime, SystemTime),
) -> Verdict {
    let names: HashSet<String> = topics.iter().flat_map(|t| expand(t).unwrap()).collect();
    let mut counts: HashMap<EventId, usize> = HashMap::new();
    for (id, _) in &seen.events {
        *counts.entry(*id).or_default() += 1;
    }
    let mut v = Verdict {
        duplicates: counts.values().filter(|c| **c > 1).count(),
        ..Verdict::default()
    };
    for entry in ledger {
        let at: SystemTime = entry.published_at.into();
        if !names.contains(entry.topic.as_ref()) || at < window.0 || at > window.1 {
            continue;
        }
        v.checked += 1;
        if counts.contains_key(&entry.id) {
            v.emitted += 1;
        } else if seen.gaps.iter().any(|g| g.from <= at && at <= g.to) {
            v.covered_by_gap += 1;
        } else {
            v.missing.push(entry.clone());
        }
    }
    v
}

/// The window to check: from just after the client was live to just before it stopped.
pub fn window(live: SystemTime, stopped: SystemTime) -> (SystemTime, SystemTime) {
    (
        live + Duration::from_millis(50),
        stopped - Duration::from_millis(300),
    )
}

/// The channels a socket is connected to now, oldest first.
pub fn connected_channels(sim: &Simulator) -> Vec<String> {
    sim.core()
        .channel_infos(|c, _| c.socket.is_some().then(|| c.id.to_string()))
        .into_iter()
        .flatten()
        .collect()
}

pub fn ledger(sim: &Simulator) -> Vec<LedgerEntry> {
    sim.core().ledger_since(0, usize::MAX)
}
