//! The Kafka sink: an idempotent librdkafka producer (`enable.idempotence`, so
//! `acks=all` and no reordering on retry). Each event is keyed by the entity its topic is
//! about (a queue, a user, a conversation), so Kafka's partitioner keeps every event of
//! one entity in one partition, in order. A gap record is produced once per entity it
//! names, so each affected partition carries it in place. A batch counts as delivered
//! once the brokers acknowledged every message.
//!
//! `kafka://broker1:9092,broker2:9092/topic?compression=zstd&linger=5ms&timeout=30s&security=sasl_ssl&sasl_mechanism=SCRAM-SHA-512&user=NAME&password_env=NAME&kafka.<librdkafka property>=<value>`
//!
//! Headers: `holdline-id` (the event id, or `<kind>-<hash>` for a gap or rejected topic) and `holdline-kind`.
//!
//! Under a deliverer's lease (`holdline deliver`) the producer is transactional, its
//! `transactional.id` named for the lease (`holdline-<lease key>`), and each batch is one
//! transaction. Every deliverer of that name shares the id, so the broker fences an
//! older one as soon as a newer one starts: the older one's writes and commit are
//! refused (and reported as [`SinkError::Fenced`]), and a consumer reading with
//! `isolation.level=read_committed` never sees what it wrote after that.

mod config;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode as Code;

use crate::{BlockingSink, SinkError};
use holdline_proto::record::Head;
use holdline_proto::topic::entity;

pub use config::*;

/// Counts the acknowledgements of the batch in flight.
#[derive(Default)]
struct Acks {
    delivered: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// A message was refused because a newer producer took the transactional id.
    fenced: std::sync::atomic::AtomicBool,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if fenced(e) {
                    self.fenced.store(true, Ordering::Relaxed);
                }
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// The Kafka sink. A producer lives for as long as batches succeed; after a failed batch
/// it is dropped (purging what it still held) and the next batch starts a fresh one, so
/// late acknowledgements never count for the wrong batch.
pub struct KafkaSink {
    config: KafkaConfig,
    name: String,
    producer: Option<BaseProducer<Acks>>,
    /// The `transactional.id`, once a deliverer's lease fences the writes.
    transactional: Option<String>,
}

/// Whether the broker refused a producer because a newer one took its `transactional.id`.
fn fenced(e: &KafkaError) -> bool {
    match e.rdkafka_error_code() {
        Some(Code::Fenced | Code::ProducerFenced) => true,
        // Also what a broker answers when it timed a transaction out itself: a fence only
        // when the producer cannot go on.
        Some(Code::InvalidProducerEpoch) => {
            matches!(e, KafkaError::Transaction(t) if t.is_fatal())
        }
        _ => false,
    }
}

impl KafkaSink {
    pub fn new(config: KafkaConfig) -> KafkaSink {
        KafkaSink {
            name: format!("kafka:{}/{}", config.brokers, config.topic),
            config,
            producer: None,
            transactional: None,
        }
    }

    /// `e`, as a fence when the broker fenced this producer off.
    fn refused(&self, what: &str, e: KafkaError) -> SinkError {
        match fenced(&e) {
            true => SinkError::Fenced {
                sink: self.name.clone(),
                detail: format!(
                    "{what}: a newer deliverer took the transactional id {}: {e}",
                    self.transactional.as_deref().unwrap_or("-")
                ),
            },
            false => self.fail(format!("{what}: {e}")),
        }
    }

    /// Commits the batch's transaction, again while the error says it may be retried (a
    /// commit that timed out may have been done: asking again tells).
    fn commit(&self, producer: &BaseProducer<Acks>) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match producer.commit_transaction(left) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Transaction(t)) if t.is_retriable() && !left.is_zero() => {}
                Err(e) => return Err(self.refused("cannot commit the batch's transaction", e)),
            }
        }
    }

    fn start(&self) -> Result<BaseProducer<Acks>, SinkError> {
        let mut config = self.config.client_config();
        if let Some(id) = &self.transactional {
            config.set("transactional.id", id);
            // A transaction must outlive a batch: its sends, acknowledgements and commit
            // each take up to the timeout (unless set otherwise with kafka.<property>).
            if config.get("transaction.timeout.ms").is_none() {
                let ms = (self.config.timeout * 3 + Duration::from_secs(10)).as_millis();
                config.set("transaction.timeout.ms", ms.max(60_000).to_string());
            }
        }
        let producer: BaseProducer<Acks> = config
            .create_with_context(Acks::default())
            .map_err(|e| self.fail(format!("cannot start the producer: {e}")))?;
        if self.transactional.is_some() {
            // Fences every older producer of the id, and ends what it left open.
            producer
                .init_transactions(self.config.timeout)
                .map_err(|e| self.refused("cannot start the transactional producer", e))?;
        }
        Ok(producer)
    }

    fn fail(&self, detail: impl std::fmt::Display) -> SinkError {
        SinkError::Failed {
            sink: self.name.clone(),
            detail: detail.to_string(),
        }
    }

    fn send(&self, producer: &BaseProducer<Acks>, records: &[&[u8]]) -> Result<usize, SinkError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut sent = 0;
        for rec in records {
            let routed = crate::Routed::of(rec);
            let id = &routed.id;
            let payload = rec.strip_suffix(b"\n").unwrap_or(rec);
            let keys: Vec<Option<&str>> = match &routed.head {
                Some(Head::Event { topic, .. }) => vec![Some(entity(topic))],
                Some(Head::Gap { topics, .. }) if !topics.is_empty() => topics
                    .iter()
                    .map(|t| entity(t))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(Some)
                    .collect(),
                _ => vec![None],
            };
            for key in keys {
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "holdline-id",
                        value: Some(id.as_str()),
                    })
                    .insert(Header {
                        key: "holdline-kind",
                        value: Some(routed.kind()),
                    });
                let mut msg = BaseRecord::to(&self.config.topic)
                    .payload(payload)
                    .headers(headers);
                if let Some(key) = key {
                    msg = msg.key(key);
                }
                loop {
                    match producer.send(msg) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m))
                            if Instant::now() < deadline =>
                        {
                            msg = m;
                            producer.poll(Duration::from_millis(10));
                        }
                        Err((e, _)) => return Err(self.refused("cannot produce", e)),
                    }
                }
                sent += 1;
            }
        }
        Ok(sent)
    }
}

impl BlockingSink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn fence(&mut self, fence: &crate::Fence) {
        // One id per lease and topic (another Kafka sink of the same deliverer must not
        // fence this one off), unless set with kafka.transactional.id.
        let set = self.config.properties.iter().rev();
        let id = match set.clone().find(|(k, _)| k == "transactional.id") {
            Some((_, v)) => v.clone(),
            None => format!("holdline-{}-{}", fence.key, self.config.topic),
        };
        if self.transactional.as_deref() != Some(id.as_str()) {
            // A producer started without the id is replaced by one with it.
            self.producer = None;
            self.transactional = Some(id);
        }
    }

    fn deliver(&mut self, records: &[&[u8]]) -> Result<(), SinkError> {
        if self.producer.is_none() {
            self.producer = Some(self.start()?);
        }
        let producer = self.producer.as_ref().expect("made above");
        let ctx = producer.context();
        ctx.delivered.store(0, Ordering::Relaxed);
        ctx.failed.store(0, Ordering::Relaxed);
        *ctx.first_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        ctx.fenced.store(false, Ordering::Relaxed);
        let transactional = self.transactional.is_some();
        let begun = match transactional {
            true => producer
                .begin_transaction()
                .map_err(|e| self.refused("cannot begin a transaction", e)),
            false => Ok(()),
        };
        let outcome = begun
            .and_then(|()| self.send(producer, records))
            .and_then(|sent| {
                // A zero-time flush sends what lingers now; then acknowledgements are served
                // as they come. (`flush` with a timeout polls in 100 ms steps, which would cap
                // a sink at ten batches a second.)
                let _ = producer.flush(Duration::ZERO);
                let deadline = Instant::now() + self.config.timeout;
                let ctx = producer.context();
                let done =
                    || ctx.delivered.load(Ordering::Relaxed) + ctx.failed.load(Ordering::Relaxed);
                while done() < sent && Instant::now() < deadline {
                    producer.poll(Duration::from_millis(1));
                }
                let (ok, failed) = (
                    ctx.delivered.load(Ordering::Relaxed),
                    ctx.failed.load(Ordering::Relaxed),
                );
                if ok == sent {
                    return match transactional {
                        true => self.commit(producer),
                        false => Ok(()),
                    };
                }
                let why = ctx
                    .first_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "not acknowledged in time".into());
                let detail =
                    format!("{ok} of {sent} messages acknowledged, {failed} failed: {why}");
                match ctx.fenced.load(Ordering::Relaxed) {
                    true => Err(SinkError::Fenced {
                        sink: self.name.clone(),
                        detail,
                    }),
                    false => Err(self.fail(detail)),
                }
            });
        if outcome.is_err() {
            // A transaction left open is aborted by the next producer's start (or by the
            // broker once it times out): none of its messages is ever committed.
            self.producer = None;
        }
        outcome
    }
}
