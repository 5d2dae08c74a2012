//! `holdline listen --spool`: killed with SIGKILL mid-stream and restarted on the same
//! spool, every event the simulator published reaches stdout at least once, or falls in
//! the gap the restarted run reports for the time no run was receiving.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime};

mod common;

use common::*;

const TOPIC: &str = "v2.users.2b7f3c10-5d4e-4a8b-9c1d-0e6f7a8b9c0d.presence";

fn listen(url: &str, spool: &std::path::Path) -> Running {
    listen_with(url, spool, &[], Stdio::null())
}

fn listen_with(url: &str, spool: &std::path::Path, extra: &[&str], stderr: Stdio) -> Running {
    Running(
        Command::new(BIN)
            .args(["listen", "--api-base", url, "--topic", TOPIC])
            .args(["--redundancy", "1", "--spool"])
            .arg(spool)
            .args(extra)
            .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
            .env_remove("GENESYSCLOUD_REGION")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// The metrics base URL a listen started with `--metrics-addr 127.0.0.1:0` logged.
fn metrics_base(child: &mut Running) -> String {
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("metrics on ").nth(1) {
                let _ = tx.send(rest.split("/metrics").next().unwrap().to_owned());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("no metrics address logged")
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    gaps: Vec<(SystemTime, SystemTime, String)>,
}

impl Seen {
    fn take(&mut self, lines: &Receiver<String>) {
        for line in lines.try_iter() {
            self.add(&line);
        }
    }

    fn add(&mut self, line: &str) {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        match r["kind"].as_str() {
            Some("event") => {
                self.ids.insert(r["id"].as_str().unwrap().to_owned());
            }
            Some("gap") => {
                let t = |k: &str| humantime::parse_rfc3339(r[k].as_str().unwrap()).unwrap();
                self.gaps
                    .push((t("from"), t("to"), r["reason"].as_str().unwrap().to_owned()));
            }
            // A gap's back-fill still settling at a stop ends as failed.
            Some("backfill" | "backfill_done") => {}
            other => panic!("unexpected record {other:?}: {line}"),
        }
    }

    /// Ledger events neither printed nor inside a gap.
    fn unaccounted(&self, ledger: &[(String, SystemTime)]) -> usize {
        ledger
            .iter()
            .filter(|(id, at)| {
                !self.ids.contains(id) && !self.gaps.iter().any(|(f, t, _)| f <= at && at <= t)
            })
            .count()
    }
}

#[test]
fn a_killed_run_loses_nothing_silently_and_the_next_run_delivers_the_spool() {
    let (_sim, url) = quiet_sim();
    let dir = std::env::temp_dir().join(format!("holdline-spool-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let http = reqwest::blocking::Client::new();
    let mut seen = Seen::default();

    // Run 1: its stdout is not read, so the pipe fills and the events pile up in the
    // spool; once it has taken all 3,000 it is killed with SIGKILL.
    let mut first = listen_with(
        &url,
        &dir,
        &["--metrics-addr", "127.0.0.1:0"],
        Stdio::piped(),
    );
    let base = metrics_base(&mut first);
    let held_stdout = first.0.stdout.take().unwrap();
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 3000);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&http, &base, "holdline_events_emitted_total") < 3000.0 {
        assert!(Instant::now() < deadline, "run 1 did not take the events");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    wait_no_sockets(&http, &url);
    let printed_by_first = {
        use std::io::BufRead;
        let mut n = 0;
        for line in std::io::BufReader::new(held_stdout).lines() {
            let Ok(line) = line else { break };
            // A record cut by the kill is not a record.
            if line.ends_with('}') {
                seen.add(&line);
                n += 1;
            }
        }
        n
    };
    assert!(printed_by_first < 3000, "stdout was meant to be blocked");
    let after_kill = seen.ids.clone();

    // Run 2 on the same spool: delivers what run 1 spooled, reports the outage.
    let mut second = listen(&url, &dir);
    let lines = lines_of(&mut second.0);
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 1000);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        seen.take(&lines);
        let ledger = ledger(&http, &url);
        assert_eq!(ledger.len(), 4000);
        let missing = seen.unaccounted(&ledger);
        if missing == 0 && !seen.gaps.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} events neither printed nor in a gap; {} printed, gaps {:?}",
            seen.ids.len(),
            seen.gaps
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Run 2 delivered what run 1 had spooled but not printed (all but at most the batch
    // in flight when it was killed).
    let from_spool = ledger(&http, &url)[..3000]
        .iter()
        .filter(|(id, _)| !after_kill.contains(id) && seen.ids.contains(id))
        .count();
    assert!(
        from_spool + printed_by_first + 1024 >= 3000,
        "run 2 delivered only {from_spool} of run 1's events ({printed_by_first} printed by run 1)"
    );
    assert_eq!(seen.gaps.len(), 1, "{:?}", seen.gaps);
    assert!(seen.gaps[0].2.contains("not running"), "{:?}", seen.gaps);
    // The gap starts from run 1's newest spooled event less the look-back (1 s), so it
    // cannot reach back further than that before the first event.
    let first_published = ledger(&http, &url)[0].1;
    let (from, to, _) = &seen.gaps[0];
    assert!(
        *from + Duration::from_millis(1500) >= first_published,
        "the gap starts too early"
    );
    assert!(to >= from && *to <= SystemTime::now());

    // A clean stop delivers everything and marks the spool closed: no gap next time.
    let status = Command::new("kill")
        .args(["-TERM", &second.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = second.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "listen did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let mut third = listen(&url, &dir);
    let lines = lines_of(&mut third.0);
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 10);
    let mut records = Vec::new();
    while records.len() < 10 {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("run 3 printed its events");
        records.push(line);
    }
    assert!(
        records.iter().all(|l| l.starts_with(r#"{"kind":"event""#)),
        "no gap after a clean stop: {records:?}"
    );
    drop(third);
    let _ = std::fs::remove_dir_all(&dir);
}

fn metric(http: &reqwest::blocking::Client, base: &str, name: &str) -> f64 {
    http.get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_full_spool_holds_back_then_drops_the_oldest_and_reports_them_as_a_gap() {
    let (_sim, url) = quiet_sim();
    let dir = std::env::temp_dir().join(format!("holdline-spool-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let http = reqwest::blocking::Client::new();
    // stdout is not read: the pipe fills, then the spool (100 kB), then holdline holds
    // back for 300 ms at a time before dropping.
    let mut run = listen_with(
        &url,
        &dir,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--spool-max-bytes",
            "100000",
            "--spool-full-wait",
            "300ms",
        ],
        Stdio::piped(),
    );
    let base = metrics_base(&mut run);
    let held_stdout = run.0.stdout.take().unwrap();
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 3000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&http, &base, "holdline_events_emitted_total") < 3000.0 {
        assert!(
            Instant::now() < deadline,
            "holdline did not take every event"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dropped = metric(&http, &base, "holdline_spool_dropped_total");
    assert!(dropped > 0.0, "nothing was dropped from a 100 kB spool");
    assert!(metric(&http, &base, "holdline_spool_bytes") <= 100_000.0);

    // Now stdout is read: everything left comes out, and the drops are a gap.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(held_stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Seen::default();
    let ledger = ledger(&http, &url);
    assert_eq!(ledger.len(), 3000);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        seen.take(&lines);
        let missing = seen.unaccounted(&ledger);
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} events neither printed nor in a gap ({} printed, gaps {:?})",
            seen.ids.len(),
            seen.gaps
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.ids.len() < 3000, "some events were dropped");
    assert!(
        seen.gaps.iter().all(|g| g.2.contains("spool was full")),
        "{:?}",
        seen.gaps
    );
    assert!(metric(&http, &base, "holdline_gaps_total") >= seen.gaps.len() as f64);
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sinks_deliver_from_the_spool_to_a_file_and_stdout_alike() {
    let (_sim, url) = quiet_sim();
    let dir = std::env::temp_dir().join(format!("holdline-sinks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("out/events.jsonl");
    let file_url = format!("file://{}?max_bytes=200000", file.display());
    let http = reqwest::blocking::Client::new();
    let mut run = listen_with(
        &url,
        &dir.join("spool"),
        &["--sink", &file_url, "--sink", "stdout"],
        Stdio::null(),
    );
    let lines = lines_of(&mut run.0);
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 1000);
    let ledger: HashSet<String> = ledger(&http, &url).into_iter().map(|(id, _)| id).collect();
    let mut seen = Seen::default();
    let read_files = || -> HashSet<String> {
        let mut ids = HashSet::new();
        for entry in std::fs::read_dir(dir.join("out")).into_iter().flatten() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
            for line in text.lines() {
                let r: serde_json::Value = serde_json::from_str(line).unwrap();
                ids.insert(r["id"].as_str().unwrap().to_owned());
            }
        }
        ids
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        seen.take(&lines);
        let in_files = read_files();
        if seen.ids == ledger && in_files == ledger {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stdout has {} and the files {} of {} events",
            seen.ids.len(),
            in_files.len(),
            ledger.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rotated = std::fs::read_dir(dir.join("out")).unwrap().count();
    assert!(rotated > 1, "1,000 events over 200 kB files rotate");

    // A sink without a spool is a usage error that says what to do.
    let out = Command::new(BIN)
        .args([
            "listen",
            "--api-base",
            &url,
            "--topic",
            TOPIC,
            "--sink",
            &file_url,
        ])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
        .env_remove("GENESYSCLOUD_REGION")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--spool"));

    // A bad broker sink URL is a usage error that says what to change, and a secret in it
    // is refused, not echoed. (Kafka is a build feature: without it the error says so.)
    let cases: [(&str, &[&str]); 3] = [
        (
            "kafka://127.0.0.1:9/t?kafka.sasl.password=hunter2",
            &["password_env", "--features kafka"],
        ),
        ("redis://127.0.0.1:9", &["stream name"]),
        ("nats://127.0.0.1:9/a.*", &["wildcards"]),
    ];
    for (bad, says) in cases {
        let out = Command::new(BIN)
            .args(["listen", "--api-base", &url, "--topic", TOPIC, "--spool"])
            .arg(dir.join("spool"))
            .args(["--sink", bad])
            .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
            .env_remove("GENESYSCLOUD_REGION")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(says.iter().any(|s| stderr.contains(s)), "{bad}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (20 s) until `name` reaches `at_least` on the metrics endpoint.
fn wait_metric(http: &reqwest::blocking::Client, base: &str, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric(http, base, name);
        if v >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "{name} = {v}, wanted {at_least}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_while_redis_is_not_answering_every_event_still_reaches_the_stream() {
    let (_sim, url) = quiet_sim();
    let redis = holdline_sinks::testing::redis();
    let dir = std::env::temp_dir().join(format!("holdline-redis-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sink = format!("redis://{}/genesys?timeout=1s", redis.addr());
    let http = reqwest::blocking::Client::new();

    // Run 1 delivers 1,000 events, then Redis stops answering (SIGSTOP): the next 1,500
    // wait in the spool, and run 1 is killed with SIGKILL.
    let mut first = listen_with(
        &url,
        &dir,
        &["--sink", &sink, "--metrics-addr", "127.0.0.1:0"],
        Stdio::piped(),
    );
    let base = metrics_base(&mut first);
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 1000);
    wait_metric(&http, &base, "holdline_sink_delivered_total", 1000.0);
    redis.pause();
    firehose(&http, &url, TOPIC, 1500);
    wait_metric(&http, &base, "holdline_events_emitted_total", 2500.0);
    wait_metric(&http, &base, "holdline_sink_failures_total", 1.0);
    assert!(metric(&http, &base, "holdline_spool_depth") >= 1.0);
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    wait_no_sockets(&http, &url);
    redis.resume();

    // Run 2 on the same spool delivers what run 1 could not, then new events.
    let second = listen_with(&url, &dir, &["--sink", &sink], Stdio::null());
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 500);
    let ledger: HashSet<String> = ledger(&http, &url).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ledger.len(), 3000);
    let deadline = Instant::now() + Duration::from_secs(30);
    let entries = loop {
        let entries = holdline_sinks::testing::redis_entries(&redis.addr(), "genesys");
        let ids: HashSet<&String> = entries.iter().map(|(id, _, _)| id).collect();
        let missing = ledger.iter().filter(|id| !ids.contains(id)).count();
        if missing == 0 {
            break entries;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} ledger events not in the stream"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // At least once: a repeat is the same record under the same id.
    let mut by_id: HashMap<&str, &[u8]> = HashMap::new();
    for (id, kind, record) in &entries {
        if kind == "event" {
            let r: serde_json::Value = serde_json::from_slice(record).unwrap();
            assert_eq!(r["id"].as_str(), Some(id.as_str()));
            if let Some(prev) = by_id.insert(id, record) {
                assert_eq!(prev, record, "event {id} repeated with other content");
            }
        }
    }
    let gaps: Vec<_> = entries.iter().filter(|(_, k, _)| k == "gap").collect();
    assert_eq!(
        gaps.len(),
        1,
        "one gap for the time no run was receiving: {gaps:?}"
    );
    assert!(
        String::from_utf8_lossy(&gaps[0].2).contains("not running"),
        "{gaps:?}"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nats_outage_loses_nothing_and_the_spool_depth_shows_the_backlog() {
    let (_sim, url) = quiet_sim();
    let store = std::env::temp_dir().join(format!("holdline-nats-store-{}", std::process::id()));
    let dir = std::env::temp_dir().join(format!("holdline-nats-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let _ = std::fs::remove_dir_all(&dir);
    let mut nats = holdline_sinks::testing::nats(&store);
    let port = nats.port;
    let sink = format!(
        "nats://{}/genesys.events?stream=GENESYS&timeout=1s",
        nats.addr()
    );
    let http = reqwest::blocking::Client::new();
    // Time compressed 25×: retries double from 200 ms up to 400 ms instead of 10 s, so
    // eight failed tries (a 30 s outage at the defaults) take seconds, not half a minute.
    let mut run = listen_with(
        &url,
        &dir,
        &[
            "--sink",
            &sink,
            "--sink-retry-max",
            "400ms",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        Stdio::piped(),
    );
    let base = metrics_base(&mut run);
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 500);
    wait_metric(&http, &base, "holdline_sink_delivered_total", 500.0);

    // The server goes away. Events keep arriving and wait in the spool while the sink
    // fails and backs off; the outage lasts eight failed tries (at 10 s a try, 30 s).
    nats.kill();
    firehose(&http, &url, TOPIC, 1000);
    wait_metric(&http, &base, "holdline_sink_failures_total", 2.0);
    firehose(&http, &url, TOPIC, 1000);
    wait_metric(&http, &base, "holdline_events_emitted_total", 2500.0);
    wait_metric(&http, &base, "holdline_spool_depth", 2000.0);
    wait_metric(&http, &base, "holdline_sink_failures_total", 8.0);
    assert_eq!(metric(&http, &base, "holdline_spool_depth"), 2000.0);
    assert_eq!(metric(&http, &base, "holdline_sink_pending"), 2000.0);
    assert_eq!(metric(&http, &base, "holdline_gaps_total"), 0.0);

    // Back on its port with its store: the backlog drains, and JetStream holds every
    // event exactly once (it drops repeats by Nats-Msg-Id).
    let _nats = holdline_sinks::testing::nats_on(port, &store).expect("nats back");
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&http, &base, "holdline_spool_depth") > 0.0 {
        assert!(Instant::now() < deadline, "the backlog did not drain");
        std::thread::sleep(Duration::from_millis(50));
    }
    let ledger: HashSet<String> = ledger(&http, &url).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ledger.len(), 2500);
    let stored: Vec<String> =
        holdline_sinks::testing::nats_payloads(&format!("127.0.0.1:{port}"), "GENESYS")
            .iter()
            .map(|p| {
                let r: serde_json::Value = serde_json::from_slice(p).unwrap();
                r["id"].as_str().unwrap().to_owned()
            })
            .collect();
    assert_eq!(stored.len(), 2500, "every event stored once");
    let stored: HashSet<String> = stored.into_iter().collect();
    assert_eq!(stored, ledger);
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&store);
}

#[test]
fn a_run_that_stops_before_it_receives_still_reports_the_previous_runs_outage() {
    let (_sim, url) = quiet_sim();
    let dir = std::env::temp_dir().join(format!("holdline-spool-owed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let http = reqwest::blocking::Client::new();
    let mut first = listen(&url, &dir);
    let lines = lines_of(&mut first.0);
    wait_subscribed(&http, &url, 1);
    firehose(&http, &url, TOPIC, 10);
    for _ in 0..10 {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("run 1 printed its events");
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    wait_no_sockets(&http, &url);

    // Run 2 never gets a socket open (every upgrade is held) and stops at --duration.
    let resp = http
        .post(format!("{url}/sim/faults"))
        .json(&serde_json::json!({ "kind": "slow_upgrade", "ms": 20000, "count": 20 }))
        .send()
        .unwrap();
    assert!(resp.status().is_success());
    let out = Command::new(BIN)
        .args(["listen", "--api-base", &url, "--topic", TOPIC])
        .args(["--redundancy", "1", "--duration", "1s", "--spool"])
        .arg(&dir)
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
        .env_remove("GENESYSCLOUD_REGION")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let gaps: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with(r#"{"kind":"gap""#))
        .collect();
    assert_eq!(gaps.len(), 1, "the outage of run 1 is reported: {stdout}");
    assert!(gaps[0].contains("not running"), "{}", gaps[0]);
    let _ = std::fs::remove_dir_all(&dir);
}
