//! The records of DESIGN.md written from the engine's types. The format itself, writer and
//! reader side by side, is [`holdline_proto::record`].

use holdline_proto::record::{self, EventFields, GapFields, RejectedFields};

use crate::stream::event::{Gap, Notification, Rejection};

pub use holdline_proto::record::{write_rfc3339, write_str};

/// Appends one event record and a newline.
pub fn write_event(out: &mut Vec<u8>, n: &Notification, org: &str) {
    record::write_event(
        out,
        &EventFields {
            id: n.id,
            topic: n.topic_bytes(),
            received_at: n.received_at,
            org,
            channel: &n.channel,
            correlation_id: n.correlation_id_bytes(),
            body: n.body_bytes(),
        },
    );
}

/// Appends one gap record and a newline; `id` names a cluster's gap, else the gap is
/// named by [`gap_id`].
pub fn write_gap(out: &mut Vec<u8>, gap: &Gap, org: &str, id: Option<&str>) {
    let own;
    let id = match id {
        Some(id) => id,
        None => {
            own = gap_id(gap, org);
            &own
        }
    };
    record::write_gap(
        out,
        &GapFields {
            id: Some(id),
            topics: &gap.topics,
            from: gap.from,
            to: gap.to,
            org,
            reason: &gap.reason,
        },
    );
}

/// The id of `org`'s own gap: `gap:<org>:<shard>:<from µs>-<to µs>` (a process's gaps
/// after restarts can share a start; a cluster's are one per start, without the end).
pub fn gap_id(gap: &Gap, org: &str) -> String {
    let to = gap
        .to
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{}-{to}", record::gap_id(org, &gap.topics, gap.from))
}

/// Appends one rejected-topic record and a newline.
pub fn write_rejected(out: &mut Vec<u8>, r: &Rejection, org: &str) {
    record::write_rejected(
        out,
        &RejectedFields {
            topic: &r.topic,
            org,
            missing_permissions: &r.missing_permissions,
            reason: r.reason.as_deref(),
        },
    );
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn gap_record_is_the_documented_shape() {
        let gap = Gap {
            topics: vec!["a".to_owned(), "b".to_owned()].into(),
            from: UNIX_EPOCH,
            to: UNIX_EPOCH + Duration::from_secs(1),
            reason: "socket dropped: \"reset\"".into(),
        };
        let mut out = Vec::new();
        write_gap(&mut out, &gap, "acme", None);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kind"], "gap");
        assert_eq!(v["org"], "acme");
        assert_eq!(v["topics"], serde_json::json!(["a", "b"]));
        assert_eq!(v["to"], "1970-01-01T00:00:01.000000Z");
        assert_eq!(v["reason"], "socket dropped: \"reset\"");
        assert!(out.ends_with(b"}\n"));
    }
}
