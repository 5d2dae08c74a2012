//! `listen --spool DIR`: records go into the durable spool first (group commit: a batch is
//! written while the previous one syncs), and one delivery task per sink (stdout unless
//! `--sink` says otherwise, each a `holdline_sinks::Deliverer`) delivers them once durable
//! and acknowledges them only once the destination confirmed. A failing sink is retried
//! with backoff while the spool keeps its records; each sink has its own cursor. After a
//! crash (even `kill -9`) the next run delivers everything the spool had committed but
//! stdout had not confirmed, and writes a gap record for the time no
//! run was receiving, from the newest event the crashed run spooled (less the look-back)
//! to the moment the new run is receiving again.
//!
//! When the spool holds `--spool-max-bytes` and stdout is not taking records, the writer
//! waits (back-pressure: the sockets stop being read) for `--spool-full-wait`; if it is
//! still full it drops the oldest undelivered records, logs an ERROR and writes a gap
//! record covering them. Never silent loss.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use holdline_client::Stats;
use holdline_client::stream::record::write_gap;
use holdline_sinks::{DeliverError, Deliverer, Sink, SinkMetrics};
use holdline_spool::{Dropped, Durability, GroupCommit, Spool};
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Most bytes waiting for the spool's next commit before the writer waits (the sockets are
/// then not read until the disk catches up).
const COMMIT_QUEUE_BYTES: usize = 4 << 20;
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

type Delivery = (String, JoinHandle<Result<(), DeliverError>>);

/// Where the gaps of dropped records are counted: the one engine, or each org's.
pub enum Engines {
    One(Arc<Stats>),
    Orgs(holdline_client::telemetry::metrics::Orgs),
}

impl Engines {
    fn of(&self, org: &str) -> Option<Arc<Stats>> {
        match self {
            Engines::One(stats) => Some(stats.clone()),
            Engines::Orgs(orgs) => orgs
                .list()
                .into_iter()
                .find(|(name, _)| &**name == org)
                .map(|(_, stats)| stats),
        }
    }
}

/// The spool, its committer and one delivery task per sink.
pub struct Spooled {
    spool: Arc<Spool>,
    /// Commits what the writer hands over while the previous commit syncs.
    commit: GroupCommit,
    limits: Limits,
    stats: Arc<OnceLock<Engines>>,
    /// When the spool last became full (cleared once a batch fits): events received
    /// since may have waited that long in the network while the sockets were held back.
    full_since: std::sync::Mutex<Option<SystemTime>>,
    stop: watch::Sender<bool>,
    delivery: std::sync::Mutex<Vec<Delivery>>,
    /// When the crashed previous run last received an event, if it crashed.
    pub unclean_since: Option<SystemTime>,
}

impl Spooled {
    /// Opens the spool in `dir` and starts delivering what it holds to `sinks` (on the
    /// current runtime); the spool's and the sinks' series go into `registry`.
    pub fn open(
        dir: &Path,
        limits: Limits,
        sinks: Vec<Box<dyn Sink>>,
        registry: &mut Registry,
    ) -> anyhow::Result<Spooled> {
        let spool = Arc::new(Spool::open(dir, Durability::Immediate)?);
        let recovered = spool.recovered();
        if recovered.torn_bytes > 0 {
            tracing::warn!(dir = %dir.display(), bytes = recovered.torn_bytes, "the spool's last commit was cut short by a crash and is left out (it was never confirmed)");
        }
        if recovered.state_lost {
            tracing::warn!(dir = %dir.display(), "the spool's state file was missing or damaged: every sink is sent everything held again");
        }
        let names: Vec<String> = sinks.iter().map(|s| s.name().to_owned()).collect();
        if let Some(twice) = names
            .iter()
            .enumerate()
            .find_map(|(i, n)| names[..i].contains(n).then_some(n))
        {
            return Err(super::UsageError(format!(
                "two sinks deliver to {twice}: each sink needs its own destination (they would share one cursor in the spool)"
            ))
            .into());
        }
        for (name, pending) in spool.sinks() {
            if names.contains(&name) {
                continue;
            }
            if pending == 0 {
                spool.forget(&name)?;
            } else {
                tracing::warn!(dir = %dir.display(), sink = %without_path(&name), pending, "the spool keeps records for a sink this run does not deliver to; they count toward --spool-max-bytes until a run delivers to it again (or the spool folder is cleared)");
            }
        }
        holdline_spool::register(spool.clone(), registry);
        let metrics = SinkMetrics::default();
        metrics.register(registry);
        let (stop, stopped) = watch::channel(false);
        let mut wakes = Vec::new();
        let mut deliverers = Vec::new();
        for sink in sinks {
            let wake = Arc::new(Notify::new());
            wakes.push(wake.clone());
            let name = sink.name().to_owned();
            let d = Deliverer::new(
                spool.clone(),
                sink,
                metrics.clone(),
                wake,
                stopped.clone(),
                RETRY_FIRST,
                limits.retry_max,
            )?;
            tracing::info!(dir = %dir.display(), sink = %d.label(), pending = spool.depth(&name)?, "spool open");
            deliverers.push(d);
        }
        let unclean_since = spool
            .begin_run()?
            .map(|micros| UNIX_EPOCH + Duration::from_micros(micros));
        let commit = {
            // A small spool limit bounds the queue too, so "full" means what it says.
            let queue = COMMIT_QUEUE_BYTES.min(limits.max_bytes as usize / 4);
            GroupCommit::start(spool.clone(), queue, move |_| {
                for w in &wakes {
                    w.notify_one();
                }
            })?
        };
        let delivery = deliverers
            .into_iter()
            .map(|d| (d.label().to_owned(), tokio::spawn(d.run())))
            .collect();
        Ok(Spooled {
            spool,
            commit,
            limits,
            stats: Arc::default(),
            full_since: std::sync::Mutex::new(None),
            stop,
            delivery: std::sync::Mutex::new(delivery),
            unclean_since,
        })
    }

    /// An error if a sink stopped for good (stdout closed): the caller ends the run.
    async fn check_sinks(&self) -> anyhow::Result<()> {
        let done = {
            let mut tasks = self.delivery.lock().unwrap_or_else(|p| p.into_inner());
            tasks
                .iter()
                .position(|(_, t)| t.is_finished())
                .map(|i| tasks.swap_remove(i))
        };
        match done {
            Some((label, task)) => ended(&label, task.await),
            None => Ok(()),
        }
    }

    /// Counts the gaps of dropped records in the engines' stats from now on.
    pub fn observe(&self, engines: Engines) {
        let _ = self.stats.set(engines);
    }

    /// How many bytes of records the writer should gather per hand-over: at most an eighth
    /// of the spool, so that one burst never counts as a full spool.
    pub fn batch_bytes(&self, most: usize) -> usize {
        most.min(self.limits.max_bytes as usize / 8).max(1)
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
        self.check_sinks().await?;
        let incoming: u64 = records.iter().map(|r| r.len() as u64).sum();
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
                self.make_room(incoming, full_since)?;
            }
        }
        let received = newest
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as u64);
        tokio::task::block_in_place(|| self.commit.submit(records, received))
            .context("writing to the spool")?;
        Ok(())
    }

    /// Bytes held, counting those waiting for a commit.
    fn held(&self) -> anyhow::Result<u64> {
        Ok(self.spool.held_bytes()? + self.commit.queued_bytes())
    }

    /// Drops the oldest undelivered records until `incoming` fits. The gap record that
    /// reports them is committed before they are forgotten, so a crash in between keeps
    /// the records or their gap, never neither.
    fn make_room(&self, incoming: u64, full_since: SystemTime) -> anyhow::Result<()> {
        let over = (self.held()? + incoming).saturating_sub(self.limits.max_bytes);
        let mut dropped: Vec<Dropped> = Vec::new();
        let (mut through, mut freed) = (None, 0u64);
        while freed < over {
            let next = tokio::task::block_in_place(|| self.spool.oldest(through, 256))?;
            let Some(d) = next else { break };
            freed += d.records.iter().map(|r| r.len() as u64).sum::<u64>();
            through = Some(d.last);
            dropped.push(d);
        }
        let Some(through) = through else {
            return Ok(());
        };
        let records: Vec<&[u8]> = dropped
            .iter()
            .flat_map(|d| d.records.iter().map(Vec::as_slice))
            .collect();
        let gaps = gaps_for(&records, self.limits.lookback);
        if !gaps.is_empty() {
            // While the sockets were held back, these events may have waited in the
            // network since the spool filled.
            let held_back_from = full_since
                .checked_sub(self.limits.lookback)
                .unwrap_or(full_since);
            let mut lines = Vec::with_capacity(gaps.len());
            for (org, mut gap) in gaps {
                gap.from = gap.from.min(held_back_from);
                if let Some(stats) = self.stats.get().and_then(|e| e.of(&org)) {
                    holdline_client::telemetry::notable::gap(&stats, &gap);
                }
                let mut line = Vec::new();
                write_gap(&mut line, &gap, &org, None);
                lines.push(line);
            }
            tracing::error!(
                event = "spool_dropped",
                records = records.len(),
                "spool full and the sinks not taking records: dropped the oldest, reported as a gap"
            );
            tokio::task::block_in_place(|| {
                let lines: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
                self.commit.submit(&lines, None)?;
                self.commit.flush()
            })
            .context("writing to the spool")?;
        }
        tokio::task::block_in_place(|| self.spool.forget_through(through))?;
        Ok(())
    }

    /// Delivers everything spooled, then marks the run as ended cleanly.
    pub async fn close(self) -> anyhow::Result<()> {
        self.finish(true).await
    }

    /// Like [`Spooled::close`], but the run counts as not closed: the client stopped on
    /// an error, so the next run reports the time no run was receiving as a gap.
    pub async fn close_after_failure(self) -> anyhow::Result<()> {
        self.finish(false).await
    }

    async fn finish(self, clean: bool) -> anyhow::Result<()> {
        let commit = self.commit;
        let committed = tokio::task::spawn_blocking(move || commit.finish())
            .await
            .context("the spool's writer")?
            .context("writing to the spool");
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.delivery.lock().unwrap_or_else(|p| p.into_inner()));
        let mut result = Ok(());
        for (label, task) in tasks {
            let done = ended(&label, task.await);
            if result.is_ok() {
                result = done;
            }
        }
        committed?;
        if clean {
            let spool = self.spool.clone();
            tokio::task::spawn_blocking(move || spool.end_run())
                .await
                .context("the spool")??;
        }
        result
    }
}

/// What a delivery task's end means for the run: stdout closed ends it as it does without
/// a spool (the records stay spooled for the next run); any other error is reported.
fn ended(
    label: &str,
    joined: Result<Result<(), DeliverError>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(DeliverError::BrokenPipe)) => {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into())
        }
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("delivering to {label}"))),
        Err(e) => Err(anyhow::anyhow!("the delivery task of {label} died: {e}")),
    }
}
/// The gaps that report `records` dropped: one per org, over the topics and times of its
/// records (less the look-back before each event, for events in flight).
fn gaps_for(records: &[&[u8]], lookback: Duration) -> Vec<(String, holdline_client::Gap)> {
    use holdline_proto::record::{self, Record};
    #[derive(Default)]
    struct Span {
        topics: std::collections::BTreeSet<String>,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        records: usize,
    }
    let mut orgs: std::collections::BTreeMap<String, Span> = Default::default();
    for line in records {
        let (org, start, end) = match record::read(line) {
            Ok(Record::Event(e)) => {
                let at = e.received_at;
                let span = orgs.entry(e.org.into_owned()).or_default();
                span.topics.insert(e.topic.into_owned());
                (span, at.checked_sub(lookback).unwrap_or(at), at)
            }
            Ok(Record::Gap(g)) => {
                let span = orgs
                    .entry(g.org.unwrap_or_default().into_owned())
                    .or_default();
                span.topics
                    .extend(g.topics.into_iter().map(|t| t.into_owned()));
                (span, g.from, g.to)
            }
            // A rejected topic or a back-fill is no event; a line holdline did not write
            // has no time.
            Ok(Record::Rejected(_) | Record::Backfill(_) | Record::BackfillDone(_)) | Err(_) => {
                continue;
            }
        };
        org.from = Some(org.from.map_or(start, |f| f.min(start)));
        org.to = org.to.max(Some(end));
        org.records += 1;
    }
    orgs.into_iter()
        .filter_map(|(org, span)| {
            let gap = holdline_client::Gap {
                topics: span.topics.into_iter().collect::<Vec<_>>().into(),
                from: span.from?,
                to: span.to?,
                reason: format!(
                    "the spool was full and the sinks were not taking records: {} records dropped",
                    span.records
                ),
            };
            Some((org, gap))
        })
        .collect()
}

/// A sink's name as logs may show it: a URL's path (a webhook's may be its secret) left out.
fn without_path(name: &str) -> String {
    let Some((scheme, rest)) = name.split_once("://") else {
        return name.to_owned();
    };
    match rest.split_once('/') {
        Some((host, _)) => format!("{scheme}://{host}/…"),
        None => name.to_owned(),
    }
}
