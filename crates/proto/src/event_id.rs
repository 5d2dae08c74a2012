//! The event id: 16 hex characters of a 64-bit hash of the topic and the `eventBody`'s JSON
//! *value* ([`crate::value_hash`]): key order, whitespace, string escapes and the spelling
//! of numbers do not change it. The same event delivered on two channels has the same id
//! even if the service serialised it differently for each, so holdline (and anything
//! downstream) can de-duplicate on it. The simulator's ledger uses this same function,
//! which is what makes ledger-versus-output checks possible.

use std::fmt;
use std::str::FromStr;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Identity of one published event: a hash of its topic and its body's JSON value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(u64);

impl EventId {
    /// Computes the id of an event with this topic name and JSON body. A body that is not
    /// JSON (or nests absurdly deep) is identified by its bytes instead.
    pub fn of(topic: &str, body: &[u8]) -> Self {
        match crate::value_hash::value_hash(body) {
            Some(value) => EventId(crate::value_hash::mix(xxh3_64(topic.as_bytes()), value)),
            None => Self::of_bytes(topic, body),
        }
    }

    /// xxh3-64 over `topic`, a `\n` and the body's bytes exactly as they arrived: tells
    /// two copies of one event apart when they were serialised differently.
    pub fn of_bytes(topic: &str, body: &[u8]) -> Self {
        let mut hasher = Xxh3::new();
        hasher.update(topic.as_bytes());
        hasher.update(b"\n");
        hasher.update(body);
        EventId(hasher.digest())
    }

    /// The id as a number (for hash maps that want to skip re-hashing).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Writes the 16 lowercase hex digits into a fixed buffer, without allocating.
    pub fn to_hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = (15 - i) * 4;
            *slot = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        out
    }
}

impl From<u64> for EventId {
    fn from(value: u64) -> Self {
        EventId(value)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        // The buffer only ever holds ASCII hex digits.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

/// The text was not 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id is 16 hex digits, got {0:?}")]
pub struct ParseEventIdError(String);

impl FromStr for EventId {
    type Err = ParseEventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseEventIdError(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(EventId)
            .map_err(|_| ParseEventIdError(s.to_owned()))
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let hex = self.to_hex();
        serializer.serialize_str(std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_id_is_xxh3_of_topic_newline_body() {
        let id = EventId::of_bytes("v2.users.x.presence", br#"{"a":1}"#);
        assert_eq!(id.as_u64(), xxh3_64(b"v2.users.x.presence\n{\"a\":1}"));
        assert_ne!(EventId::of_bytes("ab", b"c"), EventId::of_bytes("a", b"bc"));
    }

    #[test]
    fn the_id_survives_reserialisation_but_not_a_change() {
        let topic = "v2.users.x.presence";
        let a = EventId::of(topic, br#"{"a":1,"b":"x"}"#);
        assert_eq!(a, EventId::of(topic, br#"{ "b" : "\u0078", "a" : 1.0 }"#));
        assert_ne!(a, EventId::of(topic, br#"{"a":2,"b":"x"}"#));
        assert_ne!(a, EventId::of("v2.users.y.presence", br#"{"a":1,"b":"x"}"#));
        assert_ne!(
            EventId::of_bytes(topic, br#"{"a":1,"b":"x"}"#),
            EventId::of_bytes(topic, br#"{"b":"x","a":1}"#)
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_identified_by_its_bytes() {
        assert_eq!(EventId::of("t", b"{oops"), EventId::of_bytes("t", b"{oops"));
        assert_ne!(EventId::of("t", b"{oops"), EventId::of("t", b"{oops!"));
    }

    #[test]
    fn hex_form_is_sixteen_zero_padded_digits_and_round_trips() {
        let id = EventId::from(0xab);
        assert_eq!(id.to_string(), "00000000000000ab");
        assert_eq!("00000000000000ab".parse::<EventId>(), Ok(id));
        assert!("ab".parse::<EventId>().is_err());
        assert!("zz000000000000ab".parse::<EventId>().is_err());
    }

    #[test]
    fn serde_uses_the_hex_form() {
        let id = EventId::of("t", b"{}");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
    }
}
