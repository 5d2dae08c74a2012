//! `listen --cluster`: three nodes as separate processes share the orgs of one config
//! through NATS JetStream, two nodes holding each org, every event published into one
//! stream with its id as `Nats-Msg-Id`. A node killed with SIGKILL loses nothing: the
//! other holder of each of its orgs was receiving, and another node takes its place.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;

/// Orgs of the config, spread over the three nodes.
const ORGS: usize = 20;

/// The nodes' lease: long enough that a loaded machine's late renewal is no step-down.
const LEASE: &str = "5s";

fn config(dir: &std::path::Path, url: &str, orgs: usize, redundancy: usize) -> std::path::PathBuf {
    // Holders list their OAuth client's channels every 3 s (another program's are left
    // to it).
    let mut text = format!("redundancy = {redundancy}\ncluster = {{ channel_audit = \"3s\" }}\n");
    for n in 1..=orgs {
        text.push_str(&format!(
            "[[org]]\nname = \"o{n}\"\napi_base = \"{url}\"\nclient_id = \"org-{n}\"\n\
             client_secret = \"secret-{n}\"\nall_queues = true\n"
        ));
    }
    let path = dir.join("listen.toml");
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// NATS, the simulator, and the config every node reads.
struct World {
    /// Orgs in the config (and in the simulator).
    orgs: usize,
    nats: holdline_sinks::testing::Server,
    store: tempfile::TempDir,
    addr: String,
    _sim: Running,
    url: String,
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    http: reqwest::blocking::Client,
}

impl World {
    fn new() -> World {
        World::with(ORGS, 1)
    }

    /// `orgs` orgs, each held with `redundancy` on every holder.
    fn with(orgs: usize, redundancy: usize) -> World {
        let store = tempfile::tempdir().unwrap();
        let nats = holdline_sinks::testing::nats_2_10(store.path());
        let addr = nats.addr();
        // A simulator of one org serves the plain demo client; two or more serve org-N.
        let (sim, url) = sim(&["--orgs", &orgs.max(2).to_string()]);
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path(), &url, orgs, redundancy);
        World {
            orgs,
            nats,
            store,
            addr,
            _sim: sim,
            url,
            dir,
            path,
            http: reqwest::blocking::Client::new(),
        }
    }

    /// Node `id`, with its own spool, publishing into the stream `HOLDLINE`.
    fn node(&self, id: &str, lease: &str) -> Running {
        Running(self.node_command(id, lease).spawn().unwrap())
    }

    fn node_command(&self, id: &str, lease: &str) -> Command {
        self.node_via(id, lease, &self.addr)
    }

    /// Node `id`, reaching NATS at `nats`.
    fn node_via(&self, id: &str, lease: &str, nats: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["listen", "--config"])
            .arg(&self.path)
            .args(["--cluster", &format!("nats://{nats}"), "--node", id])
            .args(["--cluster-lease", lease, "--log-format", "json", "--spool"])
            .arg(self.dir.path().join(id))
            .args([
                "--sink",
                &format!(
                    "nats://{nats}/holdline.{{org}}.{{family}}?stream=HOLDLINE&duplicate_window=5m"
                ),
            ])
            .env_remove("GENESYSCLOUD_OAUTHCLIENT_ID")
            .env_remove("GENESYSCLOUD_OAUTHCLIENT_SECRET")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(node_log(id));
        cmd
    }
}

/// Where node `id` of the running test logs: `DIR/<test>-<id>.log`, DIR being
/// `HOLDLINE_TEST_LOGS` or a folder of this run in the temp folder (a node that will not
/// stop has its log's end shown).
fn node_log_path(id: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("HOLDLINE_TEST_LOGS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("holdline-cluster-logs-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).unwrap();
    let test = std::thread::current().name().unwrap_or("test").to_owned();
    dir.join(format!("{test}-{id}.log"))
}

fn node_log(id: &str) -> Stdio {
    Stdio::from(node_log_file(id))
}

fn node_log_file(id: &str) -> std::fs::File {
    let path = node_log_path(id);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Connected sockets of each sim org, org-1 first.
fn sockets(w: &World) -> Vec<usize> {
    let (http, url) = (&w.http, &w.url);
    (1..=w.orgs)
        .map(|n| {
            let list: Vec<serde_json::Value> = http
                .get(format!("{url}/sim/channels?org=org-{n}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            list.iter().filter(|c| c["connected"] == true).count()
        })
        .collect()
}

fn wait_two_holders(w: &World, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let now = sockets(w);
        if now.iter().all(|&n| n == 2) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: sockets per org {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The stream's records, parsed.
fn stream(nats: &str) -> Vec<serde_json::Value> {
    holdline_sinks::testing::nats_payloads(nats, "HOLDLINE")
        .iter()
        .map(|p| serde_json::from_slice(p).unwrap())
        .collect()
}

fn wait_stream(nats: &str, at_least: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let n = stream(nats).len();
        if n >= at_least {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{n} records in the stream, waiting for {at_least}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_node_killed_under_traffic_loses_nothing() {
    let w = World::new();
    let addr = w.addr.as_str();
    let mut nodes: HashMap<&str, Running> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|id| (id, w.node(id, LEASE)))
        .collect();
    wait_two_holders(&w, Duration::from_secs(60), "two holders per org");
    let before = wait_stream(addr, 300, Duration::from_secs(60));

    let mut victim = nodes.remove("n1").unwrap();
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    let killed = Instant::now();
    // Its sockets are gone at once; once its lease ages out another node takes its orgs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sockets(&w).iter().all(|&n| n >= 2) {
        assert!(
            Instant::now() < deadline,
            "the killed node's sockets never closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_two_holders(&w, Duration::from_secs(30), "two holders again");
    let failover = killed.elapsed();
    eprintln!("two holders per org again {failover:?} after the kill");
    wait_stream(addr, before + 300, Duration::from_secs(60));

    stop_all(nodes);
    check_stream(&w, Gaps::None);
}

/// n1 (reaching NATS at `nats`, its log kept) beside n2 and n3.
fn nodes_watching_n1(
    w: &World,
    nats: &str,
) -> (
    HashMap<&'static str, Running>,
    std::sync::mpsc::Receiver<String>,
) {
    let mut n1 = Running(
        w.node_via("n1", LEASE, nats)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = log_lines_of(&mut n1.0);
    // Each line also to where node_log would have put it.
    let (tx, log) = std::sync::mpsc::channel();
    let mut keep = Some(node_log_file("n1"));
    std::thread::spawn(move || {
        for line in lines {
            if let Some(f) = keep.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut nodes: HashMap<&str, Running> = ["n2", "n3"]
        .into_iter()
        .map(|id| (id, w.node(id, LEASE)))
        .collect();
    nodes.insert("n1", n1);
    (nodes, log)
}

/// Waits (up to `within`) for a log line that `ok` accepts.
fn logged(
    log: &std::sync::mpsc::Receiver<String>,
    within: Duration,
    what: &str,
    ok: impl Fn(&str) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("never logged: {what}"));
        if ok(&line) {
            return;
        }
    }
}

/// Whether the stream may hold gap records.
#[derive(PartialEq)]
enum Gaps {
    None,
    /// Gaps of these orgs only: every event of theirs missing from the stream must lie in
    /// one of their gaps.
    Of(Vec<String>),
}

/// Stops every node at once (one after another, a node's orgs could pass to a node that
/// is about to stop, leaving a hole before the last events), each exiting cleanly.
fn stop_all(nodes: HashMap<&str, Running>) {
    for n in nodes.values() {
        signal(n.0.id(), "TERM");
    }
    for (id, n) in nodes {
        wait_exit(id, n);
    }
}

/// SIGTERM, and a clean exit.
fn stop_node(id: &str, n: Running) {
    signal(n.0.id(), "TERM");
    wait_exit(id, n);
}

/// A clean exit within 60 s: a node drains its sockets for a look-back and delivers
/// what its spool holds (a node that was paused has a backlog) before it exits.
fn wait_exit(id: &str, mut n: Running) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = n.0.try_wait().unwrap() {
            assert!(status.success(), "{id} exited with {status}");
            return;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(node_log_path(id)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{id} did not stop on SIGTERM; the end of its log:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The stream against the ledgers: every org there, no duplicate message, none missing
/// between each org's first and last event, and no gap unless `gaps` allows them.
fn check_stream(w: &World, gaps: Gaps) {
    let addr = w.addr.as_str();
    // Each record under its org and family.
    for (subject, payload) in holdline_sinks::testing::nats_messages(addr, "HOLDLINE") {
        let r: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let family = match r["kind"].as_str().unwrap() {
            "event" => "queue_conversations",
            other => other,
        };
        assert_eq!(
            subject,
            format!("holdline.{}.{family}", r["org"].as_str().unwrap()),
            "{r}"
        );
    }
    let records = stream(addr);
    let found: Vec<&serde_json::Value> = records.iter().filter(|r| r["kind"] == "gap").collect();
    let gapped: Vec<String> = match &gaps {
        Gaps::None => Vec::new(),
        Gaps::Of(orgs) => orgs.clone(),
    };
    let stray: Vec<_> = found
        .iter()
        .filter(|g| !gapped.iter().any(|o| g["org"] == o.as_str()))
        .collect();
    assert!(
        stray.is_empty(),
        "no gap but of {gapped:?}: {stray:?}\ncoverage bucket:\n{}",
        coverage_bucket(addr)
    );
    let window = |org: &str| -> Vec<(std::time::SystemTime, std::time::SystemTime)> {
        found
            .iter()
            .filter(|g| g["org"] == org)
            .map(|g| {
                let t = |k: &str| humantime::parse_rfc3339(g[k].as_str().unwrap()).unwrap();
                (t("from"), t("to"))
            })
            .collect()
    };
    let mut by_org: HashMap<String, Vec<String>> = HashMap::new();
    for r in records.iter().filter(|r| r["kind"] == "event") {
        by_org
            .entry(r["org"].as_str().unwrap().to_owned())
            .or_default()
            .push(r["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_org.len(), w.orgs, "every org in the stream");
    for n in 1..=w.orgs {
        let got = &by_org[&format!("o{n}")];
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "o{n}: no duplicate message in the stream"
        );
        let published = queue_ledger(&w.http, &w.url, &format!("org-{n}"));
        let ledger: Vec<String> = published.iter().map(|(id, _)| id.clone()).collect();
        let at = |id: &String| ledger.iter().position(|l| l == id);
        let first = got.iter().filter_map(at).min().unwrap();
        let last = got.iter().filter_map(at).max().unwrap();
        let windows = window(&format!("o{n}"));
        let missing = published[first..=last]
            .iter()
            .filter(|(id, at)| {
                !unique.contains(id) && !windows.iter().any(|(from, to)| from <= at && at <= to)
            })
            .count();
        assert_eq!(
            missing,
            0,
            "o{n}: {missing} missing of {}",
            last - first + 1
        );
    }
}

/// Waits (up to `within`) until the stream holds a gap of each of `orgs`; every gap in it.
fn wait_gaps(nats: &str, orgs: &[String], within: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let gaps: Vec<serde_json::Value> = stream(nats)
            .into_iter()
            .filter(|r| r["kind"] == "gap")
            .collect();
        if orgs
            .iter()
            .all(|o| gaps.iter().any(|g| g["org"] == o.as_str()))
        {
            return gaps;
        }
        assert!(
            Instant::now() < deadline,
            "no gap for every one of {orgs:?}: {gaps:?}\ncoverage bucket:\n{}",
            coverage_bucket(nats)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn both_holders_of_an_org_killed_is_one_gap_per_shard_over_the_outage() {
    let w = World::new();
    let addr = w.addr.as_str();
    let ids = ["n1", "n2", "n3"];
    let mut nodes: HashMap<&str, Running> =
        ids.into_iter().map(|id| (id, w.node(id, LEASE))).collect();
    wait_two_holders(&w, Duration::from_secs(60), "two holders per org");
    let before = wait_stream(addr, 300, Duration::from_secs(60));
    // Every holder has covered its orgs for a while: what they received is on record.
    wait_steady(&w, Duration::from_secs(60));
    // Both holders of o1, and so every org they both hold, lose every socket at once.
    let members: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    let victims = holdline_cluster::holders("o1", &members, 2);
    let hit: Vec<String> = (1..=w.orgs)
        .map(|n| format!("o{n}"))
        .filter(|o| {
            let mut h = holdline_cluster::holders(o, &members, 2);
            h.sort_unstable();
            let mut v = victims.clone();
            v.sort_unstable();
            h == v
        })
        .collect();
    for id in &victims {
        let mut n = nodes.remove(id).unwrap();
        n.0.kill().unwrap();
        n.0.wait().unwrap();
    }
    let killed = std::time::SystemTime::now();
    // The survivor takes the orgs once the victims' leases age out, and once their
    // reports have gone quiet for a lease time it reports what nobody covered.
    let gaps = wait_gaps(addr, &hit, Duration::from_secs(90));
    for o in &hit {
        let mine: Vec<&serde_json::Value> =
            gaps.iter().filter(|g| g["org"] == o.as_str()).collect();
        // One shard per org (redundancy 1, a few topics): one gap, named by its shard.
        assert_eq!(mine.len(), 1, "{o}: one gap per shard: {mine:?}");
        let g = mine[0];
        assert!(
            g["id"].as_str().unwrap().starts_with(&format!("gap:{o}:")),
            "{g}"
        );
        let from = humantime::parse_rfc3339(g["from"].as_str().unwrap()).unwrap();
        let to = humantime::parse_rfc3339(g["to"].as_str().unwrap()).unwrap();
        assert!(
            from <= killed && to > killed,
            "{o}: the gap covers the kill: {g}"
        );
        let width = to.duration_since(from).unwrap();
        assert!(
            width < Duration::from_secs(30),
            "{o}: the outage, not more: {width:?}"
        );
        assert!(
            g["reason"].as_str().unwrap().contains("stopped reporting"),
            "{g}"
        );
    }
    wait_stream(addr, before + 300, Duration::from_secs(60));
    stop_all(nodes);
    check_stream(&w, Gaps::Of(hit));
}

#[test]
fn nats_restarted_under_traffic_loses_nothing() {
    let mut w = World::new();
    let ids = ["n1", "n2", "n3"];
    let nodes: HashMap<&str, Running> = ids.into_iter().map(|id| (id, w.node(id, LEASE))).collect();
    wait_two_holders(&w, Duration::from_secs(60), "two holders per org");
    let before = wait_stream(&w.addr, 300, Duration::from_secs(60));
    // NATS goes away for a second (well within the lease) and comes back with its store:
    // every node spools meanwhile and publishes when it is back, and nobody steps down.
    w.nats.kill();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = w.store.path().to_owned();
    w.nats.restart_nats(&store);
    let back = std::time::SystemTime::now();
    let addr = w.addr.as_str();
    wait_stream(addr, before + 400, Duration::from_secs(60));
    wait_two_holders(&w, Duration::from_secs(30), "two holders after the restart");
    // What the nodes spooled while NATS was away is published once their sinks retry:
    // the stream catches up on everything up to a while after the restart.
    wait_caught_up(&w, back + Duration::from_secs(2), Duration::from_secs(60));
    stop_all(nodes);
    check_stream(&w, Gaps::None);
    assert_eq!(connected_evictions(&w), 0, "no live channel evicted");
}

#[test]
fn the_holders_of_an_org_share_its_channels_and_never_evict_a_live_one() {
    // One org, redundancy 12 on each of its two holders: 26 channels wanted of the 20 its
    // OAuth client may hold. The second holder gets what the first leaves.
    let w = World::with(1, 12);
    let addr = w.addr.as_str();
    let nodes: HashMap<&str, Running> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|id| (id, w.node(id, LEASE)))
        .collect();
    wait_connected(&w, 14, Duration::from_secs(60), "both holders");
    let before = wait_stream(addr, 1, Duration::from_secs(60));
    let most = most_connected(&w, Duration::from_secs(10));
    assert!(most <= 20, "{most} sockets connected at once");
    assert_eq!(connected_evictions(&w), 0, "no live channel evicted");
    wait_stream(addr, before + 100, Duration::from_secs(60));
    stop_all(nodes);
    assert_eq!(connected_evictions(&w), 0, "no live channel evicted");
}

#[test]
fn another_program_on_the_same_oauth_client_keeps_its_live_channels() {
    // Another program (a holdline outside the cluster) holds 8 live channels of org-1's
    // OAuth client; the org's two holders, with redundancy 6, would want 14 of the 20.
    let w = World::with(1, 6);
    let addr = w.addr.as_str();
    let _other = Running(
        Command::new(BIN)
            .args([
                "listen",
                "--api-base",
                &w.url,
                "--all-queues",
                "--redundancy",
                "8",
            ])
            .env("GENESYSCLOUD_OAUTHCLIENT_ID", "org-1")
            .env("GENESYSCLOUD_OAUTHCLIENT_SECRET", "secret-1")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(node_log("other"))
            .spawn()
            .unwrap(),
    );
    wait_connected(&w, 8, Duration::from_secs(30), "the other program");
    let nodes: HashMap<&str, Running> = ["n1", "n2", "n3"]
        .into_iter()
        .map(|id| (id, w.node(id, LEASE)))
        .collect();
    // The holders keep to the 12 the other program leaves.
    wait_connected(
        &w,
        20,
        Duration::from_secs(30),
        "the holders beside the other program",
    );
    let before = wait_stream(addr, 1, Duration::from_secs(60));
    let most = most_connected(&w, Duration::from_secs(15));
    assert!(most <= 20, "{most} sockets connected at once");
    wait_stream(addr, before + 100, Duration::from_secs(60));
    stop_all(nodes);
    // The holders never made a channel past what the other program left, through audits
    // every 3 s: no live channel was evicted (one a holder no longer used may be).
    assert_eq!(connected_evictions(&w), 0, "no live channel evicted");
    let said = ["n1", "n2", "n3"].iter().any(|id| {
        std::fs::read_to_string(node_log_path(id))
            .unwrap_or_default()
            .contains("no holder's")
    });
    assert!(
        said,
        "a holder says the OAuth client has channels that are no holder's"
    );
}

/// Waits (up to `within`) for `n` sockets connected to the first org's channels.
fn wait_connected(w: &World, n: usize, within: Duration, who: &str) {
    let deadline = Instant::now() + within;
    loop {
        let now = sockets(w)[0];
        if now >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who}: {now} sockets connected of {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The most sockets connected to the first org's channels at once over `span`.
fn most_connected(w: &World, span: Duration) -> usize {
    let mut most = 0;
    let until = Instant::now() + span;
    while Instant::now() < until {
        most = most.max(sockets(w)[0]);
        std::thread::sleep(Duration::from_millis(100));
    }
    most
}

/// A TCP forwarder to `to` that the test can cut (every connection closed, new ones
/// closed at once) and mend.
struct Cut {
    addr: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Cut {
    fn to(to: &str) -> Cut {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let live = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (o, l, to) = (open.clone(), live.clone(), to.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&to) else {
                    continue;
                };
                let mut list = l.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut into) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Cut { addr, open, live }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn mend(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn a_node_cut_off_from_nats_steps_down_and_loses_nothing() {
    let w = World::new();
    let addr = w.addr.as_str();
    let cut = Cut::to(addr);
    let (nodes, log) = nodes_watching_n1(&w, &cut.addr);
    wait_two_holders(&w, Duration::from_secs(60), "two holders per org");
    let before = wait_stream(addr, 200, Duration::from_secs(60));
    // n1 still reaches the service but not NATS: past its lease it holds nothing, and
    // what it received meanwhile waits in its spool.
    cut.cut();
    logged(&log, Duration::from_secs(30), "n1 stepping down", |l| {
        l.contains("holds no org") && l.contains("cannot renew")
    });
    wait_two_holders(&w, Duration::from_secs(30), "the others hold every org");
    let grown = wait_stream(addr, before + 200, Duration::from_secs(60));
    cut.mend();
    wait_two_holders(&w, Duration::from_secs(30), "settled after n1 is back");
    wait_stream(addr, grown + 200, Duration::from_secs(60));
    stop_all(nodes);
    check_stream(&w, Gaps::None);
    assert_eq!(connected_evictions(&w), 0, "no live channel evicted");
}

/// Waits until the stream holds every event of every org's ledger published from the
/// org's first event in the stream up to `until`.
fn wait_caught_up(w: &World, until: std::time::SystemTime, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let records = stream(&w.addr);
        let got: HashSet<&str> = records
            .iter()
            .filter(|r| r["kind"] == "event")
            .filter_map(|r| r["id"].as_str())
            .collect();
        let behind: Vec<(usize, usize)> = (1..=w.orgs)
            .filter_map(|n| {
                let ledger = queue_ledger(&w.http, &w.url, &format!("org-{n}"));
                let first = ledger
                    .iter()
                    .position(|(id, _)| got.contains(id.as_str()))?;
                let last = ledger.iter().rposition(|(_, at)| *at <= until);
                let wanted = &ledger[first..=last.unwrap_or(first).max(first)];
                let short = wanted
                    .iter()
                    .filter(|(id, _)| !got.contains(id.as_str()))
                    .count();
                let reached = ledger.last().is_some_and(|(_, at)| *at > until);
                (short > 0 || !reached).then_some((n, short))
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stream never caught up: (org, events missing) {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until both holders of every org report having covered it for a second or more.
fn wait_steady(w: &World, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let mut open: HashMap<String, usize> = HashMap::new();
        for line in coverage_bucket(&w.addr)
            .lines()
            .filter(|l| l.starts_with("cov."))
        {
            let Some((_, json)) = line.split_once(' ') else {
                continue;
            };
            let r: serde_json::Value = serde_json::from_str(json).unwrap();
            let proven = r["shards"].as_array().unwrap().iter().all(|s| {
                let last = s["runs"]
                    .as_array()
                    .unwrap()
                    .last()
                    .cloned()
                    .unwrap_or_default();
                s["open"] == true
                    && last[1].as_u64().unwrap_or(0)
                        >= last[0].as_u64().unwrap_or(u64::MAX) + 1_000_000
            });
            if proven && !r["shards"].as_array().unwrap().is_empty() {
                *open
                    .entry(r["org"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
        if (1..=w.orgs).all(|n| open.get(&format!("o{n}")).copied().unwrap_or(0) >= 2) {
            return;
        }
        assert!(Instant::now() < deadline, "never steady: {open:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The cluster's coverage bucket, one entry a line, for a failure's message.
fn coverage_bucket(addr: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures_util::StreamExt;
        let js = async_nats::jetstream::new(async_nats::connect(addr).await.unwrap());
        let kv = js.get_key_value("holdline_coverage").await.unwrap();
        let mut keys: Vec<String> = kv
            .keys()
            .await
            .unwrap()
            .filter_map(|k| async { k.ok() })
            .collect()
            .await;
        keys.sort();
        let mut out = String::new();
        for k in keys {
            let v = kv.get(&k).await.ok().flatten().unwrap_or_default();
            out.push_str(&format!("{k} {}\n", String::from_utf8_lossy(&v)));
        }
        out
    })
}

/// Channels with a socket connected that the 20-channel rule evicted, over every org.
fn connected_evictions(w: &World) -> u64 {
    let (http, url) = (&w.http, &w.url);
    (1..=w.orgs)
        .map(|n| {
            let stats: serde_json::Value = http
                .get(format!("{url}/sim/stats?org=org-{n}"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            stats["evictions"]["connected"].as_u64().unwrap()
        })
        .sum()
}

#[test]
fn a_rolling_restart_of_every_node_loses_nothing() {
    let w = World::new();
    let addr = w.addr.as_str();
    let ids = ["n1", "n2", "n3"];
    let start = |id: &str| w.node(id, LEASE);
    let mut nodes: HashMap<&str, Running> = ids.into_iter().map(|id| (id, start(id))).collect();
    wait_two_holders(&w, Duration::from_secs(60), "two holders per org");
    let mut seen = wait_stream(addr, 200, Duration::from_secs(60));
    for id in ids {
        // One at a time: stop it in order, let the others take its orgs, start it again.
        stop_node(id, nodes.remove(id).unwrap());
        wait_two_holders(&w, Duration::from_secs(20), &format!("{id} stopped"));
        nodes.insert(id, start(id));
        wait_two_holders(&w, Duration::from_secs(20), &format!("{id} back"));
        seen = wait_stream(addr, seen + 100, Duration::from_secs(60));
    }
    stop_all(nodes);
    check_stream(&w, Gaps::None);
    assert_eq!(connected_evictions(&w), 0, "no live channel evicted");
}

#[test]
fn a_node_stopped_past_its_lease_gives_way_without_an_eviction_war() {
    let w = World::new();
    let addr = w.addr.as_str();
    // n1 with its log, to see it step down when it resumes.
    let (nodes, log) = nodes_watching_n1(&w, addr);
    wait_two_holders(&w, Duration::from_secs(60), "two holders per org");
    let before = wait_stream(addr, 200, Duration::from_secs(60));
    let paused = nodes["n1"].0.id();
    signal(paused, "STOP");
    let stopped = Instant::now();
    // Its sockets go quiet but stay open: the others take its orgs once its lease lapses,
    // so the stream keeps growing for every org. The pause is the scenario: three lease
    // times (15 s), well past n1's lease.
    let grown = wait_stream(addr, before + 200, Duration::from_secs(60));
    while stopped.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(paused, "CONT");
    // On resuming it finds its lease lapsed, holds nothing for a round, and joins again;
    // the nodes settle on two holders each.
    logged(
        &log,
        Duration::from_secs(10),
        "n1 saying it stepped down",
        |l| l.contains("holds no org") && l.contains("lapsed"),
    );
    // And holds orgs again: a new run of an org it held before does not wait on the old
    // one's end for good.
    logged(
        &log,
        Duration::from_secs(30),
        "n1 receiving again after the pause",
        |l| l.contains("\"kind\":\"Live\""),
    );
    wait_two_holders(&w, Duration::from_secs(30), "settled after the pause");
    wait_stream(addr, grown + 200, Duration::from_secs(60));
    stop_all(nodes);
    // Its own sockets' silence is no gap of the cluster: the other holders covered it.
    check_stream(&w, Gaps::None);
    assert_eq!(connected_evictions(&w), 0, "no live channel evicted");
}

/// The base URL of node `id`'s `/metrics` and `/readyz`, from its log.
fn metrics_of(id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(node_log_path(id)).unwrap_or_default();
        if let Some(at) = log.find("metrics on http://") {
            let rest = &log[at + "metrics on ".len()..];
            return rest[..rest.find("/metrics").unwrap()].to_owned();
        }
        assert!(Instant::now() < deadline, "{id} logged no metrics address");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Node `id`'s `/readyz`: its status and body.
fn readyz(w: &World, base: &str) -> (u16, String) {
    let resp = w.http.get(format!("{base}/readyz")).send().unwrap();
    (resp.status().as_u16(), resp.text().unwrap())
}

#[test]
fn nats_down_past_the_lease_steps_every_node_down_and_reports_the_outage_as_gaps() {
    let mut w = World::new();
    let ids = ["n1", "n2", "n3"];
    let nodes: HashMap<&str, Running> = ids
        .into_iter()
        .map(|id| {
            let mut cmd = w.node_command(id, LEASE);
            cmd.args(["--metrics-addr", "127.0.0.1:0"]);
            (id, Running(cmd.spawn().unwrap()))
        })
        .collect();
    let bases: Vec<String> = ids.iter().map(|id| metrics_of(id)).collect();
    wait_two_holders(&w, Duration::from_secs(60), "two holders per org");
    let before = wait_stream(&w.addr, 300, Duration::from_secs(60));
    wait_steady(&w, Duration::from_secs(60));
    // NATS goes away for longer than the lease: no node can renew, so within the lease
    // time every node holds nothing, says so, and closes its sockets (another node might
    // hold its orgs by now, and its channels with them).
    w.nats.kill();
    let down = std::time::SystemTime::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states: Vec<(u16, String)> = bases.iter().map(|b| readyz(&w, b)).collect();
        let stepped = states
            .iter()
            .all(|(status, body)| *status == 503 && body.contains("cannot renew"));
        if stepped && sockets(&w).iter().all(|&n| n == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every node stepping down: /readyz {states:?}, sockets per org {:?}",
            sockets(&w)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let all_down = std::time::SystemTime::now();
    for id in ids {
        let log = std::fs::read_to_string(node_log_path(id)).unwrap();
        assert!(
            log.lines().any(|l| l.contains("\"level\":\"ERROR\"")
                && l.contains("holds no org")
                && l.contains("cannot renew")),
            "{id} says at ERROR why it holds nothing"
        );
    }
    // The outage lasts a while with nobody holding; then NATS comes back with its store.
    while all_down.elapsed().unwrap() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let store = w.store.path().to_owned();
    w.nats.restart_nats(&store);
    let back = std::time::SystemTime::now();
    wait_two_holders(&w, Duration::from_secs(60), "two holders once NATS is back");
    for base in &bases {
        let deadline = Instant::now() + Duration::from_secs(30);
        while readyz(&w, base).0 != 200 {
            assert!(Instant::now() < deadline, "{base}: ready again");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The time nobody held an org is reported once per shard, covering the outage.
    let orgs: Vec<String> = (1..=w.orgs).map(|n| format!("o{n}")).collect();
    let gaps = wait_gaps(&w.addr, &orgs, Duration::from_secs(90));
    for o in &orgs {
        let mine: Vec<&serde_json::Value> =
            gaps.iter().filter(|g| g["org"] == o.as_str()).collect();
        assert_eq!(mine.len(), 1, "{o}: one gap per shard: {mine:?}");
        let g = mine[0];
        let t = |k: &str| humantime::parse_rfc3339(g[k].as_str().unwrap()).unwrap();
        assert!(
            t("from") >= down - Duration::from_secs(5) && t("from") <= all_down,
            "{o}: the gap starts once NATS is down, by the time every node stepped down: {g}"
        );
        assert!(
            t("to") >= all_down && t("to") <= back + Duration::from_secs(30),
            "{o}: the gap ends once a node holds the org again: {g}"
        );
    }
    // Each org's gap counted in /metrics by the node that wrote it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut counted: HashMap<String, f64> = HashMap::new();
        for base in &bases {
            let text = w
                .http
                .get(format!("{base}/metrics"))
                .send()
                .unwrap()
                .text()
                .unwrap();
            for line in text.lines() {
                let Some(rest) = line.strip_prefix("holdline_cluster_gaps_total{org=\"") else {
                    continue;
                };
                let (org, value) = rest.split_once("\"} ").unwrap();
                *counted.entry(org.to_owned()).or_default() += value.parse::<f64>().unwrap();
            }
        }
        if orgs
            .iter()
            .all(|o| counted.get(o).copied().unwrap_or(0.0) >= 1.0)
        {
            assert_eq!(counted.len(), orgs.len(), "{counted:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "holdline_cluster_gaps_total for every org: {counted:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_stream(&w.addr, before + gaps.len() + 300, Duration::from_secs(60));
    stop_all(nodes);
    check_stream(&w, Gaps::Of(orgs));
    assert_eq!(connected_evictions(&w), 0, "no live channel evicted");
}
