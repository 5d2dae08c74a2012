//! The three measurements: throughput per client, end-to-end latency at fixed rates, and
//! scaling over live sockets.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use holdline_sim::firehose::{Firehose, FirehoseRequest};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use crate::clients::{Client, Tools};
use crate::counters::Counters;
use crate::harness::{Bed, Capture, sim_config, topics};
use crate::verify::{self, Verdict};
use crate::{floor, proc, stats};

/// How long a client may take to subscribe its sockets.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The firehose every throughput run publishes, with its topics written to a file.
pub struct Workload {
    pub topics: Vec<String>,
    pub topics_file: PathBuf,
    pub firehose: Arc<Firehose>,
}

impl Workload {
    /// `events` events round robin over `k` topics (see [`topics`]); `rate` paces them.
    pub fn build(scratch: &Path, events: usize, k: usize, rate: Option<f64>) -> Result<Workload> {
        let topics = topics(k);
        let topics_file = scratch.join(format!("topics-{k}.txt"));
        std::fs::write(&topics_file, topics.join("\n") + "\n")?;
        let config = sim_config(1);
        let org = holdline_sim::org::Org::generate(config.seed, config.queues, config.agents);
        let firehose = Firehose::build(
            &org,
            config.seed,
            &FirehoseRequest {
                count: events,
                topics: topics.clone(),
                rate,
            },
        );
        Ok(Workload {
            topics,
            topics_file,
            firehose: Arc::new(firehose),
        })
    }

    pub fn events(&self) -> usize {
        self.firehose.len()
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The round it ran in (clients take turns round by round; 0 is the warm-up).
    pub round: usize,
    pub wall: f64,
    pub cpu: f64,
    pub peak_rss: u64,
    /// Resident memory once subscribed, before the first event.
    pub idle_rss: u64,
    pub verdict: Verdict,
}

impl Run {
    pub fn events_per_second(&self) -> f64 {
        self.verdict.expected as f64 / self.wall
    }
}

/// Starts a simulator and `client`, publishes the workload as fast as the client takes
/// it, and measures until it has written every event; then checks its output.
/// `sockets` is how many live sockets the client holds once subscribed.
pub async fn throughput_run(
    client: Client,
    tools: &Tools,
    work: &Workload,
    sockets: usize,
) -> Result<Run> {
    let events = work.events();
    let bed = Bed::start(sim_config(events + 16)).await?;
    // Every event's frame plus room for the record's own fields (about 200 bytes).
    let capacity = work.firehose.bytes() + events * 512;
    let capture = if client.counted_by_metrics() {
        Capture::Discard
    } else {
        Capture::Collect(capacity)
    };
    let mut watched = client
        .spawn(
            &bed,
            tools,
            &work.topics_file,
            &work.topics,
            events,
            capture,
        )
        .await?;
    bed.wait_ready(
        &work.topics,
        client.redundancy(),
        sockets,
        &mut watched,
        READY_WITHIN,
    )
    .await?;
    let counters = if client.counted_by_metrics() {
        Some(Counters::find(&mut watched, READY_WITHIN).await?)
    } else {
        None
    };
    let pid = watched.pid();
    let idle_rss = proc::rss(pid)?;
    let cpu_before = proc::cpu_seconds(pid)?;
    let start = Instant::now();
    let core = bed.sim.core().clone();
    let firehose = work.firehose.clone();
    let publisher = tokio::spawn(async move { firehose.publish(&core, None).await });
    // Generous: the slowest peer manages a few thousand events per second.
    let within = Duration::from_secs(120).max(Duration::from_millis(events as u64));
    let (done, totals) = match &counters {
        Some(counters) => match counters.wait_emitted(events, &mut watched, within).await {
            Ok((done, totals)) => (Ok(done), Some(totals)),
            Err(e) => (Err(e), None),
        },
        None => (
            watched
                .wait_lines(client.lines_when_done(events), within)
                .await,
            None,
        ),
    };
    let cpu = proc::cpu_seconds(pid)? - cpu_before;
    let peak_rss = proc::peak_rss(pid)?;
    let done = done?;
    let report = publisher.await.context("the firehose task failed")?;
    // Anything counted after the last event (a late gap, one event too many) still counts.
    let totals = match (&counters, totals) {
        (Some(counters), Some(seen)) => Some(counters.read().await.unwrap_or(seen)),
        (_, totals) => totals,
    };
    let output = watched.finish();
    let verdict = if let Some(totals) = totals {
        totals.verdict(events)
    } else if client == Client::Floor {
        let text = String::from_utf8_lossy(&output);
        let frames = text
            .lines()
            .find_map(floor::parse_report)
            .map_or(0, |r| r.0);
        Verdict {
            expected: events,
            received: frames.min(events),
            missing: events.saturating_sub(frames),
            ..Verdict::default()
        }
    } else {
        verify::check(output.as_slice(), &bed.ledger(events + 16))?
    };
    if report.published != events {
        bail!("the firehose published {} of {events}", report.published);
    }
    let _ = bed.sim.stop().await;
    Ok(Run {
        round: 0,
        wall: (done - start).as_secs_f64(),
        cpu,
        peak_rss,
        idle_rss,
        verdict,
    })
}

/// Resident memory of `client` once subscribed and idle for a second.
pub async fn idle_rss(client: Client, tools: &Tools, work: &Workload) -> Result<u64> {
    let bed = Bed::start(sim_config(16)).await?;
    let mut watched = client
        .spawn(
            &bed,
            tools,
            &work.topics_file,
            &work.topics,
            0,
            Capture::Collect(0),
        )
        .await?;
    let sockets = client.redundancy();
    bed.wait_ready(&work.topics, sockets, sockets, &mut watched, READY_WITHIN)
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = proc::rss(watched.pid())?;
    watched.finish();
    let _ = bed.sim.stop().await;
    Ok(rss)
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    pub rate: f64,
    pub events: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Receive to written (holdline's own share), p50 and p99.
    pub own_p50: f64,
    pub own_p99: f64,
    pub verdict: Verdict,
}

struct Sample {
    id: [u8; 16],
    written: SystemTime,
    received_at: Option<OffsetDateTime>,
}

/// Publishes the workload at its fixed rate to `holdline listen` and measures, per event,
/// the time from publication to the moment its record comes out of holdline's stdout.
pub async fn latency_run(
    tools: &Tools,
    work: &Workload,
    rate: f64,
    redundancy: usize,
) -> Result<Latency> {
    let events = work.events();
    let bed = Bed::start(sim_config(events + 16)).await?;
    let client = Client::Holdline { redundancy };
    let mut watched = client
        .spawn(
            &bed,
            tools,
            &work.topics_file,
            &work.topics,
            events,
            Capture::Raw,
        )
        .await?;
    let stdout = watched.child.stdout.take().context("holdline's stdout")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread blocked on the pipe stamps each record the moment it is readable.
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 16, stdout);
        let mut samples = Vec::with_capacity(events);
        let mut copy = Vec::with_capacity(events * 64);
        let mut line = Vec::new();
        while samples.len() < events {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let written = SystemTime::now();
            if let Some(sample) = sample(&line, written) {
                samples.push(sample);
            }
            // Keep enough of each line to check it against the ledger afterwards.
            copy.extend_from_slice(&line);
        }
        let _ = tx.send((samples, copy));
        // Drain anything else so holdline never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    bed.wait_ready(
        &work.topics,
        redundancy,
        redundancy,
        &mut watched,
        READY_WITHIN,
    )
    .await?;
    let core = bed.sim.core().clone();
    let firehose = work.firehose.clone();
    let publisher = tokio::spawn(async move { firehose.publish(&core, Some(rate)).await });
    let within = Duration::from_secs_f64(events as f64 / rate + 60.0);
    let (samples, copy) = tokio::time::timeout(within, rx)
        .await
        .context("holdline did not write every event in time")?
        .context("the reader thread ended early")?;
    publisher.await?;
    let ledger = bed.ledger(events + 16);
    let verdict = verify::check(copy.as_slice(), &ledger)?;
    watched.finish();
    let _ = bed.sim.stop().await;

    let published: HashMap<[u8; 16], OffsetDateTime> = ledger
        .iter()
        .map(|e| (e.id.to_hex(), e.published_at))
        .collect();
    let mut total = Vec::with_capacity(samples.len());
    let mut own = Vec::with_capacity(samples.len());
    for s in &samples {
        let written = OffsetDateTime::from(s.written);
        if let Some(at) = published.get(&s.id) {
            total.push(millis(written - *at));
        }
        if let Some(received) = s.received_at {
            own.push(millis(written - received));
        }
    }
    total.sort_by(f64::total_cmp);
    own.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p| stats::percentile(v, p).unwrap_or(f64::NAN);
    Ok(Latency {
        rate,
        events,
        p50: pct(&total, 50.0),
        p99: pct(&total, 99.0),
        p999: pct(&total, 99.9),
        max: total.last().copied().unwrap_or(f64::NAN),
        own_p50: pct(&own, 50.0),
        own_p99: pct(&own, 99.0),
        verdict,
    })
}

fn millis(d: time::Duration) -> f64 {
    d.as_seconds_f64() * 1000.0
}

/// The id and `received_at` of an event record; `None` for anything else.
fn sample(line: &[u8], written: SystemTime) -> Option<Sample> {
    const PREFIX: &[u8] = br#"{"kind":"event","id":""#;
    const RECEIVED: &[u8] = br#""received_at":""#;
    let rest = line.strip_prefix(PREFIX)?;
    let id: [u8; 16] = rest.get(..16)?.try_into().ok()?;
    let received_at = line
        .windows(RECEIVED.len())
        .position(|w| w == RECEIVED)
        .and_then(|at| line.get(at + RECEIVED.len()..at + RECEIVED.len() + 27))
        .and_then(|text| std::str::from_utf8(text).ok())
        .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok());
    Some(Sample {
        id,
        written,
        received_at,
    })
}

/// Throughput and memory of holdline holding `sockets` live sockets (one shard each).
#[derive(Debug, Clone)]
pub struct Scale {
    pub sockets: usize,
    pub topics: usize,
    /// The run with the median rate.
    pub run: Run,
    /// Measured runs, and how many of them were complete.
    pub runs: usize,
    pub complete: usize,
}

/// Topics that make `sockets` shards of at most 1,000 topics.
pub fn topics_for_shards(sockets: usize) -> usize {
    (sockets.max(1) * 1000).saturating_sub(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_yields_its_id_and_receive_time() {
        let line = br#"{"kind":"event","id":"00112233445566ff","topic":"t","received_at":"2026-11-27T10:00:00.123456Z","org":"o","body":{}}"#;
        let s = sample(line, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(&s.id, b"00112233445566ff");
        let at = s.received_at.unwrap();
        assert_eq!(at.microsecond(), 123_456);
        assert!(sample(br#"{"kind":"gap","topics":[]}"#, SystemTime::UNIX_EPOCH).is_none());
    }

    #[test]
    fn shard_topic_counts_need_exactly_that_many_shards() {
        for sockets in [1, 5, 19] {
            let k = topics_for_shards(sockets);
            assert_eq!(k.div_ceil(1000), sockets);
        }
    }
}
