//! Records per second each network sink delivers, in the batches the spool hands it
//! (1,024 records of ~2.4 KB, like conversation snapshots), against local servers:
//!
//! `cargo run -p holdline-sinks --release --features testing --example throughput [RECORDS]`
//!
//! redis-server and nats-server are found as the tests find them; Kafka is librdkafka's
//! in-process mock cluster, so its number says more about the producer than a broker.
//! `KAFKA_OPTIONS='?compression=lz4'` appends sink options to the Kafka URL.

use std::time::Instant;

use holdline_sinks::{SinkConfig, open, testing};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let filler = "x".repeat(2300);
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            format!(
                "{{\"kind\":\"event\",\"id\":\"{i:016x}\",\"topic\":\"v2.routing.queues.0b2c1f5e-3a4d-4e6f-8a9b-{:012x}.conversations\",\"received_at\":\"2026-11-27T10:00:00.000000Z\",\"body\":{{\"pad\":\"{filler}\"}}}}\n",
                i % 50
            )
            .into_bytes()
        })
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    println!(
        "{n} records, {:.0} B average, batches of 1024",
        bytes as f64 / n as f64
    );

    let store = std::env::temp_dir().join(format!("holdline-tp-nats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let nats = testing::nats(&store);
    let redis = testing::redis();
    let mut urls = vec![
        format!("nats://{}/tp.events?stream=TP", nats.addr()),
        format!("redis://{}/tp?maxlen=0", redis.addr()),
    ];
    #[cfg(feature = "kafka")]
    let cluster = {
        let c = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
        c.create_topic("tp", 4, 1).expect("topic");
        let extra = std::env::var("KAFKA_OPTIONS").unwrap_or_default();
        urls.push(format!("kafka://{}/tp{extra}", c.bootstrap_servers()));
        c
    };
    for url in urls {
        let mut sink = open(&SinkConfig::parse(&url).expect("url")).expect("sink");
        let started = Instant::now();
        for batch in records.chunks(1024) {
            let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
            testing::deliver(&mut *sink, &refs).expect("delivered");
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<8} {:>9.0} records/s  {:>6.1} MB/s  ({secs:.2} s)",
            url.split(':').next().unwrap_or_default(),
            n as f64 / secs,
            bytes as f64 / secs / 1e6
        );
    }
    #[cfg(feature = "kafka")]
    drop(cluster);
    let _ = std::fs::remove_dir_all(&store);
}
