//! The service's unknowns as settings (docs/simulator.md): each one's default keeps
//! today's behaviour and its unkind setting does what it says.

use std::time::Duration;

use holdline_proto::{EventId, ServerFrame};
use holdline_sim::{ChannelScope, Frames, Handover, Pings, SimConfig, Unknowns};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::*;

fn with(unknowns: Unknowns) -> SimConfig {
    SimConfig { unknowns, ..fast() }
}

async fn answers_pong(ws: &mut Ws, ping: &str) -> bool {
    ws.send(ping).await;
    // The documented ping after it: its pong comes after any answer to the first.
    ws.send(r#"{"message":"ping"}"#).await;
    let first = ws.next_text(WAIT).await.unwrap();
    if first.contains("pong") {
        let second = ws.next_text(Duration::from_millis(300)).await;
        return matches!(second, Ok(ref t) if t.contains("pong"));
    }
    false
}

#[tokio::test]
async fn strict_pings_answer_only_the_documented_ping() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    assert!(answers_pong(&mut ws, r#"{"message":"PING"}"#).await);
    assert!(answers_pong(&mut ws, r#"{"message":"ping","id":7}"#).await);

    let sim = start(with(Unknowns {
        pings: Pings::Strict,
        ..Unknowns::default()
    }))
    .await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    assert!(!answers_pong(&mut ws, r#"{"message":"PING"}"#).await);
    assert!(!answers_pong(&mut ws, r#"{"message":"ping","id":7}"#).await);
    assert!(answers_pong(&mut ws, r#" { "message" : "ping" } "#).await);
}

#[tokio::test]
async fn publish_sends_the_body_byte_for_byte() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[presence(USER)]).await;
    let body = r#"{ "z" : 1.50, "a":"\u00e9\/x" }"#;
    let request = format!(r#"{{"topic":"{}","body":{body}}}"#, presence(USER));
    let entry: Value = reqwest::Client::new()
        .post(format!("{}/sim/publish", sim.url()))
        .body(request)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let frame = ws.next_text(WAIT).await.unwrap();
    assert!(frame.contains(&format!(r#""eventBody":{body}"#)), "{frame}");
    assert_eq!(
        entry["id"],
        EventId::of(&presence(USER), body.as_bytes()).to_string()
    );
}

#[tokio::test]
async fn per_channel_frames_differ_in_bytes_and_correlation_id_but_not_in_value() {
    let sim = start(with(Unknowns {
        frames: Frames::PerChannel,
        ..Unknowns::default()
    }))
    .await;
    let api = Api::login(&sim).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(live_channel(&api, &[presence(USER)]).await.1);
    }
    let body = json!({"id": "u/1", "n": 1200, "f": -0.5, "name": "Zoë", "list": [1, {"b": true}]});
    let entry = publish(&sim, &presence(USER), body.clone()).await;
    let mut bodies = std::collections::HashSet::new();
    let mut correlation = std::collections::HashSet::new();
    for ws in &mut sockets {
        let (body, correlation_id) = notification(ws).await;
        assert_eq!(
            EventId::of(&presence(USER), body.as_bytes()).to_string(),
            entry["id"],
            "{body}"
        );
        correlation.insert(correlation_id);
        bodies.insert(body);
    }
    assert_eq!(
        bodies.len(),
        3,
        "each channel has its own bytes: {bodies:?}"
    );
    assert_eq!(correlation.len(), 3, "and its own CorrelationId");
}

/// The next notification's `eventBody` exactly as sent, and its `CorrelationId`.
async fn notification(ws: &mut Ws) -> (String, String) {
    loop {
        let text = ws.next_text(WAIT).await.expect("a notification");
        if let Ok(ServerFrame::Notification(n)) = ServerFrame::parse(&text)
            && n.topic != "channel.metadata"
        {
            let correlation_id = n.correlation_id.as_deref().unwrap_or_default().to_owned();
            return (n.body.get().to_owned(), correlation_id);
        }
    }
}

#[tokio::test]
async fn token_scoped_channels_refuse_other_tokens() {
    for (scope, status) in [(ChannelScope::Client, 200), (ChannelScope::Token, 404)] {
        let sim = start(with(Unknowns {
            channel_scope: scope,
            ..Unknowns::default()
        }))
        .await;
        let first = Api::login(&sim).await;
        let second = Api::login(&sim).await;
        assert_ne!(first.token, second.token);
        let channel = first.create_channel().await;
        let path = format!("/api/v2/notifications/channels/{}", channel.id);
        let head = second
            .req(reqwest::Method::HEAD, &path)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status().as_u16(), status, "{scope:?}");
        let (put, _) = second
            .subscribe(reqwest::Method::PUT, &channel.id, &[presence(USER)], "")
            .await;
        assert_eq!(put, status, "{scope:?}");
        let own = first
            .req(reqwest::Method::HEAD, &path)
            .send()
            .await
            .unwrap();
        assert_eq!(own.status().as_u16(), 200);
    }
}

async fn four_sockets(unknowns: Unknowns) -> (holdline_sim::Simulator, Vec<Ws>) {
    let sim = start(with(unknowns)).await;
    let api = Api::login(&sim).await;
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(live_channel(&api, &[presence(USER)]).await.1);
    }
    (sim, sockets)
}

#[tokio::test]
async fn late_copies_arrive_late_and_may_be_overtaken() {
    let latency = Duration::from_millis(400);
    let (sim, mut sockets) = four_sockets(Unknowns {
        latency,
        late_share: 1.0,
        ..Unknowns::default()
    })
    .await;
    let published = Instant::now();
    for n in 0..10 {
        publish(&sim, &presence(USER), json!({ "n": n })).await;
    }
    let mut reordered = false;
    let mut slowest = Duration::ZERO;
    for ws in &mut sockets {
        let mut got = Vec::new();
        for _ in 0..10 {
            let frame = ws.expect(WAIT, topic_is(&presence(USER))).await;
            got.push(frame["eventBody"]["n"].as_u64().unwrap());
        }
        slowest = slowest.max(published.elapsed());
        reordered |= got.windows(2).any(|w| w[0] > w[1]);
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>(), "every copy arrives");
    }
    assert!(
        reordered,
        "forty copies each late by its own draw, all in order"
    );
    assert!(slowest > Duration::from_millis(40), "{slowest:?}");
    assert!(slowest < latency + Duration::from_secs(2), "{slowest:?}");
}

#[tokio::test]
async fn jitter_delays_copies_in_order() {
    let (sim, mut sockets) = four_sockets(Unknowns {
        jitter: Duration::from_millis(200),
        ..Unknowns::default()
    })
    .await;
    let published = Instant::now();
    for n in 0..10 {
        publish(&sim, &presence(USER), json!({ "n": n })).await;
    }
    let mut slowest = Duration::ZERO;
    for ws in &mut sockets {
        for n in 0..10 {
            let frame = ws.expect(WAIT, topic_is(&presence(USER))).await;
            assert_eq!(frame["eventBody"]["n"], n, "a socket keeps its order");
        }
        slowest = slowest.max(published.elapsed());
    }
    assert!(slowest > Duration::from_millis(20), "{slowest:?}");
}

#[tokio::test]
async fn a_lossy_hand_over_delivers_to_neither_socket_for_a_while() {
    let loss = Duration::from_millis(300);
    let sim = start(with(Unknowns {
        handover: Handover::Lossy,
        handover_loss: loss,
        ..Unknowns::default()
    }))
    .await;
    let api = Api::login(&sim).await;
    let (channel, mut first) = live_channel(&api, &[presence(USER)]).await;
    let mut second = Ws::connect(&channel.connect_uri).await;
    assert!(matches!(
        first.end(WAIT).await,
        End::Closed(Some((1000, _)))
    ));
    wait_connected(sim.url(), &channel.id, true).await;
    let attached = Instant::now();
    let lost = publish(&sim, &presence(USER), json!({"n": "lost"})).await;
    assert!(attached.elapsed() < loss, "published within the window");
    assert_eq!(lost["delivered_to"], json!([]), "{lost}");
    tokio::time::sleep_until(attached + loss).await;
    publish(&sim, &presence(USER), json!({"n": "after"})).await;
    let frame = second.expect(WAIT, topic_is(&presence(USER))).await;
    assert_eq!(frame["eventBody"]["n"], "after");
}
