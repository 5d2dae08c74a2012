//! `holdline deliver --cluster`: the cluster's stream into the other sinks (file,
//! webhook, Redis, Kafka), one deliverer writing at a time.
//!
//! Deliverers of one name share a durable JetStream consumer (which keeps the position)
//! and a lease in the `holdline_deliver` bucket. Only the lease's holder fetches; before
//! each batch it renews the lease by compare-and-set and writes with the new revision as
//! its fencing token, within what is left of the lease, then acknowledges the batch. A
//! deliverer that was paused or cut off finds its renewal refused and stops before
//! writing; a sink that checks the token (Redis, a file, a webhook answering 409) refuses
//! a write that was already on its way. Another deliverer takes over once the lease ages
//! out, from the consumer's first unacknowledged message: at least once, in order.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use holdline_cluster::{Bucket, ClusterUrl, Lease, LeaseError};
use holdline_sinks::{Fence, Sink, SinkConfig, SinkError};

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
    let mut signals = Signals::new().context("installing signal handlers")?;
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
    tracing::info!(node = %node, name = %args.name, stream = %args.stream, sinks = sinks.len(), "deliverer started; waiting for the lease");
    let mut standby: Option<String> = None;
    loop {
        let taken = tokio::select! {
            s = signals.next() => {
                if s == Signal::Stop { return Ok(()); }
                continue;
            }
            taken = bucket.acquire(&key, &owner) => taken,
        };
        match taken {
            Ok(Some(lease)) => {
                standby = None;
                tracing::info!(name = %args.name, revision = lease.revision(), "holding the lease: delivering");
                match deliver(&js, &args, lease, &mut sinks, &mut signals).await {
                    Ended::Stopped => return Ok(()),
                    Ended::Failed(e) => return Err(e),
                    Ended::Lost(why) => {
                        tracing::error!(name = %args.name, reason = %why, "stopped delivering: the lease is lost; standing by")
                    }
                }
            }
            Ok(None) => {
                let holder = bucket.holder(&key).await.ok().flatten();
                let holder = holder.unwrap_or_else(|| "another deliverer".to_owned());
                if standby.as_ref() != Some(&holder) {
                    tracing::info!(name = %args.name, holder = %holder, "standing by: another deliverer holds the lease");
                    standby = Some(holder);
                }
            }
            Err(e) => {
                tracing::warn!(name = %args.name, error = %e, "cannot reach the lease; retrying")
            }
        }
        tokio::select! {
            s = signals.next() => if s == Signal::Stop { return Ok(()) },
            () = tokio::time::sleep(args.lease / 4) => {}
        }
    }
}

/// Delivers under `lease` until it is lost or a signal stops it (the lease released then).
async fn deliver(
    js: &jetstream::Context,
    args: &DeliverArgs,
    mut lease: Lease,
    sinks: &mut [Box<dyn Sink>],
    signals: &mut Signals,
) -> Ended {
    let consumer = match open_consumer(js, args).await {
        Ok(c) => c,
        Err(e) => return Ended::Lost(format!("cannot open the consumer: {e}")),
    };
    let renew_every = args.lease / 3;
    loop {
        let due = Instant::now() + args.lease.saturating_sub(renew_every) > lease.valid_until();
        if due && let Err(e) = renew(&mut lease).await {
            return Ended::Lost(e);
        }
        let fetched = tokio::select! {
            s = signals.next() => match s {
                Signal::Stop => return stop(lease, &args.name).await,
                Signal::Reload => continue,
            },
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
        let Some(last) = batch.last() else { continue };
        let records: Vec<Bytes> = batch
            .iter()
            .map(|m| {
                let mut line = Vec::with_capacity(m.payload.len() + 1);
                line.extend_from_slice(&m.payload);
                line.push(b'\n');
                Bytes::from(line)
            })
            .collect();
        match write(&mut lease, &args.name, sinks, &records, &batch).await {
            Ok(()) => {}
            Err(Unwritten::Lost(why)) => return Ended::Lost(why),
            Err(Unwritten::Failed(e)) => return Ended::Failed(e),
        }
        // Every message up to the last (the consumer acknowledges all before it).
        if let Err(e) = last.double_ack().await {
            tracing::warn!(name = %args.name, error = %e, "the stream did not confirm the acknowledgement; the batch may be delivered again");
        }
    }
}

/// The deliverers' consumer: durable, acknowledging all up to a message, at most a batch
/// unacknowledged (so a successor gets a dead deliverer's batch again before any later
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
            ack_policy: consumer::AckPolicy::All,
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
/// backoff (the messages kept from redelivery meanwhile); an error when the lease is lost.
async fn write(
    lease: &mut Lease,
    name: &str,
    sinks: &mut [Box<dyn Sink>],
    records: &[Bytes],
    batch: &[jetstream::Message],
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
            // Every write ends inside the lease, or counts as failed.
            let left = lease
                .valid_until()
                .saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, sink.deliver(records)).await {
                Ok(Ok(())) => *done = true,
                Ok(Err(SinkError::Fenced { detail, .. })) => return Err(Unwritten::Lost(detail)),
                // Nothing to retry (stdout closed): the deliverer cannot go on.
                Ok(Err(e)) if e.is_fatal() => {
                    return Err(Unwritten::Failed(anyhow::Error::new(e)));
                }
                Ok(Err(e)) => failed = Some((sink.label(), e.to_string())),
                Err(_) => failed = Some((sink.label(), "did not confirm within the lease".into())),
            }
            if failed.is_some() {
                break;
            }
        }
        let Some((sink, error)) = failed else {
            return Ok(());
        };
        let wait = retry.next().unwrap_or(Duration::from_secs(10));
        tracing::warn!(name, sink = %sink, error = %error, retry_in_ms = wait.as_millis() as u64, "sink failed; retrying");
        // The batch stays this deliverer's while it retries.
        for m in batch {
            let _ = m.ack_with(jetstream::AckKind::Progress).await;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Gives the lease back, so a standby takes over at once.
async fn stop(lease: Lease, name: &str) -> Ended {
    tracing::info!(name, "stopping: giving the lease back");
    let _ = tokio::time::timeout(Duration::from_secs(2), lease.release()).await;
    Ended::Stopped
}
