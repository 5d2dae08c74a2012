//! `listen` with `[[org]]` tables against `holdline sim --orgs`: every org streams on its
//! own client, and one org that cannot start touches no other org's output.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

const QUEUE_TOPICS: fn(&str) -> bool =
    |t| t.starts_with("v2.routing.queues.") && t.ends_with(".conversations");

fn config(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let secret_file = dir.join("beta.secret");
    std::fs::write(&secret_file, "secret-2\n").unwrap();
    let text = format!(
        r#"
redundancy = 2
[[org]]
name = "alpha"
api_base = "{url}"
client_id = "org-1"
client_secret_env = "ALPHA_SECRET"
all_queues = true

[[org]]
name = "beta"
api_base = "{url}"
client_id = "org-2"
client_secret_file = "{}"
all_queues = true
redundancy = 1

[[org]]
name = "gamma"
api_base = "{url}"
client_id = "org-3"
client_secret_env = "GAMMA_SECRET"
all_queues = true

[[org]]
name = "delta"
api_base = "{url}"
client_id = "org-4"
client_secret = "secret-4"
all_queues = true
"#,
        secret_file.display()
    );
    let path = dir.join("listen.toml");
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn listen_orgs(path: &std::path::Path, gamma_secret: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["listen", "--config"])
        .arg(path)
        .args(["--log-format", "json"])
        .env("ALPHA_SECRET", "secret-1")
        .env("GAMMA_SECRET", gamma_secret)
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_ID")
        .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
        .env_remove("GENESYSCLOUD_REGION")
        .env_remove("RUST_LOG");
    cmd
}

/// What `listen` wrote, by org.
#[derive(Default)]
struct Output {
    events: HashMap<String, Vec<String>>,
    /// Events by org and topic family prefix, for topics beyond queue conversations.
    topics: HashMap<String, Vec<String>>,
    gaps: Vec<serde_json::Value>,
    rejected: Vec<serde_json::Value>,
    /// Back-fill records (a gap's back-fill still settling at a stop ends as failed).
    backfills: Vec<serde_json::Value>,
}

impl Output {
    fn take(&mut self, line: &str) {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let org = record["org"].as_str().unwrap_or_default().to_owned();
        match record["kind"].as_str().unwrap() {
            "event" => {
                let topic = record["topic"].as_str().unwrap();
                if QUEUE_TOPICS(topic) {
                    self.events
                        .entry(org)
                        .or_default()
                        .push(record["id"].as_str().unwrap().to_owned());
                } else {
                    self.topics.entry(org).or_default().push(topic.to_owned());
                }
            }
            "gap" => self.gaps.push(record),
            "rejected" => self.rejected.push(record),
            "backfill" | "backfill_done" => self.backfills.push(record),
            other => panic!("unexpected {other}: {line}"),
        }
    }

    fn count(&self, org: &str) -> usize {
        self.events.get(org).map_or(0, Vec::len)
    }

    /// Reads records until `done` holds, failing after `within`.
    fn read_until(
        &mut self,
        lines: &std::sync::mpsc::Receiver<String>,
        within: Duration,
        what: &str,
        done: impl Fn(&Output) -> bool,
    ) {
        let deadline = Instant::now() + within;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: counts so far {:?}, gaps {:?}",
                self.events
                    .iter()
                    .map(|(k, v)| (k, v.len()))
                    .collect::<Vec<_>>(),
                self.gaps
            );
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
                self.take(&line);
            }
        }
    }

    /// Reads every record until the output ends.
    fn read_to_end(&mut self, lines: &std::sync::mpsc::Receiver<String>) {
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
            self.take(&line);
        }
    }

    fn gaps_of(&self, org: &str) -> Vec<&serde_json::Value> {
        self.gaps.iter().filter(|g| g["org"] == org).collect()
    }
}

/// `org`'s events against sim org `sim_org`'s ledger: none missing from the first
/// received to the last (but those published inside one of `gaps`), no duplicates, none
/// from another org.
fn assert_whole(
    http: &reqwest::blocking::Client,
    url: &str,
    org: &str,
    sim_org: &str,
    got: &[String],
    gaps: &[&serde_json::Value],
) {
    let ledger = queue_ledger(http, url, sim_org);
    let time = |v: &serde_json::Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    let spans: Vec<_> = gaps
        .iter()
        .map(|g| (time(&g["from"]), time(&g["to"])))
        .collect();
    let got_set: HashSet<&String> = got.iter().collect();
    let at = |id: &String| ledger.iter().position(|(l, _)| l == id);
    let first = got.iter().filter_map(at).min().unwrap();
    let last = got.iter().filter_map(at).max().unwrap();
    assert_eq!(got_set.len(), got.len(), "{org}: no duplicates");
    assert!(
        got.iter().all(|id| at(id).is_some()),
        "{org}: only its own org's events"
    );
    let missing = ledger[first..=last]
        .iter()
        .filter(|(id, _)| !got_set.contains(id))
        .filter(|(_, at)| !spans.iter().any(|(from, to)| from <= at && at <= to))
        .count();
    assert_eq!(
        missing,
        0,
        "{org}: {missing} missing of {} outside its gaps {spans:?}",
        last - first + 1
    );
}

/// The base URL of `/metrics` from the log, and the lines logged before it.
fn metrics_base(log: &std::sync::mpsc::Receiver<String>) -> (String, Vec<String>) {
    let mut logged = Vec::new();
    loop {
        let line = log
            .recv_timeout(Duration::from_secs(20))
            .expect("no metrics address logged");
        if let Some(at) = line.find("metrics on http://") {
            let rest = &line[at + "metrics on ".len()..];
            return (rest[..rest.find("/metrics").unwrap()].to_owned(), logged);
        }
        logged.push(line);
    }
}

/// Waits for a log line that `matches`, failing after `within`.
fn wait_logged(
    log: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    within: Duration,
    what: &str,
    matches: impl Fn(&str) -> bool,
) -> String {
    if let Some(line) = seen.iter().find(|l| matches(l)) {
        return line.clone();
    }
    let deadline = Instant::now() + within;
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("never logged: {what}"));
        seen.push(line.clone());
        if matches(&line) {
            return line;
        }
    }
}

/// The connected sockets of a sim org: channel id and the client's address.
fn connected(
    http: &reqwest::blocking::Client,
    url: &str,
    sim_org: &str,
) -> HashSet<(String, String)> {
    let list: Vec<serde_json::Value> = http
        .get(format!("{url}/sim/channels?org={sim_org}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    list.iter()
        .filter(|c| c["connected"] == true)
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["peer"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn fault(http: &reqwest::blocking::Client, url: &str, sim_org: &str, fault: serde_json::Value) {
    let resp = http
        .post(format!("{url}/sim/faults?org={sim_org}"))
        .json(&fault)
        .send()
        .unwrap();
    assert!(
        resp.status().is_success(),
        "{fault}: {}",
        resp.text().unwrap()
    );
}

fn org_table(name: &str, url: &str, sim_org: &str, n: usize, extra: &str) -> String {
    format!(
        "[[org]]\nname = \"{name}\"\napi_base = \"{url}\"\nclient_id = \"{sim_org}\"\n\
         client_secret_env = \"SECRET_{n}\"\nall_queues = true\n{extra}\n"
    )
}

/// `listen` over a config at `path` with `SECRET_1` … `SECRET_n` set to the sim's secrets.
fn listen_with_secrets(path: &std::path::Path, n: usize) -> Command {
    let mut cmd = listen_orgs(path, "unused");
    for i in 1..=n {
        cmd.env(format!("SECRET_{i}"), format!("secret-{i}"));
    }
    cmd.args(["--metrics-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn an_org_with_a_wrong_secret_leaves_every_other_org_whole() {
    let (_sim, url) = sim(&["--orgs", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), &url);
    let mut child = Running(
        listen_orgs(&path, "not-the-secret")
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(&mut child.0);
    let log = log_lines_of(&mut child.0);
    let mut logged = Vec::new();
    let base = loop {
        let line = log
            .recv_timeout(Duration::from_secs(20))
            .expect("no metrics address logged");
        if let Some(at) = line.find("metrics on http://") {
            let rest = &line[at + "metrics on ".len()..];
            break rest[..rest.find("/metrics").unwrap()].to_owned();
        }
        logged.push(line);
    };
    let good = [("alpha", "org-1"), ("beta", "org-2"), ("delta", "org-4")];
    let mut events: HashMap<String, Vec<String>> = HashMap::new();
    let mut gaps: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Enough traffic in every good org that a loss would show.
    while !good
        .iter()
        .all(|(name, _)| events.get(*name).is_some_and(|e| e.len() >= 150))
    {
        assert!(
            Instant::now() < deadline,
            "counts so far: {:?}",
            events.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
        );
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        match record["kind"].as_str().unwrap() {
            "event" => events
                .entry(record["org"].as_str().unwrap().to_owned())
                .or_default()
                .push(record["id"].as_str().unwrap().to_owned()),
            "gap" => gaps.push(record),
            "backfill" | "backfill_done" => {}
            other => panic!("unexpected {other}: {line}"),
        }
    }
    assert!(!events.contains_key("gamma"), "gamma never started");
    assert!(gaps.is_empty(), "no gap in the orgs that run: {gaps:?}");
    // Each good org, against its own ledger: every event from its first received to its
    // last received, none missing.
    let http = reqwest::blocking::Client::new();
    for (name, sim_org) in good {
        assert_whole(&http, &url, name, sim_org, &events[name], &[]);
    }
    // Per org in /metrics and /readyz: gamma is the one not ready.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for (name, _) in good {
        assert!(
            text.contains(&format!(
                r#"holdline_events_emitted_total{{org="{name}",family="queue.conversations"}}"#
            )),
            "{text}"
        );
    }
    assert!(!text.contains("not-the-secret"));
    let resp = http.get(format!("{base}/readyz")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let ready: serde_json::Value = resp.json().unwrap();
    for (name, _) in good {
        assert_eq!(ready["orgs"][name]["ready"], true, "{ready}");
    }
    assert_eq!(ready["orgs"]["gamma"]["ready"], false, "{ready}");
    assert!(
        ready["orgs"]["gamma"]["reason"]
            .as_str()
            .unwrap()
            .contains("secret is wrong"),
        "{ready}"
    );
    // gamma's trouble is in the log, by name, as an error.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut logged = logged.into_iter();
    loop {
        let line = logged
            .next()
            .map(Ok)
            .unwrap_or_else(|| log.recv_timeout(deadline.saturating_duration_since(Instant::now())))
            .expect("no ERROR for gamma in the log");
        if line.contains("\"gamma\"") && line.contains("ERROR") && line.contains("could not start")
        {
            assert!(!line.contains("not-the-secret"), "{line}");
            break;
        }
    }
}

#[test]
fn listen_fails_when_no_org_can_start() {
    let (_sim, url) = sim(&["--orgs", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[org]]\nname = \"a\"\napi_base = \"{url}\"\nclient_id = \"org-1\"\nclient_secret_env = \"GAMMA_SECRET\"\nall_queues = true\n\
         [[org]]\nname = \"b\"\napi_base = \"{url}\"\nclient_id = \"nobody\"\nclient_secret_env = \"GAMMA_SECRET\"\nall_queues = true\n"
    );
    let path = dir.path().join("listen.toml");
    std::fs::write(&path, text).unwrap();
    let out = listen_orgs(&path, "x9-not-it")
        .arg("--start-timeout")
        .arg("20s")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no org could start"), "{stderr}");
    assert!(
        stderr.contains("a: ") && stderr.contains("b: "),
        "each org named: {stderr}"
    );
    assert!(!stderr.contains("x9-not-it"), "{stderr}");
}

#[test]
fn org_tables_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listen.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = listen_orgs(&path, "x").output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let base = "api_base = \"http://127.0.0.1:9\"\nclient_id = \"c\"\n";
    let err = check(&format!(
        "[[org]]\nname = \"a\"\n{base}client_secret = \"hunter2\"\n"
    ));
    assert!(
        err.contains("chmod 600") && !err.contains("hunter2"),
        "{err}"
    );
    let err = check(&format!(
        "[[org]]\nname = \"a b\"\n{base}client_secret_env = \"X\"\n"
    ));
    assert!(err.contains("letters, digits"), "{err}");
    let err = check(&format!(
        "[[org]]\nname = \"a\"\n{base}client_secret_env = \"X\"\n[[org]]\nname = \"a\"\n{base}client_secret_env = \"X\"\n"
    ));
    assert!(err.contains("two orgs are named"), "{err}");
    let err = check(&format!(
        "[[org]]\nname = \"a\"\n{base}client_secret_env = \"UNSET_SECRET_VAR\"\n"
    ));
    assert!(
        err.contains("UNSET_SECRET_VAR") && err.contains("not set"),
        "{err}"
    );
    let err = check(&format!(
        "[[org]]\nname = \"a\"\n{base}client_secret_env = \"X\"\nqueue = [\"Support\"]\n"
    ));
    assert!(err.contains("queue"), "unknown keys are refused: {err}");
}

/// Stops `listen` with SIGTERM, reads what is left and checks it exited cleanly.
fn stop(child: &mut Running, lines: &std::sync::mpsc::Receiver<String>, out: &mut Output) {
    signal(child.0.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "listen did not stop within 10 s of SIGTERM"
        );
        while let Ok(line) = lines.try_recv() {
            out.take(&line);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    out.read_to_end(lines);
    assert!(status.success(), "listen exited with {status}");
}

#[test]
fn one_orgs_trouble_never_reaches_another() {
    let (_sim, url) = sim(&["--orgs", "6"]);
    let http = reqwest::blocking::Client::new();
    // p's client may list queues but not see their conversations.
    fault(
        &http,
        &url,
        "org-5",
        serde_json::json!({"kind": "grant", "client": "org-5", "permissions": ["routing:queue:view"]}),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listen.toml");
    let names = ["a", "b", "r", "t", "p", "w"];
    let text: String = names
        .iter()
        .enumerate()
        .map(|(i, name)| org_table(name, &url, &format!("org-{}", i + 1), i + 1, ""))
        .collect();
    std::fs::write(&path, format!("redundancy = 2\n{text}")).unwrap();
    let mut child = Running(
        listen_with_secrets(&path, 5)
            .env("SECRET_6", "not-the-secret")
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(&mut child.0);
    let log = log_lines_of(&mut child.0);
    let (base, mut logged) = metrics_base(&log);
    let mut out = Output::default();
    out.read_until(
        &lines,
        Duration::from_secs(60),
        "every good org streams",
        |o| ["a", "b", "r", "t"].iter().all(|n| o.count(n) >= 60),
    );
    // r's client is deleted; t's REST answers 429 for 15 s while its channels are evicted,
    // so it must create new ones through the storm.
    fault(
        &http,
        &url,
        "org-3",
        serde_json::json!({"kind": "revoke_client", "client": "org-3"}),
    );
    fault(
        &http,
        &url,
        "org-4",
        serde_json::json!({"kind": "rest_errors", "status": 429, "for_ms": 15000, "retry_after": 1}),
    );
    fault(&http, &url, "org-4", serde_json::json!({"kind": "evict"}));
    let marks = (out.count("a"), out.count("b"), out.count("t"));
    out.read_until(
        &lines,
        Duration::from_secs(90),
        "a and b go on; t receives again after the storm",
        |o| {
            o.count("a") >= marks.0 + 150
                && o.count("b") >= marks.1 + 150
                && o.count("t") > marks.2 + 20
                && !o.gaps_of("t").is_empty()
        },
    );
    wait_logged(
        &log,
        &mut logged,
        Duration::from_secs(10),
        "an ERROR for r",
        |l| l.contains("ERROR") && l.contains("\"r\"") && l.contains("not receiving"),
    );
    let ready: serde_json::Value = http
        .get(format!("{base}/readyz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    for name in ["a", "b"] {
        assert_eq!(ready["orgs"][name]["ready"], true, "{ready}");
    }
    for name in ["r", "p", "w"] {
        assert_eq!(ready["orgs"][name]["ready"], false, "{ready}");
    }
    let reason = |name: &str| ready["orgs"][name]["reason"].as_str().unwrap().to_owned();
    assert!(reason("p").contains("permission"), "{ready}");
    assert!(reason("w").contains("secret is wrong"), "{ready}");
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(text.contains("holdline_org_up{org=\"a\"} 1"), "{text}");
    assert!(
        text.contains("holdline_org_up{org=\"w\"} 0"),
        "an org that never started: {text}"
    );
    // `holdline top` shows each org on its line, and one org in full.
    let top = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["top", "--once", &base])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let view = top(&[]);
    let line = |org: &str| {
        view.lines()
            .find(|l| l.split_whitespace().next() == Some(org))
            .unwrap_or_else(|| panic!("no line for {org}: {view}"))
            .to_owned()
    };
    assert!(line("a").ends_with("ready"), "{view}");
    assert!(
        line("w").contains("NOT READY") && line("w").contains("secret is wrong"),
        "{view}"
    );
    assert!(view.contains("6 orgs"), "{view}");
    let one = top(&["--org", "b"]);
    assert!(
        one.contains("(org b)") && one.contains("queue.conversations"),
        "{one}"
    );
    stop(&mut child, &lines, &mut out);

    for (name, sim_org) in [("a", "org-1"), ("b", "org-2")] {
        assert_whole(&http, &url, name, sim_org, &out.events[name], &[]);
        assert!(
            out.gaps_of(name).is_empty(),
            "{name}: {:?}",
            out.gaps_of(name)
        );
    }
    // The troubled orgs' gaps are theirs alone, and say what happened.
    assert!(
        out.gaps.iter().all(|g| g["org"] == "r" || g["org"] == "t"),
        "{:?}",
        out.gaps
    );
    assert!(!out.gaps_of("r").is_empty(), "r's lost time is a gap");
    assert!(!logged.iter().any(|l| l.contains("not-the-secret")));
}

#[test]
fn sighup_adds_removes_and_moves_orgs_without_touching_the_others() {
    let (_sim, url) = sim(&["--orgs", "4"]);
    let http = reqwest::blocking::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listen.toml");
    let write = |text: String| {
        let tmp = dir.path().join("listen.toml.new");
        std::fs::write(&tmp, format!("redundancy = 2\n{text}")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    write(
        org_table("alpha", &url, "org-1", 1, "")
            + &org_table("beta", &url, "org-2", 2, "")
            + &org_table("gamma", &url, "org-3", 3, ""),
    );
    let mut child = Running(listen_with_secrets(&path, 4).spawn().unwrap());
    let lines = lines_of(&mut child.0);
    let log = log_lines_of(&mut child.0);
    let (base, mut logged) = metrics_base(&log);
    let mut out = Output::default();
    out.read_until(&lines, Duration::from_secs(60), "every org streams", |o| {
        ["alpha", "beta", "gamma"].iter().all(|n| o.count(n) >= 60)
    });
    let before = [
        connected(&http, &url, "org-1"),
        connected(&http, &url, "org-2"),
    ];
    assert!(before.iter().all(|b| b.len() >= 2), "{before:?}");
    let gamma_channels: Vec<String> = connected(&http, &url, "org-3")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // beta gains presence topics, gamma goes, delta comes; alpha stays as it is.
    let org2: serde_json::Value = http
        .get(format!("{url}/sim/org?org=org-2"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let presence: Vec<String> = org2["agents"].as_array().unwrap()[..3]
        .iter()
        .map(|a| format!("v2.users.{}.presence", a["id"].as_str().unwrap()))
        .collect();
    write(
        org_table("alpha", &url, "org-1", 1, "")
            + &org_table("beta", &url, "org-2", 2, &format!("topics = {presence:?}"))
            + &org_table("delta", &url, "org-4", 4, ""),
    );
    let marks = (out.count("alpha"), out.count("beta"));
    signal(child.0.id(), "HUP");
    let line = wait_logged(
        &log,
        &mut logged,
        Duration::from_secs(10),
        "the reload",
        |l| l.contains("SIGHUP: orgs reloaded"),
    );
    assert!(
        line.contains("\"added\":1")
            && line.contains("\"removed\":1")
            && line.contains("\"moved\":1"),
        "{line}"
    );
    out.read_until(
        &lines,
        Duration::from_secs(60),
        "delta streams and the others go on",
        |o| {
            o.count("delta") >= 60
                && o.count("alpha") >= marks.0 + 100
                && o.count("beta") >= marks.1 + 100
        },
    );
    // gamma's sockets were closed with 1000.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list: Vec<serde_json::Value> = http
            .get(format!("{url}/sim/channels?org=org-3"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let closed = gamma_channels.iter().all(|id| {
            list.iter().any(|c| {
                c["id"] == id.as_str() && c["connected"] == false && c["client_close_code"] == 1000
            })
        });
        if closed {
            break;
        }
        assert!(Instant::now() < deadline, "gamma's sockets: {list:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // alpha's and beta's sockets are the ones they had, and beta holds its new topics.
    let after = [
        connected(&http, &url, "org-1"),
        connected(&http, &url, "org-2"),
    ];
    for (b, a) in before.iter().zip(&after) {
        assert!(b.is_subset(a), "reconnected: before {b:?}, after {a:?}");
    }
    let beta_topics: HashSet<String> = sim_channels(&http, &url)
        .iter()
        .filter(|c| c["client"] == "org-2")
        .flat_map(|c| c["topics"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert!(
        presence.iter().all(|t| beta_topics.contains(t)),
        "beta subscribed {presence:?}: {beta_topics:?}"
    );
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!text.contains("org=\"gamma\""), "gamma's series are gone");
    assert!(text.contains("org=\"delta\""));
    assert!(out.gaps.is_empty(), "{:?}", out.gaps);

    // delta's redundancy changes: its client starts again after the old one closed, and
    // a gap covers the moment between; the others are not touched.
    write(
        org_table("alpha", &url, "org-1", 1, "")
            + &org_table("beta", &url, "org-2", 2, &format!("topics = {presence:?}"))
            + &org_table("delta", &url, "org-4", 4, "redundancy = 1"),
    );
    let marks = (out.count("alpha"), out.count("delta"));
    signal(child.0.id(), "HUP");
    let line = wait_logged(
        &log,
        &mut logged,
        Duration::from_secs(10),
        "the second reload",
        |l| l.contains("SIGHUP: orgs reloaded") && l.contains("\"restarted\":1"),
    );
    assert!(
        line.contains("\"added\":0") && line.contains("\"moved\":0"),
        "{line}"
    );
    out.read_until(
        &lines,
        Duration::from_secs(60),
        "delta receives again",
        |o| {
            !o.gaps_of("delta").is_empty()
                && o.count("delta") >= marks.1 + 60
                && o.count("alpha") >= marks.0 + 60
        },
    );
    let after_restart = connected(&http, &url, "org-1");
    assert!(
        before[0].is_subset(&after_restart),
        "alpha untouched by delta's restart"
    );
    assert_eq!(
        connected(&http, &url, "org-4").len(),
        1,
        "delta on one socket now"
    );
    stop(&mut child, &lines, &mut out);
    let delta_gaps = out.gaps_of("delta");
    assert_eq!(delta_gaps.len(), 1, "{delta_gaps:?}");
    assert!(
        delta_gaps[0]["reason"]
            .as_str()
            .unwrap()
            .contains("settings changed")
            && !delta_gaps[0]["topics"].as_array().unwrap().is_empty(),
        "{delta_gaps:?}"
    );
    assert!(
        out.gaps.iter().all(|g| g["org"] == "delta"),
        "{:?}",
        out.gaps
    );
    for (name, sim_org) in [("alpha", "org-1"), ("beta", "org-2")] {
        assert_whole(&http, &url, name, sim_org, &out.events[name], &[]);
    }
    assert_whole(
        &http,
        &url,
        "delta",
        "org-4",
        &out.events["delta"],
        &delta_gaps,
    );
    while let Ok(line) = log.recv_timeout(Duration::from_secs(2)) {
        logged.push(line);
    }
    let log_text = logged.join("\n");
    assert!(!log_text.contains("secret-"), "no secret in the log");
}
