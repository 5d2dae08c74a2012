//! Generated traffic and the ledger: the contact centre publishes on the topics of its
//! entities, and the ledger's ids are the ids a client computes from the frames it got.

use std::collections::HashSet;

use holdline_proto::{EventId, ServerFrame};
use holdline_sim::SimConfig;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::*;

#[tokio::test]
async fn generated_events_reach_subscribers_and_match_the_ledger_ids() {
    let sim = start(SimConfig {
        rate: 400.0,
        queues: 2,
        agents: 4,
        ..fast()
    })
    .await;
    let org = &sim.core().org;
    let mut topics: Vec<String> = org
        .queues
        .iter()
        .map(|q| format!("v2.routing.queues.{}.conversations", q.id))
        .collect();
    for agent in &org.agents {
        topics.push(format!(
            "v2.users.{}?conversations&presence&routingStatus&activity",
            agent.id
        ));
    }
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &topics).await;
    let mut received = HashSet::new();
    let deadline = Instant::now() + WAIT;
    while received.len() < 100 {
        let left = deadline.saturating_duration_since(Instant::now());
        let text = ws.next_text(left).await.expect("traffic stopped");
        if let Ok(ServerFrame::Notification(n)) = ServerFrame::parse(&text) {
            received.insert(EventId::of(&n.topic, n.body.get().as_bytes()).to_string());
        }
    }
    let ledger = ledger(&sim).await;
    let delivered: HashSet<String> = ledger
        .iter()
        .filter(|e| {
            e["delivered_to"]
                .as_array()
                .unwrap()
                .contains(&json!(channel.id))
        })
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        received.is_subset(&delivered),
        "every received id is a ledger id delivered to us"
    );
    assert!(
        ledger.iter().any(|e| e["delivered_to"] == json!([])),
        "detail events had no subscriber"
    );
    let seqs: Vec<u64> = ledger.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn firehose_publishes_every_event_to_a_subscribed_socket() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let topics = vec![
        presence(USER),
        format!("v2.routing.queues.{USER}.conversations"),
    ];
    let (channel, mut ws) = live_channel(&api, &topics).await;
    let reader = tokio::spawn(async move {
        let mut ids = HashSet::new();
        let mut sizes = Vec::new();
        while ids.len() < 2000 {
            let text = ws.next_text(WAIT).await.expect("firehose stalled");
            if let Ok(ServerFrame::Notification(n)) = ServerFrame::parse(&text) {
                sizes.push(n.body.get().len());
                ids.insert(EventId::of(&n.topic, n.body.get().as_bytes()).to_string());
            }
        }
        (ids, sizes)
    });
    let report: Value = reqwest::Client::new()
        .post(format!("{}/sim/firehose", sim.url()))
        .json(&json!({"count": 2000, "topics": topics}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["published"], 2000);
    assert_eq!(report["frames"], 2000);
    let (ids, sizes) = reader.await.unwrap();
    assert_eq!(ids.len(), 2000, "every event distinct and received");
    assert!(sizes.iter().any(|s| *s < 600), "presence-sized events");
    assert!(
        sizes.iter().any(|s| *s > 7000),
        "large conversation snapshots"
    );
    let ledger = ledger(&sim).await;
    assert_eq!(ledger.len(), 2000);
    let ledger_ids: HashSet<String> = ledger
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ledger_ids, ids);
    assert!(
        ledger
            .iter()
            .all(|e| e["delivered_to"] == json!([channel.id]))
    );
}

#[tokio::test]
async fn a_paced_firehose_publishes_no_faster_than_its_rate_and_refuses_bad_rates() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let topics = vec![presence(USER)];
    let (_channel, _ws) = live_channel(&api, &topics).await;
    let http = reqwest::Client::new();
    let report: Value = http
        .post(format!("{}/sim/firehose", sim.url()))
        .json(&json!({"count": 41, "topics": topics, "rate": 200.0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["published"], 41);
    // Event i is due at i/rate: the 41st no sooner than 200 ms after the first.
    let elapsed = report["elapsed_ms"].as_f64().unwrap();
    assert!(
        elapsed >= 199.0,
        "41 events at 200/s took only {elapsed} ms"
    );
    let stamps: Vec<time::OffsetDateTime> = ledger(&sim)
        .await
        .iter()
        .map(|e| {
            time::OffsetDateTime::parse(
                e["published_at"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    let spread = *stamps.last().unwrap() - stamps[0];
    assert!(spread.whole_milliseconds() >= 199, "ledger spread {spread}");
    for rate in [json!(0), json!(-5.0), json!("fast")] {
        let resp = http
            .post(format!("{}/sim/firehose", sim.url()))
            .json(&json!({"count": 1, "topics": topics, "rate": rate}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "rate {rate}");
    }
}

#[tokio::test]
async fn publish_rejects_invalid_topics() {
    let sim = start(fast()).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/publish", sim.url()))
        .json(&json!({"topic": "v2.conversations.x", "body": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}
