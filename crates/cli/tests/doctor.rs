//! `holdline doctor` against each fault and misconfiguration, on a real simulator: the
//! verdict must name the right cause.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn doctor(url: &str, secret: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["doctor", "--api-base", url, "--json"])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", secret)
        .env_remove("GENESYSCLOUD_REGION")
        .args(extra);
    cmd
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The first check named `name` with `status`, or a panic listing the checks.
fn check<'a>(report: &'a Value, name: &str, status: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with(name) && c["status"] == status)
        .unwrap_or_else(|| panic!("no {status} check {name:?} in {report:#}"))
}

fn detail(c: &Value) -> String {
    format!(
        "{} {}",
        c["detail"].as_str().unwrap_or_default(),
        c["fix"].as_str().unwrap_or_default()
    )
}

/// Runs the doctor with a long hold, waits for its probe socket, does `act` to it, and
/// returns the report.
fn during_probe(sim_args: &[&str], act: impl FnOnce(&str, &str)) -> Value {
    let (_sim, url) = sim(sim_args);
    let child = doctor(&url, "holdline-demo", &["--hold", "6s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let channel = loop {
        let list: Value = reqwest::blocking::get(format!("{url}/sim/channels"))
            .unwrap()
            .json()
            .unwrap();
        if let Some(c) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["connected"] == true)
        {
            break c["id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the doctor's probe never connected"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    act(&url, &channel);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a fault is a problem: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    report(&out)
}

fn fault(url: &str, body: Value) {
    let status = reqwest::blocking::Client::new()
        .post(format!("{url}/sim/faults"))
        .json(&body)
        .send()
        .unwrap()
        .status();
    assert!(status.is_success());
}

#[test]
fn the_thirty_second_keepalive_case_is_explained() {
    let out = Command::new(BIN)
        .args([
            "doctor",
            "--offline",
            "--url",
            "wss://api.mypurecloud.com/v2/analytics/events",
            "--keepalive",
            r#"{"type": "keepalive"}"#,
            "--keepalive-every",
            "15s",
            "--drops-after",
            "30s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "✗ websocket url",
        "no WebSocket is served on api.mypurecloud.com",
        "dial its connectUri",
        "✗ keepalive",
        r#"Only {"message":"ping"} gets a reply"#,
        "WebSocket Heartbeat",
        "about every 30 s",
        "2 keep-alive periods of 15s",
        "→ drive the watchdog from any inbound frame",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_healthy_setup_passes_and_the_probe_is_cleaned_up() {
    let (_sim, url) = sim(&["--heartbeat", "200ms"]);
    let out = doctor(
        &url,
        "holdline-demo",
        &[
            "--hold",
            "1s",
            "--topic",
            "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.presence",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = report(&out);
    assert!(detail(check(&r, "probe: heartbeat", "pass")).contains("every 0.2 s"));
    check(&r, "probe: ping", "pass");
    check(&r, "probe: hold", "pass");
    let channels: Value = reqwest::blocking::get(format!("{url}/sim/channels"))
        .unwrap()
        .json()
        .unwrap();
    assert!(
        channels
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["topics"].as_array().unwrap().is_empty()),
        "{channels}"
    );
}

#[test]
fn a_wrong_secret_is_named() {
    let (_sim, url) = sim(&[]);
    let r = report(&doctor(&url, "wrong", &["--hold", "1s"]).output().unwrap());
    assert!(detail(check(&r, "token", "fail")).contains("secret is wrong"));
    assert_eq!(r["ok"], false);
}

#[test]
fn an_unknown_client_points_at_the_region() {
    let (_sim, url) = sim(&[]);
    let out = doctor(&url, "x", &["--hold", "1s"])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "not-here")
        .output()
        .unwrap();
    assert!(detail(check(&report(&out), "token", "fail")).contains("another region"));
}

#[test]
fn forbidden_and_unknown_topics_are_named() {
    let (_sim, url) = sim(&["--client", "holdline-demo:holdline-demo:"]);
    let forbidden = "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.conversations";
    let unknown = "v2.conversations.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11";
    let r = report(
        &doctor(
            &url,
            "holdline-demo",
            &["--hold", "1s", "--topic", forbidden],
        )
        .output()
        .unwrap(),
    );
    assert!(
        detail(check(&r, "topic permission", "fail")).contains("conversation:communication:view")
    );
    let r = report(
        &doctor(&url, "holdline-demo", &["--hold", "1s", "--topic", unknown])
            .output()
            .unwrap(),
    );
    assert!(detail(check(&r, "topic", "fail")).contains("v2.users.{userId}.conversations"));
}

fn create_channels(url: &str, n: usize) {
    let http = reqwest::blocking::Client::new();
    let token: Value = http
        .post(format!("{url}/oauth/token"))
        .basic_auth("holdline-demo", Some("holdline-demo"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    for _ in 0..n {
        let status = http
            .post(format!("{url}/api/v2/notifications/channels"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status();
        assert!(status.is_success());
    }
}

#[test]
fn nineteen_channels_is_a_warning_and_twenty_stops_the_probe() {
    let (_sim, url) = sim(&[]);
    create_channels(&url, 19);
    let out = doctor(&url, "holdline-demo", &["--hold", "1s"])
        .output()
        .unwrap();
    let r = report(&out);
    assert!(detail(check(&r, "channel budget", "warn")).contains("19 of 20"));
    create_channels(&url, 1);
    let r = report(
        &doctor(&url, "holdline-demo", &["--hold", "1s"])
            .output()
            .unwrap(),
    );
    assert!(detail(check(&r, "channel budget", "fail")).contains("evicts"));
    assert!(detail(check(&r, "probe", "skipped")).contains("would evict"));
}

#[test]
fn a_second_socket_on_the_channel_is_named() {
    let r = during_probe(&[], |url, channel| {
        let uri = format!("{}/channels/{channel}", url.replace("http://", "ws://"));
        let (mut ws, _) = tokio_tungstenite::tungstenite::connect(uri).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let _ = ws.close(None);
    });
    assert!(
        detail(check(&r, "probe: close", "fail"))
            .contains("another socket connected to the same channel")
    );
}

#[test]
fn an_eviction_is_named() {
    let r = during_probe(&[], |url, channel| {
        fault(
            url,
            serde_json::json!({"kind": "evict", "channel": channel}),
        )
    });
    assert!(detail(check(&r, "probe: close", "fail")).contains("evicted"));
}

#[test]
fn a_revoked_token_is_named() {
    let r = during_probe(&[], |url, channel| {
        fault(
            url,
            serde_json::json!({"kind": "revoke_token", "channel": channel}),
        )
    });
    assert!(detail(check(&r, "probe: close", "fail")).contains("revoked"));
}

#[test]
fn maintenance_is_named_as_normal_with_what_to_do() {
    let (_sim, url) = sim(&[]);
    let child = doctor(&url, "holdline-demo", &["--hold", "3s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let channel = loop {
        let list: Value = reqwest::blocking::get(format!("{url}/sim/channels"))
            .unwrap()
            .json()
            .unwrap();
        if let Some(c) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["connected"] == true)
        {
            break c["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    fault(
        &url,
        serde_json::json!({"kind": "socket_closing", "channel": channel, "grace_ms": 300}),
    );
    let out = child.wait_with_output().unwrap();
    let r = report(&out);
    assert!(detail(check(&r, "probe: maintenance", "warn")).contains("same connectUri"));
    assert!(detail(check(&r, "probe: close", "warn")).contains("maintenance"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "maintenance is not the user's fault"
    );
}

#[test]
fn a_made_up_region_stops_before_the_network() {
    let out = Command::new(BIN)
        .args(["doctor", "--region", "api.eu.mypurecloud.com", "--json"])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "x")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "y")
        .output()
        .unwrap();
    let r = report(&out);
    assert!(detail(check(&r, "region", "fail")).contains("eu-west-1"));
    assert!(detail(check(&r, "online checks", "skipped")).contains("region is not valid"));
}

#[test]
fn a_stalled_socket_is_named_as_half_open() {
    let r = during_probe(&[], |url, channel| {
        std::thread::sleep(Duration::from_millis(1500));
        fault(
            url,
            serde_json::json!({"kind": "stall", "channel": channel, "ms": 20000}),
        )
    });
    let c = check(&r, "probe: stall", "fail");
    assert!(detail(c).contains("half-open"), "{c:#}");
    assert!(
        !r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "probe: hold" && c["status"] == "pass"),
        "a stalled socket is not a held one: {r:#}"
    );
}

#[test]
fn an_idle_timeout_close_is_not_taken_for_a_second_socket() {
    let r = during_probe(&[], |url, channel| {
        fault(
            url,
            serde_json::json!({"kind": "close", "channel": channel, "code": 1001, "reason": "idle timeout"}),
        )
    });
    let c = detail(check(&r, "probe: close", "fail"));
    assert!(c.contains("closed as idle"), "{c}");
    assert!(!c.contains("another socket"), "{c}");
}

#[test]
fn without_credentials_nothing_is_called_healthy() {
    let (_sim, url) = sim(&[]);
    let out = Command::new(BIN)
        .args(["doctor", "--api-base", &url])
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_ID")
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
        .env_remove("GENESYSCLOUD_REGION")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(!text.contains("No problem found"), "{text}");
    assert!(
        text.contains("did not run") && text.contains("GENESYSCLOUD_OAUTHCLIENT_ID"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["doctor", "--offline"])
        .env_remove("GENESYSCLOUD_REGION")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("nothing to check"), "{text}");
}
