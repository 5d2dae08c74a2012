//! The NATS JetStream sink: each record is one JetStream publish with `Nats-Msg-Id` set
//! to the event id, so the server drops a repeat (after a crash, a retried batch) inside
//! the stream's duplicate window. A batch counts as delivered once JetStream acknowledged
//! every message (stored, or recognised as a duplicate).
//!
//! `nats://host:4222/subject?stream=NAME&duplicate_window=5m&token_env=NAME&user=NAME&password_env=NAME&creds=/path&tls=true&timeout=10s`
//!
//! With `stream=NAME` the stream is created (subjects: the sink's subject, duplicate
//! window `duplicate_window`, 2 min unless set) if it does not exist; otherwise a stream must already capture the
//! subject. The subject may be a template: `holdline.{org}.{family}` puts each record
//! under its org and its topic's family (`queue_conversations`, `presence`, …; `gap` and
//! `rejected` for those records), and a stream this sink creates captures
//! `holdline.*.*`. Headers: `Nats-Msg-Id`, `Holdline-Kind` (`event`, `gap` or `rejected`), and
//! `Holdline-Topic` for events. The payload is the JSON line without its newline.

mod config;
#[cfg(test)]
mod tests;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use bytes::Bytes;

use crate::{Delivery, Sink, SinkError};

pub use config::*;

/// The NATS JetStream sink, on the caller's runtime; connects at first use.
pub struct NatsSink {
    config: NatsConfig,
    name: String,
    js: Option<jetstream::Context>,
}

impl NatsSink {
    pub fn new(config: NatsConfig) -> NatsSink {
        NatsSink {
            name: format!("nats:{}/{}", config.servers, config.subject),
            config,
            js: None,
        }
    }

    fn fail(&self, detail: impl std::fmt::Display) -> SinkError {
        SinkError::Failed {
            sink: self.name.clone(),
            detail: detail.to_string(),
        }
    }

    async fn connect(config: &NatsConfig) -> Result<jetstream::Context, String> {
        let mut options = async_nats::ConnectOptions::new()
            .name(concat!("holdline/", env!("CARGO_PKG_VERSION")))
            .connection_timeout(config.timeout)
            .require_tls(config.tls);
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&config.user, &config.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(path) = &config.creds {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| format!("cannot read nats creds {}: {e}", path.display()))?;
        }
        let servers: Vec<String> = config
            .servers
            .split(',')
            .map(|s| format!("nats://{s}"))
            .collect();
        let client = options
            .connect(servers.as_slice())
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.timeout)
            .ack_timeout(config.timeout)
            .build(client);
        if let Some(stream) = &config.stream {
            js.get_or_create_stream(jetstream::stream::Config {
                name: stream.clone(),
                subjects: vec![config.captured()],
                duplicate_window: config.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create stream {stream}: {e}"))?;
        }
        Ok(js)
    }

    async fn publish(
        js: &jetstream::Context,
        config: &NatsConfig,
        records: &[Bytes],
    ) -> Result<(), (PublishErrorKind, String)> {
        let mut acks = Vec::with_capacity(records.len());
        let templated = config.templated();
        for rec in records {
            let routed = crate::Routed::of(rec);
            let subject = match templated {
                true => fill(&config.subject, rec, &routed),
                false => config.subject.clone(),
            };
            let body = rec.strip_suffix(b"\n").unwrap_or(rec);
            let mut msg = PublishMessage::build()
                .payload(rec.slice(..body.len()))
                .message_id(routed.id.as_str())
                .header("Holdline-Kind", routed.kind());
            if let Some(topic) = routed.topic() {
                msg = msg.header("Holdline-Topic", topic);
            }
            let ack = js
                .send_publish(subject, msg)
                .await
                .map_err(|e| (e.kind(), e.to_string()))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| (e.kind(), e.to_string()))?;
        }
        Ok(())
    }
}

/// The subject `template` names for the record `line`.
fn fill(template: &str, line: &[u8], routed: &crate::Routed<'_>) -> String {
    let family = match (routed.kind(), routed.topic()) {
        ("event", Some(topic)) => {
            holdline_proto::topic::classify(topic).map_or("other", |m| m.family().name())
        }
        (kind, _) => kind,
    };
    let org = org_of(line).unwrap_or("unknown");
    template
        .split('.')
        .map(|t| match t {
            "{org}" => token(org),
            "{family}" => token(family),
            t => t.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The record's `org`: the first `"org":` member of the line is the record's own (its
/// topic and topics come before it, as JSON strings that cannot hold it unescaped).
fn org_of(line: &[u8]) -> Option<&str> {
    const KEY: &[u8] = br#","org":""#;
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &line[at..];
    let end = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
    (rest[end] == b'"').then(|| std::str::from_utf8(&rest[..end]).ok())?
}

/// One subject token: what a subject cannot hold (`.`, wildcards, spaces) becomes `_`.
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                true => c,
                false => '_',
            },
        )
        .collect();
    if t.is_empty() { "_".to_owned() } else { t }
}

impl NatsSink {
    async fn send(&mut self, records: &[Bytes]) -> Result<(), SinkError> {
        if self.js.is_none() {
            let js = Self::connect(&self.config)
                .await
                .map_err(|e| self.fail(e))?;
            self.js = Some(js);
        }
        let js = self.js.as_ref().expect("connected above");
        // Each acknowledgement waits at most the timeout, and the first failure ends the
        // batch; the bound here also covers a publish stuck behind a full send buffer.
        let publish = Self::publish(js, &self.config, records);
        let outcome = tokio::time::timeout(self.config.timeout * 2, publish)
            .await
            .unwrap_or_else(|_| {
                Err((
                    PublishErrorKind::TimedOut,
                    "no acknowledgement in time".into(),
                ))
            });
        match outcome {
            Ok(()) => Ok(()),
            Err((PublishErrorKind::StreamNotFound, _)) => Err(self.fail(format!(
                "no JetStream stream captures subject {:?}: create one (nats stream add) or add stream=NAME to the sink URL",
                self.config.subject
            ))),
            // The client reconnects by itself; a new context is not needed.
            Err((_, detail)) => Err(self.fail(detail)),
        }
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a mut self, records: &'a [Bytes]) -> Delivery<'a> {
        Box::pin(self.send(records))
    }
}
