//! Checks a client's output against the simulator's ledger: every firehose event present
//! once, on the right topic (and, for holdline's records, with the ledger's id).
//!
//! Firehose bodies carry their index (`"firehose": i`, or `"message": "firehose i"` in
//! presence events), so output from clients that re-serialise events can be checked too.

use std::borrow::Cow;
use std::io::BufRead;

use anyhow::Result;
use holdline_sim::state::ledger::LedgerEntry;
use serde::Deserialize;

/// One output line: a holdline record, or a notification frame as a peer prints it.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "topicName")]
    topic_name: Option<Cow<'a, str>>,
    body: Option<Body>,
    #[serde(rename = "eventBody")]
    event_body: Option<Body>,
}

#[derive(Deserialize)]
struct Body {
    firehose: Option<u64>,
    message: Option<String>,
}

impl Body {
    fn index(&self) -> Option<usize> {
        if let Some(i) = self.firehose {
            return usize::try_from(i).ok();
        }
        self.message
            .as_deref()?
            .strip_prefix("firehose ")?
            .parse()
            .ok()
    }
}

/// What the output held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Firehose events in the ledger.
    pub expected: usize,
    /// Distinct firehose events found.
    pub received: usize,
    /// Events printed more than once.
    pub duplicates: usize,
    /// Ledger events never printed.
    pub missing: usize,
    /// Events on another topic than the ledger's, or (holdline) with another id.
    pub mismatched: usize,
    /// `gap` records.
    pub gaps: usize,
    /// Lines that were neither (heartbeats, pongs, unparsable text).
    pub other: usize,
}

impl Verdict {
    /// Every event exactly once, nothing wrong, no gap.
    pub fn complete(&self) -> bool {
        self.received == self.expected
            && self.missing == 0
            && self.duplicates == 0
            && self.mismatched == 0
            && self.gaps == 0
    }

    /// A one-line account for logs and errors.
    pub fn describe(&self) -> String {
        format!(
            "{}/{} events, {} missing, {} duplicates, {} mismatched, {} gaps, {} other lines",
            self.received,
            self.expected,
            self.missing,
            self.duplicates,
            self.mismatched,
            self.gaps,
            self.other
        )
    }
}

/// Checks JSON lines from `input` against `ledger`.
pub fn check(mut input: impl BufRead, ledger: &[LedgerEntry]) -> Result<Verdict> {
    let mut seen = vec![0u32; ledger.len()];
    let mut verdict = Verdict {
        expected: ledger.len(),
        ..Verdict::default()
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let Ok(line) = serde_json::from_slice::<Line>(text) else {
            verdict.other += 1;
            continue;
        };
        if line.kind.as_deref() == Some("gap") {
            verdict.gaps += 1;
            continue;
        }
        let topic = line.topic.as_deref().or(line.topic_name.as_deref());
        let index = line.body.or(line.event_body).and_then(|b| b.index());
        let (Some(topic), Some(index)) = (topic, index) else {
            verdict.other += 1;
            continue;
        };
        let Some(entry) = ledger.get(index) else {
            verdict.mismatched += 1;
            continue;
        };
        let id_differs = line
            .id
            .as_deref()
            .is_some_and(|id| id.as_bytes() != entry.id.to_hex());
        if topic != &*entry.topic || id_differs {
            verdict.mismatched += 1;
            continue;
        }
        seen[index] += 1;
    }
    for count in seen {
        match count {
            0 => verdict.missing += 1,
            1 => verdict.received += 1,
            n => {
                verdict.received += 1;
                verdict.duplicates += n as usize - 1;
            }
        }
    }
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use holdline_proto::EventId;
    use time::OffsetDateTime;

    use super::*;

    fn entry(seq: u64, topic: &str, body: &str) -> LedgerEntry {
        LedgerEntry {
            org: None,
            seq,
            id: EventId::of(topic, body.as_bytes()),
            topic: Arc::from(topic),
            published_at: OffsetDateTime::UNIX_EPOCH,
            delivered_to: Vec::new(),
        }
    }

    fn ledger() -> (Vec<LedgerEntry>, Vec<String>) {
        let bodies = vec![
            r#"{"firehose":0,"id":"c0"}"#.to_owned(),
            r#"{"message":"firehose 1","id":"p1"}"#.to_owned(),
            r#"{"firehose":2,"id":"c2"}"#.to_owned(),
        ];
        let topics = ["v2.routing.queues.q.conversations", "v2.users.u.presence"];
        let ledger = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| entry(i as u64 + 1, topics[i % 2], b))
            .collect();
        (ledger, bodies)
    }

    fn record(e: &LedgerEntry, body: &str) -> String {
        format!(
            r#"{{"kind":"event","id":"{}","topic":"{}","received_at":"x","body":{body}}}"#,
            e.id, e.topic
        )
    }

    fn frame(e: &LedgerEntry, body: &str) -> String {
        format!(
            r#"{{"topicName":"{}","eventBody":{body},"metadata":{{"CorrelationId":"c"}}}}"#,
            e.topic
        )
    }

    #[test]
    fn holdline_records_are_matched_by_index_topic_and_id() {
        let (ledger, bodies) = ledger();
        let out: String = ledger
            .iter()
            .zip(&bodies)
            .map(|(e, b)| record(e, b) + "\n")
            .collect();
        let v = check(out.as_bytes(), &ledger).unwrap();
        assert!(v.complete(), "{}", v.describe());
        assert_eq!(v.received, 3);
    }

    #[test]
    fn peer_frames_with_heartbeats_count_and_other_lines_are_set_aside() {
        let (ledger, bodies) = ledger();
        let mut out =
            String::from(r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#);
        out.push('\n');
        for (e, b) in ledger.iter().zip(&bodies) {
            out += &frame(e, b);
            out.push('\n');
        }
        out += "not json\n";
        let v = check(out.as_bytes(), &ledger).unwrap();
        assert!(v.complete(), "{}", v.describe());
        assert_eq!(v.other, 2);
    }

    #[test]
    fn missing_duplicated_mismatched_and_gaps_all_fail_the_run() {
        let (ledger, bodies) = ledger();
        let mut out = record(&ledger[0], &bodies[0]) + "\n";
        out += &(record(&ledger[0], &bodies[0]) + "\n");
        // Index 2's body on index 1's topic.
        out += &(frame(&ledger[1], &bodies[2]) + "\n");
        out += r#"{"kind":"gap","topics":["t"],"from":"a","to":"b","reason":"drop"}"#;
        out.push('\n');
        let v = check(out.as_bytes(), &ledger).unwrap();
        assert!(!v.complete());
        assert_eq!(
            (v.received, v.duplicates, v.missing, v.mismatched, v.gaps),
            (1, 1, 2, 1, 1)
        );
    }

    #[test]
    fn a_record_whose_id_differs_from_the_ledger_is_mismatched() {
        let (ledger, bodies) = ledger();
        let forged =
            record(&ledger[0], &bodies[0]).replace(&ledger[0].id.to_string(), "0000000000000000");
        let v = check(format!("{forged}\n").as_bytes(), &ledger).unwrap();
        assert_eq!(v.mismatched, 1);
        assert_eq!(v.missing, 3);
    }
}
