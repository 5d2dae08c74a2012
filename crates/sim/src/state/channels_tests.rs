use super::*;

const USER: &str = "6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11";

fn chan(now: Instant) -> ChannelRec {
    ChannelRec::new(
        Arc::from("c1"),
        "client",
        "tok",
        now,
        Duration::from_secs(60),
    )
}

fn topics(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.replace("{u}", USER)).collect()
}

#[test]
fn post_adds_put_replaces_and_unsubscribe_removes() {
    let mut c = chan(Instant::now());
    let all = ClientSpec::demo();
    c.subscribe(
        &all,
        &topics(&["v2.users.{u}.presence"]),
        Mode::Add,
        false,
        1000,
    )
    .unwrap();
    c.subscribe(
        &all,
        &topics(&["v2.users.{u}.activity"]),
        Mode::Add,
        false,
        1000,
    )
    .unwrap();
    assert_eq!(c.topics.len(), 2);
    c.subscribe(
        &all,
        &topics(&["v2.users.{u}.routingStatus"]),
        Mode::Replace,
        false,
        1000,
    )
    .unwrap();
    assert_eq!(c.topics, topics(&["v2.users.{u}.routingStatus"]));
    c.subscribe(
        &all,
        &topics(&["v2.users.{u}.routingStatus"]),
        Mode::Remove,
        false,
        1000,
    )
    .unwrap();
    assert!(c.topics.is_empty() && c.expanded.is_empty());
}

#[test]
fn combined_topics_deliver_each_part() {
    let mut c = chan(Instant::now());
    let combined = topics(&["v2.users.{u}?presence&routingStatus"]);
    let out = c
        .subscribe(&ClientSpec::demo(), &combined, Mode::Add, false, 1000)
        .unwrap();
    assert_eq!(out.len(), 1);
    assert!(c.wants(&format!("v2.users.{USER}.presence")));
    assert!(c.wants(&format!("v2.users.{USER}.routingStatus")));
    assert!(!c.wants(&format!("v2.users.{USER}.activity")));
}

#[test]
fn forbidden_topic_fails_the_whole_request_unless_errors_are_ignored() {
    let mut c = chan(Instant::now());
    let limited = ClientSpec::parse("id:secret:").unwrap();
    let wanted = topics(&["v2.users.{u}.presence", "v2.users.{u}.conversations"]);
    let err = c
        .subscribe(&limited, &wanted, Mode::Add, false, 1000)
        .unwrap_err();
    assert!(matches!(err, SubscribeError::Forbidden(ref f) if f.len() == 1));
    assert!(c.topics.is_empty(), "nothing subscribed after a 403");

    let out = c
        .subscribe(&limited, &wanted, Mode::Add, true, 1000)
        .unwrap();
    assert_eq!(out[0].state, Some(TopicState::Permitted));
    assert_eq!(out[1].state, Some(TopicState::Rejected));
    assert_eq!(
        out[1].missing_permissions,
        ["conversation:communication:view"]
    );
    assert_eq!(c.topics, topics(&["v2.users.{u}.presence"]));
}

#[test]
fn unknown_topic_and_cap_are_refused() {
    let mut c = chan(Instant::now());
    let all = ClientSpec::demo();
    let err = c.subscribe(
        &all,
        &topics(&["v2.conversations.{u}"]),
        Mode::Add,
        true,
        1000,
    );
    assert!(matches!(
        err,
        Err(SubscribeError::BadTopic(TopicError::Unknown { .. }))
    ));
    let many = topics(&["v2.users.{u}.presence", "v2.users.{u}.activity"]);
    let err = c.subscribe(&all, &many, Mode::Add, false, 1).unwrap_err();
    assert_eq!(err, SubscribeError::TooMany { count: 2, max: 1 });
}

#[test]
fn victim_is_unconnected_lru_first() {
    let now = Instant::now();
    let mut map = ChannelMap::new();
    let (tx, _rx) = mpsc::channel(1);
    let (ctl, _crx) = mpsc::unbounded_channel();
    for (i, connected) in [(0u64, true), (1, false), (2, false)] {
        let id: Arc<str> = Arc::from(format!("c{i}"));
        let mut rec = ChannelRec::new(id.clone(), "client", "tok", now, Duration::from_secs(60));
        rec.last_used = now + Duration::from_secs(i);
        if connected {
            let peer = "127.0.0.1:1".parse().unwrap();
            rec.socket = Some(SocketLink {
                conn: i,
                data: tx.clone(),
                ctl: ctl.clone(),
                since: now,
                peer,
                due: None,
            });
        }
        map.insert(id, rec);
    }
    assert_eq!(eviction_victim(&map, "client").as_deref(), Some("c1"));
    map.remove("c1");
    map.remove("c2");
    assert_eq!(eviction_victim(&map, "client").as_deref(), Some("c0"));
    assert_eq!(eviction_victim(&map, "other"), None);
}

#[test]
fn timed_fault_ends_by_count_or_time() {
    let now = Instant::now();
    let mut slot = Some(TimedFault {
        value: 5u8,
        until: None,
        remaining: Some(2),
    });
    assert_eq!(TimedFault::take(&mut slot, now), Some(5));
    assert_eq!(TimedFault::take(&mut slot, now), Some(5));
    assert_eq!(TimedFault::take(&mut slot, now), None);
    let mut slot = Some(TimedFault {
        value: 1u8,
        until: Some(now),
        remaining: None,
    });
    assert_eq!(TimedFault::take(&mut slot, now), None);
}
