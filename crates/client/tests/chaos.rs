//! Chaos soak: a contact centre on over 2,000 topics, sharded and held redundantly, while
//! a seeded schedule throws every fault kind of the simulator at random sockets; the
//! output is then checked against the simulator's ledger.
//!
//! `cargo test` runs a short soak. A long one:
//! `HOLDLINE_SOAK_SECS=600 cargo test --release -p holdline-client --test chaos -- --nocapture`
//! (`HOLDLINE_SOAK_SEED` picks another schedule).

#[path = "engine/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::*;
use holdline_client::{ClientConfig, Stats};
use holdline_sim::faults::Fault;
use holdline_sim::{SimConfig, Simulator, Unknowns};
use tokio::time::Instant;

fn soak_secs() -> u64 {
    env_or("HOLDLINE_SOAK_SECS", 24)
}

/// The realistic soak waits out a wider look-back between faults, so it runs longer to
/// throw every kind (longest with two sockets per shard, which waits twice the look-back).
fn realistic_soak_secs(redundancy: usize) -> u64 {
    env_or("HOLDLINE_SOAK_SECS", if redundancy > 1 { 70 } else { 40 })
}

fn seed() -> u64 {
    env_or("HOLDLINE_SOAK_SEED", 7)
}

const KINDS: [&str; 14] = [
    "slow_upgrade",
    "drop",
    "close",
    "stall",
    "socket_closing",
    "evict",
    "expire",
    "revoke_token",
    "rest_errors",
    "delay",
    "duplicate",
    "malformed",
    "oversized",
    "oversized_fatal",
];

/// How long a stalled socket stays silent (losing what it is handed) before resuming.
const STALL: Duration = Duration::from_millis(1500);

fn fault(kind: &str, channel: String) -> Fault {
    let channel = Some(channel);
    match kind {
        "drop" => Fault::Drop { channel },
        "close" => Fault::Close {
            channel,
            code: Some(1001),
            reason: Some("idle timeout".into()),
        },
        "stall" => Fault::Stall {
            channel,
            ms: STALL.as_millis() as u64,
        },
        "socket_closing" => Fault::SocketClosing {
            channel,
            grace_ms: Some(300),
        },
        "evict" => Fault::Evict { channel },
        "expire" => Fault::Expire { channel },
        "revoke_token" => Fault::RevokeToken {
            channel,
            client: None,
        },
        "rest_errors" => Fault::RestErrors {
            status: 503,
            count: Some(3),
            for_ms: None,
            retry_after: None,
            path: None,
            method: None,
        },
        "delay" => Fault::Delay {
            channel,
            ms: 200,
            for_ms: Some(600),
            count: None,
        },
        "duplicate" => Fault::Duplicate {
            channel,
            for_ms: None,
            count: Some(30),
        },
        "malformed" => Fault::Malformed {
            channel,
            text: None,
        },
        "oversized" => Fault::Oversized {
            channel,
            bytes: 100 * 1024,
        },
        _ => Fault::Oversized {
            channel,
            bytes: 400 * 1024,
        },
    }
}

fn init_log() {
    common::init_log("holdline_client=debug,holdline_sim=debug");
}

/// How late a late copy can be in the realistic soak: the service's 20 s, compressed
/// (`HOLDLINE_SOAK_LATE_MS=20000` for the real thing).
fn late() -> Duration {
    Duration::from_millis(env_or("HOLDLINE_SOAK_LATE_MS", 1500))
}

/// Every unknown at its unkind setting, with time compressed like the rest of the soak.
fn realistic() -> Unknowns {
    Unknowns {
        latency: late(),
        late_share: 0.02,
        handover_loss: Duration::from_millis(300),
        ..Unknowns::realistic()
    }
}

async fn chaos_sim() -> Simulator {
    chaos_sim_with(Unknowns::default()).await
}

async fn chaos_sim_with(unknowns: Unknowns) -> Simulator {
    sim(SimConfig {
        unknowns,
        rate: 300.0,
        queues: 200,
        agents: 460,
        heartbeat: Duration::from_millis(200),
        channel_ttl: Duration::from_secs(6),
        token_ttl: Duration::from_secs(9),
        closing_grace: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await
}

fn chaos_config(sim: &Simulator, redundancy: usize) -> ClientConfig {
    let mut cfg = config(sim, org_topics(sim));
    cfg.redundancy = redundancy;
    cfg.topics_per_channel = 250;
    cfg.max_frame_bytes = 256 * 1024;
    cfg
}

struct Outcome {
    seen: Seen,
    verdict: Verdict,
    applied: BTreeMap<&'static str, usize>,
    log: Vec<(SystemTime, &'static str, String)>,
}

impl Outcome {
    /// Each gap with the faults thrown within two seconds before it.
    fn gap_context(&self) -> String {
        let mut out = Vec::new();
        for g in &self.seen.gaps {
            let ms = |t: SystemTime| {
                t.duration_since(g.from).map_or_else(
                    |e| -(e.duration().as_millis() as i64),
                    |d| d.as_millis() as i64,
                )
            };
            let faults: Vec<String> = self
                .log
                .iter()
                .filter(|(t, ..)| ms(*t).abs() < 2000)
                .map(|(t, k, c)| format!("{:+} ms {k} on {c}", ms(*t)))
                .collect();
            out.push(format!(
                "gap of {} ms ({}), faults: {faults:?}",
                ms(g.to),
                g.reason
            ));
        }
        out.join("\n")
    }

    /// What happened around the first missing event: faults and gaps within two seconds.
    fn context(&self) -> String {
        let Some(first) = self.verdict.missing.first() else {
            return String::new();
        };
        let at: SystemTime = first.published_at.into();
        let near = |t: SystemTime| {
            let d = if t > at {
                t.duration_since(at)
            } else {
                at.duration_since(t)
            };
            d.unwrap_or_default() < Duration::from_secs(2)
        };
        let ms = |t: SystemTime| {
            t.duration_since(at).map_or_else(
                |e| -(e.duration().as_millis() as i64),
                |d| d.as_millis() as i64,
            )
        };
        let faults: Vec<String> = self
            .log
            .iter()
            .filter(|(t, ..)| near(*t))
            .map(|(t, k, c)| format!("{:+} ms {k} on {c}", ms(*t)))
            .collect();
        let gaps: Vec<String> = self
            .seen
            .gaps
            .iter()
            .filter(|g| near(g.from) || near(g.to))
            .map(|g| format!("{:+}..{:+} ms ({})", ms(g.from), ms(g.to), g.reason))
            .collect();
        format!(
            "first missing on {} at {} (delivered to {:?}); faults nearby: {faults:?}; gaps nearby: {gaps:?}",
            first.topic, first.published_at, first.delivered_to
        )
    }
}

/// Runs the soak: one fault at a time, each only once every socket is receiving again.
async fn soak(redundancy: usize) -> Outcome {
    soak_with(redundancy, Unknowns::default(), None, soak_secs()).await
}

/// Soaks take the machine one at a time: each throws faults on a schedule that assumes
/// the client keeps up, so two at once on a small machine measure each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The soak against a simulator with these unknowns, and a look-back floor.
async fn soak_with(
    redundancy: usize,
    unknowns: Unknowns,
    floor: Option<Duration>,
    secs: u64,
) -> Outcome {
    let _alone = ONE_AT_A_TIME.lock().await;
    init_log();
    let sim = chaos_sim_with(unknowns).await;
    let topics = org_topics(&sim);
    let singles: usize = topics
        .iter()
        .map(|t| holdline_proto::topic::expand(t).unwrap().len())
        .sum();
    assert!(singles >= 2000, "{singles} topics");
    let mut cfg = chaos_config(&sim, redundancy);
    if let Some(floor) = floor {
        cfg.timings.gap_lookback = floor;
    }
    let client = Collector::start(cfg).await;
    client.live_since().await;
    let stats = client.handle.stats().clone();
    let sockets = (client.handle.shards() * redundancy) as i64;
    assert!(client.handle.shards() >= 3, "the topics are sharded");
    // The check starts once every shard has subscribed: before that, a shard's events go
    // to no channel at all, which is start-up, not loss.
    client
        .until("every slot to be receiving", |_| {
            stats.slots_live.load(Ordering::Relaxed) >= sockets
        })
        .await;
    let live = SystemTime::now();
    let mut rng = Rng(seed());
    let mut applied: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut log = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut round = 0;
    let slots = sockets;
    // A stalled socket looks live to the client until its liveness rule notices, so the
    // next fault waits for the stall to end: otherwise it would strike a second socket
    // while the first is silently losing events, a double fault.
    let mut stalled_until = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep_until(stalled_until).await;
        // Single-socket faults: every slot has been covering for longer than the gap
        // look-back, so the others cover whatever the struck one had in flight.
        // A socket that takes its channel over covers from a look-back after its first
        // frame, and the next fault's socket stops covering a look-back before its last:
        // so the slots wait twice the look-back, which follows the measured skew. With
        // one socket per shard there are no others to cover anything, and gaps are
        // expected.
        let settle = match redundancy {
            1 => fast_timings().gap_lookback,
            _ => Duration::from_micros(stats.lookback_micros.load(Ordering::Relaxed)) * 2,
        } + Duration::from_millis(150);
        loop {
            client
                .until("every slot to be receiving", |_| {
                    stats.slots_live.load(Ordering::Relaxed) >= slots
                })
                .await;
            let reconnects = Stats::get(&stats.reconnects);
            tokio::time::sleep(settle).await;
            if stats.slots_live.load(Ordering::Relaxed) >= slots
                && Stats::get(&stats.reconnects) == reconnects
            {
                break;
            }
        }
        let connected = connected_channels(&sim);
        // Every kind once in a shuffled order, then at random.
        let kind = if round < KINDS.len() {
            KINDS[(round + seed() as usize) % KINDS.len()]
        } else {
            KINDS[rng.below(KINDS.len())]
        };
        round += 1;
        let target = connected[rng.below(connected.len())].clone();
        if sim.core().apply_fault(&fault(kind, target.clone())).is_ok() {
            if kind == "stall" {
                stalled_until = Instant::now() + STALL;
            }
            *applied.entry(kind).or_default() += 1;
            log.push((SystemTime::now(), kind, target));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .until("every socket to be receiving", |_| {
            stats.sockets_live.load(Ordering::Relaxed) >= sockets
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    let widest = seen
        .gaps
        .iter()
        .filter_map(|g| g.to.duration_since(g.from).ok())
        .max()
        .unwrap_or_default();
    println!(
        "soak redundancy {redundancy}, {secs}s, seed {}: {} events checked, {} emitted, {} in gaps, {} missing, \
         {} gaps (widest {} ms), {} duplicates dropped ({} serialised differently), largest skew {} ms, \
         look-back {} ms, {} rollovers, {} reconnects; faults {applied:?}",
        seed(),
        verdict.checked,
        verdict.emitted,
        verdict.covered_by_gap,
        verdict.missing.len(),
        seen.gaps.len(),
        widest.as_millis(),
        Stats::get(&stats.duplicates),
        Stats::get(&stats.near_duplicates),
        Stats::get(&stats.arrival_skew_micros) / 1000,
        Stats::get(&stats.lookback_micros) / 1000,
        Stats::get(&stats.rollovers),
        Stats::get(&stats.reconnects),
    );
    Outcome {
        seen,
        verdict,
        applied,
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundancy_two_survives_every_single_socket_fault_without_loss_or_gap() {
    let outcome = soak(2).await;
    let gaps = outcome.gap_context();
    assert!(
        outcome.verdict.missing.is_empty(),
        "missing: {}",
        outcome.context()
    );
    let Outcome {
        seen,
        verdict,
        applied,
        ..
    } = outcome;
    assert_eq!(
        applied.len(),
        KINDS.len(),
        "every fault kind was thrown: {applied:?}"
    );
    assert!(verdict.checked > 500, "{verdict:?}");
    assert_eq!(verdict.duplicates, 0, "duplicates in the output");
    assert!(
        seen.gaps.is_empty(),
        "a single-socket fault made a gap:\n{gaps}"
    );
    assert!(seen.error.is_none(), "{:?}", seen.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redundancy_one_reports_every_loss_as_a_gap() {
    let outcome = soak(1).await;
    assert!(
        outcome.verdict.missing.is_empty(),
        "silent loss: {}",
        outcome.context()
    );
    let Outcome {
        seen,
        verdict,
        applied,
        ..
    } = outcome;
    assert_eq!(applied.len(), KINDS.len(), "{applied:?}");
    assert_eq!(verdict.duplicates, 0);
    assert!(
        !seen.gaps.is_empty(),
        "socket faults with one socket per shard make gaps"
    );
    assert!(verdict.covered_by_gap > 0);
}

/// Every unknown at its unkind setting (late copies, per-channel frames, token-scoped
/// channels, strict pings, a lossy hand-over) and every fault kind, two sockets per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realistic_service_with_redundancy_two_loses_nothing() {
    let outcome = soak_with(2, realistic(), None, realistic_soak_secs(2)).await;
    assert!(
        outcome.verdict.missing.is_empty(),
        "missing: {}",
        outcome.context()
    );
    let Outcome {
        seen,
        verdict,
        applied,
        ..
    } = outcome;
    assert_eq!(applied.len(), KINDS.len(), "{applied:?}");
    assert!(verdict.checked > 500, "{verdict:?}");
    assert_eq!(verdict.duplicates, 0, "duplicates in the output");
    assert!(seen.error.is_none(), "{:?}", seen.error);
}

/// The same with one socket per shard: nothing else received what a dying socket had in
/// flight, so the look-back floor must cover the service's lateness (there is no second
/// copy to measure it against until a rollover overlaps two sockets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realistic_service_with_redundancy_one_reports_every_loss() {
    let floor = late() + Duration::from_millis(100);
    let outcome = soak_with(1, realistic(), Some(floor), realistic_soak_secs(1)).await;
    assert!(
        outcome.verdict.missing.is_empty(),
        "silent loss: {}",
        outcome.context()
    );
    let Outcome {
        seen,
        verdict,
        applied,
        ..
    } = outcome;
    assert_eq!(applied.len(), KINDS.len(), "{applied:?}");
    assert_eq!(verdict.duplicates, 0);
    assert!(
        !seen.gaps.is_empty(),
        "faults with one socket per shard make gaps"
    );
    assert!(seen.error.is_none(), "{:?}", seen.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sockets_down_at_once_make_one_gap_covering_exactly_the_outage() {
    init_log();
    let sim = chaos_sim().await;
    let agent = &sim.core().org.agents[0].id;
    let queues: Vec<String> = sim
        .core()
        .org
        .queues
        .iter()
        .map(|q| format!("v2.routing.queues.{}.conversations", q.id))
        .collect();
    let mut topics = queues;
    topics.push(format!("v2.users.{agent}.presence"));
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 2;
    let lookback = cfg.timings.gap_lookback;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    client
        .until("both sockets", |_| {
            stats.sockets_live.load(Ordering::Relaxed) >= 2
        })
        .await;
    // Both have been receiving for longer than the look-back before they are struck.
    tokio::time::sleep(lookback + Duration::from_millis(300)).await;
    let struck = SystemTime::now();
    sim.core()
        .apply_fault(&Fault::Drop { channel: None })
        .unwrap();
    client.until("the gap", |s| !s.gaps.is_empty()).await;
    let before = Stats::get(&stats.emitted);
    client
        .until("events after recovery", |_| {
            Stats::get(&stats.emitted) > before + 30
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    assert_eq!(seen.gaps.len(), 1, "{:?}", seen.gaps);
    let gap = &seen.gaps[0];
    assert_eq!(
        gap.topics.len(),
        topics.len(),
        "the gap names the shard's topics"
    );
    // The window starts at the last frame before the drop (less the look-back) and ends when
    // a socket is receiving again: no earlier, no later.
    let slack = Duration::from_millis(150);
    assert!(
        gap.from + lookback + slack >= struck && gap.from <= struck,
        "{:?} vs {struck:?}",
        gap.from
    );
    assert!(
        gap.to >= struck && gap.to.duration_since(struck).unwrap() < Duration::from_secs(2),
        "{:?}",
        gap.to
    );
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(verdict.missing.is_empty(), "{:?}", verdict.missing);
    assert_eq!(verdict.duplicates, 0);
}
