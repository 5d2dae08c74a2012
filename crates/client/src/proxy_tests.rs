//! Proxy URLs, curl's environment rules, and CONNECT against canned proxies on loopback.

use super::*;
use tokio::net::TcpListener;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[test]
fn proxy_urls_parse_as_curl_takes_them() {
    let p = Proxy::parse("http://proxy.corp:3128").unwrap();
    assert_eq!(p.address(), "proxy.corp:3128");
    assert_eq!(
        Proxy::parse("proxy.corp").unwrap().address(),
        "proxy.corp:1080"
    );
    assert_eq!(Proxy::parse("[::1]:8080").unwrap().address(), "[::1]:8080");
    assert_eq!(
        Proxy::parse("http://[::1]").unwrap().address(),
        "[::1]:1080"
    );
    let auth = Proxy::parse("http://ali%40ce:p%3Ass@p:1").unwrap();
    assert_eq!(auth.user.as_deref(), Some("ali@ce"));
    assert_eq!(auth.password.as_ref().unwrap().expose(), "p:ss");
    assert!(matches!(
        Proxy::parse("socks5://p:1080"),
        Err(ProxyError::Invalid { why, .. }) if why.contains("only http://")
    ));
    assert!(Proxy::parse("http://p:port").is_err());
}

#[test]
fn a_proxy_password_never_shows() {
    let p = Proxy::parse("http://alice:s3cret@p:3128").unwrap();
    let shown = format!("{p} {p:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("alice@p:3128"), "{shown}");
    let err = Proxy::parse("socks5://alice:s3cret@p")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("s3cret"), "{err}");
    let err = ProxyError::AuthRequired {
        proxy: p.to_string(),
        status: 407,
        reason: "Proxy Authentication Required".into(),
    }
    .to_string();
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn the_environment_is_read_as_curl_reads_it() {
    let rules = ProxyRules::with_env(
        &ProxySetting::Environment,
        env(&[
            ("HTTPS_PROXY", "http://secure:1"),
            ("HTTP_PROXY", "http://ignored:2"),
            ("ALL_PROXY", "http://all:3"),
            ("NO_PROXY", "localhost, .internal.example,10.0.0.7"),
        ]),
    )
    .unwrap();
    let host = |scheme, h| rules.for_url(scheme, h).map(|p| p.address());
    assert_eq!(
        host("wss", "streaming.mypurecloud.ie").as_deref(),
        Some("secure:1")
    );
    assert_eq!(
        host("https", "api.mypurecloud.ie").as_deref(),
        Some("secure:1")
    );
    assert_eq!(
        host("ws", "sim.example").as_deref(),
        Some("all:3"),
        "uppercase HTTP_PROXY is not read, as curl"
    );
    assert_eq!(host("https", "localhost"), None);
    assert_eq!(host("https", "api.internal.example"), None);
    assert_eq!(host("https", "internal.example"), None);
    assert_eq!(
        host("https", "notinternal.example").as_deref(),
        Some("secure:1")
    );
    assert_eq!(host("https", "10.0.0.7"), None);
    let star = ProxyRules::with_env(
        &ProxySetting::Url("http://p:1".into()),
        env(&[("no_proxy", "*")]),
    )
    .unwrap();
    assert_eq!(star.for_url("https", "anything"), None);
    let direct =
        ProxyRules::with_env(&ProxySetting::Direct, env(&[("HTTPS_PROXY", "http://p:1")])).unwrap();
    assert!(!direct.any());
}

/// A one-shot proxy on loopback that answers CONNECT with `reply`; returns its URL and
/// what it was sent.
async fn canned(reply: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://u:pw@{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let head = read_head(&mut tcp).await.unwrap();
        tcp.write_all(reply.as_bytes()).await.unwrap();
        tcp.write_all(b"tunnelled").await.unwrap();
        String::from_utf8(head).unwrap()
    });
    (url, task)
}

#[tokio::test]
async fn connect_opens_a_tunnel_with_basic_credentials() {
    let (url, sent) = canned("HTTP/1.1 200 Connection established\r\n\r\n").await;
    let proxy = Proxy::parse(&url).unwrap();
    let mut tcp = proxy
        .tunnel("streaming.example", 443, Duration::from_secs(5))
        .await
        .unwrap();
    let mut rest = [0u8; 9];
    tcp.read_exact(&mut rest).await.unwrap();
    assert_eq!(
        &rest, b"tunnelled",
        "nothing of the tunnel was read with the head"
    );
    let sent = sent.await.unwrap();
    assert!(
        sent.starts_with("CONNECT streaming.example:443 HTTP/1.1\r\n"),
        "{sent}"
    );
    assert!(
        sent.contains("Proxy-Authorization: Basic dTpwdw==\r\n"),
        "{sent}"
    );
}

#[tokio::test]
async fn the_proxys_refusals_are_named() {
    for (reply, check) in [
        (
            "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
            Box::new(|e: &ProxyError| matches!(e, ProxyError::AuthRequired { .. }))
                as Box<dyn Fn(&ProxyError) -> bool>,
        ),
        (
            "HTTP/1.0 403 Forbidden\r\nX: y\r\n\r\n",
            Box::new(|e: &ProxyError| {
                matches!(e, ProxyError::Refused { status: 403, .. })
                    && e.to_string().contains("forbid")
            }),
        ),
        (
            "HTTP/1.1 502 Bad Gateway\r\n\r\n",
            Box::new(|e: &ProxyError| {
                matches!(e, ProxyError::Refused { status: 502, .. })
                    && e.to_string().contains("could not reach")
            }),
        ),
        (
            "SSH-2.0-OpenSSH\r\n\r\n",
            Box::new(|e: &ProxyError| matches!(e, ProxyError::Garbled { .. })),
        ),
    ] {
        let (url, _) = canned(reply).await;
        let err = Proxy::parse(&url)
            .unwrap()
            .tunnel("h", 443, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(check(&err), "{reply:?}: {err}");
        assert!(
            err.to_string().contains("u@127.0.0.1"),
            "names the proxy: {err}"
        );
    }
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let err = Proxy::parse(&url)
        .unwrap()
        .tunnel("h", 443, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::Unreachable { .. }), "{err}");
}
