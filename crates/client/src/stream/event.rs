//! What the client emits: notifications (the raw frame kept, body and topic as spans into
//! it, so nothing is copied or re-serialised), gap records, and state changes.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use holdline_proto::{EventId, Notification as WireNotification};

/// One item of the client's stream.
#[derive(Debug, Clone)]
pub enum Event {
    /// An event, emitted once (duplicates across sockets are dropped).
    Notification(Notification),
    /// A window in which these topics could not have been received.
    Gap(Gap),
    /// A topic the service would not subscribe (missing permissions): nothing will
    /// arrive on it. Once per topic.
    Rejected(Rejection),
    /// Something happened to a socket or channel (informational).
    State(StateChange),
}

/// A string that is either a span of the frame or, when the frame held JSON escapes, owned.
#[derive(Debug, Clone)]
enum Text {
    Span(Range<usize>),
    Owned(Box<str>),
}

/// An event as received: the frame's bytes (checked as UTF-8 and JSON when it arrived),
/// with the topic, correlation id and body as spans of it.
#[derive(Debug, Clone)]
pub struct Notification {
    frame: Bytes,
    topic: Text,
    correlation_id: Option<Text>,
    body: Range<usize>,
    /// Hash of topic and body value: the same on every channel, however serialised.
    pub id: EventId,
    /// Hash of topic and body bytes exactly as they arrived.
    bytes_hash: u64,
    /// When the frame arrived.
    pub received_at: SystemTime,
    /// The channel it arrived on.
    pub channel: Arc<str>,
    /// The topic family's counter slot (see [`crate::telemetry::stats::FAMILIES`]).
    pub family: usize,
}

fn span_of(frame: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    (start + part.len() <= frame.len()).then(|| start..start + part.len())
}

/// A span when `part` lies inside the frame (no JSON escapes), else an owned copy.
fn text_of(frame: &str, part: &str) -> Text {
    match span_of(frame, part) {
        Some(range) => Text::Span(range),
        None => Text::Owned(part.into()),
    }
}

impl Notification {
    /// Builds the event from its frame and the notification parsed out of `text`, the
    /// frame's bytes as text (computes the id; copies nothing).
    pub fn new(
        frame: &Bytes,
        text: &str,
        parsed: &WireNotification<'_>,
        received_at: SystemTime,
        channel: Arc<str>,
    ) -> Self {
        debug_assert_eq!(text.as_bytes(), &frame[..]);
        let body_text = parsed.body.get();
        let id = EventId::of(&parsed.topic, body_text.as_bytes());
        let bytes_hash = EventId::of_bytes(&parsed.topic, body_text.as_bytes()).as_u64();
        let body = span_of(text, body_text).unwrap_or(0..0);
        Notification {
            frame: frame.clone(),
            topic: text_of(text, &parsed.topic),
            correlation_id: parsed.correlation_id.as_deref().map(|c| text_of(text, c)),
            body,
            id,
            bytes_hash,
            received_at,
            channel,
            family: crate::telemetry::stats::FAMILIES.len(),
        }
    }

    /// Hash of the topic and the body's bytes as they arrived (two copies of one event
    /// differ here when the service serialised them differently).
    pub fn bytes_hash(&self) -> u64 {
        self.bytes_hash
    }

    /// A span of the frame as text. The frame was checked as UTF-8 when it arrived and
    /// spans start and end at characters, so this check cannot fail; it keeps the type
    /// free of unchecked conversions for the price of a pass over a short string.
    fn text(&self, r: &Range<usize>) -> &str {
        self.frame
            .get(r.clone())
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    fn resolve<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            Text::Span(r) => self.text(r),
            Text::Owned(s) => s,
        }
    }

    fn raw<'a>(&'a self, t: &'a Text) -> &'a [u8] {
        match t {
            Text::Span(r) => self.frame.get(r.clone()).unwrap_or_default(),
            Text::Owned(s) => s.as_bytes(),
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        self.resolve(&self.topic)
    }

    /// The topic name as bytes (UTF-8): what a writer copies.
    pub fn topic_bytes(&self) -> &[u8] {
        self.raw(&self.topic)
    }

    /// `metadata.CorrelationId` as bytes (UTF-8), if the frame had one.
    pub fn correlation_id_bytes(&self) -> Option<&[u8]> {
        self.correlation_id.as_ref().map(|c| self.raw(c))
    }

    /// `metadata.CorrelationId`, if the frame had one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_ref().map(|c| self.resolve(c))
    }

    /// The `eventBody` exactly as received (raw JSON), as bytes: what a writer copies.
    pub fn body_bytes(&self) -> &[u8] {
        match self.frame.get(self.body.clone()) {
            Some(body) if !body.is_empty() => body,
            _ => b"null",
        }
    }

    /// The `eventBody` exactly as received (raw JSON).
    pub fn body(&self) -> &str {
        std::str::from_utf8(self.body_bytes()).unwrap_or("null")
    }

    /// The whole frame as received.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}

/// Topics that could not have been received between `from` and `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The topics of the affected shard.
    pub topics: Arc<[String]>,
    /// Last frame received before the outage.
    pub from: SystemTime,
    /// When a socket was receiving these topics again.
    pub to: SystemTime,
    /// What happened.
    pub reason: String,
}

/// A topic the service refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The topic (or combined topic) as subscribed.
    pub topic: String,
    /// The permissions the OAuth client lacks.
    pub missing_permissions: Vec<String>,
    /// The service's reason, if it gave one.
    pub reason: Option<String>,
}

/// What kind of state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// A socket is receiving.
    Live,
    /// A socket stopped receiving; recovery follows.
    Down,
    /// The service announced maintenance; a new socket is being opened.
    SocketClosing,
    /// A channel was replaced by a fresh one before it expired.
    RolledOver,
    /// Topics the OAuth client may not subscribe.
    Rejected,
    /// A channel was lost (evicted, expired, token revoked) and is being replaced.
    ChannelLost,
    /// The OAuth client's channel budget is (nearly) used up.
    Budget,
    /// Tracked entities (queues, users) changed; topics were added or removed.
    Tracking,
}

/// A state change, for logs and status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// What happened.
    pub kind: StateKind,
    /// The channel concerned.
    pub channel: Option<Arc<str>>,
    /// Human-readable detail.
    pub detail: String,
}
