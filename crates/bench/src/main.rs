//! `holdline-bench`: holdline side by side with the clients Genesys integrations use
//! today, on one machine, against the embedded simulator in firehose mode.
//!
//! ```sh
//! cargo run -p holdline-bench --release -- run --write docs/BENCHMARKS.md
//! ```
//!
//! Throughput (every client, one warm-up then N runs, medians), end-to-end latency at
//! fixed rates, and scaling over live sockets; each client's output is checked against
//! the simulator's ledger before its run counts. Peers are installed into a scratch
//! folder (npm, a Python venv); nothing is downloaded into the repository.

mod backfill;
mod clients;
mod cluster;
mod counters;
mod floor;
mod harness;
mod orgs;
mod proc;
mod report;
mod sinks;
mod stats;
mod suites;
mod verify;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::clients::{Client, Tools};
use crate::report::{ClientRuns, Setup};
use crate::suites::{Scale, Workload};

#[derive(Parser)]
#[command(name = "holdline-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmarks and print the report (Markdown) on stdout.
    Run(RunArgs),
    /// Density: one `listen` holding many orgs against the simulator serving as many.
    Orgs(OrgsArgs),
    /// A cluster: three nodes over NATS JetStream, then `kill -9` of one.
    Cluster(ClusterArgs),
    /// What a back-fill costs in REST calls, by org size and gap length.
    Backfill(BackfillArgs),
    /// The raw floor client (started by `run`): read frames from URI, discard them.
    Floor {
        #[arg(long)]
        uri: String,
        /// Print a report line after this many frames.
        #[arg(long)]
        expect: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    Throughput,
    Latency,
    Scaling,
    Sinks,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Events per throughput run.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Topics the events are spread over (half conversations, half presence).
    #[arg(long, default_value_t = 200)]
    topics: usize,
    /// Measured runs per client, after one warm-up run (and readings of idle memory per
    /// socket count).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Clients for the throughput table.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "holdline-r1,holdline-r2,holdline-null,holdline-spool,node-ws,genesys-notifications,floor"
    )]
    clients: Vec<String>,
    /// Publishing rates (events/s) for the latency table; empty to skip.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    latency_rates: Vec<f64>,
    /// Seconds of publishing per latency rate.
    #[arg(long, default_value_t = 10.0)]
    latency_secs: f64,
    /// Live-socket counts for the scaling table; empty to skip.
    #[arg(long, value_delimiter = ',', default_value = "1,5,19")]
    scaling: Vec<usize>,
    /// Tables to leave out.
    #[arg(long, value_delimiter = ',', value_enum)]
    skip: Vec<Suite>,
    /// Where peers are installed and outputs written (default: /dev/shm/holdline-bench
    /// when there is a /dev/shm, else the temp folder).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// A built holdline binary (default: build this workspace's, release).
    #[arg(long)]
    holdline: Option<PathBuf>,
    /// Also write the report to this file.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(clap::Args)]
struct BackfillArgs {
    /// Org sizes, each `queues:agents:events per second`.
    #[arg(long, value_delimiter = ',', default_value = "4:12:20,20:200:200")]
    sizes: Vec<String>,
    /// Gap lengths in seconds.
    #[arg(long, value_delimiter = ',', default_value = "10,30,60")]
    gaps: Vec<u64>,
}

async fn backfill_suite(args: BackfillArgs) -> Result<()> {
    let gaps: Vec<std::time::Duration> = args
        .gaps
        .iter()
        .map(|s| std::time::Duration::from_secs(*s))
        .collect();
    let mut rows = Vec::new();
    for text in &args.sizes {
        let parts: Vec<&str> = text.split(':').collect();
        let [q, a, r] = parts[..] else {
            bail!("--sizes {text:?}: write queues:agents:events per second (4:12:20)");
        };
        let size = backfill::Size {
            queues: q.parse().context("queues")?,
            agents: a.parse().context("agents")?,
            rate: r.parse().context("events per second")?,
        };
        eprintln!("backfill: {q} queues, {a} agents, {r} events/s");
        rows.extend(backfill::run(size, &gaps).await?);
    }
    print!("{}", backfill::table(&rows));
    Ok(())
}

#[derive(clap::Args)]
struct OrgsArgs {
    /// Org counts to run (the memory per added org comes from the first and the last).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    orgs: Vec<usize>,
    /// Events per second each org's generator publishes.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seconds of the measured window, after every org is ready.
    #[arg(long, default_value_t = 60.0)]
    secs: f64,
    /// Channels holding each shard.
    #[arg(long, default_value_t = 2)]
    redundancy: usize,
    /// Where the org config files are written (default as for `run`).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// A built holdline binary (default: build this workspace's, release).
    #[arg(long)]
    holdline: Option<PathBuf>,
    /// Also write the table into this file (its own block, the rest left as it is).
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Orgs of the config (and of the simulator).
    #[arg(long, default_value_t = 20)]
    orgs: usize,
    /// Events per second each org's generator publishes (one run per rate).
    #[arg(long, value_delimiter = ',', default_value = "20,500")]
    rate: Vec<f64>,
    /// Seconds of the measured window, once every org has two holders.
    #[arg(long, default_value_t = 60.0)]
    secs: f64,
    /// The nodes' lease (seconds).
    #[arg(long, default_value_t = 10.0)]
    lease: f64,
    /// Where the config, spools and the NATS store go (default as for `run`).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// A built holdline binary (default: build this workspace's, release).
    #[arg(long)]
    holdline: Option<PathBuf>,
    /// Also write the table into this file (its own block, the rest left as it is).
    #[arg(long)]
    write: Option<PathBuf>,
}

async fn cluster_suite(args: ClusterArgs) -> Result<()> {
    if args.orgs < 2 || args.secs <= 0.0 || args.lease <= 0.0 || args.rate.iter().any(|r| *r <= 0.0)
    {
        bail!("--orgs needs at least 2, --secs, --lease and every --rate positive numbers");
    }
    let scratch = args.scratch.clone().unwrap_or_else(default_scratch);
    let tools = Tools::prepare(scratch.clone(), args.holdline.clone(), &[])?;
    let mut runs = Vec::new();
    let window = std::time::Duration::from_secs_f64(args.secs);
    for &rate in &args.rate {
        let settings = cluster::Settings {
            holdline: tools.holdline.clone(),
            scratch: scratch.clone(),
            orgs: args.orgs,
            rate,
            window,
            lease: std::time::Duration::from_secs_f64(args.lease),
        };
        eprintln!(
            "cluster: 3 nodes, {} orgs at {rate} events/s each, lease {} s",
            args.orgs, args.lease
        );
        let run = cluster::run(&settings).await?;
        eprintln!(
            "  two holders each {:.1} s after spawn, {:.0} stored/s, failover {:.1} s, {} missing of {}, {} duplicates, {} gaps",
            run.steady.as_secs_f64(),
            run.stream_per_second,
            run.failover.as_secs_f64(),
            run.missing,
            run.expected,
            run.duplicates,
            run.gaps
        );
        runs.push(run);
    }
    let md = cluster::render(&runs, window, &command_line());
    print!("{md}");
    if let Some(path) = &args.write {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, cluster::splice(&old, &md))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn orgs_suite(args: OrgsArgs) -> Result<()> {
    if args.orgs.is_empty() || args.orgs.contains(&0) || args.secs <= 0.0 {
        bail!("--orgs needs counts of at least 1 and --secs a positive number");
    }
    let scratch = args.scratch.clone().unwrap_or_else(default_scratch);
    let tools = Tools::prepare(scratch.clone(), args.holdline.clone(), &[])?;
    let settings = orgs::Settings {
        holdline: tools.holdline.clone(),
        scratch,
        rate: args.rate,
        window: std::time::Duration::from_secs_f64(args.secs),
        redundancy: args.redundancy,
    };
    let mut runs = Vec::new();
    for &n in &args.orgs {
        eprintln!("orgs: {n} orgs at {} events/s each", args.rate);
        let run = orgs::run(&settings, n)
            .await
            .with_context(|| format!("{n} orgs"))?;
        eprintln!(
            "  ready in {:.1} s, {:.0} sockets, RSS {:.1} MiB, CPU {:.1} %, {:.0} events/s, {} missing of {}, {} gaps",
            run.start.as_secs_f64(),
            run.sockets,
            run.rss as f64 / 1048576.0,
            run.cpu_share * 100.0,
            run.events_per_second,
            run.missing,
            run.expected,
            run.gaps
        );
        runs.push(run);
    }
    let md = orgs::render(&runs, settings.window, &command_line());
    print!("{md}");
    if let Some(path) = &args.write {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, orgs::splice(&old, &md))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Floor { uri, expect } => {
            // The floor is a separate, minimal process: one thread, nothing else.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            drop(runtime);
            rt.block_on(floor::run(&uri, expect))
        }
        Command::Run(args) => runtime.block_on(run(args)),
        Command::Orgs(args) => runtime.block_on(orgs_suite(args)),
        Command::Cluster(args) => runtime.block_on(cluster_suite(args)),
        Command::Backfill(args) => runtime.block_on(backfill_suite(args)),
    }
}

async fn run(args: RunArgs) -> Result<()> {
    if args.events == 0 || args.topics == 0 || args.runs == 0 {
        bail!("--events, --topics and --runs must be at least 1");
    }
    let skip = |suite| args.skip.contains(&suite);
    let clients = if skip(Suite::Throughput) {
        Vec::new()
    } else {
        args.clients
            .iter()
            .map(|c| Client::parse(c))
            .collect::<Result<Vec<_>>>()?
    };
    let scratch = args.scratch.clone().unwrap_or_else(default_scratch);
    let tools = Tools::prepare(scratch.clone(), args.holdline.clone(), &clients)?;

    eprintln!(
        "building {} events over {} topics",
        args.events, args.topics
    );
    let work = Workload::build(&scratch, args.events, args.topics, None)?;
    let mut throughput: Vec<ClientRuns> = clients
        .iter()
        .map(|&client| ClientRuns {
            client,
            runs: Vec::new(),
            failures: Vec::new(),
        })
        .collect();
    // Round by round (a warm-up round, then the measured ones), every client once per
    // round, so a slow spell of a shared machine hits every client alike.
    for round in 0..=args.runs {
        for all in &mut throughput {
            measure(all, &tools, &work, round, args.runs).await;
        }
    }

    let mut latency = Vec::new();
    let rates: &[f64] = if skip(Suite::Latency) {
        &[]
    } else {
        &args.latency_rates
    };
    for &rate in rates {
        let events = (rate * args.latency_secs).round() as usize;
        eprintln!("latency: {events} events at {rate} events/s");
        let paced = Workload::build(&scratch, events.max(1), args.topics, Some(rate))?;
        let l = suites::latency_run(&tools, &paced, rate, 1)
            .await
            .with_context(|| format!("latency at {rate} events/s"))?;
        eprintln!(
            "  p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            l.p50, l.p99, l.max
        );
        latency.push(l);
    }

    let mut scaling = Vec::new();
    let counts: &[usize] = if skip(Suite::Scaling) {
        &[]
    } else {
        &args.scaling
    };
    for &sockets in counts {
        let k = suites::topics_for_shards(sockets);
        eprintln!("scaling: {} over {k} topics", plural(sockets, "socket"));
        let spread = Workload::build(&scratch, args.events, k, None)?;
        let client = Client::Holdline { redundancy: 1 };
        let mut runs = measure_sockets(client, &tools, &spread, args.runs, sockets).await?;
        let complete = runs.iter().filter(|r| r.verdict.complete()).count();
        let measured = runs.len();
        runs.sort_by(|a, b| a.events_per_second().total_cmp(&b.events_per_second()));
        let median = runs.swap_remove(measured / 2);
        scaling.push(Scale {
            sockets,
            topics: k,
            run: median,
            runs: measured,
            complete,
        });
    }

    let idle = if counts.len() >= 2 {
        // One reading moves by tens of KiB per socket between runs, so each count is read
        // once per round, the counts taking turns, and the median is kept.
        let mut readings: Vec<(usize, Vec<f64>)> =
            counts.iter().map(|&n| (n, Vec::new())).collect();
        for round in 1..=args.runs {
            for (sockets, rss_of) in &mut readings {
                let client = Client::Holdline {
                    redundancy: *sockets,
                };
                let rss = suites::idle_rss(client, &tools, &work)
                    .await
                    .with_context(|| {
                        format!("idle holdline with {}", plural(*sockets, "socket"))
                    })?;
                eprintln!(
                    "idle, round {round}: {} over {} topics: {:.1} MiB",
                    plural(*sockets, "socket"),
                    args.topics,
                    rss as f64 / 1048576.0
                );
                rss_of.push(rss as f64);
            }
        }
        let mut points: Vec<(usize, u64)> = readings
            .iter()
            .filter_map(|(sockets, rss)| Some((*sockets, stats::median(rss)? as u64)))
            .collect();
        points.sort();
        Some(report::IdleSockets {
            topics: args.topics,
            readings: args.runs,
            points,
        })
    } else {
        None
    };

    let sink_runs = if skip(Suite::Sinks) {
        Vec::new()
    } else {
        sinks::measure(args.events, args.runs).await?
    };

    let setup = Setup {
        command: command_line(),
        machine: machine(),
        versions: tools.versions.clone(),
        events: work.events(),
        topics: args.topics,
        bytes: work.firehose.bytes(),
        runs: args.runs,
    };
    let md = report::render(
        &setup,
        &throughput,
        &latency,
        &scaling,
        idle.as_ref(),
        &sink_runs,
    );
    print!("{md}");
    if let Some(path) = &args.write {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, report::splice(&old, &md))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// One run of a client in `round` (0 is the warm-up); failures are kept for the report.
async fn measure(all: &mut ClientRuns, tools: &Tools, work: &Workload, round: usize, runs: usize) {
    let client = all.client;
    let what = if round == 0 {
        "warm-up".into()
    } else {
        format!("run {round}/{runs}")
    };
    match suites::throughput_run(client, tools, work, client.redundancy()).await {
        Ok(mut run) => {
            run.round = round;
            eprintln!(
                "{}: {what}: {:.0} events/s, {:.2} CPU s, peak {:.1} MiB; {}",
                client.label(),
                run.events_per_second(),
                run.cpu,
                run.peak_rss as f64 / 1048576.0,
                run.verdict.describe()
            );
            if round > 0 {
                all.runs.push(run);
            }
        }
        Err(e) => {
            eprintln!("{}: {what} failed: {e:#}", client.label());
            if round > 0 {
                all.failures
                    .push(format!("{e:#}").lines().next().unwrap_or("").to_owned());
            }
        }
    }
}

/// Like [`measure`] for holdline over `sockets` shards; fails if a run fails.
async fn measure_sockets(
    client: Client,
    tools: &Tools,
    work: &Workload,
    runs: usize,
    sockets: usize,
) -> Result<Vec<suites::Run>> {
    let mut out = Vec::new();
    for i in 0..=runs {
        let run = suites::throughput_run(client, tools, work, sockets)
            .await
            .with_context(|| format!("holdline with {}", plural(sockets, "socket")))?;
        eprintln!(
            "  {}: {:.0} events/s, idle {:.1} MiB, peak {:.1} MiB; {}",
            plural(sockets, "socket"),
            run.events_per_second(),
            run.idle_rss as f64 / 1048576.0,
            run.peak_rss as f64 / 1048576.0,
            run.verdict.describe()
        );
        if i > 0 {
            out.push(run);
        }
    }
    Ok(out)
}

/// `1 socket`, `5 sockets`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn default_scratch() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm.join("holdline-bench")
    } else {
        std::env::temp_dir().join("holdline-bench")
    }
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run -p holdline-bench --release -- {}",
        args.join(" ")
    )
}

/// CPU model, cores, memory and kernel, from `/proc`.
fn machine() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("?".into(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".into(), |kib| format!("{:.1} GiB", kib / 1048576.0));
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let date = time::OffsetDateTime::now_utc().date().to_string();
    vec![
        ("CPU".into(), model),
        ("cores available".into(), cores.to_string()),
        ("memory".into(), mem),
        ("kernel".into(), format!("Linux {kernel}")),
        ("date".into(), date),
    ]
}
