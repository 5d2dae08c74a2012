//! Faults that lose events for a while: drops, stalls, evictions, revoked tokens, frames
//! over the size limit. With one socket per shard every missed event must fall inside a
//! gap, and the gap must be tight.

use std::time::{Duration, SystemTime};

use holdline_client::Stats;
use holdline_sim::SimConfig;
use holdline_sim::faults::Fault;

use crate::common::*;

/// Runs traffic, applies `fault`, waits for `gaps` gaps, stops, and checks the ledger.
async fn fault_is_covered(fault: Fault, sim_config: SimConfig) -> (Seen, Verdict) {
    let sim = sim(SimConfig {
        rate: 200.0,
        ..sim_config
    })
    .await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.core().apply_fault(&fault).unwrap();
    client
        .until("a gap and recovery", |s| !s.gaps.is_empty())
        .await;
    let stats = client.handle.stats().clone();
    let after_gap = Stats::get(&stats.emitted);
    client
        .until("events after recovery", |_| {
            Stats::get(&stats.emitted) > after_gap + 50
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(
        verdict.missing.is_empty(),
        "silent loss: {:?}",
        verdict.missing
    );
    assert_eq!(verdict.duplicates, 0);
    assert!(seen.error.is_none(), "{:?}", seen.error);
    (seen, verdict)
}

fn gap_length(seen: &Seen) -> Duration {
    let gap = &seen.gaps[0];
    gap.to.duration_since(gap.from).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_is_replaced_and_the_loss_window_reported() {
    let (seen, verdict) =
        fault_is_covered(Fault::Drop { channel: None }, SimConfig::default()).await;
    assert_eq!(seen.gaps.len(), 1, "{:?}", seen.gaps);
    assert!(
        seen.gaps[0].reason.contains("dropped"),
        "{}",
        seen.gaps[0].reason
    );
    // A reset is seen at once: the gap is the look-back plus one reconnect.
    assert!(
        gap_length(&seen) < fast_timings().gap_lookback + Duration::from_millis(800),
        "{:?}",
        gap_length(&seen)
    );
    assert!(verdict.emitted > 30, "{verdict:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_socket_is_declared_dead_and_the_silence_reported() {
    let stall = Fault::Stall {
        channel: None,
        ms: 5000,
    };
    let (seen, _) = fault_is_covered(stall, SimConfig::default()).await;
    assert_eq!(seen.gaps.len(), 1, "{:?}", seen.gaps);
    assert!(
        seen.gaps[0].reason.contains("dead"),
        "{}",
        seen.gaps[0].reason
    );
    // Detection within ping interval + pong timeout, then one reconnect.
    let t = fast_timings();
    let budget =
        fast_timings().gap_lookback + t.ping_interval + t.pong_timeout + Duration::from_millis(800);
    assert!(
        gap_length(&seen) < budget,
        "{:?} > {budget:?}",
        gap_length(&seen)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_channel_is_replaced_by_a_new_one() {
    let (seen, _) = fault_is_covered(Fault::Evict { channel: None }, SimConfig::default()).await;
    assert!(
        seen.states
            .iter()
            .any(|(k, d, _)| *k == holdline_client::StateKind::ChannelLost
                && d.contains("no_longer_subscribed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_means_a_new_token_and_channel() {
    let revoke = Fault::RevokeToken {
        channel: None,
        client: Some("holdline-demo".into()),
    };
    let (seen, _) = fault_is_covered(revoke, SimConfig::default()).await;
    assert!(
        seen.states
            .iter()
            .any(|(_, d, _)| d.contains("token_revoked")),
        "{:?}",
        seen.states
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_channel_is_replaced() {
    let (seen, _) = fault_is_covered(Fault::Expire { channel: None }, SimConfig::default()).await;
    assert!(
        seen.states
            .iter()
            .any(|(_, d, _)| d.contains("channel gone")),
        "{:?}",
        seen.states
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_counted_and_skipped() {
    let sim = sim(SimConfig {
        rate: 100.0,
        ..SimConfig::default()
    })
    .await;
    let client = Collector::start(config(&sim, org_topics(&sim))).await;
    client.live_since().await;
    sim.core()
        .apply_fault(&Fault::Malformed {
            channel: None,
            text: None,
        })
        .unwrap();
    sim.core()
        .apply_fault(&Fault::Oversized {
            channel: None,
            bytes: 100_000,
        })
        .unwrap();
    let stats = client.handle.stats().clone();
    client
        .until("a malformed and an unknown frame", |_| {
            Stats::get(&stats.malformed) == 1 && Stats::get(&stats.unknown) == 1
        })
        .await;
    let before = Stats::get(&stats.emitted);
    client
        .until("events to keep flowing", |_| {
            Stats::get(&stats.emitted) > before + 20
        })
        .await;
    let seen = client.stop().await;
    assert!(
        seen.gaps.is_empty(),
        "skipping a bad frame is not an outage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_size_limit_costs_the_socket_not_the_process() {
    let sim = sim(SimConfig {
        rate: 100.0,
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics);
    cfg.max_frame_bytes = 256 * 1024;
    let client = Collector::start(cfg).await;
    client.live_since().await;
    sim.core()
        .apply_fault(&Fault::Oversized {
            channel: None,
            bytes: 512 * 1024,
        })
        .unwrap();
    client
        .until("the oversized frame to cost one socket", |s| {
            !s.gaps.is_empty()
        })
        .await;
    let stats = client.handle.stats().clone();
    assert_eq!(Stats::get(&stats.oversized), 1);
    let before = Stats::get(&stats.emitted);
    client
        .until("events after reconnecting", |_| {
            Stats::get(&stats.emitted) > before + 20
        })
        .await;
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_while_the_maintenance_replacement_is_still_connecting_is_a_gap() {
    let sim = sim(SimConfig {
        rate: 300.0,
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The replacement socket's upgrade is held for 600 ms; meanwhile the old socket is
    // closed for another reason, well inside the maintenance grace.
    sim.core()
        .apply_fault(&Fault::SlowUpgrade {
            ms: 600,
            count: Some(1),
        })
        .unwrap();
    sim.core()
        .apply_fault(&Fault::SocketClosing {
            channel: None,
            grace_ms: Some(5000),
        })
        .unwrap();
    client
        .until("the maintenance notice", |_| {
            Stats::get(&stats.socket_closings) >= 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    sim.core()
        .apply_fault(&Fault::Close {
            channel: None,
            code: Some(1001),
            reason: Some("idle timeout".into()),
        })
        .unwrap();
    client
        .until("a gap for the hole", |s| !s.gaps.is_empty())
        .await;
    let before = Stats::get(&stats.emitted);
    client
        .until("events after", |_| Stats::get(&stats.emitted) > before + 30)
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(
        verdict.missing.is_empty(),
        "silent loss: {:?}",
        verdict.missing
    );
    assert_eq!(seen.gaps.len(), 1, "{:?}", seen.gaps);
    assert!(
        verdict.covered_by_gap > 0,
        "the hole held events: {verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_closing_while_deliveries_are_delayed_loses_nothing() {
    let sim = sim(SimConfig {
        rate: 300.0,
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.core()
        .apply_fault(&Fault::Delay {
            channel: None,
            ms: 200,
            for_ms: Some(600),
            count: None,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A grace long enough for the replacement to attach first even on a loaded machine:
    // the hand-over, not the grace's close, is what is under test.
    sim.core()
        .apply_fault(&Fault::SocketClosing {
            channel: None,
            grace_ms: Some(1000),
        })
        .unwrap();
    client
        .until("the maintenance notice", |_| {
            Stats::get(&stats.socket_closings) >= 1
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(
        verdict.missing.is_empty(),
        "lost {} of {}: {:?}",
        verdict.missing.len(),
        verdict.checked,
        verdict.missing.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_then_maintenance_on_the_same_channel_is_covered() {
    let sim = sim(SimConfig {
        rate: 300.0,
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let channel = sim.core().channel_infos(|c, _| c.id.to_string()).remove(0);
    sim.core()
        .apply_fault(&Fault::Stall {
            channel: Some(channel.clone()),
            ms: 1500,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    sim.core()
        .apply_fault(&Fault::SocketClosing {
            channel: Some(channel),
            grace_ms: Some(300),
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(
        verdict.missing.is_empty(),
        "lost {} of {}; gaps {:?}; states {:?}",
        verdict.missing.len(),
        verdict.checked,
        seen.gaps
            .iter()
            .map(|g| (&g.reason, g.from, g.to))
            .collect::<Vec<_>>(),
        seen.states.iter().map(|s| (s.0, &s.1)).collect::<Vec<_>>()
    );
}
