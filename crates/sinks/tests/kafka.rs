//! The Kafka sink against librdkafka's in-process mock cluster (a Kafka-protocol broker
//! on a loopback port): keys, order per entity, gap copies, an outage, and transactions
//! under a deliverer's lease.
#![cfg(feature = "kafka")]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use holdline_sinks::{SinkConfig, open, testing};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;

fn entity(i: usize) -> String {
    format!("0b2c1f5e-3a4d-4e6f-8a9b-{:012x}", i % 7)
}

fn record(i: usize) -> Vec<u8> {
    format!(
        "{{\"kind\":\"event\",\"id\":\"{i:016x}\",\"topic\":\"v2.routing.queues.{}.conversations\",\"received_at\":\"2026-11-27T10:00:00.000000Z\",\"body\":{{\"n\":{i}}}}}\n",
        entity(i)
    )
    .into_bytes()
}

/// A mock cluster of `brokers` with the topic `genesys`, its bootstrap servers, and a
/// sink to it whose batches time out after `timeout`.
fn mock(
    brokers: i32,
    timeout: &str,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
    Box<dyn holdline_sinks::Sink>,
) {
    let cluster = MockCluster::new(brokers).unwrap();
    cluster.create_topic("genesys", PARTITIONS, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let url = format!("kafka://{bootstrap}/genesys?timeout={timeout}");
    let sink = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    (cluster, bootstrap, sink)
}

struct Got {
    partition: i32,
    offset: i64,
    key: Option<String>,
    id: String,
    kind: String,
    payload: Vec<u8>,
}

/// Reads every partition from the start until `done` says so (30 s).
fn consume(bootstrap: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "holdline-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("genesys", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while !done(&got) {
        assert!(Instant::now() < deadline, "only {} messages", got.len());
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        let header = |name: &str| {
            let h = m.headers().expect("headers");
            h.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap_or_else(|| panic!("no {name} header"))
        };
        got.push(Got {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
            id: header("holdline-id"),
            kind: header("holdline-kind"),
            payload: m.payload().unwrap_or_default().to_vec(),
        });
    }
    got
}

#[test]
fn events_are_keyed_by_entity_in_order_and_gaps_reach_each_entity() {
    let (_cluster, bootstrap, mut sink) = mock(1, "10s");
    let recs: Vec<Vec<u8>> = (0..700).map(record).collect();
    for batch in recs.chunks(100) {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        testing::deliver(&mut *sink, &refs).unwrap();
    }
    let gap = format!(
        "{{\"kind\":\"gap\",\"topics\":[\"v2.routing.queues.{0}.conversations\",\"v2.users.{1}?presence\",\"v2.users.{0}?presence\"],\"from\":\"2026-11-27T10:00:00.000000Z\",\"to\":\"2026-11-27T10:00:01.000000Z\",\"reason\":\"socket dead\"}}\n",
        entity(0),
        entity(1)
    );
    testing::deliver(&mut *sink, &[gap.as_bytes()]).unwrap();

    let got = consume(&bootstrap, |got| got.len() >= 702);
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    let mut last_n: HashMap<String, (i64, usize)> = HashMap::new();
    let mut ids = HashSet::new();
    let mut gap_keys = Vec::new();
    let mut by_offset: Vec<&Got> = got.iter().collect();
    by_offset.sort_by_key(|g| (g.partition, g.offset));
    for g in by_offset {
        let key = g.key.clone().expect("every message has a key");
        let p = *partition_of.entry(key.clone()).or_insert(g.partition);
        assert_eq!(p, g.partition, "entity {key} split over partitions");
        if g.kind == "gap" {
            assert_eq!(&g.payload[..], &gap.as_bytes()[..gap.len() - 1]);
            gap_keys.push(key);
            continue;
        }
        assert_eq!(g.kind, "event");
        let n = usize::from_str_radix(&g.id, 16).unwrap();
        assert_eq!(key, entity(n));
        assert_eq!(&g.payload[..], &recs[n][..recs[n].len() - 1]);
        assert!(ids.insert(n), "event {n} twice");
        if let Some((_, prev)) = last_n.insert(key.clone(), (g.offset, n)) {
            assert!(prev < n, "entity {key}: event {n} after {prev}");
        }
    }
    assert_eq!(ids.len(), 700);
    gap_keys.sort();
    assert_eq!(gap_keys, vec![entity(0), entity(1)]);
}

#[test]
fn a_broker_outage_fails_the_batch_and_the_next_attempt_delivers_it() {
    let (cluster, bootstrap, mut sink) = mock(1, "2s");
    let first: Vec<Vec<u8>> = (0..50).map(record).collect();
    let refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    testing::deliver(&mut *sink, &refs).unwrap();

    cluster.broker_down(1).unwrap();
    let later: Vec<Vec<u8>> = (50..100).map(record).collect();
    let refs: Vec<&[u8]> = later.iter().map(Vec::as_slice).collect();
    let err = testing::deliver(&mut *sink, &refs).unwrap_err();
    assert!(!err.is_fatal(), "{err}");
    cluster.broker_up(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = testing::deliver(&mut *sink, &refs) {
        assert!(
            Instant::now() < deadline,
            "not delivered after the outage: {e}"
        );
    }
    // A retried batch may arrive twice (at least once); every event arrives, and only
    // the 100 that were sent.
    let ids = |got: &[Got]| -> HashSet<usize> {
        got.iter()
            .map(|g| usize::from_str_radix(&g.id, 16).unwrap())
            .collect()
    };
    let got = consume(&bootstrap, |got| ids(got).len() >= 100);
    assert_eq!(ids(&got), (0..100).collect::<HashSet<_>>());
}

#[test]
fn under_a_lease_each_batch_is_a_transaction_and_a_fenced_deliverer_is_refused() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let (cluster, bootstrap, mut sink) = mock(3, "10s");
    sink.fence(&holdline_sinks::Fence {
        key: "deliver.holdline-deliver".to_owned(),
        token: 7,
    });
    let first: Vec<Vec<u8>> = (0..50).map(record).collect();
    let refs: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
    testing::deliver(&mut *sink, &refs).unwrap();
    // Committed: a read_committed consumer (librdkafka's default) sees every one.
    let ids = |got: &[Got]| -> HashSet<usize> {
        got.iter()
            .map(|g| usize::from_str_radix(&g.id, 16).unwrap())
            .collect()
    };
    let got = consume(&bootstrap, |got| ids(got).len() >= 50);
    assert_eq!(ids(&got), (0..50).collect::<HashSet<_>>());
    // A newer deliverer started with the same transactional id: the broker refuses this
    // one's commit, and the sink says it is fenced off (the deliverer stands by).
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let later: Vec<Vec<u8>> = (50..100).map(record).collect();
    let refs: Vec<&[u8]> = later.iter().map(Vec::as_slice).collect();
    let err = testing::deliver(&mut *sink, &refs).unwrap_err();
    assert!(
        matches!(err, holdline_sinks::SinkError::Fenced { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("holdline-deliver.holdline-deliver-genesys"),
        "{err}"
    );
}
