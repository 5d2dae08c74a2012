use super::*;

#[test]
fn options_become_librdkafka_properties_and_the_password_stays_hidden() {
    // SAFETY: no other test reads this variable.
    unsafe { std::env::set_var("HOLDLINE_TEST_KAFKA_PASSWORD", "pa55-kafka") };
    let params: Vec<(String, String)> = [
        ("compression", "zstd"),
        ("linger", "20ms"),
        ("security", "sasl_ssl"),
        ("user", "holdline"),
        ("password_env", "HOLDLINE_TEST_KAFKA_PASSWORD"),
        ("kafka.batch.size", "65536"),
        ("timeout", "5s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let c = KafkaConfig::from_parts("b1:9092,b2/genesys.events", &params).unwrap();
    assert_eq!(c.brokers, "b1:9092,b2");
    assert_eq!(c.topic, "genesys.events");
    assert_eq!(c.timeout, Duration::from_secs(5));
    let cc = c.client_config();
    assert_eq!(cc.get("compression.type"), Some("zstd"));
    assert_eq!(cc.get("linger.ms"), Some("20"));
    assert_eq!(cc.get("batch.size"), Some("65536"));
    assert_eq!(cc.get("sasl.password"), Some("pa55-kafka"));
    assert_eq!(cc.get("enable.idempotence"), Some("true"));
    assert_eq!(cc.get("message.timeout.ms"), Some("5000"));
    assert!(!format!("{c:?}").contains("pa55"));
    for bad in ["b1", "b1/", "b1/a b", "u:p@b1/t", "b1:x/t"] {
        assert!(KafkaConfig::from_parts(bad, &[]).is_err(), "{bad}");
    }
    let err =
        KafkaConfig::from_parts("b/t", &[("kafka.sasl.password".into(), "x".into())]).unwrap_err();
    assert!(err.contains("password_env"), "{err}");
    let err = KafkaConfig::from_parts("b/t", &[("acks".into(), "1".into())]).unwrap_err();
    assert!(err.contains("kafka.<librdkafka property>"), "{err}");
}

#[test]
fn a_deliverers_transactional_id_is_its_lease_and_topic_unless_set() {
    let fence = crate::Fence {
        key: "deliver.d".to_owned(),
        token: 3,
    };
    let sink = |rest: &str, params: &[(String, String)]| {
        let mut s = KafkaSink::new(KafkaConfig::from_parts(rest, params).unwrap());
        crate::BlockingSink::fence(&mut s, &fence);
        s.transactional.unwrap()
    };
    // Two Kafka sinks of one deliverer do not fence each other off.
    assert_eq!(sink("b/a", &[]), "holdline-deliver.d-a");
    assert_eq!(sink("b/other", &[]), "holdline-deliver.d-other");
    let set = [("kafka.transactional.id".to_owned(), "mine".to_owned())];
    assert_eq!(sink("b/a", &set), "mine");
}
