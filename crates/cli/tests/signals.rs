//! `listen` and signals: SIGINT stops within 2 s whatever REST is doing, a second one exits
//! at once, SIGHUP reloads the topic lists without touching the sockets that keep theirs.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::*;

fn listen(url: &str, extra: &[&str]) -> Command {
    common::listen(url, "holdline-demo", extra)
}

/// Waits up to `within` for a line matching `what`; returns it.
fn wait_line(rx: &mpsc::Receiver<String>, within: Duration, what: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if what(&line) => return line,
            Ok(_) => {}
            Err(_) => panic!("no such line within {within:?}"),
        }
    }
}

fn fault(http: &reqwest::blocking::Client, url: &str, body: serde_json::Value) {
    let resp = http
        .post(format!("{url}/sim/faults"))
        .json(&body)
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().unwrap());
}

/// Waits up to `within` for the child to exit; its code and how long it took.
fn exited(child: &mut std::process::Child, within: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), start.elapsed());
        }
        assert!(start.elapsed() < within, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigint_stops_within_two_seconds_while_rest_waits_out_a_60s_retry_after() {
    let (_sim, url) = sim(&[]);
    let http = reqwest::blocking::Client::new();
    let mut child = Running(
        listen(
            &url,
            &[
                "--queue",
                "Support",
                "--queue",
                "Sales",
                "--redundancy",
                "1",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let logs = log_lines_of(&mut child.0);
    let out = lines_of(&mut child.0);
    wait_line(&out, Duration::from_secs(20), |l| {
        l.starts_with(r#"{"kind":"event""#)
    });
    fault(
        &http,
        &url,
        serde_json::json!({"kind":"rest_errors","status":429,"retry_after":60,"for_ms":120000}),
    );
    // The channel is lost: its replacement needs REST, which answers "come back in 60 s".
    fault(&http, &url, serde_json::json!({"kind":"evict"}));
    wait_line(&logs, Duration::from_secs(20), |l| {
        l.contains("rate limited")
    });
    signal(child.0.id(), "INT");
    let (code, took) = exited(&mut child.0, Duration::from_secs(10));
    println!("stopped {took:?} after SIGINT, during a 60 s Retry-After");
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn a_second_sigint_exits_at_once_when_stdout_is_not_read() {
    let (_sim, url) = quiet_sim();
    let http = reqwest::blocking::Client::new();
    let topic = "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.presence";
    let mut child = Running(
        listen(&url, &["--topic", topic])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = log_lines_of(&mut child.0);
    wait_subscribed(&http, &url, 2);
    // Nobody reads stdout: once its pipe is full, the writer blocks.
    firehose(&http, &url, topic, 20_000);
    signal(child.0.id(), "INT");
    wait_line(&logs, Duration::from_secs(10), |l| l.contains("stopping"));
    signal(child.0.id(), "INT");
    let (code, took) = exited(&mut child.0, Duration::from_secs(5));
    assert_eq!(code, Some(130), "exited at once ({took:?})");
}

fn connected_peers(http: &reqwest::blocking::Client, url: &str) -> Vec<String> {
    let channels: Vec<serde_json::Value> = http
        .get(format!("{url}/sim/channels"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut peers: Vec<String> = channels
        .iter()
        .filter_map(|c| c["peer"].as_str().map(str::to_owned))
        .collect();
    peers.sort();
    peers
}

#[test]
fn sighup_reloads_the_topics_file_and_keeps_the_sockets() {
    let (_sim, url) = sim(&[]);
    let http = reqwest::blocking::Client::new();
    let org: serde_json::Value = http
        .get(format!("{url}/sim/org"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let queue = |i: usize| {
        format!(
            "v2.routing.queues.{}.conversations",
            org["queues"][i]["id"].as_str().unwrap()
        )
    };
    let dir = std::env::temp_dir().join(format!("holdline-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("topics.txt");
    std::fs::write(&file, format!("{}\n", queue(0))).unwrap();
    let mut child = Running(
        listen(&url, &["--topics-file", file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = log_lines_of(&mut child.0);
    let out = lines_of(&mut child.0);
    wait_subscribed(&http, &url, 2);
    let before = connected_peers(&http, &url);
    std::fs::write(&file, format!("{}\n{}\n{}\n", queue(0), queue(1), queue(2))).unwrap();
    signal(child.0.id(), "HUP");
    let line = wait_line(&logs, Duration::from_secs(10), |l| {
        l.contains("topics reloaded")
    });
    assert!(
        line.contains("added=2") && line.contains("removed=0"),
        "{line}"
    );
    let (q1, q2) = (queue(1), queue(2));
    wait_line(&out, Duration::from_secs(30), |l| {
        l.contains(&q1) || l.contains(&q2)
    });
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP did not end the process"
    );
    assert_eq!(
        connected_peers(&http, &url),
        before,
        "the same sockets, not reconnected"
    );
    std::fs::write(&file, format!("{}\n", queue(1))).unwrap();
    signal(child.0.id(), "HUP");
    let line = wait_line(&logs, Duration::from_secs(10), |l| {
        l.contains("topics reloaded")
    });
    assert!(
        line.contains("added=0") && line.contains("removed=2"),
        "{line}"
    );
    signal(child.0.id(), "TERM");
    let (code, _) = exited(&mut child.0, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_works_after_a_queue_of_the_old_list_was_deleted() {
    let (_sim, url) = sim(&[]);
    let http = reqwest::blocking::Client::new();
    let org: serde_json::Value = http
        .get(format!("{url}/sim/org"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id_of = |name: &str| {
        org["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .map(|q| q["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let dir = std::env::temp_dir().join(format!("holdline-hup-q-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("listen.toml");
    std::fs::write(&file, "queues = [\"Support\"]\n").unwrap();
    let mut child = Running(
        listen(&url, &["--config", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = log_lines_of(&mut child.0);
    wait_subscribed(&http, &url, 2);
    let gone = http
        .delete(format!("{url}/sim/org/{}", id_of("Support")))
        .send()
        .unwrap();
    assert!(gone.status().is_success());
    std::fs::write(&file, "queues = [\"Sales\"]\n").unwrap();
    signal(child.0.id(), "HUP");
    let line = wait_line(&logs, Duration::from_secs(10), |l| {
        l.contains("topics reloaded") || l.contains("keeping the current topics")
    });
    assert!(
        line.contains("added=1") && line.contains("removed=1"),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
