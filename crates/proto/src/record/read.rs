//! Reading records back: [`read`] for every field, [`head`] for the kind, id and topic a
//! sink routes on, without looking at an event's body.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::EventId;

/// Why a line is not a record holdline wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error(
        "unknown record kind {0:?} (holdline writes event, gap, rejected, backfill and backfill_done)"
    )]
    Kind(String),
    #[error("{kind} record without {field:?}")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{field} {value:?} is not {what}")]
    Invalid {
        field: &'static str,
        value: String,
        what: &'static str,
    },
}

/// A record, every field read.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    Event(Event<'a>),
    Gap(Gap<'a>),
    Rejected(Rejected<'a>),
    Backfill(Backfill<'a>),
    BackfillDone(BackfillDone<'a>),
}

/// The state of one entity after a gap, from the REST API.
#[derive(Debug, Clone)]
pub struct Backfill<'a> {
    pub id: Cow<'a, str>,
    pub gap: Cow<'a, str>,
    pub org: Cow<'a, str>,
    pub topic: Cow<'a, str>,
    pub source: Cow<'a, str>,
    pub entity: Cow<'a, str>,
    pub as_of: SystemTime,
    pub body: &'a RawValue,
}

impl PartialEq for Backfill<'_> {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.id,
            &self.gap,
            &self.org,
            &self.topic,
            &self.source,
            &self.entity,
            self.as_of,
            self.body.get(),
        ) == (
            &o.id,
            &o.gap,
            &o.org,
            &o.topic,
            &o.source,
            &o.entity,
            o.as_of,
            o.body.get(),
        )
    }
}

/// The end of a gap's back-fill.
#[derive(Debug, Clone)]
pub struct BackfillDone<'a> {
    pub id: Cow<'a, str>,
    pub gap: Cow<'a, str>,
    pub org: Cow<'a, str>,
    pub status: Cow<'a, str>,
    /// An object of counts.
    pub counts: &'a RawValue,
    pub reason: Option<Cow<'a, str>>,
}

impl PartialEq for BackfillDone<'_> {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.id,
            &self.gap,
            &self.org,
            &self.status,
            self.counts.get(),
            &self.reason,
        ) == (&o.id, &o.gap, &o.org, &o.status, o.counts.get(), &o.reason)
    }
}

#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub id: EventId,
    pub topic: Cow<'a, str>,
    pub received_at: SystemTime,
    pub org: Cow<'a, str>,
    pub channel: Cow<'a, str>,
    pub correlation_id: Option<Cow<'a, str>>,
    /// The body as written: the service's own bytes.
    pub body: &'a RawValue,
}

impl PartialEq for Event<'_> {
    fn eq(&self, o: &Self) -> bool {
        (
            self.id,
            &self.topic,
            self.received_at,
            &self.org,
            &self.channel,
            &self.correlation_id,
            self.body.get(),
        ) == (
            o.id,
            &o.topic,
            o.received_at,
            &o.org,
            &o.channel,
            &o.correlation_id,
            o.body.get(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap<'a> {
    /// Only a cluster's gap has one.
    pub id: Option<Cow<'a, str>>,
    pub topics: Vec<Cow<'a, str>>,
    pub from: SystemTime,
    pub to: SystemTime,
    /// Absent in records written before holdline held many orgs.
    pub org: Option<Cow<'a, str>>,
    pub reason: Cow<'a, str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected<'a> {
    pub topic: Cow<'a, str>,
    pub org: Cow<'a, str>,
    pub missing_permissions: Vec<Cow<'a, str>>,
    pub reason: Option<Cow<'a, str>>,
}

impl Record<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Event(_) => "event",
            Record::Gap(_) => "gap",
            Record::Rejected(_) => "rejected",
            Record::Backfill(_) => "backfill",
            Record::BackfillDone(_) => "backfill_done",
        }
    }
}

/// Every field of a record as it stands on the line: checked into a [`Record`] after.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    topics: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    received_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    org: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
    /// Present even when it is `null`.
    #[serde(borrow, default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    missing_permissions: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    gap: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    entity: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    as_of: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    counts: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn need<T>(v: Option<T>, kind: &'static str, field: &'static str) -> Result<T, RecordError> {
    v.ok_or(RecordError::Missing { kind, field })
}

fn time(field: &'static str, text: &str) -> Result<SystemTime, RecordError> {
    parse_rfc3339(text).ok_or_else(|| RecordError::Invalid {
        field,
        value: text.to_owned(),
        what: "a UTC time like 2026-01-02T03:04:05.000006Z",
    })
}

fn event_id(text: &str) -> Result<EventId, RecordError> {
    match text.parse::<EventId>() {
        Ok(id) if text.len() == 16 => Ok(id),
        _ => Err(RecordError::Invalid {
            field: "id",
            value: text.to_owned(),
            what: "16 hex digits",
        }),
    }
}

/// Reads every field of `line` (one record, with or without its newline).
pub fn read(line: &[u8]) -> Result<Record<'_>, RecordError> {
    let w: Wire<'_> =
        serde_json::from_slice(trim(line)).map_err(|e| RecordError::Json(e.to_string()))?;
    Ok(match w.kind.as_ref() {
        "event" => {
            const K: &str = "event";
            Record::Event(Event {
                id: event_id(&need(w.id, K, "id")?)?,
                topic: need(w.topic, K, "topic")?,
                received_at: time("received_at", &need(w.received_at, K, "received_at")?)?,
                org: need(w.org, K, "org")?,
                channel: need(w.channel, K, "channel")?,
                correlation_id: w.correlation_id,
                body: need(w.body, K, "body")?,
            })
        }
        "gap" => {
            const K: &str = "gap";
            Record::Gap(Gap {
                id: w.id,
                topics: need(w.topics, K, "topics")?,
                from: time("from", &need(w.from, K, "from")?)?,
                to: time("to", &need(w.to, K, "to")?)?,
                org: w.org,
                reason: need(w.reason, K, "reason")?,
            })
        }
        "rejected" => {
            const K: &str = "rejected";
            Record::Rejected(Rejected {
                topic: need(w.topic, K, "topic")?,
                org: need(w.org, K, "org")?,
                missing_permissions: need(w.missing_permissions, K, "missing_permissions")?,
                reason: w.reason,
            })
        }
        "backfill" => {
            const K: &str = "backfill";
            Record::Backfill(Backfill {
                id: need(w.id, K, "id")?,
                gap: need(w.gap, K, "gap")?,
                org: need(w.org, K, "org")?,
                topic: need(w.topic, K, "topic")?,
                source: need(w.source, K, "source")?,
                entity: need(w.entity, K, "entity")?,
                as_of: time("as_of", &need(w.as_of, K, "as_of")?)?,
                body: need(w.body, K, "body")?,
            })
        }
        "backfill_done" => {
            const K: &str = "backfill_done";
            Record::BackfillDone(BackfillDone {
                id: need(w.id, K, "id")?,
                gap: need(w.gap, K, "gap")?,
                org: need(w.org, K, "org")?,
                status: need(w.status, K, "status")?,
                counts: need(w.counts, K, "counts")?,
                reason: w.reason,
            })
        }
        other => return Err(RecordError::Kind(other.to_owned())),
    })
}

fn trim(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// What a sink routes a record on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head<'a> {
    Event {
        id: EventId,
        topic: Cow<'a, str>,
    },
    Gap {
        topics: Vec<Cow<'a, str>>,
        id: Option<Cow<'a, str>>,
    },
    Rejected {
        topic: Cow<'a, str>,
    },
    Backfill {
        id: Cow<'a, str>,
        topic: Cow<'a, str>,
    },
    BackfillDone {
        id: Cow<'a, str>,
    },
}

impl Head<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Head::Event { .. } => "event",
            Head::Gap { .. } => "gap",
            Head::Rejected { .. } => "rejected",
            Head::Backfill { .. } => "backfill",
            Head::BackfillDone { .. } => "backfill_done",
        }
    }

    /// The event id (or a cluster gap's); for another record a stable id of its own (its
    /// kind and the xxh3 of its bytes), so that one delivered twice is recognised as the
    /// same record.
    pub fn dedupe_id(&self, line: &[u8]) -> String {
        match self {
            Head::Event { id, .. } => id.to_string(),
            Head::Gap { id: Some(id), .. } => id.to_string(),
            Head::Backfill { id, .. } | Head::BackfillDone { id } => id.to_string(),
            other => format!(
                "{}-{:016x}",
                other.kind(),
                xxhash_rust::xxh3::xxh3_64(trim(line))
            ),
        }
    }
}

const EVENT_PREFIX: &[u8] = br#"{"kind":"event","id":""#;
const TOPIC_KEY: &[u8] = br#"","topic":""#;

/// Reads the kind, id and topic of `line`. An event as [`write_event`](super::write_event)
/// lays it out (kind, id, then topic first) is read from that prefix alone, whatever its
/// body; anything else goes through [`read`].
pub fn head(line: &[u8]) -> Result<Head<'_>, RecordError> {
    if let Some(rest) = line.strip_prefix(EVENT_PREFIX)
        && let Some(hex) = rest.get(..16)
        && let Some(after) = rest[16..].strip_prefix(TOPIC_KEY)
        && let Some(end) = after.iter().position(|b| *b == b'"' || *b == b'\\')
        && after[end] == b'"'
        && let (Ok(hex), Ok(topic)) = (std::str::from_utf8(hex), std::str::from_utf8(&after[..end]))
        && let Ok(id) = event_id(hex)
    {
        return Ok(Head::Event {
            id,
            topic: Cow::Borrowed(topic),
        });
    }
    Ok(match read(line)? {
        Record::Event(e) => Head::Event {
            id: e.id,
            topic: e.topic,
        },
        Record::Gap(g) => Head::Gap {
            topics: g.topics,
            id: g.id,
        },
        Record::Rejected(r) => Head::Rejected { topic: r.topic },
        Record::Backfill(b) => Head::Backfill {
            id: b.id,
            topic: b.topic,
        },
        Record::BackfillDone(d) => Head::BackfillDone { id: d.id },
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC, as holdline writes times; up to nine
/// fraction digits).
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        let s = b.get(r)?;
        s.iter()
            .all(u8::is_ascii_digit)
            .then(|| s.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let nanos = match b.get(19..)? {
        b"Z" => 0,
        [b'.', frac @ .., b'Z'] if (1..=9).contains(&frac.len()) => {
            let n = num(20..20 + frac.len())?;
            n * 10u64.pow(9 - frac.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(y as i64, mo as u32, d as u32);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + s;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos as u32))
}

fn days_in(y: u64, m: u64) -> u64 {
    match m {
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// (year, month, day) to days since 1970-01-01, proleptic Gregorian (Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
