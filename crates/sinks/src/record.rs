//! What a sink needs to know about a record without parsing its body: whether it is an
//! event or a gap, the event's id and topic, and the entity a topic is about.
//!
//! Records are the JSON lines holdline writes itself, so an event always starts
//! `{"kind":"event","id":"<16 hex>","topic":"…"`; the scan reads only that prefix.
//! Anything else (a gap, or a record this scan does not recognise) is parsed with
//! serde_json, which is rare.

use std::borrow::Cow;

const EVENT_PREFIX: &[u8] = br#"{"kind":"event","id":""#;
const TOPIC_KEY: &[u8] = br#"","topic":""#;

/// A record's kind and routing fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta<'a> {
    Event {
        id: &'a str,
        topic: Cow<'a, str>,
    },
    Gap {
        topics: Vec<String>,
    },
    /// Not a record holdline wrote; delivered as it is, without id or key.
    Other,
}

impl Meta<'_> {
    /// The event id, or for a gap a stable id of its own (xxh3 of the record) so that a
    /// gap delivered twice is recognised as the same gap.
    pub fn dedupe_id(&self, record: &[u8]) -> String {
        match self {
            Meta::Event { id, .. } => (*id).to_owned(),
            _ => format!("gap-{:016x}", xxhash_rust::xxh3::xxh3_64(record)),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Meta::Event { .. } => "event",
            Meta::Gap { .. } => "gap",
            Meta::Other => "other",
        }
    }
}

/// Reads the kind, id and topic of `record`.
pub fn meta(record: &[u8]) -> Meta<'_> {
    if let Some(rest) = record.strip_prefix(EVENT_PREFIX)
        && rest.len() > 16
        && rest[..16].iter().all(u8::is_ascii_hexdigit)
        && let Some(after) = rest[16..].strip_prefix(TOPIC_KEY)
        && let Some(end) = after.iter().position(|b| *b == b'"' || *b == b'\\')
        && after[end] == b'"'
        && let (Ok(id), Ok(topic)) = (
            std::str::from_utf8(&rest[..16]),
            std::str::from_utf8(&after[..end]),
        )
    {
        return Meta::Event {
            id,
            topic: Cow::Borrowed(topic),
        };
    }
    #[derive(serde::Deserialize)]
    struct Loose {
        kind: String,
        id: Option<String>,
        topic: Option<String>,
        #[serde(default)]
        topics: Vec<String>,
    }
    match serde_json::from_slice::<Loose>(record) {
        Ok(r) if r.kind == "gap" => Meta::Gap { topics: r.topics },
        // An event whose topic needed JSON escapes: id from the fixed prefix is not
        // borrowable here, so the slow path only serves the topic.
        Ok(Loose {
            kind,
            id: Some(_),
            topic: Some(topic),
            ..
        }) if kind == "event" => {
            match record
                .strip_prefix(EVENT_PREFIX)
                .and_then(|r| r.get(..16))
                .and_then(|id| std::str::from_utf8(id).ok())
            {
                Some(id) => Meta::Event {
                    id,
                    topic: Cow::Owned(topic),
                },
                None => Meta::Other,
            }
        }
        _ => Meta::Other,
    }
}

/// The entity a Genesys topic is about: the first segment shaped like a UUID
/// (`v2.routing.queues.<id>.conversations` and `v2.users.<id>?presence` → `<id>`), else the whole topic. Events about
/// one entity share it, so a sink that partitions by it keeps them in order.
pub fn entity(topic: &str) -> &str {
    topic
        .split(['.', '?'])
        .find(|s| is_uuid(s))
        .unwrap_or(topic)
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUE: &str = "v2.routing.queues.0b2c1f5e-3a4d-4e6f-8a9b-1c2d3e4f5a6b.conversations";

    #[test]
    fn events_are_read_from_the_prefix_and_gaps_are_parsed() {
        let ev = format!(
            r#"{{"kind":"event","id":"00ff00ff00ff00ff","topic":"{QUEUE}","received_at":"x","body":{{}}}}"#
        );
        let m = meta(ev.as_bytes());
        assert_eq!(
            m,
            Meta::Event {
                id: "00ff00ff00ff00ff",
                topic: Cow::Borrowed(QUEUE)
            }
        );
        assert_eq!(m.dedupe_id(ev.as_bytes()), "00ff00ff00ff00ff");

        let gap = br#"{"kind":"gap","topics":["a.b","c.d"],"from":"x","to":"y","reason":"r"}"#;
        let m = meta(gap);
        assert_eq!(
            m,
            Meta::Gap {
                topics: vec!["a.b".into(), "c.d".into()]
            }
        );
        assert!(m.dedupe_id(gap).starts_with("gap-"));
        assert_eq!(m.dedupe_id(gap), meta(gap).dedupe_id(gap));

        let escaped = br#"{"kind":"event","id":"0123456789abcdef","topic":"v2.a\"b","body":{}}"#;
        assert_eq!(
            meta(escaped),
            Meta::Event {
                id: "0123456789abcdef",
                topic: Cow::Owned("v2.a\"b".into())
            }
        );
        assert_eq!(meta(b"not json"), Meta::Other);
    }

    #[test]
    fn the_entity_is_the_uuid_segment_of_a_topic() {
        assert_eq!(entity(QUEUE), "0b2c1f5e-3a4d-4e6f-8a9b-1c2d3e4f5a6b");
        assert_eq!(
            entity("v2.users.0b2c1f5e-3a4d-4e6f-8a9b-1c2d3e4f5a6b?presence&routingStatus"),
            "0b2c1f5e-3a4d-4e6f-8a9b-1c2d3e4f5a6b"
        );
        assert_eq!(entity("channel.metadata"), "channel.metadata");
    }
}
