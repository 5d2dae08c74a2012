//! Output filters: which records `listen` writes, decided before they reach the spool.
//!
//! A filter is a list of clauses, all of which a record must pass; inside a clause a comma
//! separates alternatives:
//!
//! - `kind=event,gap`: the record kinds kept (`event`, `gap`, `rejected`, `backfill`,
//!   `backfill_done`).
//! - `topic=v2.routing.queues.*.conversations,v2.users.*.presence`: topic patterns, where
//!   `*` stands for exactly one dot-separated part.
//! - `has=/participants` and `missing=/wrapup`: a JSON pointer (RFC 6901) into the event
//!   body that is present and not null, or absent or null.
//! - `/participants/0/purpose=agent` and `/state!=disconnected`: the value at a pointer
//!   equals (or does not) the given JSON value; a value that is not JSON is a string.
//!
//! A gap passes whenever it could have hidden an event the filter keeps: topic patterns
//! apply to its topics (a gap of no topic in particular always matches), body conditions
//! never apply to it, and only `kind=` can drop gaps altogether. Otherwise "every event is
//! delivered, or a gap says it could not have been" would stop holding for what is kept.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;

#[cfg(test)]
mod tests;

/// Why a filter clause could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "filter {0:?}: expected kind=…, topic=…, has=/pointer, missing=/pointer, /pointer=value or /pointer!=value"
    )]
    Form(String),
    #[error(
        "filter {clause:?}: unknown record kind {kind:?}; the kinds are event, gap, rejected, backfill and backfill_done"
    )]
    Kind { clause: String, kind: String },
    #[error(
        "filter {clause:?}: {pointer:?} is not a JSON pointer; it starts with / (for example /participants/0/purpose)"
    )]
    Pointer { clause: String, pointer: String },
    #[error("filter {clause:?}: the topic pattern {pattern:?} has an empty part")]
    Pattern { clause: String, pattern: String },
}

/// The kinds of record `listen` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Event,
    Gap,
    Rejected,
    Backfill,
    BackfillDone,
}

impl Kind {
    fn bit(self) -> u8 {
        match self {
            Kind::Event => 1,
            Kind::Gap => 2,
            Kind::Rejected => 4,
            Kind::Backfill => 8,
            Kind::BackfillDone => 16,
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        match name {
            "event" => Some(Kind::Event),
            "gap" => Some(Kind::Gap),
            "rejected" => Some(Kind::Rejected),
            "backfill" => Some(Kind::Backfill),
            "backfill_done" => Some(Kind::BackfillDone),
            _ => None,
        }
    }
}

/// The kinds of a filter that keeps none: no kind's bit.
const NOTHING: u8 = 0x80;

/// A topic pattern: its dot-separated parts, `None` where it says `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<Option<String>>);

impl Pattern {
    fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('.');
        self.0.iter().all(|want| match (want, parts.next()) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(want), Some(part)) => want == part,
        }) && parts.next().is_none()
    }
}

/// An RFC 6901 pointer, as its unescaped reference tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pointer(Vec<String>);

impl Pointer {
    fn parse(text: &str) -> Option<Pointer> {
        let rest = text.strip_prefix('/')?;
        Some(Pointer(
            rest.split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect(),
        ))
    }

    /// The value it points at in `json`, walking only the objects and arrays on its way.
    fn find<'a>(&self, json: &'a str) -> Option<&'a str> {
        let mut at: &'a str = json.trim();
        for token in &self.0 {
            at = match at.as_bytes().first()? {
                b'{' => {
                    let map: BTreeMap<Cow<'a, str>, &'a RawValue> =
                        serde_json::from_str(at).ok()?;
                    map.get(token.as_str())?.get()
                }
                b'[' => {
                    // RFC 6901: digits, no sign, no leading zero.
                    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
                    if !digits || (token.len() > 1 && token.starts_with('0')) {
                        return None;
                    }
                    let index: usize = token.parse().ok()?;
                    let items: Vec<&'a RawValue> = serde_json::from_str(at).ok()?;
                    items.get(index)?.get()
                }
                _ => return None,
            }
            .trim();
        }
        Some(at)
    }

    /// Present and not null.
    fn present(&self, json: &str) -> bool {
        self.find(json).is_some_and(|v| v != "null")
    }
}

/// A condition on an event's body.
#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Has(Pointer),
    Missing(Pointer),
    Equals(Pointer, serde_json::Value),
    Differs(Pointer, serde_json::Value),
}

impl Condition {
    fn holds(&self, body: &str) -> bool {
        let value = |p: &Pointer| {
            p.find(body)
                .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        };
        match self {
            Condition::Has(p) => p.present(body),
            Condition::Missing(p) => !p.present(body),
            Condition::Equals(p, want) => value(p).is_some_and(|v| same(&v, want)),
            Condition::Differs(p, want) => !value(p).is_some_and(|v| same(&v, want)),
        }
    }
}

/// JSON equality with numbers compared by value (`1` and `1.0` are the same).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
            x == y || x.as_f64().is_some_and(|x| y.as_f64() == Some(x))
        }
        _ => a == b,
    }
}

/// Which records to keep; see the module documentation for the clauses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Bits of the kinds kept; 0 for every kind.
    kinds: u8,
    /// Clauses of topic patterns: a topic must match one pattern of each.
    topics: Vec<Vec<Pattern>>,
    body: Vec<Condition>,
}

impl Filter {
    /// Reads the clauses; `None` when there are none (nothing is filtered).
    pub fn parse<S: AsRef<str>>(clauses: &[S]) -> Result<Option<Filter>, FilterError> {
        let mut filter = Filter::default();
        for clause in clauses {
            filter.add(clause.as_ref().trim())?;
        }
        Ok((filter != Filter::default()).then_some(filter))
    }

    fn add(&mut self, clause: &str) -> Result<(), FilterError> {
        let pointer = |text: &str| {
            Pointer::parse(text).ok_or_else(|| FilterError::Pointer {
                clause: clause.to_owned(),
                pointer: text.to_owned(),
            })
        };
        let json = |text: &str| {
            serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.into()))
        };
        if clause.starts_with('/') {
            let (p, negated, value) = match (clause.find("!="), clause.find('=')) {
                (Some(ne), Some(eq)) if ne < eq => (&clause[..ne], true, &clause[ne + 2..]),
                (_, Some(eq)) => (&clause[..eq], false, &clause[eq + 1..]),
                _ => return Err(FilterError::Form(clause.to_owned())),
            };
            let (p, value) = (pointer(p)?, json(value));
            self.body.push(match negated {
                true => Condition::Differs(p, value),
                false => Condition::Equals(p, value),
            });
            return Ok(());
        }
        let Some((key, value)) = clause.split_once('=') else {
            return Err(FilterError::Form(clause.to_owned()));
        };
        match key.trim() {
            "kind" => {
                let mut bits = 0;
                for name in value.split(',').map(str::trim) {
                    let kind = Kind::parse(name).ok_or_else(|| FilterError::Kind {
                        clause: clause.to_owned(),
                        kind: name.to_owned(),
                    })?;
                    bits |= kind.bit();
                }
                // Two kind clauses keep what both keep.
                self.kinds = match self.kinds {
                    0 => bits,
                    before => before & bits,
                };
                if self.kinds == 0 {
                    // Nothing is kept: still a filter, one that drops every record.
                    self.kinds = NOTHING;
                }
            }
            "topic" => {
                let patterns = value
                    .split(',')
                    .map(str::trim)
                    .map(|p| {
                        let parts: Vec<Option<String>> = p
                            .split('.')
                            .map(|s| (s != "*").then(|| s.to_owned()))
                            .collect();
                        match parts.iter().any(|s| s.as_deref() == Some("")) {
                            true => Err(FilterError::Pattern {
                                clause: clause.to_owned(),
                                pattern: p.to_owned(),
                            }),
                            false => Ok(Pattern(parts)),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                self.topics.push(patterns);
            }
            "has" => self.body.push(Condition::Has(pointer(value.trim())?)),
            "missing" => self.body.push(Condition::Missing(pointer(value.trim())?)),
            _ => return Err(FilterError::Form(clause.to_owned())),
        }
        Ok(())
    }

    fn keeps_kind(&self, kind: Kind) -> bool {
        self.kinds == 0 || self.kinds & kind.bit() != 0
    }

    fn topic_matches(&self, topic: &str) -> bool {
        self.topics
            .iter()
            .all(|clause| clause.iter().any(|p| p.matches(topic)))
    }

    /// Whether to keep an event on `topic` with this body (raw JSON).
    pub fn event(&self, topic: &str, body: &[u8]) -> bool {
        if !self.keeps_kind(Kind::Event) || !self.topic_matches(topic) {
            return false;
        }
        if self.body.is_empty() {
            return true;
        }
        // A body that is not JSON passes no body condition, `missing=` and `!=` included.
        let Ok(body) = std::str::from_utf8(body) else {
            return false;
        };
        serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok()
            && self.body.iter().all(|c| c.holds(body))
    }

    /// Whether to keep a gap over these topics.
    pub fn gap<S: AsRef<str>>(&self, topics: &[S]) -> bool {
        self.keeps_kind(Kind::Gap)
            && (topics.is_empty()
                || self.topics.is_empty()
                || topics.iter().any(|t| self.topic_matches(t.as_ref())))
    }

    /// Whether to keep a back-fill record under `topic` (topic patterns apply to it).
    pub fn backfill(&self, topic: &str) -> bool {
        self.keeps_kind(Kind::Backfill) && self.topic_matches(topic)
    }

    /// Whether to keep the record that closes a gap's back-fill.
    pub fn backfill_done(&self) -> bool {
        self.keeps_kind(Kind::BackfillDone)
    }

    /// Whether to keep the record of a refused topic.
    pub fn rejected(&self, topic: &str) -> bool {
        self.keeps_kind(Kind::Rejected) && self.topic_matches(topic)
    }
}
