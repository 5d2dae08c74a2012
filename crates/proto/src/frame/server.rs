//! Frames the service sends to a client, parsed without copying the event body.
//!
//! [`ServerFrame::parse`] borrows from the text message: the topic is a `Cow` (borrowed
//! unless it holds JSON escapes) and the `eventBody` stays the raw JSON slice it arrived
//! as, so a client can hash and forward it without re-serialising. Shapes follow the
//! reference §3.2; where the service's exact text is unknown the parser is lenient (any
//! `channel.metadata` that is not a pong counts as a heartbeat, a numeric `version` is
//! accepted) so that a cosmetic difference never costs an event.

use std::borrow::Cow;
use std::str::Utf8Error;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{lenient, push_json_str};

/// The `eventBody.message` of the server's periodic heartbeat.
pub const HEARTBEAT_MESSAGE: &str = "WebSocket Heartbeat";
/// The `eventBody.message` of the reply to `{"message":"ping"}`.
pub const PONG_MESSAGE: &str = "pong";

pub(crate) const METADATA_TOPIC: &str = "channel.metadata";
const SOCKET_CLOSING_TOPIC: &str = "v2.system.socket_closing";
const NO_LONGER_SUBSCRIBED_PREFIX: &str = "v2.system.no_longer_subscribed";
const TOKEN_REVOKED_PREFIX: &str = "v2.system.token_revoked";
pub(crate) const SYSTEM_PREFIX: &str = "v2.system.";

/// One frame from the service.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame<'a> {
    /// `channel.metadata` heartbeat, sent by the server about every 30 s.
    Heartbeat,
    /// `channel.metadata` reply to the client's `{"message":"ping"}`.
    Pong,
    /// An event on a subscribed topic.
    Notification(Notification<'a>),
    /// `v2.system.socket_closing`: the server will close this socket in about a minute.
    SocketClosing(SystemNotice<'a>),
    /// `v2.system.no_longer_subscribed.{channelId}`: the channel is dead.
    NoLongerSubscribed(SystemNotice<'a>),
    /// `v2.system.token_revoked.{channelId}`: the token behind the channel was revoked.
    TokenRevoked(SystemNotice<'a>),
    /// Any other `v2.system.*` topic.
    OtherSystem(SystemNotice<'a>),
    /// Reply to a subscribe or unsubscribe sent over the socket.
    SubscribeReply(SubscribeReply<'a>),
    /// `{"result":"404",...}`: the channel expired, was evicted or lost its token.
    ChannelGone {
        /// The server's explanation, if any.
        message: Option<Cow<'a, str>>,
    },
    /// Valid JSON of a shape holdline does not know. Proves the socket is alive; nothing more.
    Unknown,
}

/// An event: topic, version, correlation id and the raw body.
#[derive(Debug, Clone)]
pub struct Notification<'a> {
    /// The full topic name, e.g. `v2.users.{id}.presence`.
    pub topic: Cow<'a, str>,
    /// The envelope `version` (a string, `"2"` today).
    pub version: Option<Cow<'a, str>>,
    /// `metadata.CorrelationId`, unique per event.
    pub correlation_id: Option<Cow<'a, str>>,
    /// The `eventBody` exactly as it appeared in the frame.
    pub body: RawJson<'a>,
}

/// A span of a frame that holds one valid JSON value, as it appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    /// Only the parsers make one, after validating the text.
    pub(crate) fn validated(json: &'a str) -> Self {
        RawJson(json)
    }

    /// The JSON text.
    pub fn get(&self) -> &'a str {
        self.0
    }
}

impl PartialEq for Notification<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.version == other.version
            && self.correlation_id == other.correlation_id
            && self.body == other.body
    }
}

/// A `v2.system.*` message.
#[derive(Debug, Clone)]
pub struct SystemNotice<'a> {
    /// The full topic name.
    pub topic: Cow<'a, str>,
    /// The raw `eventBody`, if the frame had one.
    pub body: Option<&'a RawValue>,
    /// `metadata.CorrelationId`.
    pub correlation_id: Option<Cow<'a, str>>,
}

impl PartialEq for SystemNotice<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.correlation_id == other.correlation_id
            && self.body.map(RawValue::get) == other.body.map(RawValue::get)
    }
}

/// The fields of a system message body that explain it (`SystemMessageSystemMessage`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemNoticeBody {
    /// The channel the notice is about.
    pub channel_id: Option<String>,
    /// `no_longer_subscribed`, `subscription_changed` or `token_revoked`.
    pub system_topic_type: Option<String>,
    /// `another_channel_subscribed` or `user_tokens_revoked`.
    pub reason: Option<String>,
    /// Human-readable text.
    pub message: Option<String>,
}

impl SystemNotice<'_> {
    /// Reads the explanatory fields of the body; missing or odd bodies give empty fields.
    pub fn details(&self) -> SystemNoticeBody {
        self.body
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }
}

/// Reply to a subscribe/unsubscribe sent over the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeReply<'a> {
    /// The `correlationId` the client sent.
    pub correlation_id: Option<Cow<'a, str>>,
    /// The topics the reply covers.
    pub topics: Vec<Cow<'a, str>>,
    /// An HTTP-like status as text, e.g. `"200"` or `"400"`.
    pub result: Option<Cow<'a, str>>,
    /// `subscribed`, `unsubscribed` or `error`.
    pub status: Option<Cow<'a, str>>,
    /// Error text.
    pub message: Option<Cow<'a, str>>,
}

impl SubscribeReply<'_> {
    /// True when the server accepted the request.
    pub fn is_ok(&self) -> bool {
        let result_ok = self.result.as_deref().is_none_or(|r| r.starts_with('2'));
        let status_ok = !matches!(self.status.as_deref(), Some("error" | "failure" | "failed"));
        result_ok && status_ok
    }
}

/// Why a text message is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The text is not valid JSON.
    #[error("frame is not valid JSON ({0})")]
    NotJson(String),
    /// Valid JSON, but not an object.
    #[error("frame is JSON but not an object")]
    NotAnObject,
    /// A topic other than `channel.metadata`/`v2.system.*` arrived without an `eventBody`.
    #[error("notification on {topic} has no eventBody")]
    MissingEventBody {
        /// The topic of the frame.
        topic: String,
    },
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(
        rename = "topicName",
        borrow,
        default,
        deserialize_with = "lenient::str_like"
    )]
    topic_name: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient::str_like")]
    version: Option<Cow<'a, str>>,
    #[serde(
        rename = "eventBody",
        borrow,
        default,
        deserialize_with = "lenient::raw"
    )]
    event_body: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "lenient::correlation_id")]
    metadata: Option<Cow<'a, str>>,
    #[serde(
        rename = "correlationId",
        borrow,
        default,
        deserialize_with = "lenient::str_like"
    )]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient::str_list")]
    topics: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default, deserialize_with = "lenient::str_like")]
    result: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient::str_like")]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient::str_like")]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MetadataBody<'a> {
    #[serde(borrow, default, deserialize_with = "lenient::str_like")]
    message: Option<Cow<'a, str>>,
}

/// A text message's payload as text, and the frame it holds.
pub type Parsed<'a> = (&'a str, Result<ServerFrame<'a>, FrameError>);

impl<'a> ServerFrame<'a> {
    /// Parses one text message. Never panics; anything that is valid JSON but unfamiliar
    /// comes back as [`ServerFrame::Unknown`].
    pub fn parse(text: &'a str) -> Result<Self, FrameError> {
        if let Some((_, n)) = super::scan::notification(text.as_bytes()) {
            return Ok(ServerFrame::Notification(n));
        }
        Self::parse_with_serde(text)
    }

    /// Parses a text message's payload that is not yet known to be UTF-8: the payload as
    /// text and what [`ServerFrame::parse`] makes of it. The frames nearly all traffic is
    /// made of are checked as UTF-8 in the same pass that parses them, the rest first.
    /// The error is a payload that is not UTF-8, which RFC 6455 (8.1) counts as a failed
    /// connection rather than a bad frame.
    pub fn parse_payload(payload: &'a [u8]) -> Result<Parsed<'a>, Utf8Error> {
        if let Some((text, n)) = super::scan::notification(payload) {
            return Ok((text, Ok(ServerFrame::Notification(n))));
        }
        let text = std::str::from_utf8(payload)?;
        Ok((text, Self::parse_with_serde(text)))
    }

    /// The general parser: every shape, lenient about the envelope's field types.
    pub(crate) fn parse_with_serde(text: &'a str) -> Result<Self, FrameError> {
        if !text.trim_start().starts_with('{') {
            return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Err(FrameError::NotAnObject),
                Err(e) => Err(FrameError::NotJson(e.to_string())),
            };
        }
        let env: Envelope<'a> =
            serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
        Ok(match env.topic_name {
            Some(topic) => classify_topic(topic, env.version, env.event_body, env.metadata)?,
            None => classify_reply(env),
        })
    }

    /// Encodes the frame as the service would send it.
    pub fn to_json(&self) -> String {
        match self {
            ServerFrame::Heartbeat => metadata_frame(HEARTBEAT_MESSAGE),
            ServerFrame::Pong => metadata_frame(PONG_MESSAGE),
            ServerFrame::Notification(n) => envelope(
                &n.topic,
                n.version.as_deref(),
                Some(n.body.get()),
                n.correlation_id.as_deref(),
            ),
            ServerFrame::SocketClosing(s)
            | ServerFrame::NoLongerSubscribed(s)
            | ServerFrame::TokenRevoked(s)
            | ServerFrame::OtherSystem(s) => envelope(
                &s.topic,
                Some("2"),
                s.body.map(RawValue::get),
                s.correlation_id.as_deref(),
            ),
            ServerFrame::SubscribeReply(r) => reply_json(r),
            ServerFrame::ChannelGone { message } => {
                let mut out = String::from(r#"{"result":"404""#);
                if let Some(message) = message {
                    out.push_str(r#","message":"#);
                    push_json_str(&mut out, message);
                }
                out.push('}');
                out
            }
            ServerFrame::Unknown => String::from("{}"),
        }
    }
}

fn classify_topic<'a>(
    topic: Cow<'a, str>,
    version: Option<Cow<'a, str>>,
    body: Option<&'a RawValue>,
    correlation_id: Option<Cow<'a, str>>,
) -> Result<ServerFrame<'a>, FrameError> {
    if topic == METADATA_TOPIC {
        let message = body
            .and_then(|raw| serde_json::from_str::<MetadataBody>(raw.get()).ok())
            .and_then(|b| b.message);
        let is_pong = message.is_some_and(|m| m.eq_ignore_ascii_case(PONG_MESSAGE));
        return Ok(if is_pong {
            ServerFrame::Pong
        } else {
            ServerFrame::Heartbeat
        });
    }
    if topic.starts_with(SYSTEM_PREFIX) {
        let kind: fn(SystemNotice<'a>) -> ServerFrame<'a> = if topic == SOCKET_CLOSING_TOPIC {
            ServerFrame::SocketClosing
        } else if topic.starts_with(NO_LONGER_SUBSCRIBED_PREFIX) {
            ServerFrame::NoLongerSubscribed
        } else if topic.starts_with(TOKEN_REVOKED_PREFIX) {
            ServerFrame::TokenRevoked
        } else {
            ServerFrame::OtherSystem
        };
        return Ok(kind(SystemNotice {
            topic,
            body,
            correlation_id,
        }));
    }
    match body {
        Some(body) => Ok(ServerFrame::Notification(Notification {
            topic,
            version,
            correlation_id,
            body: RawJson::validated(body.get()),
        })),
        None => Err(FrameError::MissingEventBody {
            topic: topic.into_owned(),
        }),
    }
}

fn classify_reply(env: Envelope<'_>) -> ServerFrame<'_> {
    let is_reply = env.correlation_id.is_some() || env.status.is_some() || env.topics.is_some();
    if is_reply {
        return ServerFrame::SubscribeReply(SubscribeReply {
            correlation_id: env.correlation_id,
            topics: env.topics.unwrap_or_default(),
            result: env.result,
            status: env.status,
            message: env.message,
        });
    }
    if env.result.as_deref() == Some("404") {
        return ServerFrame::ChannelGone {
            message: env.message,
        };
    }
    ServerFrame::Unknown
}

fn metadata_frame(message: &str) -> String {
    let mut out = String::from(r#"{"topicName":"channel.metadata","eventBody":{"message":"#);
    push_json_str(&mut out, message);
    out.push_str("}}");
    out
}

/// Builds a notification envelope around an already-encoded JSON body.
fn envelope(topic: &str, version: Option<&str>, body: Option<&str>, corr: Option<&str>) -> String {
    let body_len = body.map_or(0, str::len);
    let mut out = String::with_capacity(body_len + topic.len() + 96);
    out.push_str(r#"{"topicName":"#);
    push_json_str(&mut out, topic);
    if let Some(version) = version {
        out.push_str(r#","version":"#);
        push_json_str(&mut out, version);
    }
    if let Some(body) = body {
        out.push_str(r#","eventBody":"#);
        out.push_str(body);
    }
    if let Some(corr) = corr {
        out.push_str(r#","metadata":{"CorrelationId":"#);
        push_json_str(&mut out, corr);
        out.push('}');
    }
    out.push('}');
    out
}

fn reply_json(r: &SubscribeReply<'_>) -> String {
    let mut out = String::from("{");
    let mut sep = "";
    let mut field = |out: &mut String, name: &str, value: Option<&str>| {
        if let Some(value) = value {
            out.push_str(sep);
            push_json_str(out, name);
            out.push(':');
            push_json_str(out, value);
            sep = ",";
        }
    };
    field(&mut out, "correlationId", r.correlation_id.as_deref());
    field(&mut out, "result", r.result.as_deref());
    field(&mut out, "status", r.status.as_deref());
    field(&mut out, "message", r.message.as_deref());
    if !out.ends_with('{') {
        out.push(',');
    }
    out.push_str(r#""topics":["#);
    for (i, topic) in r.topics.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, topic);
    }
    out.push_str("]}");
    out
}

/// Builds a notification frame from its parts (the simulator's publishing path).
pub fn notification_json(topic: &str, body: &str, correlation_id: &str) -> String {
    envelope(topic, Some("2"), Some(body), Some(correlation_id))
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
