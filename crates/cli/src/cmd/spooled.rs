//! `listen --spool DIR`: records go into the durable spool first (one commit per batch),
//! and a delivery thread writes them to stdout and acknowledges them only once written
//! and flushed. After a crash (even `kill -9`) the next run delivers everything the spool
//! had committed but stdout had not confirmed, and writes a gap record for the time no
//! run was receiving, from the newest event the crashed run spooled (less the look-back)
//! to the moment the new run is receiving again.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use holdline_spool::{Durability, Spool};

/// The sink name of stdout in the spool.
const STDOUT: &str = "stdout";
/// Most records delivered per write and acknowledgement.
const DELIVER_BATCH: usize = 1024;

/// The spool and its stdout delivery thread.
pub struct Spooled {
    spool: Arc<Spool>,
    wake: mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
    delivery: Option<JoinHandle<anyhow::Result<()>>>,
    /// When the crashed previous run last received an event, if it crashed.
    pub unclean_since: Option<SystemTime>,
}

impl Spooled {
    /// Opens the spool in `dir` and starts delivering what it holds.
    pub fn open(dir: &Path) -> anyhow::Result<Spooled> {
        let spool = Arc::new(Spool::open(dir, Durability::Immediate)?);
        spool.register(STDOUT)?;
        let unclean_since = spool
            .begin_run()?
            .map(|micros| UNIX_EPOCH + Duration::from_micros(micros));
        let pending = spool.depth(STDOUT)?;
        tracing::info!(dir = %dir.display(), pending, "spool open");
        let (wake, woken) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let delivery = {
            let (spool, stop) = (spool.clone(), stop.clone());
            std::thread::Builder::new()
                .name("spool-stdout".into())
                .spawn(move || deliver(&spool, &woken, &stop))?
        };
        Ok(Spooled {
            spool,
            wake,
            stop,
            delivery: Some(delivery),
            unclean_since,
        })
    }

    /// Spools `records` (each ending in a newline) in one durable commit.
    pub fn append(&self, records: &[&[u8]], newest: Option<SystemTime>) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let received = newest
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as u64);
        tokio::task::block_in_place(|| self.spool.append_received(records, received))
            .context("writing to the spool")?;
        let _ = self.wake.send(());
        Ok(())
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

/// Writes pending records to stdout, flushes, acknowledges; until stopped and drained.
fn deliver(spool: &Spool, woken: &mpsc::Receiver<()>, stop: &AtomicBool) -> anyhow::Result<()> {
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
    }
}
