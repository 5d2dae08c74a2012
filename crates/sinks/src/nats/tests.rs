use std::time::Duration;

use super::*;

#[test]
fn options_parse_and_secrets_stay_out_of_debug() {
    // SAFETY: no other test reads this variable.
    unsafe { std::env::set_var("HOLDLINE_TEST_NATS_TOKEN", "t0ken-nats") };
    let params = vec![
        ("stream".to_owned(), "GENESYS".to_owned()),
        (
            "token_env".to_owned(),
            "HOLDLINE_TEST_NATS_TOKEN".to_owned(),
        ),
        ("timeout".to_owned(), "3s".to_owned()),
    ];
    let c = NatsConfig::from_parts("a:4222,b:4223/genesys.events", &params).unwrap();
    assert_eq!(c.servers, "a:4222,b:4223");
    assert_eq!(c.subject, "genesys.events");
    assert_eq!(c.stream.as_deref(), Some("GENESYS"));
    assert_eq!(c.timeout, Duration::from_secs(3));
    assert_eq!(
        c.duplicate_window,
        Duration::from_secs(120),
        "2 min unless set"
    );
    assert!(!format!("{c:?}").contains("t0ken"));
    for bad in [
        "localhost",
        "localhost/",
        "localhost/a.*",
        "u:p@localhost/s",
    ] {
        assert!(NatsConfig::from_parts(bad, &[]).is_err(), "{bad}");
    }
    let err = NatsConfig::from_parts("h/s", &[("user".into(), "u".into())]).unwrap_err();
    assert!(err.contains("password_env"), "{err}");
}

#[test]
fn a_subject_template_is_filled_from_each_record() {
    let c = NatsConfig::from_parts("h/holdline.{org}.{family}", &[]).unwrap();
    assert!(c.templated());
    assert_eq!(c.captured(), "holdline.*.*");
    let event = br#"{"kind":"event","id":"00000000000000ff","topic":"v2.routing.queues.0b2c1f5e-3a4d-4e6f-8a9b-000000000001.conversations","received_at":"2026-11-27T10:00:00.000000Z","org":"acme.eu","channel":"c","body":{"org":"no"}}"#;
    let routed = crate::Routed::of(event);
    assert_eq!(
        fill(&c.subject, event, &routed),
        "holdline.acme_eu.queue_conversations"
    );
    let gap = br#"{"kind":"gap","topics":["v2.a"],"from":"2026-11-27T10:00:00Z","to":"2026-11-27T10:00:01Z","org":"o1","reason":"r"}"#;
    assert_eq!(
        fill(&c.subject, gap, &crate::Routed::of(gap)),
        "holdline.o1.gap"
    );
    let old = br#"{"kind":"gap","topics":[],"from":"2026-11-27T10:00:00Z","to":"2026-11-27T10:00:01Z","reason":"r"}"#;
    assert_eq!(
        fill(&c.subject, old, &crate::Routed::of(old)),
        "holdline.unknown.gap"
    );
    for bad in ["h/a.{org}x", "h/a.{topic}"] {
        let err = NatsConfig::from_parts(bad, &[]).unwrap_err();
        assert!(err.contains("{org}"), "{err}");
    }
}
