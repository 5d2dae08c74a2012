//! The network sinks against real servers on free loopback ports: what they store, how
//! repeats are recognised, and how they come back after the server went away.

use std::time::Duration;

use holdline_sinks::{Sink, SinkConfig, open, testing};

fn records(n: usize, from: usize) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| {
            format!(
                r#"{{"kind":"event","id":"{i:016x}","topic":"v2.users.0b2c1f5e-3a4d-4e6f-8a9b-{:012x}.presence","received_at":"2026-11-27T10:00:00.000000Z","body":{{"n":{i}}}}}"#,
                i % 7
            )
            .into_bytes()
            .into_iter()
            .chain(*b"\n")
            .collect()
        })
        .collect()
}

fn deliver_all(sink: &mut dyn Sink, recs: &[Vec<u8>]) {
    for batch in recs.chunks(100) {
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        testing::deliver(&mut *sink, &refs).expect("delivered");
    }
}

const GAP: &[u8] =
    b"{\"kind\":\"gap\",\"topics\":[\"v2.a\"],\"from\":\"2026-11-27T10:00:00.000000Z\",\"to\":\"2026-11-27T10:00:01.000000Z\",\"reason\":\"r\"}\n";

#[test]
fn redis_stores_every_record_with_its_id_and_comes_back_after_an_outage() {
    let mut server = testing::redis();
    let url = format!("redis://{}/genesys?timeout=2s", server.addr());
    let mut sink = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    let recs = records(1000, 0);
    deliver_all(sink.as_mut(), &recs);
    testing::deliver(&mut *sink, &[GAP]).unwrap();

    let entries = testing::redis_entries(&server.addr(), "genesys");
    assert_eq!(entries.len(), 1001);
    for (i, (id, kind, record)) in entries.iter().take(1000).enumerate() {
        assert_eq!(*id, format!("{i:016x}"));
        assert_eq!(kind, "event");
        assert_eq!(&record[..], &recs[i][..recs[i].len() - 1]);
    }
    assert_eq!(entries[1000].1, "gap");

    // The server goes away: delivery fails (the spool keeps the batch); it comes back on
    // the same port and the sink reconnects by itself.
    let port = server.port;
    server.kill();
    let later = records(10, 1000);
    let refs: Vec<&[u8]> = later.iter().map(Vec::as_slice).collect();
    let err = testing::deliver(&mut *sink, &refs).unwrap_err();
    assert!(!err.is_fatal(), "{err}");
    let server = testing::redis_on(port).expect("redis back on its port");
    testing::deliver(&mut *sink, &refs).expect("delivered after the outage");
    let mut conn = redis::Client::open(format!("redis://{}/", server.addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    let len: u64 = redis::cmd("XLEN").arg("genesys").query(&mut conn).unwrap();
    assert_eq!(len, 10, "a fresh server (no persistence) holds the batch");
}

/// Two writers of one stream, each with its fencing token: once the newer one has
/// written, the older one's batch is refused whole, and every entry says who wrote it.
#[test]
fn a_fenced_redis_stream_refuses_a_writer_with_an_older_token() {
    use holdline_sinks::{Fence, SinkError};
    let server = testing::redis();
    let url = format!("redis://{}/fenced?maxlen=100000", server.addr());
    let mut old = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    let mut new = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    let fence = |token| Fence {
        key: "deliver.test".into(),
        token,
    };
    let batch = |n, from| records(n, from);
    let refs = |r: &[Vec<u8>]| r.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    old.fence(&fence(5));
    let first = refs(&batch(100, 0));
    deliver_all(old.as_mut(), &first);
    new.fence(&fence(9));
    deliver_all(new.as_mut(), &refs(&batch(100, 100)));
    // The old writer resumes with a batch it had in hand.
    let late = batch(100, 200);
    let late_refs: Vec<&[u8]> = late.iter().map(Vec::as_slice).collect();
    match testing::deliver(old.as_mut(), &late_refs) {
        Err(SinkError::Fenced { detail, .. }) => assert!(detail.contains("newer"), "{detail}"),
        other => panic!("the old writer was not fenced off: {other:?}"),
    }
    let entries = testing::redis_fenced_entries(&server.addr(), "fenced");
    assert_eq!(entries.len(), 200, "nothing of the refused batch");
    let tokens: Vec<u64> = entries.iter().map(|(_, t)| *t).collect();
    assert!(tokens[..100].iter().all(|t| *t == 5), "{tokens:?}");
    assert!(tokens[100..].iter().all(|t| *t == 9), "{tokens:?}");
    assert_eq!(entries[150].0, format!("{:016x}", 150));
    // A renewal (a larger token) of the current writer goes on writing.
    new.fence(&fence(12));
    deliver_all(new.as_mut(), &refs(&batch(10, 300)));
    assert_eq!(
        testing::redis_fenced_entries(&server.addr(), "fenced").len(),
        210
    );
}

#[test]
fn redis_caps_the_stream_near_maxlen() {
    let server = testing::redis();
    let url = format!("redis://{}/capped?maxlen=200", server.addr());
    let mut sink = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    deliver_all(sink.as_mut(), &records(3000, 0));
    let mut conn = redis::Client::open(format!("redis://{}/", server.addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    let len: u64 = redis::cmd("XLEN").arg("capped").query(&mut conn).unwrap();
    // `~` trims whole radix-tree nodes (100 entries by default): never below the cap,
    // never far above it.
    assert!((200..=400).contains(&len), "XLEN {len}");
}

fn nats_count(addr: &str, stream: &str) -> u64 {
    testing::nats_payloads(addr, stream).len() as u64
}

/// Delivers `records` while `server` is frozen (SIGSTOP): the error, and how long the sink
/// took to give up.
fn deliver_frozen(
    server: &testing::Server,
    sink: &mut dyn Sink,
    records: &[Vec<u8>],
) -> (holdline_sinks::SinkError, Duration) {
    let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
    server.pause();
    let started = std::time::Instant::now();
    let result = testing::deliver(&mut *sink, &refs);
    let took = started.elapsed();
    server.resume();
    (result.expect_err("a frozen server cannot confirm"), took)
}

#[test]
fn nats_publishes_with_the_event_id_so_jetstream_drops_repeats() {
    let store = tempfile::tempdir().unwrap();
    let mut server = testing::nats(store.path());
    let url = format!(
        "nats://{}/genesys.events?stream=GENESYS&timeout=2s",
        server.addr()
    );
    let mut sink = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    let recs = records(500, 0);
    deliver_all(sink.as_mut(), &recs);
    testing::deliver(&mut *sink, &[GAP]).unwrap();
    assert_eq!(nats_count(&server.addr(), "GENESYS"), 501);

    // A batch delivered again (holdline restarted before acknowledging it) is stored once.
    deliver_all(sink.as_mut(), &recs[200..400]);
    testing::deliver(&mut *sink, &[GAP]).unwrap();
    assert_eq!(nats_count(&server.addr(), "GENESYS"), 501);

    // An outage: delivery fails within the timeout, then succeeds once the server is back
    // on its port with its store.
    let port = server.port;
    server.kill();
    let later = records(50, 500);
    let refs: Vec<&[u8]> = later.iter().map(Vec::as_slice).collect();
    let started = std::time::Instant::now();
    let err = testing::deliver(&mut *sink, &refs).unwrap_err();
    assert!(!err.is_fatal(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    let server = testing::nats_on(port, store.path()).expect("nats back on its port");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match testing::deliver(&mut *sink, &refs) {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("retrying: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("not delivered after the outage: {e}"),
        }
    }
    assert_eq!(nats_count(&server.addr(), "GENESYS"), 551);
}

#[test]
fn a_nats_subject_template_puts_each_record_under_its_org_and_family() {
    let store = tempfile::tempdir().unwrap();
    let server = testing::nats(store.path());
    let url = format!(
        "nats://{}/holdline.{{org}}.{{family}}?stream=PER_ORG&timeout=2s",
        server.addr()
    );
    let mut sink = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    let event = |org: &str| {
        format!(
            r#"{{"kind":"event","id":"{:016x}","topic":"v2.users.0b2c1f5e-3a4d-4e6f-8a9b-000000000001.presence","received_at":"2026-11-27T10:00:00.000000Z","org":"{org}","channel":"c","body":{{}}}}"#,
            org.len()
        ) + "\n"
    };
    let (a, b) = (event("acme"), event("globex.eu"));
    let gap = "{\"kind\":\"gap\",\"topics\":[\"v2.a\"],\"from\":\"2026-11-27T10:00:00.000000Z\",\"to\":\"2026-11-27T10:00:01.000000Z\",\"org\":\"acme\",\"reason\":\"r\"}\n";
    testing::deliver(&mut *sink, &[a.as_bytes(), b.as_bytes(), gap.as_bytes()]).unwrap();
    let subjects: Vec<String> = testing::nats_messages(&server.addr(), "PER_ORG")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        subjects,
        [
            "holdline.acme.presence",
            "holdline.globex_eu.presence",
            "holdline.acme.gap"
        ]
    );
}

#[test]
fn nats_without_a_stream_says_how_to_make_one() {
    let store = tempfile::tempdir().unwrap();
    let server = testing::nats(store.path());
    let url = format!("nats://{}/nobody.listens?timeout=2s", server.addr());
    let mut sink = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    let recs = records(1, 0);
    let err = testing::deliver(&mut *sink, &[&recs[0]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("stream=NAME"), "{err}");
}

#[test]
fn redis_that_stops_answering_fails_within_the_timeout() {
    let server = testing::redis();
    let url = format!("redis://{}/genesys?timeout=1s", server.addr());
    let mut sink = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    deliver_all(sink.as_mut(), &records(10, 0));
    let recs = records(100, 10);
    let (err, took) = deliver_frozen(&server, sink.as_mut(), &recs);
    assert!(!err.is_fatal(), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    deliver_all(sink.as_mut(), &recs);
}

#[test]
fn nats_that_stops_answering_fails_within_the_timeout() {
    let store = tempfile::tempdir().unwrap();
    let server = testing::nats(store.path());
    let url = format!(
        "nats://{}/genesys.events?stream=GENESYS&timeout=1s",
        server.addr()
    );
    let mut sink = open(&SinkConfig::parse(&url).unwrap()).unwrap();
    deliver_all(sink.as_mut(), &records(10, 0));
    let recs = records(500, 10);
    let (err, took) = deliver_frozen(&server, sink.as_mut(), &recs);
    assert!(!err.is_fatal(), "{err}");
    let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Err(e) = testing::deliver(&mut *sink, &refs) {
        assert!(std::time::Instant::now() < deadline, "{e}");
    }
    assert_eq!(nats_count(&server.addr(), "GENESYS"), 510);
}
