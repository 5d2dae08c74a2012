//! `holdline listen --metrics-addr`: the counters move as the simulator's faults dictate,
//! `/readyz` follows the shards, and nothing secret is exposed.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::*;

const SECRET: &str = "s3cr3t-m3trics-value";

fn scrape(http: &reqwest::blocking::Client, base: &str) -> (String, HashMap<String, f64>) {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let series = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let value = if value == "+Inf" {
                f64::INFINITY
            } else {
                value.parse().ok()?
            };
            Some((name.to_owned(), value))
        })
        .collect();
    (text, series)
}

fn ready(http: &reqwest::blocking::Client, base: &str) -> (u16, serde_json::Value) {
    let resp = http.get(format!("{base}/readyz")).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `holdline listen` on `url` serving metrics on a free port; returns it, the base URL it
/// logged and the rest of its log (one JSON object per line).
fn listen_with_metrics(url: &str, extra: &[&str]) -> (Running, String, mpsc::Receiver<String>) {
    let mut child = Running(
        Command::new(BIN)
            .args(["listen", "--api-base", url, "--queue", "Support"])
            .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
            .args(extra)
            .env("GENESYSCLOUD_OAUTHCLIENT_ID", "metrics-test")
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", SECRET)
            .env_remove("GENESYSCLOUD_REGION")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The bound address is in the log; every log line is one JSON object.
    let rx = log_lines_of(&mut child.0);
    let base = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("no metrics address logged");
        let record: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        let message = record["message"].as_str().unwrap_or_default();
        if let Some(rest) = message.strip_prefix("metrics on ") {
            break rest.split("/metrics").next().unwrap().to_owned();
        }
    };
    (child, base, rx)
}

#[test]
fn counters_follow_a_drop_and_readyz_turns_503_while_the_shard_is_down() {
    let (_sim, url) = sim(&["--client", &format!("metrics-test:{SECRET}")]);
    let (_listen, base, log) = listen_with_metrics(&url, &["--redundancy", "1"]);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let http = reqwest::blocking::Client::new();
    let health = http.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);

    until("readiness", Duration::from_secs(20), || {
        ready(&http, &base).0 == 200
    });
    assert_eq!(ready(&http, &base).1["shards"], 1);
    until("events", Duration::from_secs(20), || {
        scrape(&http, &base).1[r#"holdline_events_emitted_total{family="queue.conversations"}"#]
            > 0.0
    });
    let (_, before) = scrape(&http, &base);
    assert_eq!(before[r#"holdline_reconnects_total{cause="drop"}"#], 0.0);
    assert_eq!(before["holdline_gaps_total"], 0.0);
    assert_eq!(before["holdline_shards"], 1.0);
    assert_eq!(before["holdline_sockets_live"], 1.0);
    assert!(before["holdline_tokens_fetched_total"] >= 1.0);
    assert!(
        before[r#"holdline_rest_requests_total{operation="create channel",status="200"}"#] >= 1.0
    );

    // Hold the next upgrade for 3 s, then reset the socket: the shard is down until the
    // replacement is live.
    let channels: Vec<serde_json::Value> = http
        .get(format!("{url}/sim/channels"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let channel = channels
        .iter()
        .find(|c| c["connected"] == true)
        .expect("a connected channel")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for fault in [
        serde_json::json!({"kind": "slow_upgrade", "ms": 3000, "count": 1}),
        serde_json::json!({"kind": "drop", "channel": channel}),
    ] {
        let resp = http
            .post(format!("{url}/sim/faults"))
            .json(&fault)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{fault}");
    }
    let mut down_body = serde_json::Value::Null;
    until("readyz 503", Duration::from_secs(5), || {
        let (status, body) = ready(&http, &base);
        down_body = body;
        status == 503
    });
    assert_eq!(
        down_body["shards_down"],
        serde_json::json!([0]),
        "{down_body}"
    );
    assert!(
        down_body["reason"]
            .as_str()
            .unwrap()
            .contains("no socket receiving"),
        "{down_body}"
    );
    until("readyz 200 again", Duration::from_secs(20), || {
        ready(&http, &base).0 == 200
    });

    let (text, after) = scrape(&http, &base);
    assert_eq!(
        after[r#"holdline_reconnects_total{cause="drop"}"#], 1.0,
        "{text}"
    );
    assert_eq!(after[r#"holdline_reconnects_total{cause="stall"}"#], 0.0);
    until("the gap record", Duration::from_secs(5), || {
        scrape(&http, &base).1["holdline_gaps_total"] >= 1.0
    });
    let (text, after) = scrape(&http, &base);
    assert!(after["holdline_gap_seconds_total"] > 0.0, "{text}");
    assert_eq!(after["holdline_shards_down"], 0.0);
    assert!(
        text.contains(
            "holdline_socket_heartbeat_age_seconds{shard=\"0\",slot=\"0\",channel=\"streaming-"
        ),
        "{text}"
    );
    assert!(!text.contains(SECRET), "the secret leaked into /metrics");

    // The same happenings are named events in the log, at the level the rule gives them.
    let mut records: Vec<serde_json::Value> = Vec::new();
    let mut named = |event: &str| -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(r) = records.iter().find(|r| r["event"] == event) {
                return r.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {event} event in the log"));
            records.push(serde_json::from_str(&line).unwrap());
        }
    };
    let gap = named("gap");
    assert_eq!(gap["level"], "ERROR", "{gap}");
    let reconnected = named("reconnected");
    assert_eq!(reconnected["cause"], "drop", "{reconnected}");
    assert_eq!(named("socket_ended")["level"], "WARN");
    let rest: Vec<String> = log.try_iter().collect();
    assert!(
        records
            .iter()
            .map(|r| r.to_string())
            .chain(rest)
            .all(|l| !l.contains(SECRET)),
        "the secret leaked into the log"
    );
}

#[test]
fn top_shows_a_running_listen_and_explains_an_unreachable_one() {
    let (_sim, url) = sim(&["--client", &format!("metrics-test:{SECRET}")]);
    let (_listen, base, _log) = listen_with_metrics(&url, &[]);
    let http = reqwest::blocking::Client::new();
    until("readiness", Duration::from_secs(20), || {
        ready(&http, &base).0 == 200
    });
    until("events", Duration::from_secs(20), || {
        scrape(&http, &base).1[r#"holdline_events_emitted_total{family="queue.conversations"}"#]
            > 0.0
    });
    // Redundant slots connect a little apart: wait for the second socket too.
    until("both sockets", Duration::from_secs(20), || {
        scrape(&http, &base).1["holdline_sockets_live"] >= 2.0
    });
    let out = Command::new(BIN)
        .args(["top", &base, "--once"])
        .output()
        .unwrap();
    let view = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{view}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(view.contains("   ready"), "{view}");
    assert!(view.contains("sockets live 2"), "{view}");
    assert!(view.contains("queue.conversations"), "{view}");
    assert_eq!(view.matches("streaming-").count(), 2, "{view}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = Command::new(BIN)
        .args(["top", &format!("http://127.0.0.1:{port}"), "--once"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-addr"), "{stderr}");
}

#[test]
fn socket_closing_is_a_hand_over_and_an_eviction_a_reconnect_for_cause_evicted() {
    let (_sim, url) = sim(&["--client", &format!("metrics-test:{SECRET}")]);
    let (_listen, base, _log) =
        listen_with_metrics(&url, &["--redundancy", "1", "--gap-lookback", "200ms"]);
    let http = reqwest::blocking::Client::new();
    until("readiness", Duration::from_secs(20), || {
        ready(&http, &base).0 == 200
    });
    // Maintenance on an established socket: one live for less than the look-back covers
    // nothing for sure yet (its events may still be in flight), so a hand-over that early
    // is rightly a gap.
    until(
        "the socket live for longer than the look-back",
        Duration::from_secs(10),
        || {
            let (_, m) = scrape(&http, &base);
            let age = m
                .iter()
                .find(|(k, _)| k.starts_with("holdline_socket_heartbeat_age_seconds"))
                .map_or(0.0, |(_, v)| *v);
            age > m["holdline_gap_lookback_seconds"] + 0.05
        },
    );
    let fault = |body: serde_json::Value| {
        let resp = http
            .post(format!("{url}/sim/faults"))
            .json(&body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{body}");
    };
    fault(serde_json::json!({"kind": "socket_closing", "grace_ms": 300}));
    until("the hand-over", Duration::from_secs(10), || {
        let (_, m) = scrape(&http, &base);
        m["holdline_socket_closing_total"] == 1.0 && m["holdline_sockets_live"] == 1.0
    });
    // Let the old socket's close arrive before judging.
    until(
        "readiness after the hand-over",
        Duration::from_secs(10),
        || ready(&http, &base).0 == 200,
    );
    let (text, m) = scrape(&http, &base);
    assert_eq!(
        m["holdline_gaps_total"], 0.0,
        "a hand-over is no gap: {text}"
    );
    assert_eq!(
        m.iter()
            .filter(|(k, _)| k.starts_with("holdline_reconnects_total"))
            .map(|(_, v)| v)
            .sum::<f64>(),
        0.0,
        "{text}"
    );

    // Evict the one connected channel: the handed-over one may still be on the simulator's
    // books (channels are not deleted), and its socket may not have closed yet.
    let mut live = Vec::new();
    until("one connected channel", Duration::from_secs(10), || {
        live = sim_channels(&http, &url)
            .into_iter()
            .filter(|c| c["connected"] == true)
            .collect();
        live.len() == 1
    });
    let channel = live[0]["id"].as_str().unwrap().to_owned();
    fault(serde_json::json!({"kind": "evict", "channel": channel}));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (text, m) = scrape(&http, &base);
        if m[r#"holdline_reconnects_total{cause="evicted"}"#] >= 1.0 {
            break;
        }
        let said: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("reconnects") || l.contains("sockets_live"))
            .collect();
        assert!(
            Instant::now() < deadline,
            "the eviction was not counted:\n{}\nchannels: {:?}",
            said.join("\n"),
            sim_channels(&http, &url)
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    until(
        "readiness after the eviction",
        Duration::from_secs(20),
        || ready(&http, &base).0 == 200,
    );
    let (_, m) = scrape(&http, &base);
    assert_eq!(m[r#"holdline_reconnects_total{cause="drop"}"#], 0.0);
    assert!(m[r#"holdline_rest_requests_total{operation="create channel",status="200"}"#] >= 2.0);
}
