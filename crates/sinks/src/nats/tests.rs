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
