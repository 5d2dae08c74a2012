//! The OAuth client's 20 channels, counted as the service counts them: a channel replaced
//! at rollover counts until it expires, so near the budget holdline creates a channel
//! only when the one the service evicts for it is one it no longer uses.

#[path = "engine/common.rs"]
mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::*;
use holdline_client::Stats;
use holdline_sim::SimConfig;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nineteen_live_channels_roll_over_many_times_and_never_evict_a_live_one() {
    init_log("holdline_client=debug,holdline_sim=info");
    let sim = sim(SimConfig {
        rate: 200.0,
        queues: 19,
        agents: 10,
        heartbeat: Duration::from_millis(200),
        // Short tokens: every slot rolls over every few seconds, and the channels it
        // leaves behind count until their tokens expire.
        token_ttl: Duration::from_secs(15),
        channel_ttl: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let topics: Vec<String> = sim
        .core()
        .org
        .queues
        .iter()
        .map(|q| format!("v2.routing.queues.{}.conversations", q.id))
        .collect();
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 1;
    cfg.topics_per_channel = 1;
    // A replaced socket is closed (and its channel evictable) soon after the new one
    // receives, so the one spare place turns over quickly (the overlap lasts at least
    // twice the look-back, so that is short too).
    cfg.timings.overlap = Duration::from_millis(200);
    cfg.timings.gap_lookback = Duration::from_millis(100);
    let client = Collector::start(cfg).await;
    let stats = client.handle.stats().clone();
    assert_eq!(client.handle.shards(), 19, "19 live channels and one spare");
    let live = client.live_since().await;
    client
        .until("all 19 receiving", |_| {
            stats.slots_live.load(Ordering::Relaxed) >= 19
        })
        .await;
    let end = Instant::now() + Duration::from_secs(20);
    let mut most_held = 0;
    while Instant::now() < end {
        most_held = most_held.max(stats.channels_held.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .until("all 19 receiving", |_| {
            stats.slots_live.load(Ordering::Relaxed) >= 19
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let evictions = sim.core().evictions();
    let rollovers = Stats::get(&stats.rollovers);
    println!(
        "{rollovers} rollovers, {} channels created, evictions {evictions:?}, at most {most_held} counted",
        Stats::get(&stats.channels_created)
    );
    assert!(rollovers >= 25, "{rollovers} rollovers");
    assert_eq!(evictions.connected, 0, "a live channel was evicted");
    assert!(most_held <= 20, "{most_held} counted");
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(verdict.missing.is_empty(), "{}", verdict.missing.len());
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(verdict.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_never_evicts_the_new_runs_live_channels() {
    let sim = sim(SimConfig {
        rate: 100.0,
        queues: 19,
        agents: 10,
        heartbeat: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let topics: Vec<String> = sim
        .core()
        .org
        .queues
        .iter()
        .map(|q| format!("v2.routing.queues.{}.conversations", q.id))
        .collect();
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 1;
    cfg.topics_per_channel = 1;
    // Each run leaves 19 channels behind (a crash leaves them to expire in 24 h); the
    // next run finds them, counts them, and only ever makes room among them.
    for run in 0..3 {
        let client = Collector::start(cfg.clone()).await;
        let stats = client.handle.stats().clone();
        client
            .until("all 19 receiving", |_| {
                stats.slots_live.load(Ordering::Relaxed) >= 19
            })
            .await;
        let left = sim.core().channel_infos(|_, _| ()).len();
        assert!(left <= 20, "run {run}: {left} channels");
        client.stop().await;
    }
    let evictions = sim.core().evictions();
    println!("evictions over three runs: {evictions:?}");
    assert_eq!(evictions.connected, 0, "a live channel was evicted");
    assert!(
        evictions.unconnected >= 18,
        "the earlier runs' channels made room"
    );
}
