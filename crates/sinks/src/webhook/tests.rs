use super::*;

#[test]
fn the_signature_is_hex_hmac_sha256() {
    // RFC 4231 test case 2.
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
    assert_eq!(
        signature(&key, b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn options_parse_and_the_secret_stays_out_of_debug() {
    // SAFETY: tests in this module do not read this variable concurrently.
    unsafe { std::env::set_var("HOLDLINE_TEST_HOOK_SECRET", "s3cr3t-hook") };
    let params = vec![
        (
            "secret_env".to_owned(),
            "HOLDLINE_TEST_HOOK_SECRET".to_owned(),
        ),
        ("attempts".to_owned(), "3".to_owned()),
        ("dead_letter".to_owned(), "/tmp/dead.jsonl".to_owned()),
    ];
    let c = WebhookConfig::from_parts("https://example.com/hook", &params).unwrap();
    assert_eq!(c.url, "https://example.com/hook");
    assert_eq!(c.attempts, Some(3));
    assert!(!format!("{c:?}").contains("s3cr3t"));
    let err =
        WebhookConfig::from_parts("https://x", &[("attempts".into(), "3".into())]).unwrap_err();
    assert!(err.contains("dead_letter"), "{err}");
    let err = WebhookConfig::from_parts(
        "https://x",
        &[("secret_env".into(), "HOLDLINE_NO_SUCH_VAR".into())],
    )
    .unwrap_err();
    assert!(err.contains("HOLDLINE_NO_SUCH_VAR"), "{err}");
}

#[tokio::test]
async fn logs_and_metrics_name_the_hook_without_its_path() {
    let c = WebhookConfig::from_parts("https://hooks.example.com/services/T0/B0/s3cr3tpath", &[])
        .unwrap();
    let sink = WebhookSink::new(c);
    assert_eq!(sink.label(), "webhook:https://hooks.example.com/…");
    assert!(
        sink.name().contains("s3cr3tpath"),
        "the spool cursor keeps the full name"
    );
    // Nothing listens on port 9 (discard): the error names the label only.
    let mut sink9 = WebhookSink::new(
        WebhookConfig::from_parts("http://127.0.0.1:9/s3cr3tpath?x=1", &[]).unwrap(),
    );
    let err = sink9
        .deliver(&[Bytes::from_static(b"{}\n")])
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cr3t"), "{err}");
}
