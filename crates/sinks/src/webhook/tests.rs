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

/// A receiver that keeps the largest fencing token it has seen, answering 409 below it.
async fn fencing_receiver() -> (String, tokio::task::JoinHandle<Vec<u64>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut largest, mut written) = (0u64, Vec::new());
        for _ in 0..3 {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body by its length.
            let (head, body_len) = loop {
                let n = conn.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    break (head, end + 4 + len);
                }
            };
            while req.len() < body_len {
                let n = conn.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            let token: u64 = head
                .lines()
                .find_map(|l| l.strip_prefix("x-holdline-fence: "))
                .map(|v| v.trim().parse().unwrap())
                .expect("a fenced POST carries its token");
            assert!(
                head.contains("x-holdline-fence-key: deliver.test"),
                "{head}"
            );
            let status = if token < largest {
                "409 Conflict"
            } else {
                largest = token;
                written.push(token);
                "200 OK"
            };
            let resp =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            conn.write_all(resp.as_bytes()).await.unwrap();
        }
        written
    });
    (url, task)
}

#[tokio::test]
async fn a_fenced_webhook_sends_its_token_and_a_409_fences_it_off() {
    let (url, receiver) = fencing_receiver().await;
    let config = WebhookConfig::from_parts(&url, &[]).unwrap();
    let mut old = WebhookSink::new(config.clone());
    let mut new = WebhookSink::new(config);
    let fence = |token| crate::Fence {
        key: "deliver.test".into(),
        token,
    };
    let batch = [Bytes::from_static(b"{\"kind\":\"event\"}\n")];
    old.fence(&fence(4));
    old.deliver(&batch).await.unwrap();
    new.fence(&fence(6));
    new.deliver(&batch).await.unwrap();
    match old.deliver(&batch).await {
        Err(SinkError::Fenced { detail, .. }) => assert!(detail.contains("409"), "{detail}"),
        other => panic!("the old writer was not fenced off: {other:?}"),
    }
    assert_eq!(receiver.await.unwrap(), vec![4, 6]);
}
