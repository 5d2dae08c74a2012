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

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::{BlockingSink, SinkError, duration_option};
use holdline_proto::record::Head;
use holdline_proto::topic::entity;

/// Kafka sink settings.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// Most time a batch may take to be acknowledged.
    pub timeout: Duration,
    /// Further librdkafka properties, in order (`compression.type`, `security.protocol`, …).
    pub properties: Vec<(String, String)>,
    /// `sasl.password`, from the environment variable named by `password_env`.
    pub password: Option<String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("timeout", &self.timeout)
            .field("properties", &self.properties)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

const FORM: &str = "kafka://broker:9092/topic";

impl KafkaConfig {
    pub(crate) fn from_parts(rest: &str, params: &[(String, String)]) -> Result<Self, String> {
        let (brokers, topic) = rest
            .split_once('/')
            .filter(|(_, t)| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            })
            .ok_or_else(|| {
                format!("kafka sink needs a topic (letters, digits, '.', '_', '-'): {FORM}")
            })?;
        if brokers.contains('@') {
            return Err(
                "put no credentials in a kafka sink URL; use user=NAME&password_env=VARIABLE"
                    .into(),
            );
        }
        for broker in brokers.split(',') {
            crate::host_port(broker, 9092, FORM)?;
        }
        let mut config = KafkaConfig {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            timeout: Duration::from_secs(30),
            properties: Vec::new(),
            password: None,
        };
        let mut set = |k: &str, v: &str| config.properties.push((k.to_owned(), v.to_owned()));
        let mut timeout = None;
        let mut password = None;
        for (k, v) in params {
            match k.as_str() {
                "compression" => set("compression.type", v),
                "linger" => {
                    set("linger.ms", &duration_option(k, v)?.as_millis().to_string());
                }
                "timeout" => timeout = Some(duration_option(k, v)?),
                "security" => set("security.protocol", v),
                "sasl_mechanism" => set("sasl.mechanism", v),
                "user" => set("sasl.username", v),
                "password_env" => {
                    password = Some(std::env::var(v).map_err(|_| {
                        format!("kafka password_env={v}: set the environment variable {v} to the password")
                    })?);
                }
                other => match other.strip_prefix("kafka.") {
                    Some(property)
                        if property.contains("password") || property.contains("secret") =>
                    {
                        return Err(format!(
                            "kafka sink option {other}: keep secrets out of the URL (it is logged and shown in errors); use password_env=VARIABLE for sasl.password"
                        ));
                    }
                    Some(property) if !property.is_empty() => set(property, v),
                    _ => {
                        return Err(format!(
                            "unknown kafka sink option {other:?}; the options are compression, linger, timeout, security, sasl_mechanism, user, password_env and kafka.<librdkafka property>"
                        ));
                    }
                },
            }
        }
        if let Some(t) = timeout {
            config.timeout = t;
        }
        config.password = password;
        Ok(config)
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", concat!("holdline/", env!("CARGO_PKG_VERSION")))
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                self.timeout.as_millis().max(1).to_string(),
            );
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        if let Some(password) = &self.password {
            c.set("sasl.password", password);
        }
        c
    }
}

/// Counts the acknowledgements of the batch in flight.
#[derive(Default)]
struct Acks {
    delivered: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
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
}

impl KafkaSink {
    pub fn new(config: KafkaConfig) -> KafkaSink {
        KafkaSink {
            name: format!("kafka:{}/{}", config.brokers, config.topic),
            config,
            producer: None,
        }
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
                Some(Head::Gap { topics }) if !topics.is_empty() => topics
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
                        Err((e, _)) => return Err(self.fail(e)),
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

    fn deliver(&mut self, records: &[&[u8]]) -> Result<(), SinkError> {
        if self.producer.is_none() {
            let producer = self
                .config
                .client_config()
                .create_with_context(Acks::default())
                .map_err(|e| self.fail(format!("cannot start the producer: {e}")))?;
            self.producer = Some(producer);
        }
        let producer = self.producer.as_ref().expect("made above");
        let ctx = producer.context();
        ctx.delivered.store(0, Ordering::Relaxed);
        ctx.failed.store(0, Ordering::Relaxed);
        *ctx.first_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let outcome = self.send(producer, records).and_then(|sent| {
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
                return Ok(());
            }
            let why = ctx
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "not acknowledged in time".into());
            Err(self.fail(format!(
                "{ok} of {sent} messages acknowledged, {failed} failed: {why}"
            )))
        });
        if outcome.is_err() {
            self.producer = None;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_librdkafka_properties_and_the_password_stays_hidden() {
        // SAFETY: no other test reads this variable.
        unsafe { std::env::set_var("HOLDLINE_TEST_KAFKA_PASSWORD", "pa55-kafka") };
        let params: Vec<(String, String)> = [
            ("compression", "zstd"),
            ("linger", "20ms"),
            ("security", "sasl_ssl"),
            ("user", "holdline"),
            ("password_env", "HOLDLINE_TEST_KAFKA_PASSWORD"),
            ("kafka.batch.size", "65536"),
            ("timeout", "5s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = KafkaConfig::from_parts("b1:9092,b2/genesys.events", &params).unwrap();
        assert_eq!(c.brokers, "b1:9092,b2");
        assert_eq!(c.topic, "genesys.events");
        assert_eq!(c.timeout, Duration::from_secs(5));
        let cc = c.client_config();
        assert_eq!(cc.get("compression.type"), Some("zstd"));
        assert_eq!(cc.get("linger.ms"), Some("20"));
        assert_eq!(cc.get("batch.size"), Some("65536"));
        assert_eq!(cc.get("sasl.password"), Some("pa55-kafka"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("message.timeout.ms"), Some("5000"));
        assert!(!format!("{c:?}").contains("pa55"));
        for bad in ["b1", "b1/", "b1/a b", "u:p@b1/t", "b1:x/t"] {
            assert!(KafkaConfig::from_parts(bad, &[]).is_err(), "{bad}");
        }
        let err = KafkaConfig::from_parts("b/t", &[("kafka.sasl.password".into(), "x".into())])
            .unwrap_err();
        assert!(err.contains("password_env"), "{err}");
        let err = KafkaConfig::from_parts("b/t", &[("acks".into(), "1".into())]).unwrap_err();
        assert!(err.contains("kafka.<librdkafka property>"), "{err}");
    }
}
