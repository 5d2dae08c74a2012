//! `listen --cluster`: three nodes as separate processes share the orgs of one config
//! through NATS JetStream, two nodes holding each org, every event published into one
//! stream with its id as `Nats-Msg-Id`. A node killed with SIGKILL loses nothing: the
//! other holder of each of its orgs was receiving, and another node takes its place.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

const ORGS: usize = 4;
const QUEUE_TOPICS: fn(&str) -> bool =
    |t| t.starts_with("v2.routing.queues.") && t.ends_with(".conversations");

fn config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let mut text = String::from("redundancy = 1\n");
    for n in 1..=ORGS {
        text.push_str(&format!(
            "[[org]]\nname = \"o{n}\"\napi_base = \"{url}\"\nclient_id = \"org-{n}\"\n\
             client_secret = \"secret-{n}\"\nall_queues = true\n"
        ));
    }
    let path = dir.join("listen.toml");
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn node(config: &std::path::Path, nats: &str, id: &str, spool: &std::path::Path) -> Running {
    Running(
        Command::new(BIN)
            .args(["listen", "--config"])
            .arg(config)
            .args(["--cluster", &format!("nats://{nats}"), "--node", id])
            .args(["--cluster-lease", "2s", "--log-format", "json", "--spool"])
            .arg(spool)
            .args([
                "--sink",
                &format!("nats://{nats}/holdline.events?stream=HOLDLINE&duplicate_window=5m"),
            ])
            .env_remove("GENESYSCLOUD_OAUTHCLIENT_ID")
            .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Connected sockets of each sim org, org-1 first.
fn sockets(http: &reqwest::blocking::Client, url: &str) -> Vec<usize> {
    (1..=ORGS)
        .map(|n| {
            let list: Vec<serde_json::Value> = http
                .get(format!("{url}/sim/channels?org=org-{n}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            list.iter().filter(|c| c["connected"] == true).count()
        })
        .collect()
}

fn wait_two_holders(http: &reqwest::blocking::Client, url: &str, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let now = sockets(http, url);
        if now.iter().all(|&n| n == 2) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: sockets per org {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stream's records, parsed.
fn stream(nats: &str) -> Vec<serde_json::Value> {
    holdline_sinks::testing::nats_payloads(nats, "HOLDLINE")
        .iter()
        .map(|p| serde_json::from_slice(p).unwrap())
        .collect()
}

fn wait_stream(nats: &str, at_least: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let n = stream(nats).len();
        if n >= at_least {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{n} records in the stream, waiting for {at_least}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_node_killed_under_traffic_loses_nothing() {
    let store = tempfile::tempdir().unwrap();
    let nats = holdline_sinks::testing::nats_2_10(store.path());
    let addr = nats.addr();
    let (_sim, url) = sim(&["--orgs", &ORGS.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &url);
    let http = reqwest::blocking::Client::new();
    let mut nodes: HashMap<&str, Running> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|id| (id, node(&path, &addr, id, &dir.path().join(id))))
        .collect();
    wait_two_holders(&http, &url, Duration::from_secs(60), "two holders per org");
    let before = wait_stream(&addr, 300, Duration::from_secs(60));

    let mut victim = nodes.remove("n1").unwrap();
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    let killed = Instant::now();
    // Its sockets are gone at once; once its lease ages out another node takes its orgs.
    wait_two_holders(&http, &url, Duration::from_secs(30), "two holders again");
    let failover = killed.elapsed();
    eprintln!("two holders per org again {failover:?} after the kill");
    wait_stream(&addr, before + 300, Duration::from_secs(60));

    for (id, mut n) in nodes {
        Command::new("kill")
            .args(["-TERM", &n.0.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = n.0.try_wait().unwrap() {
                assert!(status.success(), "{id} exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "{id} did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let records = stream(&addr);
    let gaps: Vec<&serde_json::Value> = records.iter().filter(|r| r["kind"] == "gap").collect();
    assert!(gaps.is_empty(), "no gap: {gaps:?}");
    let mut by_org: HashMap<String, Vec<String>> = HashMap::new();
    for r in records.iter().filter(|r| r["kind"] == "event") {
        by_org
            .entry(r["org"].as_str().unwrap().to_owned())
            .or_default()
            .push(r["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_org.len(), ORGS, "every org in the stream");
    for n in 1..=ORGS {
        let got = &by_org[&format!("o{n}")];
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "o{n}: no duplicate message in the stream"
        );
        let ledger: Vec<String> = http
            .get(format!("{url}/sim/ledger?org=org-{n}&limit=1000000"))
            .send()
            .unwrap()
            .text()
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| QUEUE_TOPICS(e["topic"].as_str().unwrap()))
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        let at = |id: &String| ledger.iter().position(|l| l == id);
        let first = got.iter().filter_map(at).min().unwrap();
        let last = got.iter().filter_map(at).max().unwrap();
        let missing = ledger[first..=last]
            .iter()
            .filter(|id| !unique.contains(id))
            .count();
        assert_eq!(
            missing,
            0,
            "o{n}: {missing} missing of {}",
            last - first + 1
        );
    }
}
