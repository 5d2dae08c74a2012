//! `listen --spool DIR`: records go into the durable spool first (one commit per batch),
//! and one delivery thread per sink (stdout unless `--sink` says otherwise) delivers them
//! and acknowledges them only once the destination confirmed. A failing sink is retried
//! with backoff while the spool keeps its records; each sink has its own cursor. After a crash (even `kill -9`) the next run delivers everything the spool
//! had committed but stdout had not confirmed, and writes a gap record for the time no
//! run was receiving, from the newest event the crashed run spooled (less the look-back)
//! to the moment the new run is receiving again.
//!
//! When the spool holds `--spool-max-bytes` and stdout is not taking records, the writer
//! waits (back-pressure: the sockets stop being read) for `--spool-full-wait`; if it is
//! still full it drops the oldest undelivered records, logs an ERROR and writes a gap
//! record covering them. Never silent loss.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use holdline_client::Stats;
use holdline_client::stream::record::write_gap;
use holdline_sinks::{Sink, SinkError};
use holdline_spool::{Dropped, Durability, GroupCommit, Spool};

/// Most records delivered per write and acknowledgement.
const DELIVER_BATCH: usize = 1024;
/// Most bytes waiting for the spool's next commit before the writer waits (the sockets are
/// then not read until the disk catches up).
const COMMIT_QUEUE_BYTES: usize = 8 << 20;
/// The first retry delay for a failing sink; it doubles up to `Limits::retry_max`.
const RETRY_FIRST: Duration = Duration::from_millis(200);

/// How full the spool may get, and how long to hold back before dropping.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub full_wait: Duration,
    /// The gap look-back, for the window of dropped records.
    pub lookback: Duration,
    /// Longest wait between tries of a failing sink.
    pub retry_max: Duration,
}

/// The spool and its delivery threads.
pub struct Spooled {
    spool: Arc<Spool>,
    /// Commits what the writer hands over while the previous commit syncs.
    commit: GroupCommit,
    limits: Limits,
    stats: Arc<OnceLock<Arc<Stats>>>,
    /// When the spool last became full (cleared once a batch fits): events received
    /// since may have waited that long in the network while the sockets were held back.
    full_since: std::sync::Mutex<Option<SystemTime>>,
    wake: Vec<mpsc::Sender<()>>,
    stop: Arc<AtomicBool>,
    delivery: std::sync::Mutex<Vec<JoinHandle<anyhow::Result<()>>>>,
    /// When the crashed previous run last received an event, if it crashed.
    pub unclean_since: Option<SystemTime>,
}

impl Spooled {
    /// Opens the spool in `dir` and starts delivering what it holds to `sinks`.
    pub fn open(dir: &Path, limits: Limits, sinks: Vec<Box<dyn Sink>>) -> anyhow::Result<Spooled> {
        let spool = Arc::new(Spool::open(dir, Durability::Immediate)?);
        let recovered = spool.recovered();
        if recovered.torn_bytes > 0 {
            tracing::warn!(dir = %dir.display(), bytes = recovered.torn_bytes, "the spool's last commit was cut short by a crash and is left out (it was never confirmed)");
        }
        if recovered.state_lost {
            tracing::warn!(dir = %dir.display(), "the spool's state file was missing or damaged: every sink is sent everything held again");
        }
        let names: Arc<Vec<String>> = Arc::new(sinks.iter().map(|s| s.name().to_owned()).collect());
        for name in names.iter() {
            spool.register(name)?;
        }
        let labels: Vec<String> = sinks.iter().map(|s| s.label()).collect();
        let unclean_since = spool
            .begin_run()?
            .map(|micros| UNIX_EPOCH + Duration::from_micros(micros));
        for (name, label) in names.iter().zip(&labels) {
            tracing::info!(dir = %dir.display(), sink = %label, pending = spool.depth(name)?, "spool open");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats: Arc<OnceLock<Arc<Stats>>> = Arc::default();
        let (wake, woken): (Vec<_>, Vec<_>) = sinks.iter().map(|_| mpsc::channel()).unzip();
        let commit = {
            let (wake, stats, names, spool) =
                (wake.clone(), stats.clone(), names.clone(), spool.clone());
            // A small spool limit bounds the queue too, so "full" means what it says.
            let queue = COMMIT_QUEUE_BYTES.min(limits.max_bytes as usize / 4);
            GroupCommit::start(spool.clone(), queue, move |_| {
                gauges(&spool, &stats, &names);
                for w in &wake {
                    let _ = w.send(());
                }
            })?
        };
        let mut delivery = Vec::new();
        for (sink, woken) in sinks.into_iter().zip(woken) {
            let (spool, stop, stats, names) =
                (spool.clone(), stop.clone(), stats.clone(), names.clone());
            delivery.push(
                std::thread::Builder::new()
                    .name(format!("sink-{}", sink.label()))
                    .spawn(move || {
                        deliver(
                            &spool,
                            sink,
                            &woken,
                            &stop,
                            &stats,
                            &names,
                            limits.retry_max,
                        )
                    })?,
            );
        }
        Ok(Spooled {
            spool,
            commit,
            limits,
            stats,
            full_since: std::sync::Mutex::new(None),
            wake,
            stop,
            delivery: std::sync::Mutex::new(delivery),
            unclean_since,
        })
    }

    /// An error if a sink stopped for good (stdout closed): the caller ends the run.
    fn check_sinks(&self) -> anyhow::Result<()> {
        let mut threads = self.delivery.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = threads.iter().position(|t| t.is_finished()) {
            let done = threads.swap_remove(i);
            done.join()
                .map_err(|_| anyhow::anyhow!("a sink delivery thread panicked"))??;
        }
        Ok(())
    }

    /// Reports spool depth, bytes and drops in `stats` from now on.
    pub fn observe(&self, stats: Arc<Stats>) {
        let _ = self.stats.set(stats);
    }

    /// Hands `records` (each ending in a newline) to the spool's next commit, holding back
    /// while the spool is full, then dropping the oldest with a gap record. Sinks see them
    /// once their commit is durable.
    pub async fn append(
        &self,
        records: &[&[u8]],
        newest: Option<SystemTime>,
    ) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.check_sinks()?;
        let incoming: u64 = records.iter().map(|r| r.len() as u64).sum();
        let mut gap_record = Vec::new();
        let full = self.held()? + incoming > self.limits.max_bytes;
        let full_since = {
            let mut since = self.full_since.lock().unwrap_or_else(|p| p.into_inner());
            if full {
                *since.get_or_insert_with(SystemTime::now)
            } else {
                *since = None;
                SystemTime::now()
            }
        };
        if full {
            let until = tokio::time::Instant::now() + self.limits.full_wait;
            tracing::warn!(
                event = "spool_full",
                max_bytes = self.limits.max_bytes,
                "spool full; holding back until the sinks take records"
            );
            while self.held()? + incoming > self.limits.max_bytes
                && tokio::time::Instant::now() < until
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if self.held()? + incoming > self.limits.max_bytes {
                gap_record = self.make_room(incoming, full_since)?;
            }
        }
        let received = newest
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as u64);
        let mut all: Vec<&[u8]> = Vec::with_capacity(records.len() + 1);
        if !gap_record.is_empty() {
            all.push(&gap_record);
        }
        all.extend_from_slice(records);
        tokio::task::block_in_place(|| self.commit.submit(&all, received))
            .context("writing to the spool")?;
        Ok(())
    }

    /// Bytes held, counting those waiting for a commit.
    fn held(&self) -> anyhow::Result<u64> {
        Ok(self.spool.held_bytes()? + self.commit.queued_bytes())
    }

    /// Drops the oldest undelivered records until `incoming` fits; returns the gap
    /// record that reports them.
    fn make_room(&self, incoming: u64, full_since: SystemTime) -> anyhow::Result<Vec<u8>> {
        let mut dropped: Vec<Dropped> = Vec::new();
        while self.held()? + incoming > self.limits.max_bytes {
            match tokio::task::block_in_place(|| self.spool.drop_oldest(256))? {
                Some(d) => dropped.push(d),
                None => break,
            }
        }
        let records: Vec<&[u8]> = dropped
            .iter()
            .flat_map(|d| d.records.iter().map(Vec::as_slice))
            .collect();
        let Some(mut gap) = gap_for(&records, self.limits.lookback) else {
            return Ok(Vec::new());
        };
        // While the sockets were held back, these events may have waited in the network
        // since the spool filled.
        let held_back_from = full_since
            .checked_sub(self.limits.lookback)
            .unwrap_or(full_since);
        gap.from = gap.from.min(held_back_from);
        if let Some(stats) = self.stats.get() {
            stats
                .spool_dropped
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            holdline_client::telemetry::notable::gap(stats, &gap);
        }
        tracing::error!(
            event = "spool_dropped",
            records = records.len(),
            topics = gap.topics.len(),
            "spool full and the sinks not taking records: dropped the oldest, reported as a gap"
        );
        let mut out = Vec::new();
        write_gap(&mut out, &gap);
        Ok(out)
    }

    /// Delivers everything spooled, then marks the run as ended cleanly.
    pub fn close(self) -> anyhow::Result<()> {
        self.finish(true)
    }

    /// Like [`Spooled::close`], but the run counts as not closed: the client stopped on
    /// an error, so the next run reports the time no run was receiving as a gap.
    pub fn close_after_failure(self) -> anyhow::Result<()> {
        self.finish(false)
    }

    fn finish(self, clean: bool) -> anyhow::Result<()> {
        let committed = self.commit.finish().context("writing to the spool");
        self.stop.store(true, Ordering::Release);
        for w in &self.wake {
            let _ = w.send(());
        }
        let threads = std::mem::take(&mut *self.delivery.lock().unwrap_or_else(|p| p.into_inner()));
        let mut result = Ok(());
        for t in threads {
            let done = t
                .join()
                .map_err(|_| anyhow::anyhow!("a sink delivery thread panicked"))
                .and_then(|r| r);
            if result.is_ok() {
                result = done;
            }
        }
        committed?;
        if clean {
            self.spool.end_run()?;
        }
        result
    }
}

/// The gap record that reports dropped records: every topic they were on, from the
/// earliest (less the look-back) to the latest time they cover.
fn gap_for(records: &[&[u8]], lookback: Duration) -> Option<holdline_client::Gap> {
    use holdline_proto::record::{self, Record};
    let mut topics = std::collections::BTreeSet::new();
    let (mut from, mut to): (Option<SystemTime>, Option<SystemTime>) = (None, None);
    for line in records {
        let (start, end) = match record::read(line) {
            Ok(Record::Event(e)) => {
                topics.insert(e.topic.into_owned());
                let at = e.received_at;
                (Some(at.checked_sub(lookback).unwrap_or(at)), Some(at))
            }
            Ok(Record::Gap(g)) => {
                topics.extend(g.topics.into_iter().map(|t| t.into_owned()));
                (Some(g.from), Some(g.to))
            }
            // A rejected topic is no event; a line holdline did not write has no time.
            Ok(Record::Rejected(_)) | Err(_) => (None, None),
        };
        from = match (from, start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        to = to.max(end);
    }
    Some(holdline_client::Gap {
        topics: topics.into_iter().collect::<Vec<_>>().into(),
        from: from?,
        to: to?,
        reason: format!(
            "the spool was full and the sinks were not taking records: {} records dropped",
            records.len()
        ),
    })
}

/// Depth is the deepest sink's backlog.
fn gauges(spool: &Spool, stats: &OnceLock<Arc<Stats>>, sinks: &[String]) {
    if let Some(stats) = stats.get() {
        let depth = sinks
            .iter()
            .map(|s| spool.depth(s).unwrap_or_default())
            .max()
            .unwrap_or_default();
        let bytes = spool.held_bytes().unwrap_or_default();
        stats.spool_depth.store(depth as i64, Ordering::Relaxed);
        stats.spool_bytes.store(bytes as i64, Ordering::Relaxed);
    }
}

/// Delivers pending records to `sink` and acknowledges them, retrying a failing sink with
/// backoff; until stopped and drained (or, when stopping, until the sink fails: its
/// records stay in the spool for the next run). A fatal sink error ends the thread.
fn deliver(
    spool: &Spool,
    mut sink: Box<dyn Sink>,
    woken: &mpsc::Receiver<()>,
    stop: &AtomicBool,
    stats: &OnceLock<Arc<Stats>>,
    sinks: &[String],
    retry_max: Duration,
) -> anyhow::Result<()> {
    let name = sink.name().to_owned();
    let label = sink.label();
    let mut retry = RETRY_FIRST;
    let mut failures = 0u32;
    loop {
        let batch = spool.pending(&name, DELIVER_BATCH)?;
        let Some(last) = batch.last().map(|r| r.seq) else {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let _ = woken.recv_timeout(Duration::from_millis(200));
            continue;
        };
        let records: Vec<&[u8]> = batch.iter().map(|r| r.record.as_slice()).collect();
        let health = |spool: &Spool| stats.get().map(|s| (s, spool.depth(&name).unwrap_or(0)));
        match sink.deliver(&records) {
            Ok(()) => {
                spool.ack(&name, last)?;
                gauges(spool, stats, sinks);
                if let Some((s, pending)) = health(spool) {
                    s.sink_delivered(&label, records.len(), pending);
                }
                retry = RETRY_FIRST;
                failures = 0;
            }
            Err(SinkError::Fatal {
                broken_pipe: true, ..
            }) => {
                // The reader went away; the records stay in the spool, and the run ends
                // as it does without a spool.
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into());
            }
            Err(e) if e.is_fatal() => return Err(e.into()),
            Err(e) if sink.attempts().is_some_and(|n| failures + 1 >= n) => {
                // Tried enough: keep the batch in the dead-letter file, not in the way.
                sink.dead_letter(&records)?;
                spool.ack(&name, last)?;
                gauges(spool, stats, sinks);
                if let Some((s, pending)) = health(spool) {
                    s.sink_failed(&label, pending);
                    s.sink_dead_lettered(&label, records.len(), pending);
                }
                tracing::error!(event = "sink_dead_letter", sink = %label, records = records.len(), error = %e, "batch kept failing; written to the dead-letter file");
                failures = 0;
                retry = RETRY_FIRST;
            }
            Err(e) => {
                failures += 1;
                if let Some((s, pending)) = health(spool) {
                    s.sink_failed(&label, pending);
                }
                if stop.load(Ordering::Acquire) {
                    tracing::warn!(event = "sink_undelivered", sink = %label, pending = spool.depth(&name)?, error = %e, "stopping with records undelivered; the next run delivers them");
                    return Ok(());
                }
                tracing::warn!(event = "sink_retry", sink = %label, error = %e, retry_in_ms = retry.as_millis() as u64, "sink failed; retrying");
                // Wait the whole backoff (new records must not hammer a failing sink),
                // but notice a stop.
                let until = std::time::Instant::now() + retry;
                while !stop.load(Ordering::Acquire) {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let _ = woken.recv_timeout(left.min(Duration::from_millis(100)));
                }
                retry = (retry * 2).min(retry_max.max(RETRY_FIRST));
            }
        }
    }
}
