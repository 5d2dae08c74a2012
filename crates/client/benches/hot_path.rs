//! The per-event hot path: frame → parse → id → dedupe → JSON-lines record, for a 2.5 KB
//! conversation snapshot and a 400 B presence event, plus each step on its own.

use std::hint::black_box;

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use holdline_client::stream::dedupe::{Dedupe, Seen};
use holdline_client::stream::event::Notification;
use holdline_client::stream::record::write_event;
use holdline_proto::{EventId, ServerFrame};
use tokio::time::Instant;

const QUEUE: &str = "0e185c02-aca1-4a72-82ea-2e78684e2c89";

/// A conversation snapshot frame of about 2.5 KB, shaped like the service's.
fn conversation_frame(n: u64) -> String {
    let participant = |purpose: &str, state: &str, i: u64| {
        format!(
            r#"{{"id":"9a0231a0-8882-41bb-9b2c-d2f2757362{i:02}","connectedTime":"2024-05-02T09:15:01.120Z","name":"Mobile Number, Sweden","queueId":"{QUEUE}","purpose":"{purpose}","address":"tel:+46701234567","wrapupRequired":false,"attributes":{{}},"calls":[{{"id":"4abc9472-61cc-402a-83e3-28015dd7f3{i:02}","state":"{state}","initialState":"offering","recording":false,"recordingState":"none","muted":false,"confined":false,"held":false,"direction":"inbound","self":{{"addressNormalized":"tel:+46701234567"}},"other":{{"addressNormalized":"tel:+4681234567"}},"provider":"Edge","connectedTime":"2024-05-02T09:15:01.120Z","afterCallWorkRequired":false}}]}}"#
        )
    };
    let body = format!(
        r#"{{"id":"0c3b7a9e-5b7f-4b6e-8f1e-{n:012}","maxParticipants":3,"recordingState":"none","participants":[{},{},{}],"divisions":[{{"division":{{"id":"5a1eaef9-cee0-4d74-bb65-f66862227bea"}},"entities":[{{"id":"{QUEUE}"}}]}}]}}"#,
        participant("customer", "connected", 1),
        participant("acd", "disconnected", 2),
        participant("agent", "alerting", 3),
    );
    holdline_proto::frame::notification_json(
        &format!("v2.routing.queues.{QUEUE}.conversations"),
        &body,
        "2074b130-f0a0-4722-9063-cdbac74c0aee",
    )
}

fn presence_frame(n: u64) -> String {
    let body = format!(
        r#"{{"source":"PURECLOUD","presenceDefinition":{{"id":"6a3af858-942f-489d-9700-5f9bcdcdae9b","systemPresence":"ON_QUEUE"}},"primary":true,"message":"{n}","modifiedDate":"2024-05-02T09:14:58.047Z"}}"#
    );
    holdline_proto::frame::notification_json(
        "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.presence",
        &body,
        "2074b130-f0a0-4722-9063-cdbac74c0aee",
    )
}

fn frames(make: fn(u64) -> String) -> Vec<Bytes> {
    (0..4096).map(|n| Bytes::from(make(n))).collect()
}

fn text(frame: &Bytes) -> &str {
    std::str::from_utf8(frame).unwrap()
}

/// frame → parse → Notification (id) → dedupe → record, as the client does per event.
fn pipeline(c: &mut Criterion, name: &str, make: fn(u64) -> String) {
    let frames = frames(make);
    let channel: Arc<str> = Arc::from("streaming-0-fmtdmf8cdis7jh14udg5p89t6z");
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(frames[0].len() as u64));
    group.bench_function("frame_to_record", |b| {
        // A window smaller than the frame set, so every event is new when it comes round.
        let mut dedupe = Dedupe::new(Duration::from_secs(600), 1024);
        let mut out = Vec::with_capacity(1 << 16);
        let now = Instant::now();
        let mut i = 0usize;
        b.iter(|| {
            let frame = &frames[i % frames.len()];
            i += 1;
            // As the socket does: the payload's UTF-8 is checked by the parse itself.
            if let Ok((text, Ok(ServerFrame::Notification(n)))) = ServerFrame::parse_payload(frame)
            {
                let event = Notification::new(frame, text, &n, SystemTime::now(), channel.clone());
                // As the stream does: the value id, with the byte hash and arrival beside it.
                let seen = dedupe.arrival(
                    event.id,
                    event.bytes_hash(),
                    event.received_at,
                    &event.channel,
                    now,
                );
                if seen == Seen::First {
                    out.clear();
                    write_event(&mut out, &event, "default");
                }
            }
            black_box(&out);
        });
    });
    group.bench_function("parse", |b| {
        let frame = &frames[0];
        b.iter(|| black_box(ServerFrame::parse(black_box(text(frame))).is_ok()));
    });
    // A text message's payload as it comes off the socket, checked as UTF-8 by the parse
    // (what holdline does), and checked first, then parsed.
    group.bench_function("parse_payload", |b| {
        let payload = &frames[0][..];
        b.iter(|| black_box(ServerFrame::parse_payload(black_box(payload)).is_ok()));
    });
    group.bench_function("utf8_then_parse", |b| {
        let payload = &frames[0][..];
        b.iter(|| {
            let text = std::str::from_utf8(black_box(payload)).unwrap();
            black_box(ServerFrame::parse(text).is_ok())
        });
    });
    group.bench_function("event_id", |b| {
        let ServerFrame::Notification(n) = ServerFrame::parse(text(&frames[0])).unwrap() else {
            unreachable!()
        };
        b.iter(|| {
            black_box(EventId::of(
                black_box(&n.topic),
                black_box(n.body.get().as_bytes()),
            ))
        });
    });
    // The id before it was taken of the body's value: xxh3 of the bytes as they came.
    group.bench_function("event_id_of_bytes", |b| {
        let ServerFrame::Notification(n) = ServerFrame::parse(text(&frames[0])).unwrap() else {
            unreachable!()
        };
        b.iter(|| {
            black_box(EventId::of_bytes(
                black_box(&n.topic),
                black_box(n.body.get().as_bytes()),
            ))
        });
    });
    group.bench_function("record", |b| {
        let ServerFrame::Notification(n) = ServerFrame::parse(text(&frames[0])).unwrap() else {
            unreachable!()
        };
        let event = Notification::new(
            &frames[0],
            text(&frames[0]),
            &n,
            SystemTime::now(),
            channel.clone(),
        );
        let mut out = Vec::with_capacity(1 << 16);
        b.iter(|| {
            out.clear();
            write_event(&mut out, black_box(&event), "default");
            black_box(&out);
        });
    });
    group.finish();
}

fn dedupe(c: &mut Criterion) {
    c.bench_function("dedupe/first_time_full_window", |b| {
        let mut d = Dedupe::new(Duration::from_secs(3600), 200_000);
        let now = Instant::now();
        let mut n = 0u64;
        b.iter(|| {
            n = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
            black_box(d.first_time(EventId::from(n), now))
        });
    });
}

fn benches(c: &mut Criterion) {
    pipeline(c, "conversation_2_5kb", conversation_frame);
    pipeline(c, "presence_400b", presence_frame);
    dedupe(c);
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
