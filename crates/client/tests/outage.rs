//! REST outages (every path, the token endpoint included) while sockets fail: the sockets'
//! owner never waits on REST, so a socket fault during an outage is recovered on the
//! channel it had, and nothing is lost without a gap record.
//!
//! `cargo test` runs short soaks; longer ones, more seeds and longer outages:
//! `HOLDLINE_SOAK_SECS=120 HOLDLINE_SOAK_SEEDS=1,2,3,4,5 HOLDLINE_SOAK_OUTAGE_MS=30000 cargo test --release -p holdline-client --test outage -- --nocapture`

#[path = "engine/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::*;
use holdline_client::Stats;
use holdline_sim::SimConfig;
use holdline_sim::faults::Fault;
use tokio::time::Instant;

fn soak_secs() -> u64 {
    env_or("HOLDLINE_SOAK_SECS", 10)
}

/// The longest REST outage the soak throws (`HOLDLINE_SOAK_OUTAGE_MS`); each lasts from
/// a second to this.
fn outage_max_ms() -> u64 {
    env_or("HOLDLINE_SOAK_OUTAGE_MS", 5000).max(1001)
}

fn seeds() -> Vec<u64> {
    std::env::var("HOLDLINE_SOAK_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![11, 12])
}

/// Every REST call, `/oauth/token` included, answers `status` for `ms`.
fn outage(status: u16, ms: u64, retry_after: u64) -> Fault {
    Fault::RestErrors {
        status,
        count: None,
        for_ms: Some(ms),
        retry_after: (status == 429).then_some(retry_after),
        path: None,
        method: None,
    }
}

fn init_log() {
    common::init_log("holdline_client=debug,holdline_sim=info");
}

/// Channels this slot's sockets are on now, by whether a socket is connected.
async fn every_slot_live(client: &Collector, slots: i64) {
    let stats = client.handle.stats().clone();
    client
        .until("every slot to be receiving", |_| {
            stats.slots_live.load(Ordering::Relaxed) >= slots
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_faults_during_a_rest_outage_are_recovered_without_rest_and_cost_no_gap() {
    init_log();
    let sim = sim(SimConfig {
        rate: 300.0,
        heartbeat: Duration::from_millis(200),
        closing_grace: Duration::from_millis(300),
        channel_ttl: Duration::from_secs(120),
        token_ttl: Duration::from_secs(120),
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 2;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    every_slot_live(&client, 2).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (status, retry_after) in [(503, 0), (429, 5)] {
        let outage_ms = 10_000;
        let started = Instant::now();
        let ends = started + Duration::from_millis(outage_ms);
        sim.core()
            .apply_fault(&outage(status, outage_ms, retry_after))
            .unwrap();
        let faults = [
            |c: String| Fault::Drop { channel: Some(c) },
            |c: String| Fault::SocketClosing {
                channel: Some(c),
                grace_ms: Some(300),
            },
            |c: String| Fault::Stall {
                channel: Some(c),
                ms: 1500,
            },
            |c: String| Fault::Close {
                channel: Some(c),
                code: Some(1001),
                reason: Some("idle timeout".into()),
            },
        ];
        for (i, fault) in faults.iter().enumerate() {
            let target = connected_channels(&sim)[i % 2].clone();
            let reconnects = Stats::get(&stats.reconnects);
            let closings = Stats::get(&stats.socket_closings);
            sim.core().apply_fault(&fault(target)).unwrap();
            client
                .until("the fault to be seen and recovered", |_| {
                    (Stats::get(&stats.reconnects) > reconnects
                        || Stats::get(&stats.socket_closings) > closings)
                        && stats.sockets_live.load(Ordering::Relaxed) >= 2
                })
                .await;
            // A redialled socket covers from a look-back after its first frame, and the
            // other slot's next socket stops covering a look-back before its last: each
            // fault waits twice the look-back. A stalled socket resumes after its stall:
            // let it finish before the next. A
            // socket_closing with REST down is answered on the same channel (half-way
            // through holdline's closing grace), whose hand-over is not trusted: that slot
            // covers again a look-back after the new socket's first frame, and the other
            // slot's next socket stops covering a look-back before its last, so the next
            // fault waits for both.
            let settle = match i {
                1 => 2000,
                2 => 1600,
                _ => 1200,
            };
            tokio::time::sleep(Duration::from_millis(settle)).await;
        }
        assert!(
            Instant::now() < ends,
            "{status}: the faults were recovered while REST was still down ({:?} after it began)",
            started.elapsed()
        );
        tokio::time::sleep_until(ends + Duration::from_millis(300)).await;
        every_slot_live(&client, 2).await;
    }
    let calls = stats.rest_snapshot();
    let refused = calls
        .iter()
        .filter(|((_, code), _)| *code == 503 || *code == 429)
        .map(|(_, n)| n)
        .sum::<u64>();
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    println!(
        "outage: {verdict:?} with {} gaps; {refused} REST calls refused",
        seen.gaps.len()
    );
    assert!(refused > 0, "the outage was seen by the client: {calls:?}");
    assert!(verdict.missing.is_empty(), "{:?}", verdict.missing.len());
    assert_eq!(verdict.duplicates, 0);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert!(verdict.checked > 1000, "{verdict:?}");
}

/// Socket faults that strike every slot of a shard at once, mixed with REST outages
/// (503, and 429 with `Retry-After`) of up to most of a channel's life: gaps are allowed,
/// silent loss and duplicates are not.
async fn soak(redundancy: usize, seed: u64) {
    init_log();
    let sim = sim(SimConfig {
        rate: 300.0,
        queues: 40,
        agents: 120,
        heartbeat: Duration::from_millis(200),
        channel_ttl: Duration::from_secs(6),
        token_ttl: Duration::from_secs(9),
        closing_grace: Duration::from_millis(300),
        seed,
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = redundancy;
    cfg.topics_per_channel = 60;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    let slots = (client.handle.shards() * redundancy) as i64;
    assert!(client.handle.shards() >= 2, "sharded");
    every_slot_live(&client, slots).await;
    let mut rng = Rng(seed);
    let mut applied: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut outage_until = Instant::now();
    let end = Instant::now() + Duration::from_secs(soak_secs());
    while Instant::now() < end {
        let chans = connected_channels(&sim);
        let (kind, faults): (&'static str, Vec<Fault>) = match rng.below(9) {
            0 | 1 if Instant::now() >= outage_until => {
                let ms = 1000 + rng.below((outage_max_ms() - 1000) as usize) as u64;
                outage_until = Instant::now() + Duration::from_millis(ms);
                if rng.below(2) == 0 {
                    ("outage_503", vec![outage(503, ms, 0)])
                } else {
                    ("outage_429", vec![outage(429, ms, 1 + rng.below(3) as u64)])
                }
            }
            _ if chans.is_empty() => ("none", vec![]),
            2 => ("drop_all", vec![Fault::Drop { channel: None }]),
            k => {
                let c = Some(chans[rng.below(chans.len())].clone());
                match k {
                    3 => ("drop", vec![Fault::Drop { channel: c }]),
                    4 => (
                        "stall",
                        vec![Fault::Stall {
                            channel: c,
                            ms: 800,
                        }],
                    ),
                    5 => (
                        "close",
                        vec![Fault::Close {
                            channel: c,
                            code: Some(1001),
                            reason: Some("idle timeout".into()),
                        }],
                    ),
                    6 => (
                        "socket_closing",
                        vec![Fault::SocketClosing {
                            channel: c,
                            grace_ms: Some(300),
                        }],
                    ),
                    7 => ("expire", vec![Fault::Expire { channel: c }]),
                    _ => ("evict", vec![Fault::Evict { channel: c }]),
                }
            }
        };
        for f in &faults {
            if sim.core().apply_fault(f).is_ok() {
                *applied.entry(kind).or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.below(600) as u64)).await;
    }
    tokio::time::sleep_until(outage_until).await;
    sim.core().apply_fault(&Fault::Clear {}).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.slots_live.load(Ordering::Relaxed) < slots {
        assert!(
            Instant::now() < deadline,
            "every slot live again after the soak"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    println!(
        "outage soak redundancy {redundancy} seed {seed}: {} checked, {} emitted, {} in gaps, {} missing, {} gaps, \
         {} duplicates dropped, {} rollovers, {} reconnects, {} REST refusals; faults {applied:?}",
        verdict.checked,
        verdict.emitted,
        verdict.covered_by_gap,
        verdict.missing.len(),
        seen.gaps.len(),
        Stats::get(&stats.duplicates),
        Stats::get(&stats.rollovers),
        Stats::get(&stats.reconnects),
        stats
            .rest_snapshot()
            .iter()
            .filter(|((_, code), _)| *code == 503 || *code == 429)
            .map(|(_, n)| n)
            .sum::<u64>(),
    );
    let first = verdict
        .missing
        .first()
        .map(|e| (e.seq, e.topic.clone(), e.published_at));
    assert!(
        verdict.missing.is_empty(),
        "{} events missing without a gap; first {first:?}; gaps {:?}",
        verdict.missing.len(),
        seen.gaps
            .iter()
            .map(|g| (g.from, g.to, g.reason.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(verdict.duplicates, 0, "duplicates in the output");
    assert!(
        applied.keys().any(|k| k.starts_with("outage")),
        "{applied:?}"
    );
    assert!(seen.error.is_none(), "{:?}", seen.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_outages_and_shard_wide_socket_faults_at_redundancy_two_never_lose_silently() {
    for seed in seeds() {
        soak(2, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_outages_and_shard_wide_socket_faults_at_redundancy_one_never_lose_silently() {
    for seed in seeds() {
        soak(1, seed).await;
    }
}
