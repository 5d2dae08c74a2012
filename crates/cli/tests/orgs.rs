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

/// The ids of an org's ledger on queue topics, in publication order.
fn queue_ledger(http: &reqwest::blocking::Client, url: &str, org: &str) -> Vec<String> {
    http.get(format!("{url}/sim/ledger?org={org}&limit=1000000"))
        .send()
        .unwrap()
        .text()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| QUEUE_TOPICS(e["topic"].as_str().unwrap()))
        .map(|e| {
            assert_eq!(e["org"], org);
            e["id"].as_str().unwrap().to_owned()
        })
        .collect()
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
            other => panic!("unexpected {other}: {line}"),
        }
    }
    assert!(!events.contains_key("gamma"), "gamma never started");
    assert!(gaps.is_empty(), "no gap in the orgs that run: {gaps:?}");
    // Each good org, against its own ledger: every event from its first received to its
    // last received, none missing.
    let http = reqwest::blocking::Client::new();
    for (name, sim_org) in good {
        let got = &events[name];
        let ledger = queue_ledger(&http, &url, sim_org);
        let got_set: HashSet<&String> = got.iter().collect();
        let at = |id: &String| ledger.iter().position(|l| l == id);
        let first = got.iter().filter_map(at).min().unwrap();
        let last = got.iter().filter_map(at).max().unwrap();
        assert_eq!(got_set.len(), got.len(), "{name}: no duplicates");
        assert!(
            got.iter().all(|id| at(id).is_some()),
            "{name}: only its own org's events"
        );
        let missing: Vec<&String> = ledger[first..=last]
            .iter()
            .filter(|id| !got_set.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "{name}: {} missing of {}",
            missing.len(),
            last - first + 1
        );
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
