//! Delivery from the spool to one sink, on the async runtime: read a batch after the
//! sink's cursor (on a blocking thread, as all spool access), deliver it, and move the
//! cursor only once the sink confirmed. A failing sink is retried with the shared backoff
//! while the spool keeps its records; after a sink's `attempts` a batch goes to its
//! dead-letter file and counts as handled. A fatal error (stdout closed) ends the loop
//! with that error, for the caller to act on; nothing here ends silently.

use std::sync::Arc;
use std::time::Duration;

use holdline_proto::backoff::Backoff;
use holdline_spool::{Pending, Spool, SpoolError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, watch};

use crate::{Sink, SinkError};

/// Most records per batch.
pub const BATCH: usize = 4096;
/// Most bytes of records per batch (at least one record).
pub const BATCH_BYTES: usize = 4 << 20;
/// How often an idle loop looks at the spool without being woken.
const IDLE: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

/// The sinks' metrics, one series per sink (by its label). Clones share the series.
#[derive(Debug, Clone, Default)]
pub struct SinkMetrics {
    delivered: Family<SinkLabel, Counter>,
    failures: Family<SinkLabel, Counter>,
    dead_lettered: Family<SinkLabel, Counter>,
    pending: Family<SinkLabel, Gauge>,
}

/// One sink's numbers, read back (for `holdline top` and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkHealth {
    /// Records the sink confirmed.
    pub delivered: u64,
    /// Batches that failed (each retried, or dead-lettered after its attempts).
    pub failures: u64,
    /// Records written to the dead-letter file.
    pub dead_lettered: u64,
    /// Records in the spool this sink has not confirmed yet.
    pub pending: u64,
}

impl SinkMetrics {
    /// Adds the sink families to `registry` (names and labels as documented for
    /// dashboards: `holdline_sink_*{sink="…"}`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "holdline_sink_delivered",
            "Records the sink confirmed",
            self.delivered.clone(),
        );
        registry.register(
            "holdline_sink_failures",
            "Deliveries the sink did not confirm (retried with backoff)",
            self.failures.clone(),
        );
        registry.register(
            "holdline_sink_dead_lettered",
            "Records written to the sink's dead-letter file after its attempts",
            self.dead_lettered.clone(),
        );
        registry.register(
            "holdline_sink_pending",
            "Records in the spool the sink has not confirmed yet",
            self.pending.clone(),
        );
    }

    /// `sink`'s numbers so far.
    pub fn health(&self, sink: &str) -> SinkHealth {
        let l = label(sink);
        SinkHealth {
            delivered: self.delivered.get_or_create(&l).get(),
            failures: self.failures.get_or_create(&l).get(),
            dead_lettered: self.dead_lettered.get_or_create(&l).get(),
            pending: self.pending.get_or_create(&l).get().max(0) as u64,
        }
    }

    fn pending(&self, sink: &SinkLabel, pending: u64) {
        self.pending
            .get_or_create(sink)
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

fn label(sink: &str) -> SinkLabel {
    SinkLabel {
        sink: holdline_proto::exposition::escape(sink).into_owned(),
    }
}

/// Why a delivery loop stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error("the spool: {0}")]
    Spool(#[from] SpoolError),
    /// Retrying cannot help.
    #[error(transparent)]
    Sink(SinkError),
    /// The reader of stdout went away; the records stay in the spool.
    #[error("stdout was closed")]
    BrokenPipe,
    #[error("a spool read panicked")]
    Panicked,
}

/// Delivers from the spool to one sink until stopped.
pub struct Deliverer {
    spool: Arc<Spool>,
    sink: Box<dyn Sink>,
    name: Arc<str>,
    /// For logs.
    shown: String,
    /// For metrics (escaped).
    label: SinkLabel,
    metrics: SinkMetrics,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
    retry: Backoff,
}

impl Deliverer {
    /// A loop for `sink` (registered with `spool` here), woken by `wake` when records were
    /// committed, stopping once `stop` turns true and everything is delivered (or the
    /// sink fails: its records stay for the next run). Retries wait from `retry_first`,
    /// doubling up to `retry_max`, jittered.
    pub fn new(
        spool: Arc<Spool>,
        sink: Box<dyn Sink>,
        metrics: SinkMetrics,
        wake: Arc<Notify>,
        stop: watch::Receiver<bool>,
        retry_first: Duration,
        retry_max: Duration,
    ) -> Result<Deliverer, SpoolError> {
        spool.register(sink.name())?;
        let deliverer = Deliverer {
            name: sink.name().into(),
            label: label(&sink.label()),
            shown: sink.label(),
            sink,
            metrics,
            wake,
            stop,
            retry: Backoff::new(retry_first, retry_max),
            spool,
        };
        let pending = deliverer.spool.depth(&deliverer.name)?;
        deliverer.metrics.pending(&deliverer.label, pending);
        for family in [
            &deliverer.metrics.delivered,
            &deliverer.metrics.failures,
            &deliverer.metrics.dead_lettered,
        ] {
            let _ = family.get_or_create(&deliverer.label);
        }
        Ok(deliverer)
    }

    /// The sink's label (for logs).
    pub fn label(&self) -> &str {
        &self.shown
    }

    /// Marks everything up to `last` delivered and updates the depth (`&mut`, so the
    /// future needs no `Sync` sink).
    async fn ack(&mut self, last: u64) -> Result<(), DeliverError> {
        let (spool, name) = (self.spool.clone(), self.name.clone());
        let pending = tokio::task::spawn_blocking(move || {
            spool.ack(&name, last)?;
            spool.depth(&name)
        })
        .await
        .map_err(|_| DeliverError::Panicked)??;
        self.metrics.pending(&self.label, pending);
        Ok(())
    }

    /// Runs until stopped and drained.
    pub async fn run(mut self) -> Result<(), DeliverError> {
        let mut failures = 0u32;
        loop {
            let batch = read(
                self.spool.clone(),
                self.name.clone(),
                self.sink.batch_bytes(),
            )
            .await?;
            let Some(last) = batch.last() else {
                if *self.stop.borrow() {
                    return Ok(());
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    _ = self.stop.changed() => {}
                    () = tokio::time::sleep(IDLE) => {}
                }
                continue;
            };
            let n = batch.records.len() as u64;
            match self.sink.deliver(&batch.records).await {
                Ok(()) => {
                    self.ack(last).await?;
                    self.metrics.delivered.get_or_create(&self.label).inc_by(n);
                    self.retry.reset();
                    failures = 0;
                }
                Err(SinkError::Fatal {
                    broken_pipe: true, ..
                }) => return Err(DeliverError::BrokenPipe),
                Err(e) if e.is_fatal() => return Err(DeliverError::Sink(e)),
                Err(e) if self.sink.attempts().is_some_and(|a| failures + 1 >= a) => {
                    // Tried enough: keep the batch in the dead-letter file, not in the way.
                    self.sink
                        .dead_letter(&batch.records)
                        .await
                        .map_err(DeliverError::Sink)?;
                    self.ack(last).await?;
                    self.metrics.failures.get_or_create(&self.label).inc();
                    self.metrics
                        .dead_lettered
                        .get_or_create(&self.label)
                        .inc_by(n);
                    tracing::error!(event = "sink_dead_letter", sink = %self.shown, records = n, error = %e, "batch kept failing; written to the dead-letter file");
                    self.retry.reset();
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.failures.get_or_create(&self.label).inc();
                    self.metrics
                        .pending(&self.label, self.spool.depth(&self.name)?);
                    if *self.stop.borrow() {
                        tracing::warn!(event = "sink_undelivered", sink = %self.shown, pending = self.spool.depth(&self.name)?, error = %e, "stopping with records undelivered; the next run delivers them");
                        return Ok(());
                    }
                    let wait = self.retry.next().unwrap_or(IDLE);
                    tracing::warn!(event = "sink_retry", sink = %self.shown, error = %e, retry_in_ms = wait.as_millis() as u64, "sink failed; retrying");
                    // The whole backoff (new records must not hammer a failing sink), but
                    // a stop ends the wait.
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = self.stop.changed() => {}
                    }
                }
            }
        }
    }
}

async fn read(spool: Arc<Spool>, name: Arc<str>, bytes: usize) -> Result<Pending, DeliverError> {
    tokio::task::spawn_blocking(move || spool.pending_shared(&name, BATCH, bytes))
        .await
        .map_err(|_| DeliverError::Panicked)?
        .map_err(DeliverError::from)
}
