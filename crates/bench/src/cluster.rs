//! A cluster: three `holdline listen --cluster` nodes over one nats-server with JetStream,
//! holding the orgs of one config (two holders each) against the embedded simulator
//! serving as many orgs, every event published into one stream. Measured from outside:
//! spawn to two holders per org, each node's CPU and memory and the stream's growth over a
//! steady window, then the failover time after `kill -9` of one node (until every org has
//! two holders again); finally the stream is checked against every org's ledger.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proc;

/// Settings of the cluster run.
pub struct Settings {
    pub holdline: PathBuf,
    pub scratch: PathBuf,
    pub orgs: usize,
    pub rate: f64,
    pub window: Duration,
    pub lease: Duration,
}

/// What one cluster run measured.
pub struct ClusterRun {
    pub orgs: usize,
    pub rate_per_org: f64,
    pub lease: Duration,
    pub nats: String,
    /// Spawn to two holders per org.
    pub steady: Duration,
    /// Per node: resident memory at the end of the window, CPU share over it, orgs held.
    pub nodes: Vec<(String, u64, f64)>,
    /// Messages stored in the stream per second over the window.
    pub stream_per_second: f64,
    /// `kill -9` of one node to two holders per org again.
    pub failover: Duration,
    /// Over the whole run, against the ledgers.
    pub expected: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub gaps: usize,
}

/// Connected sockets of each simulated org.
async fn sockets(http: &reqwest::Client, url: &str, orgs: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(orgs);
    for n in 1..=orgs {
        let list: Vec<serde_json::Value> = http
            .get(format!("{url}/sim/channels?org=org-{n}"))
            .send()
            .await?
            .json()
            .await?;
        out.push(list.iter().filter(|c| c["connected"] == true).count());
    }
    Ok(out)
}

/// Waits until every org has exactly two sockets (one per holder); the time it took.
async fn two_holders(
    http: &reqwest::Client,
    url: &str,
    orgs: usize,
    within: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if sockets(http, url, orgs).await?.iter().all(|&n| n == 2) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!(
                "not two holders per org within {within:?}: {:?}",
                sockets(http, url, orgs).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(settings: &Settings, config: &Path, nats: &str, id: &str) -> Result<Child> {
    Command::new(&settings.holdline)
        .args(["listen", "--config"])
        .arg(config)
        .args(["--cluster", &format!("nats://{nats}"), "--node", id])
        .arg("--cluster-lease")
        .arg(format!("{}ms", settings.lease.as_millis()))
        .arg("--spool")
        .arg(settings.scratch.join(format!("cluster-{id}")))
        .args([
            "--sink",
            &format!(
                "nats://{nats}/holdline.{{org}}.{{family}}?stream=HOLDLINE&duplicate_window=5m"
            ),
            "--log-format",
            "json",
        ])
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_ID")
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting holdline listen --cluster")
}

/// Messages in the stream now.
async fn stored(nats: &str) -> Result<u64> {
    let nats = nats.to_owned();
    tokio::task::spawn_blocking(move || holdline_sinks::testing::nats_stream_len(&nats, "HOLDLINE"))
        .await
        .context("counting the stream")
}

/// One cluster run.
pub async fn run(settings: &Settings) -> Result<ClusterRun> {
    let store = settings.scratch.join("cluster-nats");
    let _ = std::fs::remove_dir_all(&store);
    for id in ["n1", "n2", "n3"] {
        let _ = std::fs::remove_dir_all(settings.scratch.join(format!("cluster-{id}")));
    }
    std::fs::create_dir_all(&store)?;
    let server = holdline_sinks::testing::nats_2_10(&store);
    let nats = server.addr();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = holdline_sim::SimConfig {
        orgs: settings.orgs.max(2),
        rate: settings.rate,
        ..Default::default()
    };
    let sim = holdline_sim::Simulator::start(listener, config)?;
    let url = sim.url().to_owned();
    let mut text = String::from("redundancy = 1\n");
    for n in 1..=settings.orgs {
        text.push_str(&format!(
            "[[org]]\nname = \"o{n}\"\napi_base = \"{url}\"\nclient_id = \"org-{n}\"\n\
             client_secret = \"secret-{n}\"\nall_queues = true\n"
        ));
    }
    let path = settings.scratch.join("cluster.toml");
    std::fs::write(&path, text)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let http = reqwest::Client::new();
    let spawned = Instant::now();
    let mut nodes: Vec<(String, Child)> = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push((id.to_owned(), node(settings, &path, &nats, id)?));
    }
    let outcome = measure(settings, &http, &url, &nats, &mut nodes, spawned).await;
    // The survivors stop in order (the victim of the failover is gone already).
    let mut alive = Vec::new();
    for (id, child) in &mut nodes {
        if child.try_wait()?.is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            alive.push((id.clone(), child));
        }
    }
    for (id, child) in alive {
        let status = child.wait()?;
        if outcome.is_ok() && !status.success() {
            bail!("node {id} exited with {status}");
        }
    }
    let mut run = outcome?;
    // Every record of the stream against the ledgers.
    let addr = nats.clone();
    let payloads = tokio::task::spawn_blocking(move || {
        holdline_sinks::testing::nats_payloads(&addr, "HOLDLINE")
    })
    .await?;
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    for p in &payloads {
        let r: serde_json::Value = serde_json::from_slice(p)?;
        match r["kind"].as_str() {
            Some("event") => ids
                .entry(r["org"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(r["id"].as_str().unwrap_or_default().to_owned()),
            Some("gap") => run.gaps += 1,
            _ => {}
        }
    }
    for (i, core) in sim.cores().iter().enumerate().take(settings.orgs) {
        let name = format!("o{}", i + 1);
        let got = ids.get(&name).map_or(&[][..], Vec::as_slice);
        let set: HashSet<&String> = got.iter().collect();
        run.duplicates += got.len() - set.len();
        let ledger: Vec<String> = core
            .ledger_since(0, usize::MAX)
            .into_iter()
            .filter(|e| {
                e.topic.starts_with("v2.routing.queues.") && e.topic.ends_with(".conversations")
            })
            .map(|e| e.id.to_string())
            .collect();
        let at = |id: &&String| ledger.iter().position(|l| l == *id);
        let (Some(first), Some(last)) = (
            set.iter().filter_map(at).min(),
            set.iter().filter_map(at).max(),
        ) else {
            bail!("org {name}: nothing in the stream");
        };
        run.expected += last - first + 1;
        run.missing += ledger[first..=last]
            .iter()
            .filter(|id| !set.contains(id))
            .count();
    }
    run.nats = server.version();
    sim.stop().await?;
    Ok(run)
}

async fn measure(
    settings: &Settings,
    http: &reqwest::Client,
    url: &str,
    nats: &str,
    nodes: &mut [(String, Child)],
    spawned: Instant,
) -> Result<ClusterRun> {
    two_holders(http, url, settings.orgs, Duration::from_secs(120)).await?;
    let steady = spawned.elapsed();
    // A few seconds for first snapshots and REST calls to settle, then the window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu0: Vec<f64> = nodes
        .iter()
        .map(|(_, c)| proc::cpu_seconds(c.id()))
        .collect::<Result<_>>()?;
    let (s0, t0) = (stored(nats).await?, Instant::now());
    tokio::time::sleep(settings.window).await;
    let cpu1: Vec<f64> = nodes
        .iter()
        .map(|(_, c)| proc::cpu_seconds(c.id()))
        .collect::<Result<_>>()?;
    let (s1, t1) = (stored(nats).await?, Instant::now());
    let dt = (t1 - t0).as_secs_f64();
    let mut per_node = Vec::new();
    for (i, (id, c)) in nodes.iter().enumerate() {
        per_node.push((id.clone(), proc::rss(c.id())?, (cpu1[i] - cpu0[i]) / dt));
    }
    // Failover: one node dies; its orgs' other holders go on, another node takes its place.
    let (_, victim) = &mut nodes[0];
    let killed = Instant::now();
    victim.kill()?;
    victim.wait()?;
    // Its sockets close with the process; then the others take its orgs.
    while sockets(http, url, settings.orgs)
        .await?
        .iter()
        .all(|&n| n >= 2)
    {
        if killed.elapsed() > Duration::from_secs(30) {
            bail!("the killed node's sockets never closed");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failover = killed.elapsed()
        + two_holders(
            http,
            url,
            settings.orgs,
            settings.lease * 6 + Duration::from_secs(30),
        )
        .await?;
    // The stream goes on growing after the failover.
    tokio::time::sleep(Duration::from_secs(5)).await;
    Ok(ClusterRun {
        orgs: settings.orgs,
        rate_per_org: settings.rate,
        lease: settings.lease,
        nats: String::new(),
        steady,
        nodes: per_node,
        stream_per_second: s1.saturating_sub(s0) as f64 / dt,
        failover,
        expected: 0,
        missing: 0,
        duplicates: 0,
        gaps: 0,
    })
}

/// The Markdown of a cluster run (its own block of docs/BENCHMARKS.md).
pub fn render(runs: &[ClusterRun], window: Duration, command: &str) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### A cluster of three nodes\n\nProduced by `{command}`. Three `holdline listen \
         --cluster` processes and one nats-server with JetStream (file storage) on this \
         machine, holding the orgs of one config (redundancy 1 on each of two holders) against \
         the embedded simulator serving as many orgs, every event published into one stream; \
         CPU, memory and the stream's growth over a {:.0} s window once every org had two \
         holders; then `kill -9` of one node, and the time until every org had two holders \
         again; the stream checked against every org's ledger over the whole run.\n",
        window.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| orgs | events/s/org generated (every family) | lease | spawn to two holders | RSS per node | CPU per node (one core = 100 %) | stored in the stream/s (queue conversations, each once) | failover (kill -9 to two holders) | missing / expected | duplicates | gaps |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|");
    let mib = |b: u64| b as f64 / 1048576.0;
    for r in runs {
        let rss: Vec<String> = r
            .nodes
            .iter()
            .map(|(_, b, _)| format!("{:.1}", mib(*b)))
            .collect();
        let cpu: Vec<String> = r
            .nodes
            .iter()
            .map(|(_, _, c)| format!("{:.1}", c * 100.0))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} s | {:.1} s | {} MiB | {} % | {:.0} | {:.1} s | {} / {} | {} | {} |",
            r.orgs,
            r.rate_per_org,
            r.lease.as_secs_f64(),
            r.steady.as_secs_f64(),
            rss.join(", "),
            cpu.join(", "),
            r.stream_per_second,
            r.failover.as_secs_f64(),
            r.missing,
            r.expected,
            r.duplicates,
            r.gaps,
        );
    }
    if let Some(r) = runs.first() {
        let _ = writeln!(md, "\nServer: {}.", r.nats);
    }
    md
}

/// Where the cluster block goes in docs/BENCHMARKS.md.
pub const BEGIN: &str = "<!-- holdline-bench cluster: begin -->";
pub const END: &str = "<!-- holdline-bench cluster: end -->";

/// `doc` with the cluster block replaced (or appended).
pub fn splice(doc: &str, results: &str) -> String {
    crate::orgs::splice_block(doc, BEGIN, END, results)
}
