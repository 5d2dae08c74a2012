//! holdline against the simulator's unkind answers to what the service leaves unknown
//! (docs/simulator.md): per-channel serialisation, sockets far apart in time, channels
//! scoped to the token that created them.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use holdline_client::Stats;
use holdline_sim::faults::Fault;
use holdline_sim::{ChannelScope, Frames, Handover, Pings, SimConfig, Unknowns};
use tokio::time::Instant;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_serialised_differently_per_channel_are_one_event() {
    let sim = sim(SimConfig {
        rate: 200.0,
        unknowns: Unknowns {
            frames: Frames::PerChannel,
            ..Unknowns::default()
        },
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 2;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    client
        .until("copies on both channels", |_| {
            Stats::get(&stats.near_duplicates) > 300
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert_eq!(verdict.duplicates, 0, "{verdict:?}");
    assert!(verdict.missing.is_empty(), "{:?}", verdict.missing);
    assert!(verdict.emitted > 200, "{verdict:?}");
    assert_eq!(
        Stats::get(&stats.near_duplicates),
        Stats::get(&stats.duplicates),
        "every copy after the first was serialised differently"
    );
}

/// One slot's socket lags 2.5 s behind the other's. The other is half-open for a while,
/// then the lagging one drops: what was in flight on it is lost on both, and only a
/// look-back widened by the measured skew puts it inside a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookback_widens_to_the_measured_skew_between_sockets() {
    let lag = Duration::from_millis(2500);
    let sim = sim(SimConfig {
        rate: 200.0,
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 2;
    let floor = cfg.timings.gap_lookback;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    client
        .until("both slots connected", |_| {
            connected_channels(&sim).len() == 2
        })
        .await;
    let channels = connected_channels(&sim);
    let (slow, fast) = (channels[0].clone(), channels[1].clone());
    sim.core()
        .apply_fault(&Fault::Delay {
            channel: Some(slow.clone()),
            ms: lag.as_millis() as u64,
            for_ms: None,
            count: None,
        })
        .unwrap();
    client
        .until("the skew measured", |_| {
            Duration::from_micros(stats.arrival_skew_micros.load(Ordering::Relaxed))
                >= lag - Duration::from_millis(100)
        })
        .await;
    let lookback = Duration::from_micros(stats.lookback_micros.load(Ordering::Relaxed));
    assert!(
        lookback >= floor + lag - Duration::from_millis(100),
        "{lookback:?}"
    );
    assert!(
        Stats::get(&stats.dedupe_window_micros) >= 2 * lookback.as_micros() as u64,
        "the de-duplication window follows"
    );

    sim.core()
        .apply_fault(&Fault::Stall {
            channel: Some(fast),
            ms: 10_000,
        })
        .unwrap();
    // The fault schedule: the lagging socket drops 2 s into the other's silence.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sim.core()
        .apply_fault(&Fault::Drop {
            channel: Some(slow),
        })
        .unwrap();
    let dropped = Stats::get(&stats.emitted);
    client
        .until("events after recovery", |_| {
            Stats::get(&stats.emitted) > dropped + 400
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(
        verdict.missing.is_empty(),
        "{} events lost without a gap (gaps {:?})",
        verdict.missing.len(),
        seen.gaps
    );
    assert!(verdict.covered_by_gap > 0, "{verdict:?}");
    assert_eq!(verdict.duplicates, 0);
}

/// Channels answer only the token that created them. The token is renewed at 80 % of its
/// life, the channel is replaced only at 90 %: a socket dropped between the two is
/// restored on its channel with the channel's own token, with no 404 (and, the other
/// slot covering the drop, no gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_keeps_its_token_after_the_token_is_renewed() {
    let token_ttl = Duration::from_secs(10);
    let sim = sim(SimConfig {
        rate: 100.0,
        token_ttl,
        unknowns: Unknowns {
            channel_scope: ChannelScope::Token,
            ..Unknowns::default()
        },
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.timings.rollover_margin = Duration::from_secs(1);
    cfg.timings.gap_lookback = Duration::from_millis(200);
    cfg.redundancy = 2;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let live_at = Instant::now();
    let stats = client.handle.stats().clone();
    // Past the token's renewal point, before the channel's rollover.
    tokio::time::sleep_until(live_at + token_ttl.mul_f64(0.82)).await;
    let channel = connected_channels(&sim).pop().expect("a connected channel");
    sim.core()
        .apply_fault(&Fault::Drop {
            channel: Some(channel.clone()),
        })
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let resubscribed = stats
            .rest_calls
            .lock()
            .unwrap()
            .iter()
            .filter(|((what, status), _)| *what == "subscribe topics" && *status == 200)
            .map(|(_, n)| *n)
            .sum::<u64>();
        if resubscribed >= 3 && connected_channels(&sim).contains(&channel) {
            break;
        }
        assert!(Instant::now() < deadline, "the channel was not restored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let not_found: u64 = stats
        .rest_calls
        .lock()
        .unwrap()
        .iter()
        .filter(|((_, status), _)| *status == 404)
        .map(|(_, n)| *n)
        .sum();
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    assert_eq!(not_found, 0, "a call on the channel used another token");
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(verdict.missing.is_empty(), "{:?}", verdict.missing);
}

fn lossy_handover() -> SimConfig {
    SimConfig {
        rate: 200.0,
        unknowns: Unknowns {
            handover: Handover::Lossy,
            handover_loss: Duration::from_millis(300),
            ..Unknowns::default()
        },
        ..SimConfig::default()
    }
}

/// The service loses what is in flight when a second socket takes a channel over. On
/// `socket_closing` holdline moves to a fresh channel while the warned socket still
/// receives, so no hand-over happens and nothing is lost, even with one socket per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_closing_loses_nothing_when_the_service_hand_over_is_lossy() {
    let sim = sim(lossy_handover()).await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    for round in 1..=3u64 {
        sim.core()
            .apply_fault(&Fault::SocketClosing {
                channel: None,
                grace_ms: Some(2000),
            })
            .unwrap();
        client
            .until("the maintenance close handled", |_| {
                Stats::get(&stats.socket_closings) >= round
                    && stats.sockets_live.load(Ordering::Relaxed) == 1
            })
            .await;
        let emitted = Stats::get(&stats.emitted);
        client
            .until("events after it", |_| {
                Stats::get(&stats.emitted) > emitted + 50
            })
            .await;
    }
    let emitted = Stats::get(&stats.emitted);
    client
        .until("more events", |_| Stats::get(&stats.emitted) > emitted + 50)
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(
        verdict.missing.is_empty(),
        "{} lost without a gap",
        verdict.missing.len()
    );
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(verdict.duplicates, 0);
    assert_eq!(Stats::get(&stats.rollovers), 3, "each onto a fresh channel");
}

/// When no fresh channel can be had in time (REST down), the fallback is a second
/// socket on the same channel; its lossy hand-over is not trusted, so the loss is a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_hand_over_on_the_same_channel_is_a_gap() {
    let sim = sim(lossy_handover()).await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    sim.core()
        .apply_fault(&Fault::RestErrors {
            status: 503,
            count: None,
            for_ms: Some(3000),
            retry_after: None,
            path: None,
            method: None,
        })
        .unwrap();
    sim.core()
        .apply_fault(&Fault::SocketClosing {
            channel: None,
            grace_ms: Some(2000),
        })
        .unwrap();
    client
        .until("the hand-over's gap", |s| !s.gaps.is_empty())
        .await;
    let emitted = Stats::get(&stats.emitted);
    client
        .until("more events", |_| Stats::get(&stats.emitted) > emitted + 50)
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(
        verdict.missing.is_empty(),
        "{} lost without a gap (gaps {:?})",
        verdict.missing.len(),
        seen.gaps
    );
    assert!(verdict.covered_by_gap > 0, "{verdict:?}");
    assert_eq!(Stats::get(&stats.rollovers), 0, "REST was down");
}

/// A service that answers only the documented ping: holdline's liveness rests on its
/// pongs, so the wrong ping would kill every socket after the pong timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_documented_ping_keeps_a_socket_alive() {
    // No traffic: the pongs are all that proves the sockets alive.
    let sim = sim(SimConfig {
        rate: 0.0,
        unknowns: Unknowns {
            pings: Pings::Strict,
            ..Unknowns::default()
        },
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    client.live_since().await;
    let stats = client.handle.stats().clone();
    // Ping every 100 ms, dead after 300 ms without a pong: twenty rounds.
    client
        .until("twenty pongs", |_| Stats::get(&stats.pongs) >= 20)
        .await;
    let seen = client.stop().await;
    assert_eq!(Stats::get(&stats.reconnects), 0);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
}

/// Every copy is up to 600 ms late. A client told to stop keeps its sockets reading for a
/// look-back first, so everything published before the stop still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_waits_for_the_late_copies_of_what_came_before_it() {
    let sim = sim(SimConfig {
        rate: 200.0,
        unknowns: Unknowns {
            latency: Duration::from_millis(600),
            late_share: 1.0,
            ..Unknowns::default()
        },
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.redundancy = 1;
    cfg.timings.gap_lookback = Duration::from_millis(700);
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    client
        .until("events flowing", |s| s.events.len() > 200)
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    // Up to the very moment of the stop: about 120 events were still on their way then.
    let verdict = check(
        &ledger(&sim),
        &topics,
        &seen,
        (live + Duration::from_millis(50), stopped),
    );
    assert!(
        verdict.missing.is_empty(),
        "{} missing of {}",
        verdict.missing.len(),
        verdict.checked
    );
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert!(verdict.emitted > 200, "{verdict:?}");
}
