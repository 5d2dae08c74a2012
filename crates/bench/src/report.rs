//! The results as Markdown (docs/BENCHMARKS.md).

use std::fmt::Write;

use crate::clients::Client;
use crate::stats::median;
use crate::suites::{Latency, Run, Scale};

const MIB: f64 = 1024.0 * 1024.0;
const BEGIN: &str = "<!-- holdline-bench results: begin -->";
const END: &str = "<!-- holdline-bench results: end -->";

/// Puts `results` between the markers in `doc`, keeping the text around them; a doc
/// without markers becomes just the results.
pub fn splice(doc: &str, results: &str) -> String {
    let block = format!("{BEGIN}\n{}\n{END}", results.trim_end());
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &doc[..b], &doc[e + END.len()..])
        }
        _ => format!("{block}\n"),
    }
}

/// Every run of one client.
pub struct ClientRuns {
    pub client: Client,
    pub runs: Vec<Run>,
    /// Runs that did not count, with why.
    pub failures: Vec<String>,
}

impl ClientRuns {
    fn counted(&self) -> Vec<&Run> {
        self.runs.iter().filter(|r| r.verdict.complete()).collect()
    }

    fn median_of(&self, f: impl Fn(&Run) -> f64) -> Option<f64> {
        median(&self.counted().into_iter().map(f).collect::<Vec<_>>())
    }

    /// Median events per second over the runs that counted.
    pub fn rate(&self) -> Option<f64> {
        self.median_of(Run::events_per_second)
    }
}

/// What the report says about the run itself.
pub struct Setup {
    pub command: String,
    pub machine: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
    pub events: usize,
    pub topics: usize,
    pub bytes: usize,
    pub runs: usize,
}

pub fn render(
    setup: &Setup,
    throughput: &[ClientRuns],
    latency: &[Latency],
    scaling: &[Scale],
    idle: Option<&IdleSockets>,
    sinks: &[crate::sinks::SinkRuns],
) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Produced by `holdline-bench`; every number in this part comes from the run \
         described here. Re-run it on your machine with:\n\n```sh\n{}\n```\n",
        setup.command
    );
    let _ = writeln!(md, "### Machine\n");
    for (k, v) in &setup.machine {
        let _ = writeln!(md, "- {k}: {v}");
    }
    let _ = writeln!(md, "\nSoftware measured:\n");
    for (k, v) in &setup.versions {
        let _ = writeln!(md, "- {k} {v}");
    }
    if !throughput.is_empty() {
        throughput_section(&mut md, setup, throughput);
    }
    if !latency.is_empty() {
        latency_section(&mut md, latency);
    }
    if !scaling.is_empty() {
        scaling_section(&mut md, scaling);
    }
    if let Some(idle) = idle {
        idle_section(&mut md, idle);
    }
    if !sinks.is_empty() {
        sinks_section(&mut md, setup, sinks);
    }
    targets_section(&mut md, throughput, latency, scaling);
    md
}

fn throughput_section(md: &mut String, setup: &Setup, all: &[ClientRuns]) {
    let avg = setup.bytes as f64 / setup.events.max(1) as f64;
    let _ = writeln!(
        md,
        "\n### Throughput\n\n\
         The simulator (in the runner's process) publishes {} pre-built events round robin over \
         {} topics: conversation snapshots of 1–8 KB and presence events of about 400 B \
         (average frame {avg:.0} B, {:.1} MB in all), with no heartbeats, as fast as the \
         client's socket takes them. Clients take turns, round by round: one warm-up round, \
         then {} measured rounds; a run \
         counts only if the client wrote every event exactly once (checked against the \
         simulator's ledger; the floor only counts frames, and `holdline > /dev/null`, whose \
         records nobody reads, is counted by its own `/metrics`, read every 2 ms: every \
         event handed to its writer, no gap). Wall time runs from the first \
         event published to the last one written; CPU is the client process's user+system \
         time over that span; RSS is the process's peak.\n",
        setup.events,
        setup.topics,
        setup.bytes as f64 / 1e6,
        setup.runs
    );
    let base = all
        .iter()
        .find(|c| c.client == Client::Holdline { redundancy: 1 })
        .and_then(ClientRuns::rate);
    let _ = writeln!(
        md,
        "| client | events/s (median) | MB/s | wall s | CPU s | CPU µs/event | peak RSS MiB | vs holdline-r1 | runs counted |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in all {
        let counted = c.counted().len();
        let row =
            |v: Option<f64>, digits: usize| v.map_or("—".into(), |v| format!("{v:.digits$}"));
        let rate = c.rate();
        let ratio = match (rate, base) {
            (Some(r), Some(b)) => format!("{:.2}×", r / b),
            _ => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {counted}/{} |",
            c.client.describe(),
            row(rate, 0),
            row(rate.map(|r| r * avg / 1e6), 1),
            row(c.median_of(|r| r.wall), 3),
            row(c.median_of(|r| r.cpu), 2),
            row(c.median_of(|r| r.cpu / r.verdict.expected as f64 * 1e6), 2),
            row(c.median_of(|r| r.peak_rss as f64 / MIB), 1),
            ratio,
            c.runs.len() + c.failures.len(),
        );
    }
    let failures: Vec<String> = all
        .iter()
        .flat_map(|c| {
            let label = c.client.label();
            c.failures
                .iter()
                .map(move |f| format!("- {label}: {f}"))
                .chain(
                    c.runs
                        .iter()
                        .filter(|r| !r.verdict.complete())
                        .map(move |r| format!("- {}: {}", c.client.label(), r.verdict.describe())),
                )
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "\nRuns that did not count:\n\n{}", failures.join("\n"));
    }
}

fn latency_section(md: &mut String, all: &[Latency]) {
    let _ = writeln!(
        md,
        "\n### Latency\n\n\
         The simulator publishes at a fixed rate to `holdline listen` (redundancy 1); a thread \
         blocked on holdline's stdout stamps each record as it arrives. *End to end* is from \
         the simulator handing the event to the socket to the record leaving holdline \
         (simulator write, loopback TCP, holdline, pipe); *holdline's share* is from \
         holdline's `received_at` to the same moment.\n\n\
         | rate (events/s) | events | p50 ms | p99 ms | p99.9 ms | max ms | holdline's share p50 ms | p99 ms | complete |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for l in all {
        let _ = writeln!(
            md,
            "| {:.0} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            l.rate,
            l.events,
            l.p50,
            l.p99,
            l.p999,
            l.max,
            l.own_p50,
            l.own_p99,
            if l.verdict.complete() {
                "yes".into()
            } else {
                l.verdict.describe()
            }
        );
    }
}

fn sinks_section(md: &mut String, setup: &Setup, all: &[crate::sinks::SinkRuns]) {
    let _ = writeln!(
        md,
        "\n### Sinks\n\n{} records of {:.0} B (conversation snapshots over 50 queues) \
         from a spool on this machine's disk through each sink's delivery loop, the one \
         `listen --spool` runs: batches of up to 4,096 records or 4 MiB (1 MiB per webhook \
         POST by default), each confirmed by the server and acknowledged in the spool before the next. One warm-up run, then \
         the median of {}.\n",
        setup.events,
        all.first().map_or(0.0, |s| s.record_bytes),
        setup.runs
    );
    let _ = writeln!(md, "| sink | server | records/s (median) | MB/s |");
    let _ = writeln!(md, "|---|---|---:|---:|");
    for s in all {
        let rate = crate::stats::median(&s.rates).unwrap_or(0.0);
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.1} |",
            s.sink,
            s.server,
            rate,
            rate * s.record_bytes / 1e6
        );
    }
}

fn scaling_section(md: &mut String, all: &[Scale]) {
    let counts: Vec<String> = all.iter().map(|s| s.sockets.to_string()).collect();
    let runs = all.first().map_or(0, |s| s.runs);
    let _ = writeln!(
        md,
        "\n### Scaling over live sockets\n\n\
         `holdline listen` (redundancy 1) with enough topics for {} {}, one socket each. \
         19 is the most one OAuth client can hold: the 20-channel budget keeps one spare \
         channel so a rollover never evicts a live one. The same firehose is spread over \
         every topic, so every socket carries traffic. Each row is the median of {runs} runs \
         after a warm-up, taken back to back; *complete* counts the runs that delivered every \
         event exactly once.\n\n\
         | live sockets | topics | events/s | CPU µs/event | idle RSS MiB | peak RSS MiB | complete |\n\
         |---:|---:|---:|---:|---:|---:|---|",
        counts.join(", "),
        if counts.len() == 1 && all[0].sockets == 1 {
            "shard"
        } else {
            "shards"
        }
    );
    for s in all {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.2} | {:.1} | {:.1} | {}/{} |",
            s.sockets,
            s.topics,
            s.run.events_per_second(),
            s.run.cpu / s.run.verdict.expected as f64 * 1e6,
            s.run.idle_rss as f64 / MIB,
            s.run.peak_rss as f64 / MIB,
            s.complete,
            s.runs,
        );
    }
    if let Some(most) = all.iter().max_by_key(|s| s.topics) {
        let _ = writeln!(
            md,
            "\nIdle RSS grows with the topics as much as with the sockets ({} topics are \
             planned, subscribed and tracked for coverage); the memory of a socket alone is \
             measured below.",
            thousands(most.topics)
        );
    }
}

/// `18500` as `18,500`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Idle RSS of holdline over the same topics with few and many sockets (redundancy).
pub struct IdleSockets {
    pub topics: usize,
    /// Readings per socket count.
    pub readings: usize,
    /// (sockets, median idle RSS bytes), fewest first.
    pub points: Vec<(usize, u64)>,
}

impl IdleSockets {
    /// RSS added per socket between the fewest and the most.
    pub fn per_socket(&self) -> Option<f64> {
        let (lo, hi) = (self.points.first()?, self.points.last()?);
        (hi.0 > lo.0).then(|| (hi.1 as f64 - lo.1 as f64) / (hi.0 - lo.0) as f64)
    }
}

fn idle_section(md: &mut String, idle: &IdleSockets) {
    let _ = writeln!(
        md,
        "\n### Memory per idle socket\n\n\
         `holdline listen --redundancy N` over the same {} topics, subscribed and idle for \
         a second before RSS is read; the median of {}, the socket counts taking \
         turns.\n\n| sockets | idle RSS MiB |\n|---:|---:|",
        idle.topics,
        if idle.readings == 1 {
            "one reading".to_owned()
        } else {
            format!("{} readings", idle.readings)
        }
    );
    for (sockets, rss) in &idle.points {
        let _ = writeln!(md, "| {sockets} | {:.1} |", *rss as f64 / MIB);
    }
    if let Some(per) = idle.per_socket() {
        let _ = writeln!(md, "\nEach idle socket adds {:.0} KiB.", per / 1024.0);
    }
}

/// The lowest and highest ratio of `a`'s rate to `b`'s over the rounds where both
/// counted (the two ran minutes apart at most, so a slow spell hits both); `None` with
/// fewer than two such rounds.
fn round_ratios(a: &ClientRuns, b: &ClientRuns) -> Option<(f64, f64)> {
    let ratios: Vec<f64> = a
        .counted()
        .into_iter()
        .filter_map(|ra| {
            let rb = b.counted().into_iter().find(|rb| rb.round == ra.round)?;
            Some(ra.events_per_second() / rb.events_per_second())
        })
        .collect();
    if ratios.len() < 2 {
        return None;
    }
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((lo, hi))
}

fn targets_section(
    md: &mut String,
    throughput: &[ClientRuns],
    latency: &[Latency],
    scaling: &[Scale],
) {
    let of = |c: Client| throughput.iter().find(|r| r.client == c);
    let holdline = of(Client::Holdline { redundancy: 1 });
    let mut rows = Vec::new();
    let mut ratio =
        |name: &str, holdline: Option<&ClientRuns>, other: Option<&ClientRuns>, want: f64| {
            let (Some(h), Some(o)) = (holdline, other) else {
                return;
            };
            let (Some(hr), Some(or)) = (h.rate(), o.rate()) else {
                return;
            };
            let got = hr / or;
            let mut measured = format!("{got:.2}×");
            if let Some((lo, hi)) = round_ratios(h, o) {
                measured.push_str(&format!(" ({lo:.2}–{hi:.2}× round by round)"));
            }
            rows.push((name.to_owned(), format!("≥ {want}×"), measured, got >= want));
        };
    let floor = of(Client::Floor);
    ratio("holdline events/s vs raw floor", holdline, floor, 0.7);
    ratio(
        "holdline > /dev/null events/s vs raw floor",
        of(Client::HoldlineDevNull),
        floor,
        0.7,
    );
    ratio(
        "holdline events/s vs genesys-notifications",
        holdline,
        of(Client::GenesysNotifications),
        10.0,
    );
    ratio(
        "holdline events/s vs Node `ws`",
        holdline,
        of(Client::NodeWs),
        3.0,
    );
    if let Some(l) = latency.iter().find(|l| (l.rate - 10_000.0).abs() < 1.0) {
        rows.push((
            "p99 end-to-end latency at 10k events/s".into(),
            "< 1 ms".into(),
            format!("{:.3} ms", l.p99),
            l.p99 < 1.0,
        ));
    }
    if let Some(r) = throughput
        .iter()
        .find(|r| r.client == Client::Holdline { redundancy: 1 })
        && let Some(peak) = r.median_of(|r| r.peak_rss as f64 / MIB)
    {
        rows.push((
            "peak RSS, one socket at full rate".into(),
            "< 20 MiB".into(),
            format!("{peak:.1} MiB"),
            peak < 20.0,
        ));
    }
    // The target is about as many sockets as one client can hold (19 live, 1 spare).
    if let Some(s) = scaling
        .iter()
        .filter(|s| s.sockets >= 19)
        .max_by_key(|s| s.sockets)
    {
        let peak = s.run.peak_rss as f64 / MIB;
        rows.push((
            format!("peak RSS, {} sockets", s.sockets),
            "< 60 MiB".into(),
            format!("{peak:.1} MiB"),
            peak < 60.0,
        ));
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Targets\n\n| target | wanted | measured | met |\n|---|---|---|---|"
    );
    for (name, want, got, met) in rows {
        let _ = writeln!(
            md,
            "| {name} | {want} | {got} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Verdict;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(500), "500");
        assert_eq!(thousands(1500), "1,500");
        assert_eq!(thousands(18500), "18,500");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn results_replace_only_the_marked_part() {
        let doc = format!("# Title\n\nintro\n\n{BEGIN}\nold numbers\n{END}\n\n## Analysis\nkept\n");
        let out = splice(&doc, "new numbers\n");
        assert!(out.starts_with("# Title\n\nintro\n\n"));
        assert!(out.contains("new numbers") && !out.contains("old numbers"));
        assert!(out.ends_with("\n\n## Analysis\nkept\n"));
        assert_eq!(splice(&out, "new numbers"), out, "idempotent");
    }

    fn runs(client: Client, rounds: &[(usize, f64, bool)]) -> ClientRuns {
        ClientRuns {
            client,
            runs: rounds
                .iter()
                .map(|&(round, wall, complete)| Run {
                    round,
                    wall,
                    cpu: 0.0,
                    peak_rss: 0,
                    idle_rss: 0,
                    verdict: Verdict {
                        expected: 1000,
                        received: if complete { 1000 } else { 999 },
                        missing: usize::from(!complete),
                        ..Verdict::default()
                    },
                })
                .collect(),
            failures: Vec::new(),
        }
    }

    #[test]
    fn round_ratios_pair_runs_of_the_same_round_that_counted() {
        let holdline = runs(
            Client::Holdline { redundancy: 1 },
            &[
                (1, 1.0, true),
                (2, 2.0, true),
                (3, 1.0, false),
                (4, 1.0, true),
            ],
        );
        // Round 3 did not count for holdline, round 4 not for the peer, round 5 only the
        // peer ran: only rounds 1 and 2 pair up.
        let peer = runs(
            Client::NodeWs,
            &[
                (1, 3.0, true),
                (2, 8.0, true),
                (3, 1.0, true),
                (4, 1.0, false),
                (5, 1.0, true),
            ],
        );
        let (lo, hi) = round_ratios(&holdline, &peer).unwrap();
        assert!((lo - 3.0).abs() < 1e-9, "{lo}");
        assert!((hi - 4.0).abs() < 1e-9, "{hi}");
        let one = runs(Client::NodeWs, &[(1, 3.0, true)]);
        assert_eq!(round_ratios(&holdline, &one), None, "one round is no range");
    }

    fn scale(sockets: usize, peak_mib: u64) -> Scale {
        let mut run = runs(Client::Holdline { redundancy: 1 }, &[(1, 1.0, true)])
            .runs
            .remove(0);
        run.peak_rss = peak_mib << 20;
        Scale {
            sockets,
            topics: 500,
            run,
            runs: 1,
            complete: 1,
        }
    }

    #[test]
    fn the_twenty_socket_target_is_judged_only_with_that_many_sockets() {
        let mut md = String::new();
        targets_section(&mut md, &[], &[], &[scale(1, 70), scale(5, 70)]);
        assert!(!md.contains("peak RSS"), "{md}");
        let mut md = String::new();
        targets_section(&mut md, &[], &[], &[scale(1, 16), scale(19, 54)]);
        assert!(
            md.contains("| peak RSS, 19 sockets | < 60 MiB | 54.0 MiB | yes |"),
            "{md}"
        );
        let mut md = String::new();
        scaling_section(&mut md, &[scale(1, 16)]);
        assert!(
            md.contains("enough topics for 1 shard, one socket each"),
            "{md}"
        );
    }

    #[test]
    fn a_doc_without_markers_becomes_the_results() {
        let out = splice("stray text", "numbers");
        assert_eq!(out, format!("{BEGIN}\nnumbers\n{END}\n"));
    }
}
