//! Density: one `holdline listen` holding many orgs (`[[org]]` tables, each its own OAuth
//! client and sockets) against the embedded simulator serving as many orgs, each
//! generating contact-centre traffic at a fixed rate. Measured from outside the process:
//! the time from spawn until `/readyz` says every org receives, CPU share and resident
//! memory over a steady window, events per second written; then every org's output is
//! checked against its own ledger.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use holdline_proto::EventId;

use crate::proc;

/// What one density run measured.
pub struct OrgsRun {
    pub orgs: usize,
    pub redundancy: usize,
    /// Topics each org subscribes.
    pub topics_per_org: usize,
    /// Events per second each org's generator published.
    pub rate_per_org: f64,
    /// Spawn to every org ready.
    pub start: Duration,
    /// Sockets live at the end of the window.
    pub sockets: f64,
    /// Resident memory at the end of the window, and its peak.
    pub rss: u64,
    pub peak_rss: u64,
    /// CPU seconds per second of the window (1.0 = one core).
    pub cpu_share: f64,
    /// Records written per second over the window.
    pub events_per_second: f64,
    /// Over the whole run: events expected (in the ledgers, on subscribed topics, from
    /// each org's first received to its last), received, missing, duplicates, gaps.
    pub expected: usize,
    pub received: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub gaps: usize,
}

/// Settings of the density runs.
pub struct Settings {
    pub holdline: PathBuf,
    pub scratch: PathBuf,
    pub rate: f64,
    pub window: Duration,
    pub redundancy: usize,
}

/// Records of the run, by org: event ids in arrival order, and gap count.
#[derive(Default)]
struct Seen {
    ids: HashMap<String, Vec<EventId>>,
    gaps: usize,
}

/// One run over `orgs` orgs.
pub async fn run(settings: &Settings, orgs: usize) -> Result<OrgsRun> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = holdline_sim::SimConfig {
        orgs,
        rate: settings.rate,
        ..Default::default()
    };
    let sim = holdline_sim::Simulator::start(listener, config)?;
    let url = sim.url().to_owned();
    // Each org subscribes what its generator publishes for people and queues: queue and
    // user conversations, presence and routing status.
    let mut topics: Vec<HashSet<String>> = Vec::new();
    let mut text = format!("redundancy = {}\n", settings.redundancy);
    for (i, core) in sim.cores().iter().enumerate() {
        let mut mine: Vec<String> = core
            .org
            .queues
            .iter()
            .map(|q| format!("v2.routing.queues.{}.conversations", q.id))
            .collect();
        for agent in &core.org.agents {
            for family in ["conversations", "presence", "routingStatus"] {
                mine.push(format!("v2.users.{}.{family}", agent.id));
            }
        }
        text.push_str(&format!(
            "[[org]]\nname = \"o{n}\"\napi_base = \"{url}\"\nclient_id = \"org-{n}\"\n\
             client_secret = \"secret-{n}\"\ntopics = {mine:?}\n",
            n = i + 1
        ));
        topics.push(mine.into_iter().collect());
    }
    let topics_per_org = topics.first().map_or(0, HashSet::len);
    std::fs::create_dir_all(&settings.scratch)?;
    let path = settings.scratch.join(format!("orgs-{orgs}.toml"));
    std::fs::write(&path, text)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }

    let spawned = Instant::now();
    let mut child = Command::new(&settings.holdline)
        .args(["listen", "--config"])
        .arg(&path)
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_ID")
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting holdline listen")?;
    let pid = child.id();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let written = Arc::new(AtomicU64::new(0));
    let reader = {
        let stdout = child.stdout.take().context("no stdout")?;
        let (seen, written) = (seen.clone(), written.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                written.fetch_add(1, Ordering::Relaxed);
                let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                match record["kind"].as_str() {
                    Some("event") => {
                        let id = record["id"]
                            .as_str()
                            .and_then(|h| h.parse::<EventId>().ok());
                        if let (Some(org), Some(id)) = (record["org"].as_str(), id) {
                            seen.ids.entry(org.to_owned()).or_default().push(id);
                        }
                    }
                    Some("gap") => seen.gaps += 1,
                    _ => {}
                }
            }
        })
    };
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
    {
        let stderr = child.stderr.take().context("no stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(at) = line.find("metrics on http://") {
                    let rest = &line[at + "metrics on ".len()..];
                    if let Some(end) = rest.find("/metrics") {
                        let _ = addr_tx.send(rest[..end].to_owned());
                    }
                }
            }
        });
    }
    let stop = |child: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        child.wait()
    };
    let base = match addr_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(base) => base,
        Err(_) => {
            let _ = stop(&mut child);
            bail!("holdline logged no metrics address within 30 s");
        }
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let start = loop {
        let ready = http.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break spawned.elapsed();
        }
        if Instant::now() > deadline {
            let _ = stop(&mut child);
            bail!("not every org was ready within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A few seconds for the first snapshots and REST calls to settle, then the window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, n0, t0) = (
        proc::cpu_seconds(pid)?,
        written.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(settings.window).await;
    let (cpu1, n1, t1) = (
        proc::cpu_seconds(pid)?,
        written.load(Ordering::Relaxed),
        Instant::now(),
    );
    let rss = proc::rss(pid)?;
    let peak_rss = proc::peak_rss(pid)?;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let sockets: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("holdline_sockets_live{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    let status = stop(&mut child)?;
    let _ = reader.join();
    if !status.success() {
        bail!("holdline listen exited with {status}");
    }
    let dt = (t1 - t0).as_secs_f64();

    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let (mut expected, mut received, mut missing, mut duplicates) = (0, 0, 0, 0);
    for (i, core) in sim.cores().iter().enumerate() {
        let name = format!("o{}", i + 1);
        let got = seen.ids.get(&name).map_or(&[][..], Vec::as_slice);
        let got_set: HashSet<EventId> = got.iter().copied().collect();
        duplicates += got.len() - got_set.len();
        received += got_set.len();
        let ledger: Vec<EventId> = core
            .ledger_since(0, usize::MAX)
            .into_iter()
            .filter(|e| topics[i].contains(&*e.topic))
            .map(|e| e.id)
            .collect();
        let index: HashMap<EventId, usize> =
            ledger.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let at = |id: &EventId| index.get(id).copied();
        let (Some(first), Some(last)) = (
            got.iter().filter_map(at).min(),
            got.iter().filter_map(at).max(),
        ) else {
            bail!("org {name} received nothing");
        };
        expected += last - first + 1;
        missing += ledger[first..=last]
            .iter()
            .filter(|id| !got_set.contains(id))
            .count();
    }
    sim.stop().await?;
    Ok(OrgsRun {
        orgs,
        redundancy: settings.redundancy,
        topics_per_org,
        rate_per_org: settings.rate,
        start,
        sockets,
        rss,
        peak_rss,
        cpu_share: (cpu1 - cpu0) / dt,
        events_per_second: (n1 - n0) as f64 / dt,
        expected,
        received,
        missing,
        duplicates,
        gaps: seen.gaps,
    })
}

/// The Markdown of the density runs (their own block of docs/BENCHMARKS.md).
pub fn render(runs: &[OrgsRun], window: Duration, command: &str) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Many orgs in one process\n\nProduced by `{command}`. One `holdline listen` with an \
         `[[org]]` table per org against the embedded simulator serving as many orgs, each \
         generating traffic at the rate shown; CPU, memory and events/s over a {:.0} s steady \
         window after every org was ready; delivery checked against each org's ledger over the \
         whole run.\n",
        window.as_secs_f64()
    );
    let _ = writeln!(
        md,
        "| orgs | redundancy | topics/org | events/s/org generated (every family) | start to all ready | sockets | RSS | peak RSS | CPU (one core = 100 %) | events/s written | received | missing / expected | duplicates | gaps |"
    );
    let _ = writeln!(
        md,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mib = |b: u64| b as f64 / 1048576.0;
    for r in runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {:.1} s | {:.0} | {:.1} MiB | {:.1} MiB | {:.1} % | {:.0} | {} | {} / {} | {} | {} |",
            r.orgs,
            r.redundancy,
            r.topics_per_org,
            r.rate_per_org,
            r.start.as_secs_f64(),
            r.sockets,
            mib(r.rss),
            mib(r.peak_rss),
            r.cpu_share * 100.0,
            r.events_per_second,
            r.received,
            r.missing,
            r.expected,
            r.duplicates,
            r.gaps,
        );
    }
    if let (Some(small), Some(big)) = (runs.first(), runs.last())
        && big.orgs > small.orgs
    {
        let per = (big.rss as f64 - small.rss as f64) / (big.orgs - small.orgs) as f64;
        let _ = writeln!(
            md,
            "\nMemory per added org (RSS from {} to {} orgs): {:.0} KiB.",
            small.orgs,
            big.orgs,
            per / 1024.0
        );
    }
    md
}

/// Where the density block goes in docs/BENCHMARKS.md.
pub const BEGIN: &str = "<!-- holdline-bench orgs: begin -->";
pub const END: &str = "<!-- holdline-bench orgs: end -->";

/// `doc` with its density block replaced by `results` (appended when it has none).
pub fn splice(doc: &str, results: &str) -> String {
    splice_block(doc, BEGIN, END, results)
}

/// `doc` with the block between `begin` and `end` replaced by `results` (or appended).
pub fn splice_block(doc: &str, begin: &str, end: &str, results: &str) -> String {
    let block = format!("{begin}\n{}\n{end}", results.trim_end());
    match (doc.find(begin), doc.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &doc[..b], &doc[e + end.len()..]),
        _ => format!("{}\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_replaced_or_appended() {
        let doc = format!("# B\n\n{BEGIN}\nSTALE\n{END}\n\n## Analysis\n");
        let out = splice(&doc, "FRESH\n");
        assert!(
            out.contains("FRESH") && !out.contains("STALE") && out.contains("## Analysis"),
            "{out}"
        );
        let out = splice("# B\n", "FRESH");
        assert!(out.ends_with(&format!("{BEGIN}\nFRESH\n{END}\n")), "{out}");
    }
}
