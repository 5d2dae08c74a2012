//! A whole channel lifecycle in compressed time, and maintenance closes, without loss.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use holdline_client::Stats;
use holdline_sim::SimConfig;
use holdline_sim::faults::Fault;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_in_seconds_loses_nothing_and_reports_no_gap() {
    let sim = sim(SimConfig {
        rate: 150.0,
        heartbeat: Duration::from_millis(100),
        channel_ttl: Duration::from_millis(1500),
        token_ttl: Duration::from_millis(2500),
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    // Two channel expiries and a token expiry at least: run past both lifetimes.
    client
        .until("two rollovers past a token expiry", |_| {
            Stats::get(&stats.rollovers) >= 3
                && live.elapsed().unwrap_or_default() > Duration::from_millis(3200)
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(verdict.checked > 200, "{verdict:?}");
    assert!(
        verdict.missing.is_empty(),
        "missing events: {:?}",
        verdict.missing
    );
    assert_eq!(verdict.duplicates, 0, "an event was emitted twice");
    assert!(seen.gaps.is_empty(), "no gap expected: {:?}", seen.gaps);
    assert!(
        Stats::get(&stats.heartbeats) >= 5,
        "heartbeats: {}",
        Stats::get(&stats.heartbeats)
    );
    assert!(Stats::get(&stats.duplicates) > 0 || Stats::get(&stats.rollovers) >= 3);
    assert!(seen.error.is_none(), "{:?}", seen.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_closing_during_steady_traffic_loses_nothing() {
    let sim = sim(SimConfig {
        rate: 200.0,
        // The service's minute, compressed, but longer than the look-back: the warned
        // socket still receives when the fresh channel's socket starts.
        closing_grace: Duration::from_millis(1500),
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    for round in 1..=3u64 {
        sim.core()
            .apply_fault(&Fault::SocketClosing {
                channel: None,
                grace_ms: None,
            })
            .unwrap();
        client
            .until("the maintenance close to be handled", |_| {
                Stats::get(&stats.socket_closings) >= round
                    && stats.sockets_live.load(Ordering::Relaxed) == 1
            })
            .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(verdict.checked > 50, "{verdict:?}");
    assert!(verdict.missing.is_empty(), "missing: {:?}", verdict.missing);
    assert_eq!(verdict.duplicates, 0);
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
    assert_eq!(
        Stats::get(&stats.rollovers),
        3,
        "socket_closing moves to a fresh channel"
    );
}

#[tokio::test]
async fn duplicate_deliveries_are_emitted_once() {
    let sim = sim(SimConfig {
        rate: 100.0,
        ..SimConfig::default()
    })
    .await;
    let topics = org_topics(&sim);
    let client = Collector::start(config(&sim, topics.clone())).await;
    let live = client.live_since().await;
    sim.core()
        .apply_fault(&Fault::Duplicate {
            channel: None,
            for_ms: None,
            count: Some(40),
        })
        .unwrap();
    let stats = client.handle.stats().clone();
    client
        .until("duplicates to be dropped", |_| {
            Stats::get(&stats.duplicates) >= 10
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert_eq!(verdict.duplicates, 0);
    assert!(verdict.missing.is_empty(), "{:?}", verdict.missing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_added_and_removed_at_run_time_take_effect() {
    let sim = sim(SimConfig::default()).await;
    let agent = sim.core().org.agents[0].id.clone();
    let (first, second) = (
        format!("v2.users.{agent}.presence"),
        format!("v2.users.{agent}.activity"),
    );
    let client = Collector::start(config(&sim, vec![first.clone()])).await;
    client.live_since().await;
    client
        .handle
        .add_topics(std::slice::from_ref(&second))
        .unwrap();
    let core = sim.core().clone();
    let topic = second.clone();
    // Publish until the new topic is delivered (the subscribe call takes a moment).
    client
        .until("an event on the added topic", |s| {
            core.publish(&topic, r#"{"probe":true}"#);
            s.events.iter().any(|(_, t)| *t == topic)
        })
        .await;
    client.handle.remove_topics(std::slice::from_ref(&first));
    let core = sim.core().clone();
    let removed = first.clone();
    client
        .until("the removed topic to stop being delivered", |_| {
            core.publish(&removed, r#"{"probe":1}"#)
                .delivered_to
                .is_empty()
        })
        .await;
    let seen = client.stop().await;
    assert!(seen.error.is_none());
    let invalid = client_handle_rejects_bad_topics(&sim).await;
    assert!(invalid.contains("did you mean"), "{invalid}");
}

#[tokio::test]
async fn a_shard_emptied_and_refilled_at_once_gets_its_slots_back() {
    let sim = sim(SimConfig::default()).await;
    let (a, b) = (&sim.core().org.agents[0].id, &sim.core().org.agents[1].id);
    let (first, second) = (
        format!("v2.users.{a}.presence"),
        format!("v2.users.{b}.presence"),
    );
    let mut cfg = config(&sim, vec![first.clone()]);
    cfg.redundancy = 2;
    let client = Collector::start(cfg).await;
    client.live_since().await;
    let stats = client.handle.stats().clone();
    client
        .until("both slots", |_| {
            stats.slots_live.load(std::sync::atomic::Ordering::Relaxed) >= 2
        })
        .await;
    // The only shard empties, so its slots are told to stop; before they have, the
    // shard is used again.
    client.handle.remove_topics(std::slice::from_ref(&first));
    client
        .handle
        .add_topics(std::slice::from_ref(&second))
        .unwrap();
    assert_eq!(client.handle.shards(), 1);
    let core = sim.core().clone();
    let topic = second.clone();
    let probes = std::sync::atomic::AtomicU64::new(0);
    client
        .until("events on the shard's new topic", |s| {
            let n = probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            core.publish(&topic, &format!(r#"{{"probe":{n}}}"#));
            s.events.iter().filter(|(_, t)| *t == topic).count() >= 3
        })
        .await;
    client
        .until("both slots again", |_| {
            stats.slots_live.load(std::sync::atomic::Ordering::Relaxed) >= 2
        })
        .await;
    let seen = client.stop().await;
    assert!(seen.error.is_none(), "{:?}", seen.error);
}

async fn client_handle_rejects_bad_topics(sim: &holdline_sim::Simulator) -> String {
    let agent = &sim.core().org.agents[0].id;
    let client = Collector::start(config(sim, vec![format!("v2.users.{agent}.presence")])).await;
    let err = client
        .handle
        .add_topics(&[format!("v2.conversations.{agent}")])
        .unwrap_err();
    client.stop().await;
    err.to_string()
}

#[tokio::test]
async fn queue_names_and_user_emails_resolve_to_conversation_topics() {
    let sim = sim(SimConfig::default()).await;
    let org = &sim.core().org;
    let mut cfg = config(&sim, vec![]);
    cfg.queues = vec![org.queues[1].name.to_lowercase()];
    cfg.users = vec![org.agents[2].email.to_uppercase()];
    let client = Collector::start(cfg).await;
    client.live_since().await;
    let mut topics = sim.core().channel_infos(|c, _| c.topics.clone()).concat();
    topics.sort();
    let mut expected = vec![
        format!("v2.routing.queues.{}.conversations", org.queues[1].id),
        format!("v2.users.{}.conversations", org.agents[2].id),
    ];
    expected.sort();
    assert_eq!(topics, expected);
    client.stop().await;
    let mut cfg = config(&sim, vec![]);
    cfg.queues = vec!["No Such Queue".into()];
    let err = holdline_client::Client::start(cfg).await.err().unwrap();
    assert!(
        err.to_string().contains("Support"),
        "lists the real queues: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_queues_follows_queues_as_they_come_and_go() {
    let sim = sim(SimConfig::default()).await;
    let mut cfg = config(&sim, vec![]);
    cfg.all_queues = true;
    cfg.refresh_every = Duration::from_millis(200);
    let client = Collector::start(cfg).await;
    client.live_since().await;
    let subscribed =
        |sim: &holdline_sim::Simulator| sim.core().channel_infos(|c, _| c.topics.clone()).concat();
    assert_eq!(subscribed(&sim).len(), sim.core().org.queues.len());
    let new_queue = sim.core().add_entity("Escalations", None);
    let gone = sim.core().org.queues[0].id.clone();
    assert!(sim.core().delete_entity(&gone));
    let (new_topic, gone_topic) = (
        format!("v2.routing.queues.{new_queue}.conversations"),
        format!("v2.routing.queues.{gone}.conversations"),
    );
    client
        .until(
            "the new queue subscribed and the deleted one dropped",
            |_| {
                let topics = subscribed(&sim);
                topics.contains(&new_topic) && !topics.contains(&gone_topic)
            },
        )
        .await;
    let seen = client.stop().await;
    assert!(seen.error.is_none());
}
