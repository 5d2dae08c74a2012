//! The runner end to end on a small workload: the embedded simulator over real loopback
//! sockets, this workspace's `holdline` and the raw floor, every table produced and every
//! run checked against the simulator's ledger. Keeps `docs/BENCHMARKS.md` reproducible:
//! a change that breaks the runner, the record format or the ledger check fails here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `holdline` binary: `HOLDLINE_BIN`, else the one `cargo test --workspace` builds
/// next to this test.
fn holdline() -> PathBuf {
    if let Some(path) = std::env::var_os("HOLDLINE_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/runner-<hash> → target/<profile>/holdline
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .join("holdline");
    assert!(
        path.exists(),
        "no holdline binary at {}: run `cargo test --workspace` (which builds it), \
         `cargo build -p holdline` first, or set HOLDLINE_BIN",
        path.display()
    );
    path
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("holdline-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `holdline-bench` with `args`; its stdout (the report) once it exits successfully.
fn bench(args: &[&str], within: Duration) -> String {
    let scratch_out = Scratch::new("out");
    let out_path = scratch_out.0.join("stdout");
    let err_path = scratch_out.0.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdline-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting holdline-bench");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "holdline-bench still running after {within:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "holdline-bench failed ({status}):\n{stderr}"
    );
    std::fs::read_to_string(&out_path).unwrap()
}

/// The rows of the Markdown table whose header starts with `header`.
fn table<'a>(report: &'a str, header: &str) -> Vec<Vec<&'a str>> {
    let mut lines = report.lines().skip_while(|l| !l.starts_with(header));
    assert!(lines.next().is_some(), "no table {header:?} in:\n{report}");
    lines
        .skip(1) // the |---| line
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect()
}

#[test]
fn a_small_run_produces_every_table_with_every_run_counted() {
    let scratch = Scratch::new("run");
    let doc = scratch.0.join("BENCHMARKS.md");
    std::fs::write(
        &doc,
        "# Kept above\n<!-- holdline-bench results: begin -->\nstale\n\
         <!-- holdline-bench results: end -->\n## Kept below\n",
    )
    .unwrap();
    let holdline = holdline();
    let report = bench(
        &[
            "run",
            "--events",
            "2000",
            "--topics",
            "20",
            "--runs",
            "1",
            "--clients",
            "holdline-r1,holdline-r2,holdline-null,holdline-spool,floor",
            "--latency-rates",
            "500",
            "--latency-secs",
            "1",
            "--scaling",
            "1,2",
            "--holdline",
            holdline.to_str().unwrap(),
            "--scratch",
            scratch.0.to_str().unwrap(),
            "--write",
            doc.to_str().unwrap(),
        ],
        Duration::from_secs(240),
    );

    let throughput = table(&report, "| client |");
    assert_eq!(throughput.len(), 5, "one row per client:\n{report}");
    for row in &throughput {
        assert_eq!(
            row.last(),
            Some(&"1/1"),
            "the run must count (every event once, checked against the ledger): {row:?}"
        );
        let rate: f64 = row[1].parse().expect("events/s is a number");
        assert!(rate > 0.0, "{row:?}");
    }
    assert!(
        throughput[0][0].contains("holdline listen"),
        "{:?}",
        throughput[0]
    );
    assert!(
        throughput[2][0].contains("/dev/null"),
        "{:?}",
        throughput[2]
    );
    assert!(throughput[4][0].contains("floor"), "{:?}", throughput[4]);

    let latency = table(&report, "| rate (events/s) |");
    assert_eq!(latency.len(), 1, "{report}");
    assert_eq!(latency[0][0], "500");
    assert_eq!(latency[0][1], "500", "500 events at 500/s for 1 s");
    assert_eq!(latency[0].last(), Some(&"yes"), "{:?}", latency[0]);
    let p50: f64 = latency[0][2].parse().unwrap();
    let max: f64 = latency[0][5].parse().unwrap();
    assert!(0.0 < p50 && p50 <= max, "{:?}", latency[0]);

    let scaling = table(&report, "| live sockets |");
    let sockets: Vec<&str> = scaling.iter().map(|r| r[0]).collect();
    assert_eq!(sockets, ["1", "2"], "{report}");
    for row in &scaling {
        assert_eq!(row.last(), Some(&"1/1"), "every run complete: {row:?}");
    }
    assert!(
        report.contains("enough topics for 1, 2 shards") && report.contains("(1,500 topics"),
        "the text names the counts measured:\n{report}"
    );

    let idle = table(&report, "| sockets | idle RSS MiB |");
    assert_eq!(idle.len(), 2, "{report}");
    assert!(report.contains("the median of one reading"), "{report}");

    let targets = table(&report, "| target |");
    for name in [
        "holdline events/s vs raw floor",
        "holdline > /dev/null events/s vs raw floor",
    ] {
        assert!(
            targets.iter().any(|r| r[0] == name),
            "{name:?} is reported: {targets:?}"
        );
    }

    let written = std::fs::read_to_string(&doc).unwrap();
    assert!(written.starts_with("# Kept above\n"), "{written}");
    assert!(written.ends_with("## Kept below\n"), "{written}");
    assert!(!written.contains("stale"), "{written}");
    assert!(
        written.contains(report.trim_end()),
        "the report is what was written"
    );
}
