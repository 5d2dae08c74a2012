//! The `holdline` binary end to end: `sim` announces its URL and serves, `demo` runs and
//! exits by itself, bad flags exit 2.

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::*;

#[test]
fn sim_prints_its_url_first_and_serves_the_api() {
    let mut child = Running(
        Command::new(BIN)
            .args(["sim", "--port", "0", "--rate", "0", "--queues", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let line = first_line(&mut child.0);
    let url = line
        .strip_prefix("holdline-sim listening on ")
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );
    let org: serde_json::Value = reqwest::blocking::get(format!("{url}/sim/org"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(org["queues"].as_array().unwrap().len(), 3);
}

#[test]
fn demo_streams_the_simulated_contact_centre_and_exits_zero() {
    let out = Command::new(BIN)
        .args(["demo", "--duration", "3s", "--rate", "50"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().count() >= 20, "{stdout}");
    assert!(stdout.contains("conv "), "{stdout}");
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    let out = Command::new(BIN)
        .args(["sim", "--heartbeat", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("200ms"));
    let out = Command::new(BIN)
        .args(["sim", "--port", "0", "--rate=-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rate"));
}

#[test]
fn sim_config_file_is_read_and_typos_are_named() {
    let dir = std::env::temp_dir().join(format!("holdline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "heartbeet = \"1s\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["sim", "--port", "0", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeet"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_streams_json_lines_for_queue_conversations_and_exits_zero() {
    let (_sim, url) = sim(&[]);
    let out = listen(
        &url,
        "holdline-demo",
        &["--queue", "Support", "--queue", "Sales", "--duration", "2s"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!records.is_empty(), "no events in 2 s: {stderr}");
    for r in &records {
        assert_eq!(r["kind"], "event");
        assert_eq!(r["id"].as_str().unwrap().len(), 16);
        assert!(r["topic"].as_str().unwrap().ends_with(".conversations"));
        assert!(r["body"]["participants"].is_array());
        assert!(r["received_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r["org"], "default");
    }
}

#[test]
fn sigterm_closes_sockets_flushes_and_exits_zero() {
    let (_sim, url) = sim(&[]);
    let mut child = Running(
        listen(
            &url,
            "holdline-demo",
            &[
                "--queue", "Support", "--queue", "Sales", "--queue", "Billing",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let first = first_line(&mut child.0);
    assert!(first.starts_with(r#"{"kind":"event""#), "{first}");
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "listen did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

#[test]
fn wrong_secret_exits_3_without_printing_the_secret() {
    let (_sim, url) = sim(&[]);
    let out = listen(&url, "s3cr3t-value", &["--queue", "Support"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret is wrong"), "{stderr}");
    assert!(!stderr.contains("s3cr3t-value"), "{stderr}");
}

#[test]
fn a_made_up_region_host_exits_2_naming_the_real_one() {
    let out = Command::new(BIN)
        .args([
            "listen",
            "--region",
            "api.eu.mypurecloud.com",
            "--topic",
            "channel.metadata",
        ])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "x")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "y")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("eu-west-1") && stderr.contains("api.mypurecloud.ie"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_topic_exits_2_with_suggestions() {
    let (_sim, url) = sim(&[]);
    let out = listen(
        &url,
        "holdline-demo",
        &[
            "--topic",
            "v2.conversations.0e185c02-aca1-4a72-82ea-2e78684e2c89",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("v2.routing.queues.{queueId}.conversations")
    );
}

#[test]
fn a_forbidden_topic_exits_4_naming_the_permission() {
    let (_sim, url) = sim(&["--client", "holdline-demo:holdline-demo:"]);
    let topic = "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.conversations";
    let out = listen(&url, "holdline-demo", &["--topic", topic])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("conversation:communication:view"));
}

#[test]
fn missing_credentials_exit_2_naming_the_variables() {
    let out = Command::new(BIN)
        .args([
            "listen",
            "--region",
            "eu-west-1",
            "--topic",
            "channel.metadata",
        ])
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_ID")
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GENESYSCLOUD_OAUTHCLIENT_ID"));
}

#[test]
fn topics_file_and_config_file_are_read() {
    let (_sim, url) = sim(&[]);
    let dir = std::env::temp_dir().join(format!("holdline-listen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let org: serde_json::Value = reqwest::blocking::get(format!("{url}/sim/org"))
        .unwrap()
        .json()
        .unwrap();
    let topics: Vec<String> = org["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            format!(
                "v2.routing.queues.{}.conversations  # {}",
                q["id"].as_str().unwrap(),
                q["name"]
            )
        })
        .collect();
    let topics_file = dir.join("topics.txt");
    std::fs::write(
        &topics_file,
        format!("# every queue\n{}\n", topics.join("\n")),
    )
    .unwrap();
    let config = dir.join("listen.toml");
    std::fs::write(
        &config,
        format!("api_base = \"{url}\"\nclient_id = \"holdline-demo\"\nclient_secret = \"holdline-demo\"\ntopics_file = \"{}\"\nping_interval = \"1s\"\norg = \"acme\"\n", topics_file.display()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "listen",
            "--config",
            config.to_str().unwrap(),
            "--duration",
            "2s",
        ])
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_ID")
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
        .env_remove("GENESYSCLOUD_REGION")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
        .unwrap_or_default();
    let record: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(record["org"], "acme");
    std::fs::write(&config, "pign_interval = \"1s\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["listen", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pign_interval"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_trusts_the_simulators_tls_certificate_with_ca_file() {
    let dir = std::env::temp_dir().join(format!("holdline-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("sim.pem");
    let (_sim, url) = sim(&["--tls", "--tls-cert", cert.to_str().unwrap()]);
    assert!(url.starts_with("https://"), "{url}");
    let out = listen(
        &url,
        "holdline-demo",
        &[
            "--queue",
            "Support",
            "--queue",
            "Sales",
            "--duration",
            "2s",
            "--ca-file",
            cert.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() > 0);
    let untrusted = listen(&url, "holdline-demo", &["--queue", "Support"])
        .output()
        .unwrap();
    assert_eq!(untrusted.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&untrusted.stderr).contains("--ca-file"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// With two sockets per shard, the last records of a burst are usually followed only by
/// the slower socket's copies, which are dropped as duplicates. Those records must still
/// be written at once, not held back until some later event comes along.
#[test]
fn the_end_of_a_burst_is_written_at_once_with_redundant_sockets() {
    let (_sim, url) = quiet_sim();
    let topic = "v2.users.6f1c1e52-9b7e-4c57-8a8f-2f1f5d0a3b11.presence";
    let (_child, lines) = streaming(&url, &["--topic", topic, "--redundancy", "2"]);
    let http = reqwest::blocking::Client::new();
    wait_subscribed(&http, &url, 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    const EVENTS: usize = 3000;
    let fired = firehose(&http, &url, topic, EVENTS);
    assert_eq!(fired["frames"], 2 * EVENTS, "{fired}");
    let mut ids = std::collections::HashSet::new();
    while ids.len() < EVENTS {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_else(|_| panic!("only {} of {EVENTS} events were written", ids.len()));
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(
            ids.insert(record["id"].as_str().unwrap().to_owned()),
            "duplicate {line}"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn stdout_gets_a_wide_pipe_except_with_the_spool() {
    use std::io::{BufRead, BufReader};
    use std::os::fd::AsRawFd;

    // What holdline's request for 1 MiB gets here: above pipe-max-size an unprivileged
    // process is refused and keeps the default 64 KiB.
    let max: i64 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let wide = if root || max >= 1 << 20 {
        1 << 20
    } else {
        64 * 1024
    };

    let (_sim, url) = sim(&[]);
    let spool = std::env::temp_dir().join(format!("holdline-pipe-spool-{}", std::process::id()));
    let spool_arg = spool.to_str().unwrap().to_owned();
    for (extra, want) in [
        (vec![], wide),
        (vec!["--spool", spool_arg.as_str()], 64 * 1024),
    ] {
        let mut args = vec!["--queue", "Support"];
        args.extend(&extra);
        let mut child = Running(
            listen(&url, "holdline-demo", &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = child.0.stdout.take().unwrap();
        let fd = stdout.as_raw_fd();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        // Streaming means holdline is past its start-up, where it sizes the pipe.
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a record within 20 s");
        assert!(line.contains(r#""kind":"event""#), "{line}");
        // SAFETY: `fd` is the read end the thread above still holds open (until the child
        // is killed at the end of this iteration); F_GETPIPE_SZ only reads its size.
        let size = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
        assert_eq!(size, want, "pipe buffer with {extra:?}");
        drop(child);
    }
    let _ = std::fs::remove_dir_all(&spool);
}

/// Reads `n` lines of the child's stdout, then closes it (as `| head -n` does); returns
/// the child's exit code and its stderr.
fn read_then_close(mut cmd: Command, n: usize) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Running(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = child.0.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    {
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        for _ in 0..n {
            lines.next().expect("a line").unwrap();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after its reader went away"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, logs.join().unwrap())
}

#[test]
fn sim_and_demo_end_quietly_when_their_reader_goes_away() {
    let mut sim = Command::new(BIN);
    sim.args(["sim", "--port", "0", "--rate", "100"]);
    let (code, stderr) = read_then_close(sim, 2);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut demo = Command::new(BIN);
    demo.args(["demo", "--rate", "100"]);
    let (code, stderr) = read_then_close(demo, 2);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn listen_fails_when_its_reader_goes_away_so_a_supervisor_restarts_it() {
    let (_sim, url) = sim(&[]);
    let listen = listen(
        &url,
        "holdline-demo",
        &["--queue", "Support", "--queue", "Sales"],
    );
    let (code, stderr) = read_then_close(listen, 3);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("stdout was closed"), "{stderr}");
}

#[test]
fn a_watchdog_shorter_than_a_ping_round_is_refused_with_the_reason() {
    let out = listen(
        "http://127.0.0.1:9",
        "holdline-demo",
        &[
            "--topic",
            "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.presence",
        ],
    )
    .args(["--watchdog", "5s", "--ping-interval", "30s"])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--watchdog") && stderr.contains("40s"),
        "{stderr}"
    );
}

#[test]
fn a_service_that_never_answers_fails_within_the_start_timeout_saying_what_to_check() {
    // Accepts connections and never answers, as a black-holing firewall or proxy would.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let out = listen(
        &url,
        "holdline-demo",
        &[
            "--topic",
            "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.presence",
        ],
    )
    .args(["--start-timeout", "2s"])
    .output()
    .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("could not start within 2s") && stderr.contains("DNS"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    drop(silent);
}

#[test]
fn a_rejected_topic_is_a_record_on_stdout_and_the_rest_stream() {
    // May see presence (no permission needed) but not conversations.
    let (_sim, url) = sim(&["--client", "holdline-demo:holdline-demo:"]);
    let forbidden = "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.conversations";
    let permitted = "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.presence";
    let out = listen(
        &url,
        "holdline-demo",
        &[
            "--topic",
            permitted,
            "--topic",
            forbidden,
            "--duration",
            "2s",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rejected: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "rejected").collect();
    assert_eq!(rejected.len(), 1, "{records:?}");
    assert_eq!(rejected[0]["topic"], forbidden);
    assert_eq!(rejected[0]["org"], "default");
    let missing = rejected[0]["missing_permissions"].as_array().unwrap();
    assert!(
        missing
            .iter()
            .any(|p| p == "conversation:communication:view"),
        "{missing:?}"
    );
}

#[test]
fn help_shows_every_default_and_listen_help_ends_with_examples() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listen = help(&["listen", "--help"]);
    for flag in [
        "--ping-interval",
        "--pong-timeout",
        "--watchdog",
        "--rollover-margin",
        "--backoff-max",
        "--gap-lookback",
        "--closing-grace",
        "--refresh-every",
        "--redundancy",
        "--start-timeout",
    ] {
        let at = listen
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} missing"));
        let next = listen[at + 2..]
            .find("\n      --")
            .map_or(listen.len(), |n| at + 2 + n);
        assert!(
            listen[at..next].contains("[default: "),
            "{flag}: {}",
            &listen[at..next]
        );
    }
    assert!(listen.contains("Examples:") && listen.contains("--api-base http://127.0.0.1:7411"));
    let sim = help(&["sim", "--help"]);
    for flag in [
        "--heartbeat",
        "--channel-ttl",
        "--token-ttl",
        "--rate",
        "--queues",
        "--agents",
        "--rate-limit",
    ] {
        let at = sim
            .find(&format!("{flag} "))
            .unwrap_or_else(|| panic!("{flag} missing"));
        let next = sim[at + 2..]
            .find("\n      --")
            .map_or(sim.len(), |n| at + 2 + n);
        assert!(
            sim[at..next].contains("[default: "),
            "{flag}: {}",
            &sim[at..next]
        );
    }
}

#[test]
fn the_documented_sim_toml_names_every_setting_at_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/sim.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let parsed: holdline_sim::SimConfig = toml::from_str(&text).unwrap();
    let defaults = holdline_sim::SimConfig::default();
    assert_eq!(
        serde_json::to_value(&parsed).unwrap(),
        serde_json::to_value(&defaults).unwrap(),
        "docs/sim.toml shows the defaults"
    );
    let keys = serde_json::to_value(&defaults).unwrap();
    for key in keys.as_object().unwrap().keys() {
        assert!(
            text.contains(&format!("{key} "))
                || text.contains(&format!("[{key}]"))
                || text.contains(&format!("[[{key}]]")),
            "docs/sim.toml does not document {key}"
        );
    }
    let out = Command::new(BIN)
        .args(["sim", "--port", "0", "--quiet", "--config", path])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(out);
    let line = first_line(&mut child.0);
    assert!(line.starts_with("holdline-sim listening on"), "{line}");
}

fn topics(url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["topics", "--api-base", url])
        .args(extra)
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
        .env_remove("GENESYSCLOUD_REGION")
        .output()
        .unwrap()
}

#[test]
fn topics_lists_queues_users_and_the_available_topics() {
    let (_sim, url) = quiet_sim();
    let org: serde_json::Value = reqwest::blocking::get(format!("{url}/sim/org"))
        .unwrap()
        .json()
        .unwrap();
    let support = org["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "Support")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = topics(&url, &["--queue", "support", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["kind"], "queue");
    let wanted = format!("v2.routing.queues.{support}.conversations");
    assert!(
        lines[0]["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| *t == wanted.as_str())
    );
    // Everything, as a table: every queue and every user with their topics.
    let out = topics(&url, &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("queue Support ({support})")),
        "{table}"
    );
    assert!(table.matches("\nuser ").count() >= 5, "{table}");
    let out = topics(&url, &["--available", "--expand", "--json"]);
    let available: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(available.len() >= 20, "{}", available.len());
    assert!(
        available
            .iter()
            .any(|t| t["id"] == "v2.users.{id}.presence")
    );
    let out = topics(&url, &["--queue", "Nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("queues include: "));
    let out = Command::new(BIN)
        .args(["topics", "--api-base", &url])
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "wrong")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "bad credentials are named like listen's"
    );
}

#[test]
fn the_service_host_rules_run_against_the_simulators_own_domain() {
    let dir = std::env::temp_dir().join(format!("holdline-domain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("sim.pem");
    let (_sim, url) = sim(&[
        "--tls",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--domain",
        "example.test",
    ]);
    let port = url.rsplit(':').next().unwrap().to_owned();
    let resolve: Vec<String> = ["api", "login", "streaming"]
        .iter()
        .flat_map(|h| {
            [
                "--resolve".to_owned(),
                format!("{h}.example.test:{port}:127.0.0.1"),
            ]
        })
        .collect();
    let resolve: Vec<&str> = resolve.iter().map(String::as_str).collect();
    let api = format!("https://api.example.test:{port}");
    // The login host comes from the API host by the service's rule (api. → login.), the
    // sockets' host from the connectUri the service hands out (streaming.).
    let out = listen(
        &api,
        "holdline-demo",
        &["--queue", "Support", "--duration", "3s"],
    )
    .args(["--ca-file", cert.to_str().unwrap()])
    .args(&resolve)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with(r#"{"kind":"event""#)),
        "{stderr}"
    );
    // A token asked of the API host is refused there, as a wrong host would be.
    let out = listen(
        &api,
        "holdline-demo",
        &["--queue", "Support", "--duration", "1s"],
    )
    .args(["--ca-file", cert.to_str().unwrap(), "--login-base", &api])
    .args(&resolve)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("login.example.test"), "{stderr}");
    // The doctor takes the same hosts and overrides.
    let out = Command::new(BIN)
        .args(["doctor", "--api-base", &api, "--hold", "2s"])
        .args(["--ca-file", cert.to_str().unwrap()])
        .args(&resolve)
        .env("GENESYSCLOUD_OAUTHCLIENT_ID", "holdline-demo")
        .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "holdline-demo")
        .env_remove("GENESYSCLOUD_REGION")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("login.example.test reachable: 127.0.0.1") && text.contains("by --resolve"),
        "{text}"
    );
    assert!(text.contains("✓ probe: connect"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn verbose_logs_show_heartbeats_and_pongs_with_the_round_trip() {
    let (_sim, url) = sim(&["--heartbeat", "200ms"]);
    let out = listen(
        &url,
        "holdline-demo",
        &["--queue", "Support", "--duration", "2s", "-v"],
    )
    .args([
        "--ping-interval",
        "300ms",
        "--pong-timeout",
        "1s",
        "--watchdog",
        "2s",
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("heartbeat") && l.contains("DEBUG")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("pong") && l.contains("rtt_ms=")),
        "{stderr}"
    );
}

#[test]
fn the_demos_status_line_never_shares_a_line_with_a_log() {
    // A terminal (script's pseudo-terminal), so the demo draws its status line; closing
    // the sockets at the end logs while the line is up.
    let command = format!("{BIN} demo --duration 4s --rate 50");
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("RUST_LOG", "info")
        .output();
    let Ok(out) = out else {
        eprintln!("skipped: no `script` to give the demo a terminal");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sockets up"),
        "the status line was drawn: {text}"
    );
    for line in text.split('\n') {
        // What a terminal shows of the line: everything after its last clear.
        let shown = line.rsplit("\x1b[2K").next().unwrap_or(line);
        let log = ["INFO", "WARN", "ERROR"].iter().any(|l| shown.contains(l));
        assert!(
            !(log && shown.contains("sockets up")),
            "a log line drawn onto the status line: {shown:?}"
        );
    }
    assert!(
        text.split('\n')
            .any(|l| l.contains("INFO") && l.contains("\x1b[2K")),
        "log lines clear the status line first: {text}"
    );
}

#[test]
fn filter_keeps_only_matching_records_before_the_spool() {
    let (_sim, url) = quiet_sim();
    let queue = "v2.routing.queues.0b2c1f5e-3a4d-4e6f-8a9b-0000000000aa.conversations";
    let user = "v2.users.6f1c1e52-9b7e-4c57-8a8f-2f1f5d0a3b11.presence";
    let spool = std::env::temp_dir().join(format!("holdline-filter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let (child, lines) = streaming(
        &url,
        &[
            "--topic",
            queue,
            "--topic",
            user,
            "--redundancy",
            "1",
            "--spool",
            spool.to_str().unwrap(),
            "--filter",
            "topic=v2.routing.queues.*.conversations",
            "--filter",
            "has=/participants",
        ],
    );
    let http = reqwest::blocking::Client::new();
    wait_subscribed(&http, &url, 1);
    let publish = |topic: &str, body: serde_json::Value| {
        let resp = http
            .post(format!("{url}/sim/publish"))
            .json(&serde_json::json!({ "topic": topic, "body": body }))
            .send()
            .unwrap();
        assert!(resp.status().is_success());
    };
    publish(queue, serde_json::json!({ "n": 1, "participants": [] }));
    publish(queue, serde_json::json!({ "n": 2 }));
    publish(user, serde_json::json!({ "n": 3, "participants": [] }));
    publish(queue, serde_json::json!({ "n": 4, "participants": null }));
    publish(queue, serde_json::json!({ "n": 5, "participants": [{}] }));
    let mut kept = Vec::new();
    while kept.last() != Some(&5) {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the last event never came; kept so far {kept:?}"));
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["kind"], "event", "{line}");
        kept.push(record["body"]["n"].as_u64().unwrap());
    }
    assert_eq!(kept, [1, 5]);
    drop(child);
    let _ = std::fs::remove_dir_all(&spool);
}

#[test]
fn a_bad_filter_exits_2_naming_the_clause() {
    let out = listen(
        "http://127.0.0.1:9",
        "x",
        &["--all-queues", "--filter", "kind=events"],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kind=events")
            && stderr.contains("event, gap, rejected, backfill and backfill_done"),
        "{stderr}"
    );
}

/// The block of YAML under the line ending in `key: |`, unindented.
fn yaml_block(text: &str, key: &str) -> String {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_end().ends_with(&format!("{key}: |")));
    let head = lines.next().expect("the block's key");
    let depth = head.len() - head.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > depth)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_deployment_files_configs_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let dir = tempfile::tempdir().unwrap();
    for (file, key) in [
        ("compose.yml", "content"),
        ("k8s/holdline.yaml", "orgs.toml"),
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let config = yaml_block(&text, key);
        assert!(config.contains("[[org]]"), "{file}: {config}");
        let path = dir.path().join("orgs.toml");
        std::fs::write(&path, &config).unwrap();
        let out = Command::new(BIN)
            .args(["doctor", "--offline", "--config"])
            .arg(&path)
            .env("ACME_SECRET", "x")
            .env("GLOBEX_SECRET", "y")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("is valid"),
            "{file}: {said}"
        );
    }
}
