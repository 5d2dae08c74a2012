//! Each sink's throughput with a real server on loopback: records from a spool on disk
//! through the sink's delivery loop (the `Deliverer` `listen --spool` runs), every batch
//! confirmed by the server and acknowledged in the spool before the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use holdline_proto::EventId;
use holdline_proto::record::{EventFields, write_event};
use holdline_sinks::{Deliverer, SinkConfig, SinkMetrics, testing};
use holdline_spool::{Durability, Spool};
use tokio::sync::{Notify, watch};

/// One sink's measured runs.
pub struct SinkRuns {
    pub sink: String,
    pub server: String,
    /// Records per second of each run.
    pub rates: Vec<f64>,
    /// Average bytes per record.
    pub record_bytes: f64,
}

/// Records like the throughput suite's conversation snapshots: ~2.4 KB, over 50 queues,
/// with ids from `first_id` on (each run its own, or JetStream would drop the repeats).
pub fn records(n: usize, first_id: u64) -> Vec<Vec<u8>> {
    let pad = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2300));
    (0..n)
        .map(|i| {
            let topic = format!(
                "v2.routing.queues.0b2c1f5e-3a4d-4e6f-8a9b-{:012x}.conversations",
                i % 50
            );
            let mut out = Vec::new();
            write_event(
                &mut out,
                &EventFields {
                    id: EventId::from(first_id + i as u64),
                    topic: topic.as_bytes(),
                    received_at: SystemTime::now(),
                    org: "bench",
                    channel: "streaming-0-bench",
                    correlation_id: None,
                    body: pad.as_bytes(),
                },
            );
            out
        })
        .collect()
}

/// A loopback webhook receiver that answers 200 to every batch; counts records.
async fn webhook() -> Result<(String, Arc<AtomicU64>)> {
    let got = Arc::new(AtomicU64::default());
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let n = memchr::memchr_iter(b'\n', &body).count() as u64;
                seen.fetch_add(n, Ordering::Relaxed);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/hook"), got))
}

/// Delivers `records` from a fresh spool to the sink at `url`; records per second.
async fn once(url: &str, records: &[Vec<u8>], disk: &std::path::Path) -> Result<f64> {
    let dir = disk.join("spool");
    let _ = std::fs::remove_dir_all(&dir);
    let spool = Arc::new(Spool::open(&dir, Durability::Immediate)?);
    let sink = holdline_sinks::open(&SinkConfig::parse(url).map_err(anyhow::Error::msg)?)?;
    let name = sink.name().to_owned();
    let (stop, stopped) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let deliverer = Deliverer::new(
        spool.clone(),
        sink,
        SinkMetrics::default(),
        wake.clone(),
        stopped,
        Duration::from_millis(200),
        Duration::from_secs(2),
    )?;
    for chunk in records.chunks(4096) {
        spool.append(chunk)?;
    }
    let started = Instant::now();
    let task = tokio::spawn(deliverer.run());
    wake.notify_one();
    let deadline = started + Duration::from_secs(300);
    while spool.depth(&name)? > 0 {
        anyhow::ensure!(Instant::now() < deadline, "{url}: not delivered in 300 s");
        anyhow::ensure!(!task.is_finished(), "{url}: the delivery loop stopped");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    stop.send(true)?;
    task.await??;
    drop(spool);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(records.len() as f64 / secs)
}

/// Every sink, `runs` times each.
pub async fn measure(n: usize, runs: usize) -> Result<Vec<SinkRuns>> {
    let record_bytes = records(n, 0).iter().map(Vec::len).sum::<usize>() as f64 / n.max(1) as f64;
    let mut first_id = 0u64;
    // On disk (not tmpfs) for the spool and the file sink: fsyncs cost what they cost.
    let disk = std::env::temp_dir().join(format!("holdline-bench-sinks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&disk);
    std::fs::create_dir_all(&disk)?;
    let nats = testing::nats(&disk.join("nats"));
    let redis = testing::redis();
    let (hook, hooked) = webhook().await?;
    let cluster = rdkafka::mocking::MockCluster::new(1).context("the Kafka mock cluster")?;
    cluster.create_topic("bench", 4, 1)?;
    let kafka = format!("kafka://{}/bench", cluster.bootstrap_servers());
    let file = format!("file://{}", disk.join("out/events.jsonl").display());
    let sinks = [
        (
            "file (fsync per batch)".to_owned(),
            "this machine's disk".to_owned(),
            file,
        ),
        (
            "webhook (one POST per batch)".to_owned(),
            "axum on loopback, answering 200".to_owned(),
            hook,
        ),
        (
            "NATS JetStream (every publish acknowledged)".to_owned(),
            format!("{}, file storage", nats.version()),
            format!("nats://{}/bench.events?stream=BENCH", nats.addr()),
        ),
        (
            "Redis Streams (pipelined XADD)".to_owned(),
            format!(
                "{}, no persistence",
                redis.version().split(" sha").next().unwrap_or_default()
            ),
            format!("redis://{}/bench?maxlen=0", redis.addr()),
        ),
        (
            "Kafka (idempotent producer)".to_owned(),
            "librdkafka's in-process mock cluster".to_owned(),
            kafka,
        ),
    ];
    let mut out = Vec::new();
    for (sink, server, url) in sinks {
        eprintln!("sinks: {sink}");
        let mut rates = Vec::new();
        // One warm-up run, then the measured ones.
        for run in 0..=runs {
            let records = records(n, first_id);
            first_id += n as u64;
            let rate = once(&url, &records, &disk)
                .await
                .map_err(|e| anyhow::anyhow!("{sink}: {e:?}"))?;
            if run > 0 {
                rates.push(rate);
            }
        }
        out.push(SinkRuns {
            sink,
            server,
            rates,
            record_bytes,
        });
    }
    anyhow::ensure!(
        hooked.load(Ordering::Relaxed) >= ((runs + 1) * n) as u64,
        "the webhook did not receive every record"
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&disk);
    Ok(out)
}
