//! The `holdline` binary end to end: `sim` announces its URL and serves, `demo` runs and
//! exits by itself, bad flags exit 2.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_holdline");

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line of the child's stdout, waiting at most 10 s.
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("no first line within 10 s")
}

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
fn demo_runs_for_its_duration_and_exits_zero() {
    let out = Command::new(BIN)
        .args(["demo", "--duration", "2s", "--rate", "50"])
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
