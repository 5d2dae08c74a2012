//! Memory footprint of holdline's client: the de-duplication window and live sockets.
//!
//! `cargo run --release -p holdline-client --example client_footprint`
//!
//! The simulator runs in a child process (this program started again with `--sim`), so the
//! resident set measured is the client's alone.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use holdline_client::stream::dedupe::Dedupe;
use holdline_client::{Client, ClientConfig, Credentials, Endpoints, Event, Secret};
use holdline_proto::EventId;

/// Resident set size of this process in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn serve_sim() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = holdline_sim::SimConfig {
            rate: 500.0,
            queues: 400,
            agents: 100,
            ..Default::default()
        };
        let sim = holdline_sim::Simulator::start(listener, config).unwrap();
        println!("{}", sim.url());
        std::future::pending::<()>().await;
    });
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--sim") {
        return serve_sim();
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--sim")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let url = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base = rss_kib();
        println!("baseline (runtime started): {base} KiB");

        let mut dedupe = Dedupe::new(Duration::from_secs(3600), 200_000);
        let now = tokio::time::Instant::now();
        for n in 0..200_000u64 {
            dedupe.first_time(EventId::from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)), now);
        }
        let with_window = rss_kib();
        println!(
            "dedupe window full (200,000 ids): +{} KiB ({:.0} bytes per id)",
            with_window - base,
            (with_window - base) as f64 * 1024.0 / 200_000.0
        );
        drop(dedupe);

        let mut real: Vec<String> = Vec::new();
        let org: serde_json::Value = reqwest::get(format!("{url}/sim/org")).await.unwrap().json().await.unwrap();
        for q in org["queues"].as_array().unwrap() {
            real.push(format!("v2.routing.queues.{}.conversations", q["id"].as_str().unwrap()));
        }
        let endpoints = Endpoints::Custom { api_base: url.clone(), login_base: url.clone() };
        let credentials = Credentials { client_id: "holdline-demo".into(), client_secret: Secret::new("holdline-demo") };
        // 400 queues over channels of 22 topics: 19 shards, the most the budget allows.
        let mut config = ClientConfig::new(endpoints, credentials, real);
        config.topics_per_channel = 22;
        config.redundancy = 1;
        let before = rss_kib();
        let (handle, mut stream) = Client::start(config).await.unwrap();
        let sockets = handle.shards() as i64;
        let stats = handle.stats().clone();
        let drain = tokio::spawn(async move {
            let mut events = 0u64;
            while let Some(Ok(e)) = stream.next().await {
                if matches!(e, Event::Notification(_)) {
                    events += 1;
                }
            }
            events
        });
        while stats.sockets_live.load(Ordering::Relaxed) < sockets {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let live = rss_kib();
        println!("{sockets} live sockets (client, tokens, channels, sessions): +{} KiB over the window-free baseline, {live} KiB in all", live.saturating_sub(before));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let busy = rss_kib();
        handle.shutdown();
        let events = drain.await.unwrap();
        println!("after 10 s of traffic (the simulator publishes 500 events/s; {events} were on these topics): {busy} KiB in all");
    });
}

/// Stops the simulator child however this program ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
