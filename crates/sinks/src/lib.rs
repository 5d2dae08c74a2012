//! Where holdline delivers events from its spool.
//!
//! Every sink has the same shape: a configuration parsed from a `--sink` URL (or a
//! `[[sink]]` table), and [`Sink::deliver`], which is done only once the destination has
//! confirmed every record it was given. A [`Deliverer`] per sink reads the spool from that
//! sink's cursor, delivers in batches, retries with the shared backoff, dead-letters what
//! keeps failing (where the sink allows) and advances the cursor only after a
//! confirmation, so a record is delivered at least once whatever fails in between; a
//! repeat is byte-for-byte the same record, with the same event id.

mod deliver;
pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod nats;
pub mod redis;
mod sink_url;
pub mod stdout;
#[cfg(feature = "testing")]
pub mod testing;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use holdline_proto::record::{self, Head};

pub use deliver::{BATCH, DeliverError, Deliverer, SinkHealth, SinkMetrics};
pub use sink_url::{SinkUrl, SinkUrlError};

/// Why a delivery failed; the spool keeps the records either way.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying with backoff (the destination may come back).
    #[error("{sink}: {detail}")]
    Failed { sink: String, detail: String },
    /// Retrying cannot help (stdout closed).
    #[error("{sink}: {detail}")]
    Fatal {
        sink: String,
        detail: String,
        broken_pipe: bool,
    },
    /// The destination has seen a newer fencing token than this writer's: another
    /// deliverer holds the lease now, and this one must stop writing.
    #[error("{sink}: fenced off: {detail}")]
    Fenced { sink: String, detail: String },
}

impl SinkError {
    /// Whether the service should stop delivering to this sink.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SinkError::Fatal { .. } | SinkError::Fenced { .. })
    }
}

/// A fencing token: the revision of the lease a deliverer wrote last, under the lease's
/// key. Every renewal, and any other deliverer's taking of the lease, makes a larger one.
/// A sink that can check it refuses a write whose token is below one it has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: String,
    pub token: u64,
}

/// What a sink routes a record on, read through the record format: its kind, its id (the
/// event id, or one of its own for another record) and its head. A line holdline did not
/// write is delivered as it is, kind `other`.
pub(crate) struct Routed<'a> {
    pub head: Option<Head<'a>>,
    pub id: String,
}

impl<'a> Routed<'a> {
    pub fn of(line: &'a [u8]) -> Routed<'a> {
        match record::head(line) {
            Ok(head) => Routed {
                id: head.dedupe_id(line),
                head: Some(head),
            },
            Err(_) => Routed {
                head: None,
                id: format!("other-{:016x}", xxhash_rust::xxh3::xxh3_64(line)),
            },
        }
    }

    pub fn kind(&self) -> &'static str {
        self.head.as_ref().map_or("other", Head::kind)
    }

    /// The event's topic.
    pub fn topic(&self) -> Option<&str> {
        match &self.head {
            Some(Head::Event { topic, .. }) => Some(topic),
            _ => None,
        }
    }
}

/// Opens the sink `config` describes.
pub fn open(config: &SinkConfig) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match config {
        SinkConfig::Stdout => Box::new(OnThread::new(stdout::StdoutSink)),
        SinkConfig::File(f) => Box::new(OnThread::new(file::FileSink::open(f.clone())?)),
        SinkConfig::Webhook(w) => Box::new(webhook::WebhookSink::new(w.clone())),
        SinkConfig::Nats(n) => Box::new(nats::NatsSink::new(n.clone())),
        SinkConfig::Redis(r) => Box::new(OnThread::new(redis::RedisSink::new(r.clone()))),
        #[cfg(feature = "kafka")]
        SinkConfig::Kafka(k) => Box::new(OnThread::new(kafka::KafkaSink::new(k.clone()))),
    })
}

/// What [`Sink::deliver`] and [`Sink::dead_letter`] return.
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// A destination for records (each one JSON object ending in a newline), driven on the
/// async runtime by a [`Deliverer`].
pub trait Sink: Send {
    /// A stable name: the spool keeps this sink's cursor under it.
    fn name(&self) -> &str;
    /// How logs, errors and metrics name the sink: nothing secret in it (a webhook leaves
    /// out its path, which some services use as a token).
    fn label(&self) -> String {
        self.name().to_owned()
    }
    /// Delivers `records` in order; done once the destination confirmed all of them.
    fn deliver<'a>(&'a mut self, records: &'a [Bytes]) -> Delivery<'a>;
    /// Tries per batch before it goes to [`Sink::dead_letter`] (`None`: retry forever).
    fn attempts(&self) -> Option<u32> {
        None
    }
    /// The most bytes of records one batch may hold (at least one record is always sent).
    fn batch_bytes(&self) -> usize {
        deliver::BATCH_BYTES
    }
    /// From now on, writes carry `fence`, and a sink that can check it at the
    /// destination (Redis, a file, a webhook answering 409) refuses to write below a
    /// token it has seen, with [`SinkError::Fenced`]. Others ignore it.
    fn fence(&mut self, _fence: &Fence) {}

    /// Keeps a batch that kept failing somewhere it is not lost.
    fn dead_letter<'a>(&'a mut self, _records: &'a [Bytes]) -> Delivery<'a> {
        let err = SinkError::Failed {
            sink: self.name().to_owned(),
            detail: "this sink has no dead-letter file".into(),
        };
        Box::pin(async move { Err(err) })
    }
}

/// A sink whose client blocks (a file, a synchronous connection). [`OnThread`] runs it on
/// the runtime's blocking threads, never on a worker.
pub trait BlockingSink: Send + 'static {
    fn name(&self) -> &str;
    fn label(&self) -> String {
        self.name().to_owned()
    }
    /// Delivers `records` in order; returns once the destination confirmed all of them.
    fn deliver(&mut self, records: &[&[u8]]) -> Result<(), SinkError>;
    /// As [`Sink::fence`].
    fn fence(&mut self, _fence: &Fence) {}
}

/// A [`BlockingSink`] as a [`Sink`]: each batch moves the sink onto a blocking thread and
/// back (the records are shared, not copied).
pub struct OnThread<S> {
    sink: Option<S>,
    name: String,
    label: String,
}

impl<S: BlockingSink> OnThread<S> {
    pub fn new(sink: S) -> OnThread<S> {
        OnThread {
            name: sink.name().to_owned(),
            label: sink.label(),
            sink: Some(sink),
        }
    }
}

impl<S: BlockingSink> Sink for OnThread<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn fence(&mut self, fence: &Fence) {
        if let Some(sink) = self.sink.as_mut() {
            sink.fence(fence);
        }
    }

    fn deliver<'a>(&'a mut self, records: &'a [Bytes]) -> Delivery<'a> {
        Box::pin(async move {
            let lost = |detail: &str| SinkError::Fatal {
                sink: self.label.clone(),
                detail: detail.to_owned(),
                broken_pipe: false,
            };
            let mut sink = self
                .sink
                .take()
                .ok_or_else(|| lost("an earlier delivery panicked"))?;
            let records = records.to_vec();
            let (sink, result) = tokio::task::spawn_blocking(move || {
                let refs: Vec<&[u8]> = records.iter().map(|r| r.as_ref()).collect();
                let result = sink.deliver(&refs);
                (sink, result)
            })
            .await
            .map_err(|e| lost(&format!("the delivery panicked: {e}")))?;
            self.sink = Some(sink);
            result
        })
    }
}

/// A sink as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    /// JSON lines on stdout.
    Stdout,
    /// JSON lines in a file, rotated by size and/or age.
    File(file::FileConfig),
    /// HTTP POST of each batch, signed.
    Webhook(webhook::WebhookConfig),
    /// JetStream publish per record, de-duplicated by the server on the event id.
    Nats(nats::NatsConfig),
    /// XADD per record to a capped stream.
    Redis(redis::RedisConfig),
    /// Idempotent produce per record, keyed by the entity the topic is about.
    #[cfg(feature = "kafka")]
    Kafka(kafka::KafkaConfig),
}

impl SinkConfig {
    /// Parses the `--sink` URL form: `stdout`, `file:///path/events.jsonl?max_bytes=N&rotate=1h`,
    /// `https://host/path?secret_env=NAME`, `nats://host:4222/subject?stream=NAME`,
    /// `redis://host:6379/stream?maxlen=N`, `kafka://host:9092/topic?compression=zstd`.
    pub fn parse(text: &str) -> Result<SinkConfig, SinkUrlError> {
        if text == "stdout" || text == "-" {
            return Ok(SinkConfig::Stdout);
        }
        let url = SinkUrl::parse(text)?;
        let params = &url.params;
        Ok(match url.scheme.as_str() {
            "file" => {
                if !url.authority.is_empty() {
                    return Err(SinkUrlError::Invalid(format!(
                        "file sink {text:?} names a host; write an absolute path: file:///var/log/holdline/events.jsonl"
                    )));
                }
                SinkConfig::File(file::FileConfig::from_parts(&url.path, params)?)
            }
            "http" | "https" => {
                SinkConfig::Webhook(webhook::WebhookConfig::from_parts(&url.base, params)?)
            }
            "nats" => SinkConfig::Nats(nats::NatsConfig::from_parts(&url.rest(), params)?),
            "redis" => SinkConfig::Redis(redis::RedisConfig::from_parts(&url.rest(), params)?),
            #[cfg(feature = "kafka")]
            "kafka" => SinkConfig::Kafka(kafka::KafkaConfig::from_parts(&url.rest(), params)?),
            #[cfg(not(feature = "kafka"))]
            "kafka" => return Err(SinkUrlError::NotBuilt),
            other => return Err(SinkUrlError::Scheme(other.to_owned())),
        })
    }
}

/// Splits `host[:port]`, with `default` for a missing port.
fn host_port(authority: &str, default: u16, form: &str) -> Result<(String, u16), String> {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| format!("{authority:?}: the port must be a number ({form})"))?,
        ),
        None => (authority, default),
    };
    if host.is_empty() {
        return Err(format!("{authority:?} has no host name ({form})"));
    }
    Ok((host.to_owned(), port))
}

/// Parses a duration option like `1h` or `90s`.
fn duration_option(name: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("sink option {name}={value}: {e} (examples: 90s, 15m, 1h)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_sinks_and_bad_ones_say_what_to_do() {
        assert_eq!(SinkConfig::parse("stdout").unwrap(), SinkConfig::Stdout);
        let SinkConfig::File(f) =
            SinkConfig::parse("file:///var/log/h/events.jsonl?max_bytes=1048576&rotate=1h")
                .unwrap()
        else {
            panic!("not a file sink");
        };
        assert_eq!(f.path, std::path::PathBuf::from("/var/log/h/events.jsonl"));
        assert_eq!(f.max_bytes, Some(1_048_576));
        assert_eq!(f.rotate_every, Some(Duration::from_secs(3600)));
        let err = SinkConfig::parse("events.jsonl").unwrap_err().to_string();
        assert!(err.contains("file:///"), "{err}");
        let err = SinkConfig::parse("file:///x?rotate=soon")
            .unwrap_err()
            .to_string();
        assert!(err.contains("examples"), "{err}");
        let err = SinkConfig::parse("file:///x?colour=red")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_bytes"), "{err}");
        let err = SinkConfig::parse("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unknown sink scheme"), "{err}");
        assert!(SinkConfig::parse("file://relative/x").is_err());
    }

    #[test]
    fn urls_are_percent_decoded_into_typed_configs() {
        let SinkConfig::File(f) = SinkConfig::parse("file:///var/log/my%20events.jsonl").unwrap()
        else {
            panic!("not a file sink");
        };
        assert_eq!(f.path, std::path::PathBuf::from("/var/log/my events.jsonl"));
        let SinkConfig::Redis(r) =
            SinkConfig::parse("redis://h:6380/holdline%2Devents?user=ops%40example").unwrap()
        else {
            panic!("not a redis sink");
        };
        assert_eq!((r.port, r.stream.as_str()), (6380, "holdline-events"));
        assert_eq!(r.user.as_deref(), Some("ops@example"));
        assert!(matches!(
            SinkConfig::parse("gopher://h/x"),
            Err(SinkUrlError::Scheme(s)) if s == "gopher"
        ));
        assert!(matches!(
            SinkConfig::parse("redis://h/s?colour=red"),
            Err(SinkUrlError::Invalid(_))
        ));
    }
}
