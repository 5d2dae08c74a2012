use super::*;

#[test]
fn options_parse_and_the_password_stays_out_of_debug() {
    // SAFETY: no other test reads this variable.
    unsafe { std::env::set_var("HOLDLINE_TEST_REDIS_PASSWORD", "hunter2-redis") };
    let params = vec![
        ("maxlen".to_owned(), "5000".to_owned()),
        ("db".to_owned(), "2".to_owned()),
        (
            "password_env".to_owned(),
            "HOLDLINE_TEST_REDIS_PASSWORD".to_owned(),
        ),
    ];
    let c = RedisConfig::from_parts("cache.local:6380/genesys", &params).unwrap();
    assert_eq!((c.host.as_str(), c.port), ("cache.local", 6380));
    assert_eq!(c.stream, "genesys");
    assert_eq!((c.db, c.maxlen), (2, Some(5000)));
    assert!(!format!("{c:?}").contains("hunter2"));
    let c = RedisConfig::from_parts("localhost/s", &[("maxlen".into(), "0".into())]).unwrap();
    assert_eq!((c.port, c.maxlen), (6379, None));
    for bad in [
        "localhost",
        "localhost/",
        "u:p@localhost/s",
        "localhost:x/s",
    ] {
        assert!(RedisConfig::from_parts(bad, &[]).is_err(), "{bad}");
    }
    let err = RedisConfig::from_parts("h/s", &[("colour".into(), "red".into())]).unwrap_err();
    assert!(err.contains("maxlen"), "{err}");
}
