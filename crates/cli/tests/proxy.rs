//! `listen`, `doctor` and `topics` through a real HTTP proxy (tinyproxy on a loopback port,
//! found on `PATH` or named by `HOLDLINE_TEST_PROXY`): REST and WebSockets both, plain and
//! over TLS to the simulator, with and without proxy credentials, and the proxy's
//! refusals named. Without tinyproxy the tests say so and pass, except under `CI=true`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

struct Tinyproxy {
    _child: Running,
    url: String,
    log: PathBuf,
    _dir: PathBuf,
}

impl Tinyproxy {
    /// A tinyproxy on a free loopback port, asking for `auth` when given.
    fn start(name: &str, auth: Option<(&str, &str)>) -> Option<Tinyproxy> {
        let bin = std::env::var("HOLDLINE_TEST_PROXY").unwrap_or_else(|_| "tinyproxy".into());
        if Command::new(&bin).arg("-v").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{name}: no tinyproxy (apt-get install tinyproxy, or HOLDLINE_TEST_PROXY)"
            );
            eprintln!("skipped {name}: no tinyproxy on PATH and no HOLDLINE_TEST_PROXY");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("holdline-proxy-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("tinyproxy.log");
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 100\nAllow 127.0.0.1\nLogLevel Connect\nLogFile \"{}\"\n",
            log.display()
        );
        if let Some((user, password)) = auth {
            conf.push_str(&format!("BasicAuth {user} {password}\n"));
        }
        let conf_path = dir.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Running(
            Command::new(&bin)
                .args(["-d", "-c"])
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Tinyproxy {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        })
    }

    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The URL with credentials.
    fn with(&self, user: &str, password: &str) -> String {
        self.url
            .replace("http://", &format!("http://{user}:{password}@"))
    }
}

fn events(stdout: &[u8]) -> usize {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with(r#"{"kind":"event""#))
        .count()
}

#[test]
fn listen_streams_through_a_real_proxy_plain_and_over_tls() {
    let Some(proxy) = Tinyproxy::start("plain", None) else {
        return;
    };
    let (_sim, url) = sim(&[]);
    let sim_port = url.rsplit(':').next().unwrap().to_owned();
    let out = listen(
        &url,
        "holdline-demo",
        &["--queue", "Support", "--queue", "Sales"],
    )
    .args(["--proxy", &proxy.url, "--duration", "3s"])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        events(&out.stdout) > 0,
        "no events through the proxy: {stderr}"
    );
    let log = proxy.log();
    assert!(
        log.contains(&format!("CONNECT 127.0.0.1:{sim_port}")),
        "the sockets tunnelled through the proxy: {log}"
    );
    assert!(
        log.contains("/oauth/token"),
        "REST went through the proxy: {log}"
    );

    // TLS to the simulator through the same proxy, taken from the environment this time.
    let dir = std::env::temp_dir().join(format!("holdline-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("sim.pem");
    let (_tls_sim, tls_url) = sim(&["--tls", "--tls-cert", cert.to_str().unwrap()]);
    let out = listen(&tls_url, "holdline-demo", &["--queue", "Support"])
        .args(["--ca-file", cert.to_str().unwrap(), "--duration", "3s"])
        .env("HTTPS_PROXY", &proxy.url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        events(&out.stdout) > 0,
        "no events over TLS through the proxy: {stderr}"
    );
    let tls_port = tls_url.rsplit(':').next().unwrap();
    assert!(
        proxy
            .log()
            .contains(&format!("CONNECT 127.0.0.1:{tls_port}"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn proxy_credentials_are_sent_and_their_absence_is_named() {
    let Some(proxy) = Tinyproxy::start("auth", Some(("alice", "s3cret"))) else {
        return;
    };
    let (_sim, url) = sim(&[]);
    let out = listen(&url, "holdline-demo", &["--queue", "Support"])
        .args([
            "--proxy",
            &proxy.with("alice", "s3cret"),
            "--duration",
            "3s",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(events(&out.stdout) > 0, "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the proxy password is never logged: {stderr}"
    );

    let out = listen(&url, "holdline-demo", &["--queue", "Support"])
        .args(["--proxy", &proxy.url, "--duration", "3s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("wants credentials (407"), "{stderr}");
    assert!(stderr.contains(&proxy.url), "names the proxy: {stderr}");

    let out = Command::new(BIN)
        .args(["doctor", "--api-base", &url, "--hold", "1s"])
        .args(["--proxy", &proxy.with("alice", "wrong")])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
        .env_remove("GENESYSCLOUD_REGION")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("hop 1 of 2") && text.contains("credentials"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "{text}");

    let out = Command::new(BIN)
        .args(["doctor", "--api-base", &url, "--hold", "2s"])
        .args(["--proxy", &proxy.with("alice", "s3cret")])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
        .env_remove("GENESYSCLOUD_REGION")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("through the proxy"), "{text}");
    assert!(
        text.contains("✓ probe: connect"),
        "the probe socket went through it too: {text}"
    );
}

#[test]
fn a_proxy_that_cannot_be_reached_is_named_and_no_proxy_bypasses_it() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let (_sim, url) = sim(&[]);
    let out = listen(&url, "holdline-demo", &["--queue", "Support"])
        .args(["--proxy", &dead_url, "--duration", "2s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot be reached") && stderr.contains(&dead_url),
        "{stderr}"
    );
    let out = listen(&url, "holdline-demo", &["--queue", "Support"])
        .args(["--duration", "2s"])
        .env("http_proxy", &dead_url)
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "NO_PROXY reaches the simulator directly: {stderr}"
    );
    assert!(events(&out.stdout) > 0, "{stderr}");
}
