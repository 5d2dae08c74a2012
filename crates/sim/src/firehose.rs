//! Firehose mode for benchmarks: build N distinct events up front (conversation snapshots
//! of 1–8 KB and presence events of about 400 B), then publish them as fast as the
//! subscribed sockets take them (waiting on each socket's queue instead of dropping), or
//! at a fixed rate for latency measurements.
//!
//! Every body carries its index (`"firehose": i` in a conversation, `"message": "firehose i"`
//! in a presence event), so a consumer that re-serialises events can still be checked.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use holdline_proto::EventId;
use holdline_proto::frame::notification_json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::{Duration, Instant};

use crate::generator::{conversation_body, presence_body, presence_id};
use crate::org::Org;
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
    /// Events per second; as fast as the sockets take them when absent.
    #[serde(default)]
    pub rate: Option<f64>,
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
    /// Time spent building the events (before publishing).
    pub build_ms: f64,
    /// Time spent publishing.
    pub elapsed_ms: f64,
}

/// N events built once, publishable any number of times.
pub struct Firehose {
    events: Vec<Prebuilt>,
    build_ms: f64,
}

struct Prebuilt {
    topic: Arc<str>,
    id: EventId,
    frame: Utf8Bytes,
}

fn build(org: &Org, seed: u64, req: &FirehoseRequest) -> Vec<Prebuilt> {
    let topics: Vec<String> = if req.topics.is_empty() {
        let queues = org
            .queues
            .iter()
            .map(|q| format!("v2.routing.queues.{}.conversations", q.id));
        let agents = org
            .agents
            .iter()
            .map(|a| format!("v2.users.{}.presence", a.id));
        queues.chain(agents).collect()
    } else {
        req.topics.clone()
    };
    let at = crate::state::format_ms(OffsetDateTime::now_utc());
    let mut rng = crate::rng::Rng::new(seed);
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

impl Firehose {
    /// Builds `req.count` events for `org` (bodies are a function of `seed`).
    pub fn build(org: &Org, seed: u64, req: &FirehoseRequest) -> Firehose {
        let start = Instant::now();
        let events = build(org, seed, req);
        Firehose {
            events,
            build_ms: start.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Bytes of all event frames.
    pub fn bytes(&self) -> usize {
        self.events.iter().map(|e| e.frame.len()).sum()
    }

    /// Publishes every event in order, recording each in the ledger, at `rate` events per
    /// second or as fast as the sockets take them. Returns when the last frame is queued.
    pub async fn publish(&self, core: &Core, rate: Option<f64>) -> FirehoseReport {
        let start = Instant::now();
        let mut frames = 0;
        let period = rate
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        for (i, event) in self.events.iter().enumerate() {
            if let Some(period) = period {
                let due = start + period.mul_f64(i as f64);
                if due > Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
            }
            let published_at = OffsetDateTime::now_utc();
            let (seq, recipients) = core.recipients(&event.topic);
            let mut delivered_to = Vec::with_capacity(recipients.len());
            for (channel, tx) in recipients {
                // Waiting for queue space is the point: the sockets set the pace.
                if tx
                    .send(Outbound {
                        frame: event.frame.clone(),
                        not_before: None,
                        late: false,
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
                org: None,
                id: event.id,
                topic: event.topic.clone(),
                published_at,
                delivered_to,
            });
        }
        FirehoseReport {
            published: self.events.len(),
            frames,
            bytes: self.bytes(),
            build_ms: self.build_ms,
            elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
        }
    }
}
