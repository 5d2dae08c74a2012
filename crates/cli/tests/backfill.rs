//! `listen --backfill`: a listener whose socket stalls for seconds writes a gap, and a
//! second later backfill records for every conversation and user whose events fell in
//! the gap (as a second listener, untouched, received them), each under one of the gap's
//! topics, and a backfill_done that closes it.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime};

mod common;

use common::*;
use serde_json::Value;

fn streaming_listener(url: &str, extra: &[&str]) -> (Running, Receiver<String>) {
    let mut child = Running(
        listen(url, "holdline-demo", &["--all-queues", "--all-users"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(&mut child.0);
    (child, lines)
}

/// Connected channels of the simulator.
fn connected(http: &reqwest::blocking::Client, url: &str) -> Vec<String> {
    sim_channels(http, url)
        .iter()
        .filter(|c| c["connected"] == true)
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn wait_connected(http: &reqwest::blocking::Client, url: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = connected(http, url);
        if now.len() >= n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{} sockets, waiting for {n}",
            now.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Silences `channel`'s socket for four seconds (it stays open): a gap.
fn stall(http: &reqwest::blocking::Client, url: &str, channel: &str) {
    let resp = http
        .post(format!("{url}/sim/faults"))
        .json(&serde_json::json!({"kind": "stall", "channel": channel, "ms": 4000}))
        .send()
        .unwrap();
    assert!(resp.status().is_success());
}

fn time(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

/// Timings under which a stalled socket is found dead within 2.5 s.
const STALL_FOUND: [&str; 6] = [
    "--ping-interval",
    "500ms",
    "--pong-timeout",
    "1500ms",
    "--watchdog",
    "2500ms",
];

#[test]
fn a_gap_is_back_filled_with_the_state_of_everything_it_missed() {
    let (_sim, url) = sim(&["--queues", "2", "--agents", "6"]);
    let http = reqwest::blocking::Client::new();
    // The tested listener has one socket.
    let timings = STALL_FOUND;
    let mut tested = timings.to_vec();
    tested.extend([
        "--redundancy",
        "1",
        "--backfill",
        "all",
        "--backfill-settle",
        "1s",
    ]);
    let (_a, a_lines) = streaming_listener(&url, &tested);
    let a_channel = wait_connected(&http, &url, 1)[0].clone();
    let mut reference = timings.to_vec();
    reference.extend(["--backfill", "off"]);
    let (_b, b_lines) = streaming_listener(&url, &reference);
    wait_connected(&http, &url, 3);
    // Both receive for a while, then the tested socket goes silent for four seconds.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut a: Vec<Value> = Vec::new();
    while a.len() < 50 {
        let line = a_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the tested listener is quiet");
        a.push(serde_json::from_str(&line).unwrap());
    }
    stall(&http, &url, &a_channel);
    // The gap, then its back-fill.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (gap, done) = loop {
        let line = a_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no gap back-filled in time");
        let r: Value = serde_json::from_str(&line).unwrap();
        a.push(r.clone());
        if r["kind"] == "backfill_done" {
            let gap = a
                .iter()
                .find(|g| g["kind"] == "gap" && g["id"] == r["gap"])
                .cloned()
                .expect("backfill_done names a gap written before it");
            break (gap, r);
        }
    };
    assert_eq!(done["status"], "complete", "{done}");
    let (from, to) = (time(&gap["from"]), time(&gap["to"]));
    assert!(
        to.duration_since(from).unwrap() >= Duration::from_secs(2),
        "the stall made the gap: {gap}"
    );
    // What the untouched listener received inside the gap.
    let mut b: Vec<Value> = Vec::new();
    while let Ok(line) = b_lines.try_recv() {
        b.push(serde_json::from_str(&line).unwrap());
    }
    let margin = Duration::from_millis(300);
    let inside: Vec<&Value> = b
        .iter()
        .filter(|r| r["kind"] == "event")
        .filter(|r| {
            let at = time(&r["received_at"]);
            at >= from + margin && at + margin <= to
        })
        .collect();
    let conversations: HashSet<&str> = inside
        .iter()
        .filter(|r| {
            r["topic"]
                .as_str()
                .unwrap()
                .starts_with("v2.routing.queues.")
        })
        .map(|r| r["body"]["id"].as_str().unwrap())
        .collect();
    let users: HashSet<&str> = inside
        .iter()
        .filter(|r| {
            let t = r["topic"].as_str().unwrap();
            t.ends_with(".presence") || t.ends_with(".routingStatus")
        })
        .map(|r| r["topic"].as_str().unwrap().split('.').nth(2).unwrap())
        .collect();
    assert!(
        !conversations.is_empty(),
        "the gap held conversation events"
    );
    let filled: Vec<&Value> = a
        .iter()
        .filter(|r| r["kind"] == "backfill" && r["gap"] == gap["id"])
        .collect();
    let has = |source: &str, entity: &str| {
        filled
            .iter()
            .any(|r| r["source"] == source && r["entity"] == entity)
    };
    for c in &conversations {
        assert!(has("analytics.conversations", c), "conversation {c}");
    }
    for u in &users {
        assert!(has("analytics.users", u), "user {u}");
    }
    // Everything asked for is what one of the gap's topics carries.
    let topics: HashSet<String> = gap["topics"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| holdline_proto::topic::expand(t.as_str().unwrap()).unwrap())
        .collect();
    for r in &filled {
        assert!(topics.contains(r["topic"].as_str().unwrap()), "{r}");
    }
    assert_eq!(
        done["counts"]["analytics.conversations"].as_u64().unwrap() as usize,
        filled
            .iter()
            .filter(|r| r["source"] == "analytics.conversations")
            .count()
    );
    eprintln!(
        "gap of {:?}: {} back-fill records, {} REST calls",
        to.duration_since(from).unwrap(),
        filled.len(),
        done["counts"]["requests"]
    );
}

#[test]
fn a_gap_still_waiting_for_its_back_fill_at_a_stop_is_closed_as_failed() {
    let (_sim, url) = sim(&["--queues", "2", "--agents", "6"]);
    let http = reqwest::blocking::Client::new();
    let (mut listener, lines) = streaming_listener(
        &url,
        &[
            STALL_FOUND.as_slice(),
            &[
                "--redundancy",
                "1",
                "--backfill",
                "all",
                "--backfill-settle",
                "1h",
            ],
        ]
        .concat(),
    );
    let channel = wait_connected(&http, &url, 1)[0].clone();
    // Receiving first (a socket stalled before it is live loses nothing).
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..20 {
        lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the listener is quiet");
    }
    stall(&http, &url, &channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    let gap = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no gap");
        let r: Value = serde_json::from_str(&line).unwrap();
        if r["kind"] == "gap" {
            break r;
        }
    };
    // Its back-fill waits an hour; the listener is stopped before.
    signal(listener.0.id(), "TERM");
    let mut done = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let r: Value = serde_json::from_str(&line).unwrap();
                if r["kind"] == "backfill_done" {
                    done = Some(r);
                }
            }
            // Its stdout closed: it has exited.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the listener did not stop within 30 s of SIGTERM")
            }
        }
    }
    let status = listener.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let done = done.expect("the gap's back-fill is closed before the listener exits");
    assert_eq!(done["gap"], gap["id"]);
    assert_eq!(done["status"], "failed");
    assert!(
        done["reason"].as_str().unwrap().contains("stopped"),
        "{done}"
    );
}
