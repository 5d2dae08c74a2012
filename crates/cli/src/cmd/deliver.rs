//! `holdline deliver --cluster`: the cluster's stream into the other sinks (file,
//! webhook, Redis, Kafka), one deliverer writing at a time.
//!
//! Deliverers of one name share a durable JetStream consumer (which keeps the position)
//! and a lease in the `holdline_deliver` bucket. Only the lease's holder fetches; before
//! each batch it renews the lease by compare-and-set and writes with the new revision as
//! its fencing token, then acknowledges each message. A deliverer that was paused or cut
//! off finds its renewal refused and stops before writing; a sink that checks the token
//! (Redis, a file, a webhook answering 409) refuses a write that was already on its way.
//! Another deliverer takes over once the lease ages out, from the consumer's first
//! unacknowledged messages: at least once, and in order but for a batch a deliverer had
//! in hand when it died, which may come after later ones.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use holdline_cluster::{Bucket, ClusterUrl, Lease, LeaseError};
use holdline_sinks::{Fence, Sink, SinkConfig, SinkError};

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::{Signal, Signals, UsageError};

/// Messages per batch, and the most a deliverer has unacknowledged.
const BATCH: usize = 1000;

#[derive(Debug, clap::Args)]
pub struct DeliverArgs {
    /// The cluster's NATS JetStream (as `listen --cluster`): nats://host:4222[,host:4222…]
    /// with the same options after `?`.
    #[arg(long, env = "HOLDLINE_CLUSTER", value_name = "URL")]
    pub cluster: String,
    /// This deliverer's id (default: the host name).
    #[arg(long)]
    pub node: Option<String>,
    /// The stream the nodes publish into (their NATS sink's `stream=`).
    #[arg(long, default_value = "HOLDLINE")]
    pub stream: String,
    /// Deliver only the subjects matching this (`holdline.acme.>`); default: all.
    #[arg(long)]
    pub subject: Option<String>,
    /// The delivery's name: its consumer and its lease. Deliverers with one name share
    /// one delivery (one of them writes at a time); another name is another delivery.
    #[arg(long, default_value = "holdline-deliver")]
    pub name: String,
    /// Where to deliver, as `listen --sink` (repeat for several; each batch goes to
    /// every one before it is acknowledged).
    #[arg(long = "sink", required = true, value_name = "URL")]
    pub sinks: Vec<String>,
    /// How long the lease lasts without renewal: a deliverer that dies is replaced this
    /// long after its last renewal (give every deliverer of a name the same).
    #[arg(long, default_value = "10s", value_parser = super::duration)]
    pub lease: Duration,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address (127.0.0.1:9464
    /// when the flag has no value; off without the flag).
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = super::observe::DEFAULT_ADDR)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// What a deliverer shows in `/metrics` and `/readyz`.
#[derive(Clone, Default)]
pub struct Watched {
    records: Counter,
    holding: Gauge,
    takeovers: Counter,
    failures: Counter,
    /// Why the deliverer is not ready (None: ready, holding the lease or standing by).
    pub trouble: Arc<Mutex<Option<String>>>,
}

impl Watched {
    fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "holdline_deliver_records",
            "Records this deliverer wrote to its sinks",
            self.records.clone(),
        );
        registry.register(
            "holdline_deliver_holding",
            "1 while this deliverer holds the lease (writes), 0 while it stands by",
            self.holding.clone(),
        );
        registry.register(
            "holdline_deliver_takeovers",
            "Times this deliverer took the lease",
            self.takeovers.clone(),
        );
        registry.register(
            "holdline_deliver_sink_failures",
            "Writes a sink did not confirm (retried)",
            self.failures.clone(),
        );
    }

    fn trouble(&self, why: Option<String>) {
        *self.trouble.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }
}

/// Why a deliverer stopped delivering.
enum Ended {
    /// SIGINT or SIGTERM.
    Stopped,
    /// The lease is gone: refused, aged out, or a sink has seen a newer token.
    Lost(String),
    /// A sink that cannot take records again (stdout closed).
    Failed(anyhow::Error),
}

/// Why a batch was not written.
enum Unwritten {
    Lost(String),
    Failed(anyhow::Error),
    Stopped,
}

/// Runs a deliverer until SIGINT or SIGTERM.
pub async fn run(args: DeliverArgs) -> anyhow::Result<()> {
    let url = ClusterUrl::parse(&args.cluster).map_err(UsageError)?;
    if args.name.is_empty()
        || !args
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(UsageError(format!(
            "--name {:?}: letters, digits, - and _ only (it names a JetStream consumer)",
            args.name
        ))
        .into());
    }
    if args.lease < Duration::from_secs(2) {
        return Err(UsageError(format!(
            "--lease {:?} is too short: 2s or more (10s is the default)",
            args.lease
        ))
        .into());
    }
    let mut sinks = Vec::with_capacity(args.sinks.len());
    for text in &args.sinks {
        let config = SinkConfig::parse(text).map_err(|e| UsageError(format!("--sink: {e}")))?;
        let sink = holdline_sinks::open(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        sinks.push(sink);
    }
    let node = args.node.clone().unwrap_or_else(super::orgs::host_name);
    // A restarted deliverer is a new owner: it waits out its old lease like anyone.
    let owner = format!("{node}-{}", holdline_cluster::members::process_nonce());
    let signals = Signals::new().context("installing signal handlers")?;
    let (stopping, stop) = watch::channel(false);
    tokio::spawn(async move {
        let mut signals = signals;
        while signals.next().await != Signal::Stop {}
        let _ = stopping.send(true);
    });
    let js = url
        .jetstream(&format!("holdline deliver {node}"), args.lease)
        .await?;
    let bucket = holdline_cluster::node::within(
        args.lease * 3,
        &url.servers,
        Bucket::open(
            &js,
            holdline_cluster::node::DELIVER_BUCKET,
            args.lease,
            url.replicas,
        ),
    )
    .await?;
    let key = format!("deliver.{}", args.name);
    let watched = Watched::default();
    if let Some(addr) = args.metrics_addr {
        let mut registry = prometheus_client::registry::Registry::default();
        watched.register(&mut registry);
        let ready = super::observe::Readiness::Deliver(watched.trouble.clone());
        super::observe::serve(addr, ready, registry).await?;
    }
    tracing::info!(node = %node, name = %args.name, stream = %args.stream, sinks = sinks.len(), "deliverer started; waiting for the lease");
    let mut standby: Option<String> = None;
    let mut stop_wait = stop.clone();
    loop {
        let taken = tokio::select! {
            () = stopped(&mut stop_wait) => return Ok(()),
            taken = bucket.acquire(&key, &owner) => taken,
        };
        match taken {
            Ok(Some(lease)) => {
                standby = None;
                tracing::info!(name = %args.name, revision = lease.revision(), "holding the lease: delivering");
                watched.trouble(None);
                watched.takeovers.inc();
                watched.holding.set(1);
                let ended = deliver(&js, &args, lease, &mut sinks, stop.clone(), &watched).await;
                watched.holding.set(0);
                match ended {
                    Ended::Stopped => return Ok(()),
                    Ended::Failed(e) => return Err(e),
                    Ended::Lost(why) => {
                        tracing::error!(name = %args.name, reason = %why, "stopped delivering: the lease is lost; standing by")
                    }
                }
            }
            Ok(None) => {
                watched.trouble(None);
                let holder = bucket.holder(&key).await.ok().flatten();
                let holder = holder.unwrap_or_else(|| "another deliverer".to_owned());
                if standby.as_ref() != Some(&holder) {
                    tracing::info!(name = %args.name, holder = %holder, "standing by: another deliverer holds the lease");
                    standby = Some(holder);
                }
            }
            Err(e) => {
                watched.trouble(Some(format!("cannot reach the lease: {e}")));
                tracing::warn!(name = %args.name, error = %e, "cannot reach the lease; retrying")
            }
        }
        tokio::select! {
            () = stopped(&mut stop_wait) => return Ok(()),
            () = tokio::time::sleep(args.lease / 4) => {}
        }
    }
}

/// Resolves once SIGINT or SIGTERM came.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Delivers under `lease` until it is lost or a signal stops it (the lease released then).
/// Every message is acknowledged on its own once written: one fetched but not written
/// (the fetch cut short, the deliverer stopped or replaced) is delivered again after a
/// lease time, to whoever holds the lease then.
async fn deliver(
    js: &jetstream::Context,
    args: &DeliverArgs,
    mut lease: Lease,
    sinks: &mut [Box<dyn Sink>],
    mut stop: watch::Receiver<bool>,
    watched: &Watched,
) -> Ended {
    let consumer = match open_consumer(js, args).await {
        Ok(c) => c,
        Err(e) => return Ended::Lost(format!("cannot open the consumer: {e}")),
    };
    let renew_every = args.lease / 3;
    loop {
        if *stop.borrow() {
            return give_back(lease, &args.name).await;
        }
        let due = Instant::now() + args.lease.saturating_sub(renew_every) > lease.valid_until();
        if due && let Err(e) = renew(&mut lease).await {
            return Ended::Lost(e);
        }
        let fetched = tokio::select! {
            () = stopped(&mut stop) => return give_back(lease, &args.name).await,
            f = fetch(&consumer, renew_every) => f,
        };
        let batch = match fetched {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(name = %args.name, error = %e, "cannot fetch from the stream; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let records: Vec<Bytes> = batch
            .iter()
            .map(|m| {
                let mut line = Vec::with_capacity(m.payload.len() + 1);
                line.extend_from_slice(&m.payload);
                line.push(b'\n');
                Bytes::from(line)
            })
            .collect();
        // Each sink takes batches up to its own size.
        let most = sinks
            .iter()
            .map(|s| s.batch_bytes())
            .min()
            .unwrap_or(usize::MAX);
        for chunk in chunks(&records, most) {
            match write(
                &mut lease, &args.name, sinks, chunk, &batch, &mut stop, watched,
            )
            .await
            {
                Ok(()) => {
                    watched.records.inc_by(chunk.len() as u64);
                }
                Err(Unwritten::Lost(why)) => return Ended::Lost(why),
                Err(Unwritten::Failed(e)) => return Ended::Failed(e),
                Err(Unwritten::Stopped) => return give_back(lease, &args.name).await,
            }
        }
        let (last, rest) = batch.split_last().expect("not empty");
        for m in rest {
            if let Err(e) = m.ack().await {
                tracing::warn!(name = %args.name, error = %e, "an acknowledgement was not sent; the message may be delivered again");
            }
        }
        if let Err(e) = last.double_ack().await {
            tracing::warn!(name = %args.name, error = %e, "the stream did not confirm the acknowledgement; the batch may be delivered again");
        }
    }
}

/// `records` in runs of at most `most` bytes (at least one record each).
fn chunks(records: &[Bytes], most: usize) -> Vec<&[Bytes]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        if i > start && bytes + r.len() > most {
            out.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += r.len();
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// The deliverers' consumer: durable, each message acknowledged on its own, at most a
/// batch unacknowledged (so a dead deliverer's full batch comes again before any later
/// one), redelivered after a lease time.
async fn open_consumer(
    js: &jetstream::Context,
    args: &DeliverArgs,
) -> Result<consumer::PullConsumer, String> {
    let stream = js.get_stream(&args.stream).await.map_err(|e| {
        format!(
            "stream {}: {e} (the nodes' NATS sink creates it with stream={})",
            args.stream, args.stream
        )
    })?;
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(args.name.clone()),
            description: Some("holdline deliver".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: args.lease,
            max_ack_pending: BATCH as i64,
            filter_subject: args.subject.clone().unwrap_or_default(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
}

/// Up to a batch of messages, waiting at most `wait` for the first.
async fn fetch(
    consumer: &consumer::PullConsumer,
    wait: Duration,
) -> Result<Vec<jetstream::Message>, String> {
    let mut batch = consumer
        .batch()
        .max_messages(BATCH)
        .expires(wait)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        out.push(m.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// Renews the lease: the one check that this deliverer may still write.
async fn renew(lease: &mut Lease) -> Result<(), String> {
    let until = lease.valid_until();
    loop {
        match tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            lease.renew(),
        )
        .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(LeaseError::Lost { detail, .. })) => return Err(detail),
            Ok(Err(e)) if Instant::now() < until => {
                tracing::warn!(error = %e, "cannot renew the lease; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => return Err(format!("cannot renew it in time: {e}")),
            Err(_) => return Err("it lapsed before NATS answered a renewal".to_owned()),
        }
    }
}

/// Writes `records` to every sink under a fresh renewal, retrying a failing sink with
/// backoff (the messages kept from redelivery meanwhile, the lease renewed before each
/// try); an error when the lease is lost or a signal came.
async fn write(
    lease: &mut Lease,
    name: &str,
    sinks: &mut [Box<dyn Sink>],
    records: &[Bytes],
    batch: &[jetstream::Message],
    stop: &mut watch::Receiver<bool>,
    watched: &Watched,
) -> Result<(), Unwritten> {
    let mut done = vec![false; sinks.len()];
    let mut retry =
        holdline_proto::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        renew(lease).await.map_err(Unwritten::Lost)?;
        let fence = Fence {
            key: lease.key().to_owned(),
            token: lease.revision(),
        };
        let mut failed = None;
        for (sink, done) in sinks.iter_mut().zip(done.iter_mut()).filter(|(_, d)| !**d) {
            sink.fence(&fence);
            // Each sink's own timeout bounds the write (a write cut short here would go
            // on in its thread); one that outlasted the lease is not trusted.
            match sink.deliver(records).await {
                Ok(()) if Instant::now() > lease.valid_until() => {
                    return Err(Unwritten::Lost(format!(
                        "{} took longer than the lease to confirm; a successor may have written too",
                        sink.label()
                    )));
                }
                Ok(()) => *done = true,
                Err(SinkError::Fenced { detail, .. }) => return Err(Unwritten::Lost(detail)),
                // Nothing to retry (stdout closed): the deliverer cannot go on.
                Err(e) if e.is_fatal() => {
                    return Err(Unwritten::Failed(anyhow::Error::new(e)));
                }
                Err(e) => failed = Some((sink.label(), e.to_string())),
            }
            if failed.is_some() {
                break;
            }
        }
        let Some((sink, error)) = failed else {
            watched.trouble(None);
            return Ok(());
        };
        watched.failures.inc();
        watched.trouble(Some(format!("{sink} is failing: {error}")));
        // Never past the lease: the next try renews it first.
        let left = lease
            .valid_until()
            .saturating_duration_since(Instant::now());
        let wait = retry
            .next()
            .unwrap_or(Duration::from_secs(10))
            .min(left / 2);
        tracing::warn!(name, sink = %sink, error = %error, retry_in_ms = wait.as_millis() as u64, "sink failed; retrying");
        // The batch stays this deliverer's while it retries.
        for m in batch {
            let _ = m.ack_with(jetstream::AckKind::Progress).await;
        }
        tokio::select! {
            () = stopped(stop) => return Err(Unwritten::Stopped),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Gives the lease back, so a standby takes over at once.
async fn give_back(lease: Lease, name: &str) -> Ended {
    tracing::info!(name, "stopping: giving the lease back");
    let _ = tokio::time::timeout(Duration::from_secs(2), lease.release()).await;
    Ended::Stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_split_to_a_sinks_size_with_at_least_one_record_each() {
        let records: Vec<Bytes> = [3usize, 3, 3, 10, 1]
            .iter()
            .map(|n| Bytes::from(vec![b'x'; *n]))
            .collect();
        let sizes =
            |most| -> Vec<usize> { chunks(&records, most).iter().map(|c| c.len()).collect() };
        assert_eq!(
            sizes(6),
            [2, 1, 1, 1],
            "a record larger than the size goes alone"
        );
        assert_eq!(sizes(100), [5]);
        assert_eq!(sizes(1), [1, 1, 1, 1, 1]);
        assert!(chunks(&[], 10).is_empty());
    }
}
