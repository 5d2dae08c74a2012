//! The webhook sink against a local receiver that fails on purpose: every event arrives
//! once the receiver recovers, every request is signed, and batches that keep failing go
//! to the dead-letter file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

mod common;

use common::*;

const TOPIC: &str = "v2.users.7d1e2f30-4a5b-4c6d-8e9f-0a1b2c3d4e5f.presence";
const SECRET: &str = "hook-s3cr3t";

#[derive(Default)]
struct Receiver {
    /// Requests to refuse with 503 before accepting.
    fail_first: AtomicUsize,
    /// Refuse everything.
    always_fail: bool,
    refused: AtomicUsize,
    bad_signatures: AtomicUsize,
    ids: Mutex<HashSet<String>>,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let expected: String = std::iter::once("sha256=".to_owned())
        .chain(
            hmac::sign(&key, &body)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}")),
        )
        .collect();
    if headers
        .get("x-holdline-signature")
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        r.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    if r.always_fail
        || r.fail_first
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    {
        r.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut ids = r.ids.lock().unwrap();
    for line in String::from_utf8_lossy(&body).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    StatusCode::OK
}

/// Serves `receiver` on a free loopback port from a background runtime.
fn serve(receiver: Arc<Receiver>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let app = axum::Router::new()
                .route("/hook", post(hook))
                .with_state(receiver);
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn listen(url: &str, spool: &std::path::Path, sink: &str) -> Running {
    Running(
        Command::new(BIN)
            .args([
                "listen",
                "--api-base",
                url,
                "--topic",
                TOPIC,
                "--redundancy",
                "1",
            ])
            .arg("--spool")
            .arg(spool)
            .args(["--sink", sink])
            .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
            .env("HOOK_SECRET", SECRET)
            .env_remove("GENESYSCLOUD_REGION")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn publish_when_subscribed(
    http: &reqwest::blocking::Client,
    url: &str,
    count: usize,
) -> HashSet<String> {
    wait_subscribed(http, url, 1);
    firehose(http, url, TOPIC, count);
    ledger(http, url).into_iter().map(|(id, _)| id).collect()
}

#[test]
fn a_failing_receiver_gets_every_event_signed_once_it_recovers() {
    let receiver = Arc::new(Receiver {
        fail_first: AtomicUsize::new(4),
        ..Receiver::default()
    });
    let addr = serve(receiver.clone());
    let (_sim, url) = quiet_sim();
    let dir = std::env::temp_dir().join(format!("holdline-webhook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _run = listen(
        &url,
        &dir,
        &format!("http://{addr}/hook?secret_env=HOOK_SECRET"),
    );
    let http = reqwest::blocking::Client::new();
    let ledger = publish_when_subscribed(&http, &url, 500);
    let deadline = Instant::now() + Duration::from_secs(30);
    while *receiver.ids.lock().unwrap() != ledger {
        assert!(
            Instant::now() < deadline,
            "the receiver has {} of {} events",
            receiver.ids.lock().unwrap().len(),
            ledger.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        receiver.refused.load(Ordering::Relaxed),
        4,
        "the first 4 were refused and retried"
    );
    assert_eq!(receiver.bad_signatures.load(Ordering::Relaxed), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batches_that_keep_failing_go_to_the_dead_letter_file() {
    let receiver = Arc::new(Receiver {
        always_fail: true,
        ..Receiver::default()
    });
    let addr = serve(receiver.clone());
    let (_sim, url) = quiet_sim();
    let dir = std::env::temp_dir().join(format!("holdline-webhook-dead-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dead = dir.join("dead.jsonl");
    let sink = format!(
        "http://{addr}/hook?secret_env=HOOK_SECRET&attempts=2&dead_letter={}",
        dead.display()
    );
    let _run = listen(&url, &dir.join("spool"), &sink);
    let http = reqwest::blocking::Client::new();
    let ledger = publish_when_subscribed(&http, &url, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&dead).unwrap_or_default();
        let ids: HashSet<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        if ids == ledger {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead-letter file has {} of {} events",
            ids.len(),
            ledger.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(receiver.refused.load(Ordering::Relaxed) >= 2);
    let _ = std::fs::remove_dir_all(&dir);
}
