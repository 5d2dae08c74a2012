//! Real network faults, not the simulator's: each test re-runs itself inside a network
//! namespace of its own (`ip netns`, all traffic on that namespace's loopback) and breaks
//! the traffic between holdline and the simulator with `iptables` and `ss -K`.
//!
//! REST and the sockets reach the simulator on different ports (the `connectUri`s name a
//! second port that a NAT rule redirects to the simulator), so a fault can hit the
//! sockets alone or REST alone. This kernel has no `sch_netem`, so delay and reordering
//! are not tested here; loss is (iptables `statistic`).
//!
//! Needs root (CAP_NET_ADMIN), `ip` and `iptables`. Without them the tests say so and
//! pass, except under `CI=true`, where they fail with the reason.

#[path = "engine/common.rs"]
mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use common::*;
use holdline_client::{ClientConfig, Stats};
use holdline_sim::{SimConfig, Simulator};
use tokio::time::Instant;

const INSIDE: &str = "HOLDLINE_NETNS_INSIDE";

/// Runs `test` inside a namespace of its own; true when this process is the one inside
/// (and should run the body), false when it was the outer one and the inner run passed.
fn in_namespace(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        init_log("holdline_client=debug,holdline_client::channel::task=trace,holdline_sim=info");
        return true;
    }
    let name = format!("hl-{}-{}", std::process::id(), test.len() ^ hash(test));
    if let Err(why) = setup(&name) {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "network-fault test {test} could not run: {why}"
        );
        eprintln!("skipped {test}: {why} (CI=true makes this a failure)");
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, &name)
        .output()
        .unwrap();
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(out.status.success(), "{test} failed inside its namespace");
    assert!(
        stdout.contains("1 passed"),
        "{test} did not run inside its namespace"
    );
    false
}

fn hash(s: &str) -> usize {
    s.bytes()
        .fold(5381usize, |h, b| h.wrapping_mul(33) ^ b as usize)
        % 100_000
}

fn setup(name: &str) -> Result<(), String> {
    for tool in ["ip", "iptables", "ss"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Err(format!(
                "{tool} is not installed (apt-get install iproute2 iptables)"
            ));
        }
    }
    run("ip", &["netns", "add", name])?;
    run(
        "ip",
        &["netns", "exec", name, "ip", "link", "set", "lo", "up"],
    )?;
    run("ip", &["netns", "exec", name, "iptables", "-L", "-n"])?;
    Ok(())
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `iptables` in this (the test's own) namespace.
fn iptables(args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    run("iptables", &args).unwrap();
}

/// The simulator on one port for REST; its `connectUri`s name a second port that NAT
/// sends to the first, so rules can tell the two kinds of traffic apart.
struct Net {
    sim: Simulator,
    rest: u16,
    ws: u16,
}

async fn net(config: SimConfig) -> Net {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rest = listener.local_addr().unwrap().port();
    let ws = {
        let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        spare.local_addr().unwrap().port()
    };
    iptables(&format!(
        "-t nat -A OUTPUT -p tcp -d 127.0.0.1 --dport {ws} -j REDIRECT --to-ports {rest}"
    ));
    let sim = Simulator::start(
        listener,
        SimConfig {
            public_url: Some(format!("http://127.0.0.1:{ws}")),
            ..config
        },
    )
    .unwrap();
    Net { sim, rest, ws }
}

impl Net {
    /// Drops every packet of connections first made to `port` (both directions).
    fn blackhole(&self, port: u16) {
        for chain in ["INPUT", "OUTPUT"] {
            iptables(&format!(
                "-I {chain} -p tcp -m conntrack --ctorigdstport {port} -j DROP"
            ));
        }
    }

    fn heal(&self, port: u16) {
        for chain in ["INPUT", "OUTPUT"] {
            iptables(&format!(
                "-D {chain} -p tcp -m conntrack --ctorigdstport {port} -j DROP"
            ));
        }
    }

    /// The client-side ports of the sockets connected now.
    fn socket_ports(&self) -> Vec<u16> {
        self.sim
            .core()
            .channel_infos(|c, _| c.socket.as_ref().map(|s| s.peer.port()))
            .into_iter()
            .flatten()
            .collect()
    }
}

fn busy() -> SimConfig {
    SimConfig {
        rate: 300.0,
        heartbeat: Duration::from_millis(200),
        closing_grace: Duration::from_millis(300),
        ..SimConfig::default()
    }
}

fn client_config(net: &Net, redundancy: usize) -> ClientConfig {
    let mut cfg = config(&net.sim, org_topics(&net.sim));
    let rest = format!("http://127.0.0.1:{}", net.rest);
    cfg.endpoints = holdline_client::Endpoints::Custom {
        api_base: rest.clone(),
        login_base: rest,
    };
    cfg.redundancy = redundancy;
    cfg.timings.request_timeout = Duration::from_secs(1);
    cfg
}

async fn all_live(client: &Collector, slots: i64) {
    let stats = client.handle.stats().clone();
    client
        .until("every slot receiving", |_| {
            stats.slots_live.load(Ordering::Relaxed) >= slots
        })
        .await;
}

/// A client of `cfg` (one shard) against `net`, every slot receiving for a while.
async fn started(cfg: ClientConfig) -> (Collector, SystemTime) {
    let slots = cfg.redundancy as i64;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    all_live(&client, slots).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    (client, live)
}

/// Every slot receiving again, then [`verdict`].
async fn recovered(net: &Net, client: Collector, live: SystemTime) -> Seen {
    all_live(&client, 2).await;
    // Both slots covering for longer than twice the look-back (a redial covers from a
    // look-back after its first frame; a dead socket ends a look-back before its last).
    tokio::time::sleep(2 * fast_timings().gap_lookback + Duration::from_millis(200)).await;
    verdict(net, client, live).await
}

/// Kills the socket whose client side is `port` (`ss -K`).
fn kill_socket(port: u16) {
    let port = port.to_string();
    run("ss", &["-K", "src", "127.0.0.1", "sport", "=", &port]).unwrap();
}

/// Stops the client and checks the output against the ledger; returns the gaps.
async fn verdict(net: &Net, client: Collector, live: SystemTime) -> Seen {
    let stopped = SystemTime::now();
    let topics = org_topics(&net.sim);
    let seen = client.stop().await;
    let v = check(&ledger(&net.sim), &topics, &seen, window(live, stopped));
    println!(
        "{v:?} with {} gaps: {:?}",
        seen.gaps.len(),
        seen.gaps
            .iter()
            .map(|g| (
                g.to.duration_since(g.from).unwrap_or_default(),
                g.reason.clone()
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        v.missing.is_empty(),
        "{} missing without a gap",
        v.missing.len()
    );
    assert_eq!(v.duplicates, 0);
    assert!(v.checked > 100, "{v:?}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_socket_is_found_dead_and_its_slot_recovers_without_loss() {
    if !in_namespace("a_black_holed_socket_is_found_dead_and_its_slot_recovers_without_loss") {
        return;
    }
    let net = net(busy()).await;
    let (client, live) = started(client_config(&net, 2)).await;
    let stats = client.handle.stats().clone();
    let port = net.socket_ports()[0];
    let rule = format!("-p tcp --sport {port} -j DROP");
    let back = format!("-p tcp --dport {port} -j DROP");
    iptables(&format!("-I OUTPUT {rule}"));
    iptables(&format!("-I INPUT {back}"));
    client
        .until("the black-holed socket replaced", |_| {
            Stats::get(&stats.reconnects) >= 1
        })
        .await;
    let seen = recovered(&net, client, live).await;
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_and_a_killed_socket_are_replaced_without_loss() {
    if !in_namespace("a_reset_and_a_killed_socket_are_replaced_without_loss") {
        return;
    }
    let net = net(busy()).await;
    let (client, live) = started(client_config(&net, 2)).await;
    let stats = client.handle.stats().clone();
    let port = net.socket_ports()[0];
    iptables(&format!(
        "-I OUTPUT -p tcp --sport {port} -j REJECT --reject-with tcp-reset"
    ));
    client
        .until("the reset socket replaced", |_| {
            Stats::get(&stats.reconnects) >= 1
        })
        .await;
    all_live(&client, 2).await;
    tokio::time::sleep(2 * fast_timings().gap_lookback + Duration::from_millis(200)).await;
    let port = net.socket_ports()[0];
    kill_socket(port);
    client
        .until("the killed socket replaced", |_| {
            Stats::get(&stats.reconnects) >= 2
        })
        .await;
    let seen = recovered(&net, client, live).await;
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_hung_alone_for_five_seconds_touches_no_socket() {
    if !in_namespace("rest_hung_alone_for_five_seconds_touches_no_socket") {
        return;
    }
    let net = net(busy()).await;
    let client = Collector::start(client_config(&net, 2)).await;
    let live = client.live_since().await;
    all_live(&client, 2).await;
    // Both slots covering for longer than twice the look-back (a redial covers from a
    // look-back after its first frame; a dead socket ends a look-back before its last).
    tokio::time::sleep(2 * fast_timings().gap_lookback + Duration::from_millis(200)).await;
    let stats = client.handle.stats().clone();
    net.blackhole(net.rest);
    // While REST hangs, sockets still fail, and come back on their channels.
    let port = net.socket_ports()[0];
    kill_socket(port);
    let struck = Instant::now();
    client
        .until("the socket back on its channel without REST", |_| {
            Stats::get(&stats.reconnects) >= 1 && stats.slots_live.load(Ordering::Relaxed) >= 2
        })
        .await;
    assert!(
        struck.elapsed() < Duration::from_secs(3),
        "{:?}",
        struck.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    net.heal(net.rest);
    let seen = recovered(&net, client, live).await;
    assert!(seen.gaps.is_empty(), "{:?}", seen.gaps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_hung_alone_across_a_rollover_loses_nothing_silently() {
    if !in_namespace("rest_hung_alone_across_a_rollover_loses_nothing_silently") {
        return;
    }
    let (net, cfg) = short_lived(Duration::from_secs(1)).await;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    all_live(&client, 2).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // The rollovers fall due while REST hangs, and the channels die with their tokens
    // before it is back: the sockets' end is a gap, not a silent loss.
    net.blackhole(net.rest);
    tokio::time::sleep(Duration::from_secs(6)).await;
    net.heal(net.rest);
    recovered(&net, client, live).await;
}

/// Channels and tokens of 8 s, rolled over 2-3 s before they end: a rollover falls due
/// 5-6 s after start. `overlap` is how long a replaced socket keeps receiving.
async fn short_lived(overlap: Duration) -> (Net, ClientConfig) {
    let net = net(SimConfig {
        channel_ttl: Duration::from_secs(8),
        token_ttl: Duration::from_secs(8),
        ..busy()
    })
    .await;
    let mut cfg = client_config(&net, 2);
    cfg.timings.overlap = overlap;
    cfg.timings.rollover_margin = Duration::from_secs(3);
    (net, cfg)
}

/// Every socket cut off for `secs`, either just before a rollover is due (the new
/// channel's socket cannot attach; the old channels expire meanwhile) or right after one
/// (the replaced socket is closed during the partition): an honest gap, nothing missing.
async fn partition_across_a_rollover(
    secs: u64,
    overlap: Duration,
    in_the_overlap: bool,
    rest_too: bool,
) {
    let (net, cfg) = short_lived(overlap).await;
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    all_live(&client, 2).await;
    let stats = client.handle.stats().clone();
    if in_the_overlap {
        client
            .until("a rollover", |_| Stats::get(&stats.rollovers) >= 1)
            .await;
    } else {
        // Before the first rollover is due, so that it falls inside the partition.
        tokio::time::sleep(Duration::from_millis(3500)).await;
    }
    let created = Stats::get(&stats.channels_created);
    let overlapping = stats.sockets_live.load(Ordering::Relaxed);
    net.blackhole(net.ws);
    if rest_too {
        net.blackhole(net.rest);
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    net.heal(net.ws);
    if rest_too {
        net.heal(net.rest);
    }
    all_live(&client, 2).await;
    // A channel that rolled over before the partition may keep its socket through a short
    // one; the next rollover (within a channel's life) replaces one all the same.
    client
        .until("a channel replaced across the partition", |_| {
            Stats::get(&stats.channels_created) > created
        })
        .await;
    tokio::time::sleep(2 * fast_timings().gap_lookback + Duration::from_millis(200)).await;
    let seen = verdict(&net, client, live).await;
    if in_the_overlap {
        assert!(
            overlapping >= 3,
            "struck during an overlap: {overlapping} sockets"
        );
    }
    assert!(!seen.gaps.is_empty(), "every socket was cut off: a gap");
    let widest = seen
        .gaps
        .iter()
        .map(|g| g.to.duration_since(g.from).unwrap_or_default())
        .max()
        .unwrap();
    assert!(
        widest >= Duration::from_secs(secs) - Duration::from_millis(500),
        "the gap spans the partition: {widest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_every_socket_across_a_rollover_is_an_honest_gap() {
    if !in_namespace("a_partition_of_every_socket_across_a_rollover_is_an_honest_gap") {
        return;
    }
    partition_across_a_rollover(5, Duration::from_secs(1), false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_everything_rest_included_across_a_rollover_is_an_honest_gap() {
    if !in_namespace("a_partition_of_everything_rest_included_across_a_rollover_is_an_honest_gap") {
        return;
    }
    partition_across_a_rollover(5, Duration::from_secs(1), false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_during_an_overlap_shorter_than_dead_socket_detection_is_an_honest_gap() {
    if !in_namespace(
        "a_partition_during_an_overlap_shorter_than_dead_socket_detection_is_an_honest_gap",
    ) {
        return;
    }
    // The overlap (200 ms) is shorter than finding a dead socket takes (300-600 ms), as the
    // defaults are (15 s against 10-66 s).
    partition_across_a_rollover(3, Duration::from_millis(200), true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_packet_loss_on_every_socket_loses_nothing_silently() {
    if !in_namespace("five_percent_packet_loss_on_every_socket_loses_nothing_silently") {
        return;
    }
    let net = net(busy()).await;
    let client = Collector::start(client_config(&net, 2)).await;
    let live = client.live_since().await;
    all_live(&client, 2).await;
    let ws = net.ws;
    let rule = format!(
        "INPUT -p tcp -m conntrack --ctorigdstport {ws} -m statistic --mode random --probability 0.05 -j DROP"
    );
    iptables(&format!("-I {rule}"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    iptables(&format!("-D {rule}"));
    all_live(&client, 2).await;
    tokio::time::sleep(2 * fast_timings().gap_lookback + Duration::from_millis(200)).await;
    verdict(&net, client, live).await;
}
