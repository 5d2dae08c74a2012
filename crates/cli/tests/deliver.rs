//! `holdline deliver --cluster`: the cluster's stream into a Redis stream by two
//! deliverers as separate processes, one writing at a time. A deliverer paused past its
//! lease or killed with SIGKILL is replaced, nothing in the stream is left out, and the
//! fencing tokens in Redis never go back (no write of a deposed deliverer lands after its
//! successor's).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

mod common;

use common::*;
use holdline_sinks::testing;

const LEASE: &str = "3s";

fn deliverer(nats: &str, id: &str, redis: &str) -> (Running, Receiver<String>) {
    let mut child = Running(
        Command::new(BIN)
            .args([
                "deliver",
                "--cluster",
                &format!("nats://{nats}"),
                "--node",
                id,
            ])
            .args(["--lease", LEASE, "--log-format", "json"])
            .args(["--metrics-addr", "127.0.0.1:0", "--sink"])
            .arg(format!("redis://{redis}/delivered"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = log_lines_of(&mut child.0);
    (child, log)
}

/// Waits (up to `within`) for a log line containing `what`, and returns it.
fn logged(log: &Receiver<String>, within: Duration, what: &str) -> String {
    let deadline = Instant::now() + within;
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("never logged: {what}"));
        if line.contains(what) {
            return line;
        }
    }
}

/// The deliverer's `http://host:port` of /metrics, from its log.
fn metrics_base(log: &Receiver<String>) -> String {
    let line = logged(log, Duration::from_secs(30), "metrics on http://");
    let at = line.find("http://").unwrap();
    let rest = &line[at..];
    rest[..rest.find("/metrics").unwrap()].to_owned()
}

/// A sample of the deliverer's /metrics, and its /readyz status.
fn observed(base: &str, sample: &str) -> (f64, u16) {
    let text = reqwest::blocking::get(format!("{base}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {sample} in {text}"))
        .parse()
        .unwrap();
    let ready = reqwest::blocking::get(format!("{base}/readyz"))
        .unwrap()
        .status()
        .as_u16();
    (value, ready)
}

fn delivered(redis: &str) -> Vec<(String, u64)> {
    testing::redis_fenced_entries(redis, "delivered")
}

fn wait_delivered(redis: &str, at_least: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = delivered(redis).len();
        if n >= at_least {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{n} entries in redis, waiting for {at_least}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_deliverer_paused_or_killed_is_replaced_and_nothing_is_left_out() {
    let store = tempfile::tempdir().unwrap();
    let nats = testing::nats_2_10(store.path());
    let addr = nats.addr();
    let redis_server = testing::redis();
    let redis = redis_server.addr();
    let (_sim, url) = sim(&[]);
    let spool = tempfile::tempdir().unwrap();
    let mut source = Running(
        listen(&url, "holdline-demo", &["--all-queues", "--spool"])
            .arg(spool.path())
            .args([
                "--sink",
                &format!("nats://{addr}/holdline.{{org}}.{{family}}?stream=HOLDLINE"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while testing::nats_stream_len_if_any(&addr, "HOLDLINE").unwrap_or(0) < 50 {
        assert!(Instant::now() < deadline, "the stream never filled");
        std::thread::sleep(Duration::from_millis(100));
    }

    let (d1, log1) = deliverer(&addr, "d1", &redis);
    let m1 = metrics_base(&log1);
    logged(&log1, Duration::from_secs(30), "holding the lease");
    let (d2, log2) = deliverer(&addr, "d2", &redis);
    let m2 = metrics_base(&log2);
    logged(&log2, Duration::from_secs(30), "standing by");
    let n = wait_delivered(&redis, 100);
    // The writer holds the lease, the standby does not; both are ready.
    assert_eq!(observed(&m1, "holdline_deliver_holding"), (1.0, 200));
    assert_eq!(observed(&m2, "holdline_deliver_holding"), (0.0, 200));
    assert!(observed(&m1, "holdline_deliver_records_total").0 >= 100.0);

    // d1 freezes past its lease: d2 takes over; d1, resumed, finds its lease gone.
    signal(d1.0.id(), "STOP");
    let paused = Instant::now();
    logged(&log2, Duration::from_secs(30), "holding the lease");
    eprintln!("d2 delivering {:?} after d1 froze", paused.elapsed());
    let n = wait_delivered(&redis, n + 100);
    signal(d1.0.id(), "CONT");
    logged(&log1, Duration::from_secs(30), "stopped delivering");
    let n = wait_delivered(&redis, n + 100);

    // d2 dies at once: d1 takes over from the consumer's first unacknowledged message.
    let mut d2 = d2;
    d2.0.kill().unwrap();
    d2.0.wait().unwrap();
    let killed = Instant::now();
    logged(&log1, Duration::from_secs(30), "holding the lease");
    eprintln!("d1 delivering {:?} after d2 was killed", killed.elapsed());
    wait_delivered(&redis, n + 100);

    // The source stops; everything in the stream reaches Redis.
    signal(source.0.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while source.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the source did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let in_stream: Vec<String> = testing::nats_payloads(&addr, "HOLDLINE")
        .iter()
        .map(|p| {
            let r: serde_json::Value = serde_json::from_slice(p).unwrap();
            r["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| r.to_string())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let entries = loop {
        let entries = delivered(&redis);
        let ids: HashSet<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        let missing = in_stream
            .iter()
            .filter(|id| !ids.contains(id.as_str()))
            .count();
        if missing == 0 {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of the stream's {} records never reached redis",
            in_stream.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let tokens: Vec<u64> = entries.iter().map(|(_, t)| *t).collect();
    let back = tokens.windows(2).position(|w| w[1] < w[0]);
    assert_eq!(back, None, "a write under an older lease after a newer one");
    let unique: HashSet<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    eprintln!(
        "{} records in the stream, {} entries in redis ({} repeats after the takeovers)",
        in_stream.len(),
        entries.len(),
        entries.len() - unique.len()
    );
    drop(d1);
}
