//! Scale: 5,000 topics start within the channel budget and the REST rate budget, and a
//! topic list that cannot fit is refused at start with what would fit.

#[path = "engine/common.rs"]
mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use holdline_client::{CHANNEL_BUDGET, Client, ClientError, channels_needed};
use holdline_sim::SimConfig;
use tokio::time::Instant;

fn queue_topics(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("v2.routing.queues.00000000-0000-4000-8000-{i:012}.conversations"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_topics_with_redundancy_two_start_within_both_budgets() {
    let sim = sim(SimConfig::default()).await;
    let topics = queue_topics(5000);
    let mut cfg = config(&sim, topics);
    cfg.redundancy = 2;
    let started = Instant::now();
    let client = Collector::start(cfg).await;
    let stats = client.handle.stats().clone();
    let shards = client.handle.shards();
    assert_eq!(shards, 5);
    client
        .until("every socket to be receiving", |_| {
            stats.sockets_live.load(Ordering::Relaxed) >= 10
        })
        .await;
    let startup = started.elapsed();
    let calls = sim.core().rest_calls();
    let channels = sim.core().channel_infos(|c, _| c.topics.len());
    println!(
        "5,000 topics, redundancy 2: {shards} shards, {} channels (budget {CHANNEL_BUDGET}), {calls} REST calls, live in {} ms",
        channels.len(),
        startup.as_millis()
    );
    assert_eq!(channels.len(), 10);
    assert!(channels.iter().all(|n| *n == 1000));
    assert!(channels_needed(shards, 2) <= CHANNEL_BUDGET);
    // Two tokens, each with 300 calls a minute: setup must use a small part of that.
    assert!(calls <= 40, "{calls} REST calls to start");
    assert!(startup < Duration::from_secs(10));
    client.stop().await;
}

#[tokio::test]
async fn topics_that_cannot_fit_are_refused_with_what_fits() {
    let sim = sim(SimConfig::default()).await;
    let mut cfg = config(&sim, queue_topics(12_000));
    cfg.redundancy = 2;
    let err = Client::start(cfg).await.err().expect("over budget");
    assert!(
        matches!(&err, ClientError::Config(m) if m.contains("at most 9000 entries fit")),
        "{err}"
    );
    assert!(
        sim.core().channel_infos(|c, _| c.id.clone()).is_empty(),
        "nothing was created"
    );
}
