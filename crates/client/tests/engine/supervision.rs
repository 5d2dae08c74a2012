//! Every task has an owner that sees it end: a slot that dies (here a panic injected by
//! the test, as a bug would) costs a gap, not a silent loss, drops readiness until its
//! replacement is receiving, and is restarted; one that keeps dying stops the client.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use holdline_client::telemetry::metrics::{NotReady, readiness};
use holdline_client::{ClientError, Stats};
use holdline_sim::SimConfig;

use crate::common::*;

fn busy() -> SimConfig {
    SimConfig {
        rate: 300.0,
        heartbeat: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_panics_leaves_a_gap_drops_readiness_and_is_restarted() {
    let sim = sim(busy()).await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 1;
    // A slow first restart keeps readiness at 503 long enough to be seen.
    cfg.timings.backoff_base = Duration::from_secs(1);
    cfg.timings.backoff_max = Duration::from_secs(2);
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    client.until("ready", |_| readiness(&stats).is_ok()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let struck = SystemTime::now();
    client.handle.inject_slot_panic(0, 0);
    client
        .until("readiness 503 for the dead slot", |_| {
            matches!(readiness(&stats), Err(NotReady::SlotsFailed(1)))
        })
        .await;
    assert_eq!(Stats::get(&stats.task_panics), 1);
    client
        .until("the restarted slot receiving", |_| {
            readiness(&stats).is_ok()
        })
        .await;
    client.until("the gap", |s| !s.gaps.is_empty()).await;
    let before = Stats::get(&stats.emitted);
    client
        .until("events after the restart", |_| {
            Stats::get(&stats.emitted) > before + 30
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    assert_eq!(seen.gaps.len(), 1, "{:?}", seen.gaps);
    let gap = &seen.gaps[0];
    assert!(
        gap.from <= struck && gap.to > struck,
        "{gap:?} vs {struck:?}"
    );
    assert!(gap.reason.contains("panicked"), "{}", gap.reason);
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(verdict.missing.is_empty(), "{:?}", verdict.missing.len());
    assert!(verdict.covered_by_gap > 0, "{verdict:?}");
    assert_eq!(verdict.duplicates, 0);
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert_eq!(stats.slots_failed.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redundancy_two_a_dead_slot_costs_nothing() {
    let sim = sim(busy()).await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 2;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    client
        .until("both slots", |_| {
            stats.slots_live.load(Ordering::Relaxed) >= 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    client.handle.inject_slot_panic(0, 1);
    client
        .until("the panic", |_| Stats::get(&stats.task_panics) == 1)
        .await;
    client
        .until("both slots again", |_| {
            stats.slots_live.load(Ordering::Relaxed) >= 2 && readiness(&stats).is_ok()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(verdict.missing.is_empty());
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(verdict.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_keeps_dying_stops_the_client_with_the_reason() {
    let sim = sim(busy()).await;
    let mut cfg = config(&sim, org_topics(&sim));
    cfg.redundancy = 1;
    let client = Collector::start(cfg).await;
    client.live_since().await;
    let stats = client.handle.stats().clone();
    for n in 1..=6 {
        client
            .until("the restarted slot receiving", |_| {
                stats.slots_live.load(Ordering::Relaxed) >= 1
                    && stats.slots_failed.load(Ordering::Relaxed) == 0
            })
            .await;
        client.handle.inject_slot_panic(0, 0);
        client
            .until("the panic", |_| Stats::get(&stats.task_panics) == n)
            .await;
        if n == 6 {
            break;
        }
    }
    client.until("the end", |s| s.ended).await;
    let seen = client.stop().await;
    match seen.error {
        Some(ClientError::Internal(m)) => assert!(m.contains("died 6 times"), "{m}"),
        other => panic!("{other:?}"),
    }
}
