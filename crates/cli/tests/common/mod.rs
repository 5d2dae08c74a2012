//! Shared helpers: the binary, children that are killed when a test ends, first lines
//! with a deadline, and a `holdline sim` child on a free port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_holdline");

/// Kills the child when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line of the child's stdout, waiting at most 10 s.
pub fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no first line within 10 s")
}

/// A `holdline sim` child on a free port generating traffic; returns it and its URL.
pub fn sim(extra: &[&str]) -> (Running, String) {
    sim_at_rate("100", extra)
}

/// A `holdline sim` child that publishes only what a test asks for (firehose, publish).
pub fn quiet_sim() -> (Running, String) {
    sim_at_rate("0", &[])
}

fn sim_at_rate(rate: &str, extra: &[&str]) -> (Running, String) {
    let mut child = Running(
        Command::new(BIN)
            .args(["sim", "--port", "0", "--quiet", "--rate", rate])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let line = first_line(&mut child.0);
    let url = line
        .strip_prefix("holdline-sim listening on ")
        .unwrap()
        .to_owned();
    (child, url)
}

/// Every stdout line of the child, as it comes.
pub fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    lines(child.stdout.take().unwrap())
}

/// Every stderr line of the child (its log), as it comes.
pub fn log_lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    lines(child.stderr.take().unwrap())
}

fn lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `holdline listen` against the simulator at `url` as its demo client (with `secret`).
pub fn listen(url: &str, secret: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["listen", "--api-base", url])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", secret)
        .env_remove("GENESYSCLOUD_REGION")
        .env_remove("RUST_LOG")
        .args(extra);
    cmd
}

/// A running `listen` (logs discarded) and its stdout lines.
pub fn streaming(url: &str, extra: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let mut child = Running(
        listen(url, "holdline-demo", extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(&mut child.0);
    (child, lines)
}

/// The simulator's channels (`GET /sim/channels`).
pub fn sim_channels(http: &reqwest::blocking::Client, url: &str) -> Vec<serde_json::Value> {
    http.get(format!("{url}/sim/channels"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Waits (up to 20 s) until `sockets` connected sockets of the simulator at `url` are
/// subscribed to something.
pub fn wait_subscribed(http: &reqwest::blocking::Client, url: &str, sockets: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let live = sim_channels(http, url)
            .iter()
            .filter(|c| c["connected"] == true && !c["topics"].as_array().unwrap().is_empty())
            .count();
        if live >= sockets {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{live} of {sockets} sockets subscribed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (20 s) until the simulator has seen every socket go: a killed client's socket
/// stays counted as connected until the simulator reads its end.
pub fn wait_no_sockets(http: &reqwest::blocking::Client, url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let connected = sim_channels(http, url)
            .iter()
            .filter(|c| c["connected"] == true)
            .count();
        if connected == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{connected} sockets still connected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes `count` firehose events on `topic`; returns the simulator's report.
pub fn firehose(
    http: &reqwest::blocking::Client,
    url: &str,
    topic: &str,
    count: usize,
) -> serde_json::Value {
    let resp = http
        .post(format!("{url}/sim/firehose"))
        .json(&serde_json::json!({ "count": count, "topics": [topic] }))
        .send()
        .unwrap();
    assert!(resp.status().is_success());
    resp.json().unwrap()
}

/// The simulator's ledger: (event id, published at), oldest first.
pub fn ledger(http: &reqwest::blocking::Client, url: &str) -> Vec<(String, std::time::SystemTime)> {
    http.get(format!("{url}/sim/ledger?limit=100000"))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            let at = humantime::parse_rfc3339(e["published_at"].as_str().unwrap()).unwrap();
            (e["id"].as_str().unwrap().to_owned(), at)
        })
        .collect()
}

/// Sends `sig` (`TERM`, `HUP`, `STOP`, …) to `pid`.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// The ledger of sim org `org` (`org-N`) on queue conversation topics, in publication
/// order: event id and when it was published.
pub fn queue_ledger(
    http: &reqwest::blocking::Client,
    url: &str,
    org: &str,
) -> Vec<(String, std::time::SystemTime)> {
    http.get(format!("{url}/sim/ledger?org={org}&limit=1000000"))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| {
            let topic = e["topic"].as_str().unwrap();
            topic.starts_with("v2.routing.queues.") && topic.ends_with(".conversations")
        })
        .map(|e| {
            assert_eq!(e["org"], org, "the sim org's own ledger");
            let at = humantime::parse_rfc3339(e["published_at"].as_str().unwrap()).unwrap();
            (e["id"].as_str().unwrap().to_owned(), at)
        })
        .collect()
}
