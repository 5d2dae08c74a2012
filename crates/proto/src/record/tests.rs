use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9.?&_-]{0,40}",
        1 => "\\PC{0,20}",
        1 => "[\"\\\\\u{0}-\u{1f}a]{0,8}",
    ]
}

fn body() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        text().prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((text(), inner), 0..4).prop_map(|v| {
                let fields: Vec<String> = v
                    .into_iter()
                    .map(|(k, v)| format!("{}: {v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

fn at() -> impl Strategy<Value = std::time::SystemTime> {
    (0u64..8_000_000_000, 0u32..1_000_000)
        .prop_map(|(s, us)| UNIX_EPOCH + Duration::new(s, us * 1000))
}

proptest! {
    #[test]
    fn an_event_record_reads_back_as_written(
        id in any::<u64>(), topic in text(), received in at(), org in text(),
        channel in text(), corr in proptest::option::of(text()), body in body(),
    ) {
        let fields = EventFields {
            id: EventId::from(id),
            topic: topic.as_bytes(),
            received_at: received,
            org: &org,
            channel: &channel,
            correlation_id: corr.as_deref().map(str::as_bytes),
            body: body.as_bytes(),
        };
        let mut line = Vec::new();
        write_event(&mut line, &fields);
        prop_assert!(line.ends_with(b"}\n"), "ends in a newline");
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        let Record::Event(e) = read(&line).unwrap() else { panic!("not an event") };
        prop_assert_eq!(e.id, fields.id);
        prop_assert_eq!(&e.topic, &topic);
        prop_assert_eq!(e.received_at, received);
        prop_assert_eq!(&e.org, &org);
        prop_assert_eq!(&e.channel, &channel);
        prop_assert_eq!(e.correlation_id.as_deref(), corr.as_deref());
        prop_assert_eq!(e.body.get(), body.as_str(), "the body's own bytes");
        prop_assert_eq!(head(&line).unwrap(), Head::Event { id: fields.id, topic: Cow::Owned(topic) });
    }

    #[test]
    fn gap_and_rejected_records_read_back_as_written(
        topics in prop::collection::vec(text(), 0..5), from in at(), to in at(), reason in text(),
        perms in prop::collection::vec(text(), 0..3), why in proptest::option::of(text()),
        id in proptest::option::of(text()),
    ) {
        let mut line = Vec::new();
        write_gap(&mut line, &GapFields { id: id.as_deref(), topics: &topics, from, to, org: &reason, reason: &reason });
        let Record::Gap(g) = read(&line).unwrap() else { panic!("not a gap") };
        prop_assert_eq!(&g.topics, &topics.iter().map(|t| Cow::Borrowed(t.as_str())).collect::<Vec<_>>());
        prop_assert_eq!((g.from, g.to), (from, to));
        prop_assert_eq!(&g.reason, &reason);
        prop_assert_eq!(g.id.as_deref(), id.as_deref());
        if let Some(id) = &id {
            prop_assert_eq!(&head(&line).unwrap().dedupe_id(&line), id, "a cluster gap is stored by its id");
        }
        prop_assert_eq!(g.org.as_deref(), Some(reason.as_str()));
        prop_assert_eq!(head(&line).unwrap().kind(), "gap");

        let topic = topics.first().cloned().unwrap_or_default();
        let mut line = Vec::new();
        write_rejected(&mut line, &RejectedFields {
            topic: &topic, org: &reason, missing_permissions: &perms, reason: why.as_deref(),
        });
        let Record::Rejected(r) = read(&line).unwrap() else { panic!("not rejected") };
        prop_assert_eq!(&r.topic, &topic);
        prop_assert_eq!(&r.org, &reason);
        prop_assert_eq!(&r.missing_permissions, &perms.iter().map(|t| Cow::Borrowed(t.as_str())).collect::<Vec<_>>());
        prop_assert_eq!(r.reason.as_deref(), why.as_deref());
    }

    #[test]
    fn backfill_records_read_back_as_written(
        gap in text(), org in text(), topic in text(), source in text(), entity in text(),
        as_of in at(), body in body(), status in text(), n in any::<u64>(),
        reason in proptest::option::of(text()),
    ) {
        let mut line = Vec::new();
        write_backfill(&mut line, &BackfillFields {
            gap: &gap, org: &org, topic: &topic, source: &source, entity: &entity, as_of,
            body: body.as_bytes(),
        });
        prop_assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        let Record::Backfill(b) = read(&line).unwrap() else { panic!("not a backfill") };
        prop_assert_eq!((&*b.gap, &*b.org, &*b.topic), (gap.as_str(), org.as_str(), topic.as_str()));
        prop_assert_eq!((&*b.source, &*b.entity), (source.as_str(), entity.as_str()));
        prop_assert_eq!(b.as_of, as_of);
        prop_assert_eq!(b.body.get(), body.as_str());
        let id = format!("{gap}/{source}/{entity}");
        prop_assert_eq!(&*b.id, id.as_str());
        prop_assert_eq!(head(&line).unwrap().dedupe_id(&line), id);

        let counts = [("analytics.conversations", n), ("requests", 3)];
        let mut line = Vec::new();
        write_backfill_done(&mut line, &BackfillDoneFields {
            gap: &gap, org: &org, status: &status, counts: &counts, reason: reason.as_deref(),
        });
        let Record::BackfillDone(d) = read(&line).unwrap() else { panic!("not backfill_done") };
        prop_assert_eq!((&*d.gap, &*d.org, &*d.status), (gap.as_str(), org.as_str(), status.as_str()));
        prop_assert_eq!(d.reason.as_deref(), reason.as_deref());
        let parsed: serde_json::Value = serde_json::from_str(d.counts.get()).unwrap();
        prop_assert_eq!(&parsed["analytics.conversations"], &serde_json::json!(n));
        prop_assert_eq!(head(&line).unwrap().kind(), "backfill_done");
    }

    #[test]
    fn times_read_back_as_written(t in at()) {
        let mut out = Vec::new();
        write_rfc3339(&mut out, t);
        prop_assert_eq!(parse_rfc3339(std::str::from_utf8(&out).unwrap()), Some(t));
    }

    #[test]
    fn reading_anything_never_panics(line in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = read(&line);
        let _ = head(&line);
    }
}

#[test]
fn lines_holdline_did_not_write_are_named_errors() {
    assert!(matches!(read(b"not json"), Err(RecordError::Json(_))));
    assert_eq!(
        read(br#"{"kind":"party"}"#).unwrap_err(),
        RecordError::Kind("party".into())
    );
    assert_eq!(
        read(br#"{"kind":"gap","topics":[],"from":"2026-01-01T00:00:00Z"}"#).unwrap_err(),
        RecordError::Missing {
            kind: "gap",
            field: "to"
        }
    );
    let bad_time =
        br#"{"kind":"gap","topics":[],"from":"yesterday","to":"2026-01-01T00:00:00Z","reason":""}"#;
    assert!(matches!(
        read(bad_time),
        Err(RecordError::Invalid { field: "from", .. })
    ));
    let bad_id = br#"{"kind":"event","id":"xyz","topic":"t","received_at":"2026-01-01T00:00:00Z","org":"o","channel":"c","body":{}}"#;
    assert!(matches!(
        head(bad_id),
        Err(RecordError::Invalid { field: "id", .. })
    ));
    assert_eq!(
        parse_rfc3339("2026-02-29T00:00:00Z"),
        None,
        "not a leap year"
    );
    assert_eq!(
        parse_rfc3339("1970-01-01T00:00:01.5Z"),
        Some(UNIX_EPOCH + Duration::from_millis(1500))
    );
}

#[test]
fn a_gap_or_rejected_record_has_a_stable_id_of_its_own() {
    let mut line = Vec::new();
    write_gap(
        &mut line,
        &GapFields {
            id: None,
            topics: &["a.b".to_owned()],
            from: UNIX_EPOCH,
            to: UNIX_EPOCH,
            org: "o",
            reason: "r",
        },
    );
    let id = head(&line).unwrap().dedupe_id(&line);
    assert!(id.starts_with("gap-"), "{id}");
    assert_eq!(id, head(&line).unwrap().dedupe_id(&line[..line.len() - 1]));
}
