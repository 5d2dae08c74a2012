//! `listen --spool DIR`: records go into the durable spool first (one commit per batch),
//! and a delivery thread writes them to stdout and acknowledges them only once written
//! and flushed. After a crash (even `kill -9`) the next run delivers everything the spool
//! had committed but stdout had not confirmed, and writes a gap record for the time no
//! run was receiving, from the newest event the crashed run spooled (less the look-back)
//! to the moment the new run is receiving again.
//!
//! When the spool holds `--spool-max-bytes` and stdout is not taking records, the writer
//! waits (back-pressure: the sockets stop being read) for `--spool-full-wait`; if it is
//! still full it drops the oldest undelivered records, logs an ERROR and writes a gap
//! record covering them. Never silent loss.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use holdline_client::Stats;
use holdline_client::record::write_gap;
use holdline_spool::{Dropped, Durability, Spool};

/// The sink name of stdout in the spool.
const STDOUT: &str = "stdout";
/// Most records delivered per write and acknowledgement.
const DELIVER_BATCH: usize = 1024;

/// How full the spool may get, and how long to hold back before dropping.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub full_wait: Duration,
    /// The gap look-back, for the window of dropped records.
    pub lookback: Duration,
}

/// The spool and its stdout delivery thread.
pub struct Spooled {
    spool: Arc<Spool>,
    limits: Limits,
    stats: Arc<OnceLock<Arc<Stats>>>,
    /// When the spool last became full (cleared once a batch fits): events received
    /// since may have waited that long in the network while the sockets were held back.
    full_since: std::sync::Mutex<Option<SystemTime>>,
    wake: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
    delivery: Option<JoinHandle<anyhow::Result<()>>>,
    /// When the crashed previous run last received an event, if it crashed.
    pub unclean_since: Option<SystemTime>,
}

impl Spooled {
    /// Opens the spool in `dir` and starts delivering what it holds.
    pub fn open(dir: &Path, limits: Limits) -> anyhow::Result<Spooled> {
        let spool = Arc::new(Spool::open(dir, Durability::Immediate)?);
        spool.register(STDOUT)?;
        let unclean_since = spool
            .begin_run()?
            .map(|micros| UNIX_EPOCH + Duration::from_micros(micros));
        let pending = spool.depth(STDOUT)?;
        tracing::info!(dir = %dir.display(), pending, "spool open");
        let (wake, woken) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stats: Arc<OnceLock<Arc<Stats>>> = Arc::default();
        let delivery = {
            let (spool, stop, stats) = (spool.clone(), stop.clone(), stats.clone());
            std::thread::Builder::new()
                .name("spool-stdout".into())
                .spawn(move || deliver(&spool, &woken, &stop, &stats))?
        };
        Ok(Spooled {
            spool,
            limits,
            stats,
            full_since: std::sync::Mutex::new(None),
            wake,
            stop,
            delivery: Some(delivery),
            unclean_since,
        })
    }

    /// Reports spool depth, bytes and drops in `stats` from now on.
    pub fn observe(&self, stats: Arc<Stats>) {
        let _ = self.stats.set(stats);
    }

    /// Spools `records` (each ending in a newline) in one durable commit, holding back
    /// while the spool is full, then dropping the oldest with a gap record.
    pub async fn append(
        &self,
        records: &[&[u8]],
        newest: Option<SystemTime>,
    ) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
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
                "spool full; holding back until stdout takes records"
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
        tokio::task::block_in_place(|| self.spool.append_received(&all, received))
            .context("writing to the spool")?;
        self.gauges();
        let _ = self.wake.send(());
        Ok(())
    }

    fn held(&self) -> anyhow::Result<u64> {
        Ok(tokio::task::block_in_place(|| self.spool.held_bytes())?)
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
            stats.gap(gap.to.duration_since(gap.from).unwrap_or_default());
            stats
                .spool_dropped
                .fetch_add(records.len() as u64, Ordering::Relaxed);
        }
        tracing::error!(
            event = "spool_dropped",
            records = records.len(),
            topics = gap.topics.len(),
            "spool full and stdout not taking records: dropped the oldest, reported as a gap"
        );
        let mut out = Vec::new();
        write_gap(&mut out, &gap);
        Ok(out)
    }

    fn gauges(&self) {
        gauges(&self.spool, &self.stats);
    }

    /// Delivers everything spooled, then marks the run as ended cleanly.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(());
        if let Some(delivery) = self.delivery.take() {
            delivery
                .join()
                .map_err(|_| anyhow::anyhow!("the spool delivery thread panicked"))??;
        }
        self.spool.end_run()?;
        Ok(())
    }
}

/// The gap record that reports dropped records: every topic they were on, from the
/// earliest (less the look-back) to the latest time they cover.
fn gap_for(records: &[&[u8]], lookback: Duration) -> Option<holdline_client::Gap> {
    let mut topics = std::collections::BTreeSet::new();
    let (mut from, mut to): (Option<SystemTime>, Option<SystemTime>) = (None, None);
    let parse = |v: &serde_json::Value| v.as_str().and_then(|t| humantime::parse_rfc3339(t).ok());
    for record in records {
        let Ok(r) = serde_json::from_slice::<serde_json::Value>(record) else {
            continue;
        };
        let (start, end) = match r["kind"].as_str() {
            Some("event") => {
                if let Some(t) = r["topic"].as_str() {
                    topics.insert(t.to_owned());
                }
                let at = parse(&r["received_at"]);
                (at.and_then(|a| a.checked_sub(lookback)), at)
            }
            Some("gap") => {
                for t in r["topics"].as_array().into_iter().flatten() {
                    if let Some(t) = t.as_str() {
                        topics.insert(t.to_owned());
                    }
                }
                (parse(&r["from"]), parse(&r["to"]))
            }
            _ => (None, None),
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
            "the spool was full and stdout was not taking records: {} records dropped",
            records.len()
        ),
    })
}

fn gauges(spool: &Spool, stats: &OnceLock<Arc<Stats>>) {
    if let Some(stats) = stats.get() {
        let depth = spool.depth(STDOUT).unwrap_or_default();
        let bytes = spool.held_bytes().unwrap_or_default();
        stats.spool_depth.store(depth as i64, Ordering::Relaxed);
        stats.spool_bytes.store(bytes as i64, Ordering::Relaxed);
    }
}

/// Writes pending records to stdout, flushes, acknowledges; until stopped and drained.
fn deliver(
    spool: &Spool,
    woken: &mpsc::Receiver<()>,
    stop: &AtomicBool,
    stats: &OnceLock<Arc<Stats>>,
) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    loop {
        let batch = spool.pending(STDOUT, DELIVER_BATCH)?;
        let Some(last) = batch.last().map(|r| r.seq) else {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let _ = woken.recv_timeout(Duration::from_millis(200));
            continue;
        };
        for r in &batch {
            stdout.write_all(&r.record).context("writing to stdout")?;
        }
        stdout.flush().context("writing to stdout")?;
        spool.ack(STDOUT, last)?;
        gauges(spool, stats);
    }
}
