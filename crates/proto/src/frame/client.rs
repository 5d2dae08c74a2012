//! Frames a client sends on the notification socket (reference §3.3): the health-check
//! ping and subscribe/unsubscribe requests. The client encodes them; the simulator parses
//! them and must stay calm about anything else a client might send.

use std::borrow::Cow;

use serde::Deserialize;

use super::{lenient, push_json_str};

/// One client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// `{"message":"ping"}`: the service answers with a `channel.metadata` pong.
    Ping,
    /// Adds topics to the channel.
    Subscribe {
        /// Topic names (combined topics allowed).
        topics: Vec<Cow<'a, str>>,
        /// Echoed back in the reply.
        correlation_id: Option<Cow<'a, str>>,
    },
    /// Removes topics from the channel.
    Unsubscribe {
        /// Topic names.
        topics: Vec<Cow<'a, str>>,
        /// Echoed back in the reply.
        correlation_id: Option<Cow<'a, str>>,
    },
}

/// Why a client message is not one the service understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientFrameError {
    /// Not JSON, or not an object.
    #[error("message is not a JSON object")]
    NotJson,
    /// A JSON object without a known `message`.
    #[error("unknown message {0:?}")]
    UnknownMessage(Option<String>),
    /// A subscribe or unsubscribe without a `topics` list.
    #[error("Required data missing from subscribe request.")]
    MissingTopics {
        /// The correlation id, so the error reply can carry it.
        correlation_id: Option<String>,
    },
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default, deserialize_with = "lenient::str_like")]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "lenient::str_list")]
    topics: Option<Vec<Cow<'a, str>>>,
    #[serde(
        rename = "correlationId",
        borrow,
        default,
        deserialize_with = "lenient::str_like"
    )]
    correlation_id: Option<Cow<'a, str>>,
}

impl<'a> ClientFrame<'a> {
    /// Parses a text message sent by a client.
    pub fn parse(text: &'a str) -> Result<Self, ClientFrameError> {
        if !text.trim_start().starts_with('{') {
            return Err(ClientFrameError::NotJson);
        }
        let raw: Raw<'a> = serde_json::from_str(text).map_err(|_| ClientFrameError::NotJson)?;
        let make = |topics: Option<Vec<Cow<'a, str>>>, correlation_id: Option<Cow<'a, str>>| {
            match topics {
                Some(topics) if !topics.is_empty() => Ok((topics, correlation_id)),
                _ => Err(ClientFrameError::MissingTopics {
                    correlation_id: correlation_id.map(Cow::into_owned),
                }),
            }
        };
        match raw.message.as_deref() {
            Some(m) if m.eq_ignore_ascii_case("ping") => Ok(ClientFrame::Ping),
            Some(m) if m.eq_ignore_ascii_case("subscribe") => make(raw.topics, raw.correlation_id)
                .map(|(topics, correlation_id)| ClientFrame::Subscribe {
                    topics,
                    correlation_id,
                }),
            Some(m) if m.eq_ignore_ascii_case("unsubscribe") => {
                make(raw.topics, raw.correlation_id).map(|(topics, correlation_id)| {
                    ClientFrame::Unsubscribe {
                        topics,
                        correlation_id,
                    }
                })
            }
            other => Err(ClientFrameError::UnknownMessage(other.map(str::to_owned))),
        }
    }

    /// Encodes the message for the wire.
    pub fn to_json(&self) -> String {
        let (verb, topics, correlation_id) = match self {
            ClientFrame::Ping => return String::from(r#"{"message":"ping"}"#),
            ClientFrame::Subscribe {
                topics,
                correlation_id,
            } => ("subscribe", topics, correlation_id),
            ClientFrame::Unsubscribe {
                topics,
                correlation_id,
            } => ("unsubscribe", topics, correlation_id),
        };
        let mut out = format!(r#"{{"message":"{verb}","topics":["#);
        for (i, topic) in topics.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, topic);
        }
        out.push(']');
        if let Some(correlation_id) = correlation_id {
            out.push_str(r#","correlationId":"#);
            push_json_str(&mut out, correlation_id);
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ping_is_the_documented_health_check() {
        assert_eq!(ClientFrame::Ping.to_json(), r#"{"message":"ping"}"#);
        assert_eq!(
            ClientFrame::parse(r#"{"message":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
    }

    #[test]
    fn made_up_keepalives_are_not_pings() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"keepalive"}"#),
            Err(ClientFrameError::UnknownMessage(None))
        );
        assert_eq!(
            ClientFrame::parse("2021-06-04 10:00:01.0 +0000 UTC"),
            Err(ClientFrameError::NotJson)
        );
    }

    #[test]
    fn subscribe_without_topics_is_the_captured_error() {
        let err = ClientFrame::parse(r#"{"message":"subscribe","correlationId":"k"}"#).unwrap_err();
        assert_eq!(
            err,
            ClientFrameError::MissingTopics {
                correlation_id: Some("k".into())
            }
        );
        assert_eq!(
            err.to_string(),
            "Required data missing from subscribe request."
        );
    }

    proptest! {
        #[test]
        fn subscribe_round_trips(
            topics in prop::collection::vec("\\PC{1,40}", 1..5),
            corr in proptest::option::of("\\PC{0,20}"),
            unsubscribe in any::<bool>(),
        ) {
            let topics: Vec<Cow<str>> = topics.into_iter().map(Cow::Owned).collect();
            let correlation_id = corr.map(Cow::Owned);
            let frame = if unsubscribe {
                ClientFrame::Unsubscribe { topics, correlation_id }
            } else {
                ClientFrame::Subscribe { topics, correlation_id }
            };
            let json = frame.to_json();
            prop_assert_eq!(ClientFrame::parse(&json), Ok(frame));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,120}") {
            let _ = ClientFrame::parse(&text);
        }
    }
}
