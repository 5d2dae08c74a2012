//! Firehose mode for benchmarks: build N distinct events up front (conversation snapshots
//! of 1–8 KB and presence events of about 400 B), then publish them as fast as the
//! subscribed sockets take them, waiting on each socket's queue instead of dropping.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use holdline_proto::EventId;
use holdline_proto::frame::notification_json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::generator::{conversation_body, presence_body, presence_id};
use crate::state::Core;
use crate::state::channels::Outbound;
use crate::state::ledger::LedgerEntry;

/// `POST /sim/firehose`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirehoseRequest {
    /// Events to publish.
    pub count: usize,
    /// Topics to publish on, round robin; every queue's conversations and every agent's
    /// presence when empty.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// What a firehose run did.
#[derive(Debug, Clone, Serialize)]
pub struct FirehoseReport {
    /// Events published.
    pub published: usize,
    /// Frames handed to sockets (events × subscribed sockets).
    pub frames: usize,
    /// Bytes of event frames built.
    pub bytes: usize,
    /// Time spent publishing (after building).
    pub elapsed_ms: f64,
}

struct Prebuilt {
    topic: Arc<str>,
    id: EventId,
    frame: Utf8Bytes,
}

fn build(core: &Core, req: &FirehoseRequest) -> Vec<Prebuilt> {
    let topics: Vec<String> = if req.topics.is_empty() {
        let queues = core
            .org
            .queues
            .iter()
            .map(|q| format!("v2.routing.queues.{}.conversations", q.id));
        let agents = core
            .org
            .agents
            .iter()
            .map(|a| format!("v2.users.{}.presence", a.id));
        queues.chain(agents).collect()
    } else {
        req.topics.clone()
    };
    let at = crate::state::format_ms(OffsetDateTime::now_utc());
    let mut rng = crate::rng::Rng::new(core.config.seed);
    (0..req.count)
        .map(|i| {
            let topic = &topics[i % topics.len().max(1)];
            let body = if topic.ends_with(".presence") {
                let mut b = presence_body("ON_QUEUE", presence_id("ON_QUEUE"), &at);
                b["message"] = serde_json::json!(format!("firehose {i}"));
                b
            } else {
                conversation_sized(&mut rng, i, &at)
            };
            let body = body.to_string();
            Prebuilt {
                topic: Arc::from(topic.as_str()),
                id: EventId::of(topic, body.as_bytes()),
                frame: notification_json(topic, &body, &rng.uuid()).into(),
            }
        })
        .collect()
}

/// A conversation snapshot whose size cycles through 1–8 KB.
fn conversation_sized(rng: &mut crate::rng::Rng, i: usize, at: &str) -> serde_json::Value {
    use crate::generator::bodies_leg;
    let target = 1024 * (1 + i % 8);
    let queue = rng.uuid();
    let mut legs = vec![bodies_leg(rng, "customer", at), bodies_leg(rng, "acd", at)];
    let mut body = conversation_body(&rng.uuid(), &queue, "tel:+46701234567", &legs);
    while body.to_string().len() + 400 < target {
        legs.push(bodies_leg(rng, "agent", at));
        body = conversation_body(&rng.uuid(), &queue, "tel:+46701234567", &legs);
    }
    body["firehose"] = serde_json::json!(i);
    body
}

/// Builds and publishes the events; returns when every frame was queued to its sockets.
pub async fn run(core: &Core, req: &FirehoseRequest) -> FirehoseReport {
    let events = build(core, req);
    let bytes = events.iter().map(|e| e.frame.len()).sum();
    let start = Instant::now();
    let mut frames = 0;
    for event in &events {
        let published_at = OffsetDateTime::now_utc();
        let (seq, recipients) = core.recipients(&event.topic);
        let mut delivered_to = Vec::with_capacity(recipients.len());
        for (channel, tx) in recipients {
            // Waiting for queue space is the point: the sockets set the pace.
            if tx
                .send(Outbound {
                    frame: event.frame.clone(),
                    not_before: None,
                })
                .await
                .is_ok()
            {
                delivered_to.push(channel);
                frames += 1;
            }
        }
        core.record(LedgerEntry {
            seq,
            id: event.id,
            topic: event.topic.clone(),
            published_at,
            delivered_to,
        });
    }
    FirehoseReport {
        published: events.len(),
        frames,
        bytes,
        elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
    }
}
