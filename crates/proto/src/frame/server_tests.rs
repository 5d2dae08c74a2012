use super::*;
use proptest::prelude::*;

const CONVERSATION: &str = r#"{"topicName":"v2.routing.queues.0e185c02-aca1-4a72-82ea-2e78684e2c89.conversations","version":"2","eventBody":{"id":"0c3b7a9e-5b7f-4b6e-8f1e-6c2d9a1b7e40","participants":[{"purpose":"customer","calls":[{"state":"connected"}]}]},"metadata":{"CorrelationId":"2074b130-f0a0-4722-9063-cdbac74c0aee"}}"#;

#[test]
fn heartbeat_and_pong_are_told_apart_by_message() {
    let hb = r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#;
    let pong = r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#;
    assert_eq!(ServerFrame::parse(hb), Ok(ServerFrame::Heartbeat));
    assert_eq!(ServerFrame::parse(pong), Ok(ServerFrame::Pong));
}

#[test]
fn unfamiliar_channel_metadata_still_counts_as_a_heartbeat() {
    let other = r#"{"topicName":"channel.metadata","eventBody":{"message":"Heartbeat v2"}}"#;
    assert_eq!(ServerFrame::parse(other), Ok(ServerFrame::Heartbeat));
}

#[test]
fn notification_keeps_the_body_as_the_exact_wire_slice() {
    let frame = ServerFrame::parse(CONVERSATION).unwrap();
    let ServerFrame::Notification(n) = frame else {
        panic!("not a notification: {frame:?}")
    };
    assert_eq!(
        n.topic,
        "v2.routing.queues.0e185c02-aca1-4a72-82ea-2e78684e2c89.conversations"
    );
    assert!(
        matches!(n.topic, Cow::Borrowed(_)),
        "topic must not be copied"
    );
    assert_eq!(n.version.as_deref(), Some("2"));
    assert_eq!(
        n.correlation_id.as_deref(),
        Some("2074b130-f0a0-4722-9063-cdbac74c0aee")
    );
    let start = CONVERSATION.find(r#"{"id""#).unwrap();
    let end = CONVERSATION.find(r#","metadata""#).unwrap();
    assert_eq!(n.body.get(), &CONVERSATION[start..end]);
    assert_eq!(
        n.body.get().as_ptr(),
        CONVERSATION[start..].as_ptr(),
        "body must borrow"
    );
}

#[test]
fn numeric_version_and_odd_metadata_do_not_lose_the_event() {
    let text = r#"{"topicName":"v2.users.a.presence","version":2,"eventBody":{},"metadata":"x"}"#;
    let ServerFrame::Notification(n) = ServerFrame::parse(text).unwrap() else {
        panic!()
    };
    assert_eq!(n.version.as_deref(), Some("2"));
    assert_eq!(n.correlation_id, None);
}

#[test]
fn null_body_is_a_body_not_a_missing_one() {
    let text = r#"{"topicName":"v2.users.a.presence","eventBody":null}"#;
    let ServerFrame::Notification(n) = ServerFrame::parse(text).unwrap() else {
        panic!()
    };
    assert_eq!(n.body.get(), "null");
}

#[test]
fn escaped_topic_is_unescaped() {
    let text = r#"{"topicName":"v2.users.a\u002epresence","eventBody":{}}"#;
    let ServerFrame::Notification(n) = ServerFrame::parse(text).unwrap() else {
        panic!()
    };
    assert_eq!(n.topic, "v2.users.a.presence");
}

#[test]
fn system_topics_are_recognised() {
    let closing = r#"{"topicName":"v2.system.socket_closing","version":"2","eventBody":{"channelId":"streaming-0-abc","message":"socket closing for maintenance"},"metadata":{"CorrelationId":"c"}}"#;
    let ServerFrame::SocketClosing(notice) = ServerFrame::parse(closing).unwrap() else {
        panic!()
    };
    let details = notice.details();
    assert_eq!(details.channel_id.as_deref(), Some("streaming-0-abc"));
    assert_eq!(
        details.message.as_deref(),
        Some("socket closing for maintenance")
    );

    let nls = r#"{"topicName":"v2.system.no_longer_subscribed.streaming-0-abc","eventBody":{"reason":"another_channel_subscribed"}}"#;
    let ServerFrame::NoLongerSubscribed(n) = ServerFrame::parse(nls).unwrap() else {
        panic!()
    };
    assert_eq!(
        n.details().reason.as_deref(),
        Some("another_channel_subscribed")
    );

    let revoked = r#"{"topicName":"v2.system.token_revoked.streaming-0-abc","eventBody":{}}"#;
    assert!(matches!(
        ServerFrame::parse(revoked),
        Ok(ServerFrame::TokenRevoked(_))
    ));
    let other = r#"{"topicName":"v2.system.abc.def","eventBody":{}}"#;
    assert!(matches!(
        ServerFrame::parse(other),
        Ok(ServerFrame::OtherSystem(_))
    ));
}

#[test]
fn captured_subscribe_error_reply_parses() {
    // Captured verbatim from the service (reference §3.2).
    let text = r#"{"correlationId":"uno5VlaUHt5t2Mul","topics":[],"result":"400","status":"error","message":"Required data missing from subscribe request."}"#;
    let ServerFrame::SubscribeReply(reply) = ServerFrame::parse(text).unwrap() else {
        panic!()
    };
    assert_eq!(reply.correlation_id.as_deref(), Some("uno5VlaUHt5t2Mul"));
    assert!(!reply.is_ok());
    assert_eq!(
        reply.message.as_deref(),
        Some("Required data missing from subscribe request.")
    );
}

#[test]
fn subscribe_success_reply_is_ok() {
    let text = r#"{"correlationId":"abc","topics":["v2.users.a.presence"],"result":"200","status":"subscribed"}"#;
    let ServerFrame::SubscribeReply(reply) = ServerFrame::parse(text).unwrap() else {
        panic!()
    };
    assert!(reply.is_ok());
    assert_eq!(reply.topics, vec![Cow::Borrowed("v2.users.a.presence")]);
}

#[test]
fn channel_gone_is_a_404_result_without_correlation() {
    let text = r#"{"result":"404","message":"channel not found"}"#;
    assert_eq!(
        ServerFrame::parse(text),
        Ok(ServerFrame::ChannelGone {
            message: Some(Cow::Borrowed("channel not found"))
        })
    );
    assert_eq!(
        ServerFrame::parse(r#"{"result":404}"#),
        Ok(ServerFrame::ChannelGone { message: None })
    );
}

#[test]
fn bad_input_gets_typed_errors() {
    assert!(matches!(
        ServerFrame::parse("not json"),
        Err(FrameError::NotJson(_))
    ));
    assert!(matches!(
        ServerFrame::parse(r#"{"topicName":"#),
        Err(FrameError::NotJson(_))
    ));
    assert_eq!(ServerFrame::parse("[1,2]"), Err(FrameError::NotAnObject));
    assert_eq!(ServerFrame::parse("42"), Err(FrameError::NotAnObject));
    assert_eq!(
        ServerFrame::parse(r#"{"topicName":"v2.users.a.presence"}"#),
        Err(FrameError::MissingEventBody {
            topic: "v2.users.a.presence".into()
        })
    );
    assert_eq!(ServerFrame::parse("{}"), Ok(ServerFrame::Unknown));
    assert_eq!(
        ServerFrame::parse(r#"{"hello":"world"}"#),
        Ok(ServerFrame::Unknown)
    );
}

#[test]
fn encoded_frames_parse_back_to_themselves() {
    let body = RawValue::from_string(r#"{"a":[1,2,{"b":"c"}]}"#.to_owned()).unwrap();
    let frames = [
        ServerFrame::Heartbeat,
        ServerFrame::Pong,
        ServerFrame::Notification(Notification {
            topic: "v2.users.x.presence".into(),
            version: Some("2".into()),
            correlation_id: Some("c-1".into()),
            body: RawJson::validated(body.get()),
        }),
        ServerFrame::SocketClosing(SystemNotice {
            topic: "v2.system.socket_closing".into(),
            body: Some(&body),
            correlation_id: Some("c-2".into()),
        }),
        ServerFrame::SubscribeReply(SubscribeReply {
            correlation_id: Some("x".into()),
            topics: vec!["a".into(), "b".into()],
            result: Some("200".into()),
            status: Some("subscribed".into()),
            message: None,
        }),
        ServerFrame::ChannelGone {
            message: Some("gone".into()),
        },
    ];
    for frame in frames {
        let json = frame.to_json();
        assert_eq!(ServerFrame::parse(&json).as_ref(), Ok(&frame), "{json}");
    }
}

#[test]
fn notification_json_matches_the_enum_encoding() {
    let json = notification_json("v2.users.x.presence", r#"{"k":1}"#, "corr");
    let ServerFrame::Notification(n) = ServerFrame::parse(&json).unwrap() else {
        panic!()
    };
    assert_eq!(n.body.get(), r#"{"k":1}"#);
    assert_eq!(n.correlation_id.as_deref(), Some("corr"));
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An envelope-like frame: envelope keys and others, in any order, repeated sometimes,
/// with values of any type, compact or pretty.
fn envelope_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("topicName".to_owned()),
        Just("version".to_owned()),
        Just("eventBody".to_owned()),
        Just("metadata".to_owned()),
        Just("correlationId".to_owned()),
        Just("result".to_owned()),
        Just("CorrelationId".to_owned()),
        "\\PC{0,6}",
    ];
    let value = prop_oneof![
        json_value(),
        "v2\\.(users|system|routing)\\.[a-z0-9\\-]{1,20}(\\.presence)?"
            .prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("channel.metadata")),
        prop::collection::btree_map(
            prop_oneof![Just("CorrelationId".to_owned()), "\\PC{0,4}"],
            json_value(),
            0..3
        )
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
    ];
    (prop::collection::vec((key, value), 0..7), any::<bool>()).prop_map(|(fields, pretty)| {
        let (sep, colon) = if pretty { (",\n  ", " : ") } else { (",", ":") };
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| {
                let v = if pretty {
                    serde_json::to_string_pretty(v).unwrap()
                } else {
                    v.to_string()
                };
                format!("{}{colon}{v}", serde_json::Value::from(k.as_str()))
            })
            .collect();
        format!("{{{}}}", body.join(sep))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn the_fast_path_and_serde_agree_on_every_frame(text in envelope_text()) {
        prop_assert_eq!(ServerFrame::parse(&text), ServerFrame::parse_with_serde(&text), "{}", text);
    }

    #[test]
    fn the_fast_path_and_serde_agree_on_damaged_frames(
        cut in 0usize..CONVERSATION.len(),
        at in 0usize..CONVERSATION.len(),
        byte in prop_oneof![Just(b'"'), Just(b'\\'), Just(b'}'), Just(b','), Just(b'1'), Just(b' '), Just(0x01u8)],
    ) {
        let mut bytes = CONVERSATION.as_bytes().to_vec();
        bytes[at] = byte;
        for text in [&CONVERSATION[..cut], std::str::from_utf8(&bytes).unwrap_or("")] {
            prop_assert_eq!(ServerFrame::parse(text), ServerFrame::parse_with_serde(text), "{}", text);
        }
    }
}

/// What a payload must parse to: not UTF-8, or its text and what the serde path makes
/// of it.
fn expected(payload: &[u8]) -> Result<Parsed<'_>, std::str::Utf8Error> {
    std::str::from_utf8(payload).map(|text| (text, ServerFrame::parse_with_serde(text)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn payloads_are_checked_as_utf8_as_std_checks_them(
        at in 0usize..CONVERSATION.len(),
        bytes in prop::collection::vec(prop_oneof![
            4 => 0x80u8..=0xff,
            1 => Just(b'a'),
            1 => Just(b'"'),
        ], 1..6),
    ) {
        let mut payload = CONVERSATION.as_bytes().to_vec();
        payload.splice(at..at, bytes);
        prop_assert_eq!(ServerFrame::parse_payload(&payload), expected(&payload));
    }

    #[test]
    fn utf8_payloads_parse_as_their_text_does(text in envelope_text()) {
        let payload = text.as_bytes();
        prop_assert_eq!(ServerFrame::parse_payload(payload), Ok((text.as_str(), ServerFrame::parse(&text))));
    }
}

#[test]
fn every_kind_of_broken_utf8_is_caught_wherever_it_lies_in_a_string() {
    let broken: [&[u8]; 14] = [
        b"\x80",
        b"\xbf",
        b"\xc0\xaf",
        b"\xc1\xbf",
        b"\xc3",
        b"\xc3\x28",
        b"\xe0\x80\xaf",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"\xef\xbf",
        b"\xf0\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"\xff",
    ];
    let fine: [&[u8]; 6] = [
        "é".as_bytes(),
        "€".as_bytes(),
        "\u{d7ff}".as_bytes(),
        "\u{e000}".as_bytes(),
        "😀".as_bytes(),
        "\u{10ffff}".as_bytes(),
    ];
    // Every offset inside a long string value, so each check meets the bytes in the
    // sixteen-byte, the eight-byte and the byte-by-byte steps, and at the string's end.
    let before = r#"{"topicName":"v2.users.x.presence","eventBody":{"message":""#;
    for pad in 0..40 {
        for (seq, ok) in broken
            .iter()
            .map(|s| (s, false))
            .chain(fine.iter().map(|s| (s, true)))
        {
            let mut payload = before.as_bytes().to_vec();
            payload.extend(std::iter::repeat_n(b'a', pad));
            payload.extend_from_slice(seq);
            let after = payload.len();
            payload.extend_from_slice(br#""}}"#);
            let parsed = ServerFrame::parse_payload(&payload);
            assert_eq!(parsed.is_ok(), ok, "{seq:x?} after {pad} bytes");
            assert_eq!(parsed, expected(&payload), "{seq:x?} after {pad} bytes");
            if ok {
                assert!(crate::frame::scan::notification(&payload).is_some());
            }
            // Cut off inside or right after the sequence: still no panic, still agreed.
            for cut in after - seq.len()..=after {
                assert_eq!(
                    ServerFrame::parse_payload(&payload[..cut]),
                    expected(&payload[..cut])
                );
            }
        }
    }
    // Outside strings no byte above 0x7f belongs in JSON at all.
    let outside = b"{\"topicName\":\"v2.users.x.presence\",\"eventBody\":{}\xc3\xa9}";
    assert!(crate::frame::scan::notification(outside).is_none());
    assert!(matches!(
        ServerFrame::parse_payload(outside),
        Ok((_, Err(FrameError::NotJson(_))))
    ));
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = ServerFrame::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_arbitrary_json(value in json_value()) {
        let _ = ServerFrame::parse(&value.to_string());
    }

    #[test]
    fn any_body_survives_a_round_trip_byte_for_byte(
        topic in "v2\\.[a-zA-Z0-9.\\-]{1,60}",
        body in json_value(),
        corr in "[a-f0-9\\-]{0,36}",
    ) {
        let body_text = body.to_string();
        let json = notification_json(&topic, &body_text, &corr);
        let frame = ServerFrame::parse(&json).unwrap();
        prop_assume!(!topic.starts_with("v2.system."));
        let ServerFrame::Notification(n) = frame else { panic!("{json}") };
        prop_assert_eq!(n.topic.as_ref(), topic.as_str());
        prop_assert_eq!(n.body.get(), body_text.as_str());
    }

    #[test]
    fn truncated_frames_are_errors_not_panics(cut in 0usize..CONVERSATION.len()) {
        let text = &CONVERSATION[..cut];
        prop_assert!(ServerFrame::parse(text).is_err());
    }
}

#[test]
fn plain_notifications_take_the_fast_path() {
    assert!(crate::frame::scan::notification(CONVERSATION.as_bytes()).is_some());
    let presence = notification_json(
        "v2.users.0e185c02-aca1-4a72-82ea-2e78684e2c89.presence",
        r#"{"presenceDefinition":{"id":"x","systemPresence":"Available"},"modifiedDate":"2026-11-27T10:00:00.000Z"}"#,
        "corr-1",
    );
    assert!(crate::frame::scan::notification(presence.as_bytes()).is_some());
    // Escapes in the topic, a numeric version and system topics go the serde way.
    for text in [
        r#"{"topicName":"v2.users.x\u002epresence","eventBody":{}}"#,
        r#"{"topicName":"v2.users.x.presence","version":2,"eventBody":{}}"#,
        r#"{"topicName":"v2.system.socket_closing","eventBody":{}}"#,
        r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#,
    ] {
        assert!(
            crate::frame::scan::notification(text.as_bytes()).is_none(),
            "{text}"
        );
        assert!(ServerFrame::parse(text).is_ok(), "{text}");
    }
}
