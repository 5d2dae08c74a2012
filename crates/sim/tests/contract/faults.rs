//! The fault control API (§7 line 14 and the list): drop, close, stall,
//! socket_closing, evict, expire, revoke_token, delay, duplicate, malformed, oversized.

use std::time::Duration;

use holdline_sim::SimConfig;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::*;

#[tokio::test]
async fn drop_resets_the_connection_without_a_close_frame() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &[]).await;
    let (status, applied) = fault(&sim, json!({"kind": "drop", "channel": channel.id})).await;
    assert_eq!(status, 200);
    assert_eq!(applied["applied_to"], json!([channel.id]));
    match ws.end(WAIT).await {
        End::Error(e) => assert!(e.contains("reset by peer"), "{e}"),
        other => panic!("expected an abrupt end, got {other:?}"),
    }
    // The channel itself survives; a new socket may connect.
    let status = api
        .req(
            Method::HEAD,
            &format!("/api/v2/notifications/channels/{}", channel.id),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
}

#[tokio::test]
async fn close_sends_the_requested_code_and_reason() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    fault(
        &sim,
        json!({"kind": "close", "code": 1001, "reason": "idle timeout"}),
    )
    .await;
    match ws.end(WAIT).await {
        End::Closed(Some((code, reason))) => {
            assert_eq!((code, reason.as_str()), (1001, "idle timeout"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stall_goes_silent_loses_what_was_sent_then_resumes() {
    let sim = start(SimConfig {
        heartbeat: Duration::from_millis(50),
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &[presence(USER)]).await;
    ws.expect(WAIT, is_heartbeat).await;
    fault(
        &sim,
        json!({"kind": "stall", "channel": channel.id, "ms": 400}),
    )
    .await;
    let stalled_at = Instant::now();
    let lost = publish(&sim, &presence(USER), json!({"n": "lost in the stall"})).await;
    assert_eq!(
        lost["delivered_to"],
        json!([channel.id]),
        "the server believes it delivered"
    );
    // Frames already in flight may still land; after that, silence until the stall ends.
    let mut last_frame = Instant::now();
    let resumed = loop {
        let text = ws.next_text(WAIT).await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_ne!(v["eventBody"]["n"], "lost in the stall");
        let gap = last_frame.elapsed();
        last_frame = Instant::now();
        if gap >= Duration::from_millis(300) {
            break stalled_at.elapsed();
        }
    };
    assert!(
        resumed >= Duration::from_millis(350),
        "resumed after {resumed:?}"
    );
}

#[tokio::test]
async fn socket_closing_warns_then_closes_after_the_grace() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &[presence(USER)]).await;
    fault(
        &sim,
        json!({"kind": "socket_closing", "channel": channel.id, "grace_ms": 300}),
    )
    .await;
    let warned = Instant::now();
    let notice = ws.expect(WAIT, topic_is("v2.system.socket_closing")).await;
    assert_eq!(notice["eventBody"]["channelId"], channel.id.as_str());
    // Still delivering during the grace.
    publish(&sim, &presence(USER), json!({"during": "grace"})).await;
    ws.expect(WAIT, topic_is(&presence(USER))).await;
    match ws.end(WAIT).await {
        End::Closed(Some((code, _))) => assert_eq!(code, 1001),
        other => panic!("{other:?}"),
    }
    assert!(warned.elapsed() >= Duration::from_millis(250));
    // Make-before-break works: a new socket on the same connectUri receives events.
    let mut fresh = Ws::connect(&channel.connect_uri).await;
    wait_connected(sim.url(), &channel.id, true).await;
    publish(&sim, &presence(USER), json!({"after": "closing"})).await;
    fresh.expect(WAIT, topic_is(&presence(USER))).await;
}

#[tokio::test]
async fn evict_and_expire_remove_the_channel_and_close_its_socket() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (evicted, mut ws1) = live_channel(&api, &[]).await;
    let (expired, mut ws2) = live_channel(&api, &[]).await;
    fault(&sim, json!({"kind": "evict", "channel": evicted.id})).await;
    fault(&sim, json!({"kind": "expire", "channel": expired.id})).await;
    ws1.expect(WAIT, |v| {
        v["topicName"]
            .as_str()
            .is_some_and(|t| t.contains("no_longer_subscribed"))
    })
    .await;
    ws2.expect(WAIT, |v| v["result"] == "404").await;
    assert!(matches!(ws1.end(WAIT).await, End::Closed(_)));
    assert!(matches!(ws2.end(WAIT).await, End::Closed(_)));
    for id in [&evicted.id, &expired.id] {
        let status = api
            .req(
                Method::HEAD,
                &format!("/api/v2/notifications/channels/{id}"),
            )
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 404);
    }
}

#[tokio::test]
async fn revoke_token_notifies_closes_and_invalidates_the_token() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &[]).await;
    fault(&sim, json!({"kind": "revoke_token", "channel": channel.id})).await;
    let notice = ws
        .expect(WAIT, |v| {
            v["topicName"]
                .as_str()
                .is_some_and(|t| t.starts_with("v2.system.token_revoked"))
        })
        .await;
    assert_eq!(
        notice["topicName"],
        format!("v2.system.token_revoked.{}", channel.id)
    );
    assert_eq!(notice["eventBody"]["reason"], "user_tokens_revoked");
    assert!(matches!(ws.end(WAIT).await, End::Closed(_)));
    let resp = api
        .req(Method::GET, "/api/v2/notifications/channels")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Revoking by client takes every token of the client.
    let a = Api::login(&sim).await;
    let b = Api::login(&sim).await;
    fault(
        &sim,
        json!({"kind": "revoke_token", "client": "holdline-demo"}),
    )
    .await;
    for api in [a, b] {
        let resp = api
            .req(Method::GET, "/api/v2/notifications/channels")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
    }
}

#[tokio::test]
async fn delay_holds_deliveries_back() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &[presence(USER)]).await;
    fault(
        &sim,
        json!({"kind": "delay", "channel": channel.id, "ms": 300, "count": 1}),
    )
    .await;
    let sent = Instant::now();
    publish(&sim, &presence(USER), json!({"n": 1})).await;
    publish(&sim, &presence(USER), json!({"n": 2})).await;
    let first = ws.expect(WAIT, topic_is(&presence(USER))).await;
    assert_eq!(
        first["eventBody"]["n"], 1,
        "order is kept behind a delayed frame"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(280),
        "{:?}",
        sent.elapsed()
    );
    let second = ws.expect(WAIT, topic_is(&presence(USER))).await;
    assert_eq!(second["eventBody"]["n"], 2);
}

#[tokio::test]
async fn duplicate_delivers_each_event_twice() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[presence(USER)]).await;
    fault(&sim, json!({"kind": "duplicate", "count": 1})).await;
    publish(&sim, &presence(USER), json!({"n": 1})).await;
    publish(&sim, &presence(USER), json!({"n": 2})).await;
    let mut ns = Vec::new();
    for _ in 0..3 {
        ns.push(ws.expect(WAIT, topic_is(&presence(USER))).await["eventBody"]["n"].clone());
    }
    assert_eq!(ns, [json!(1), json!(1), json!(2)]);
    // Byte-identical copies, so one event id.
}

#[tokio::test]
async fn malformed_and_oversized_frames_arrive_and_the_socket_goes_on() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &[presence(USER)]).await;
    fault(&sim, json!({"kind": "malformed", "channel": channel.id})).await;
    let bad = ws.next_text(WAIT).await.unwrap();
    assert!(serde_json::from_str::<Value>(&bad).is_err(), "{bad}");
    fault(
        &sim,
        json!({"kind": "oversized", "channel": channel.id, "bytes": 200_000}),
    )
    .await;
    let big = ws.next_text(WAIT).await.unwrap();
    assert_eq!(big.len(), 200_000);
    publish(&sim, &presence(USER), json!({"still": "alive"})).await;
    ws.expect(WAIT, topic_is(&presence(USER))).await;
}

#[tokio::test]
async fn bad_fault_requests_are_explained() {
    let sim = start(fast()).await;
    let (status, body) = fault(&sim, json!({"kind": "explode"})).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown variant"),
        "{body}"
    );
    let (status, body) = fault(&sim, json!({"kind": "drop", "channel": "streaming-0-nope"})).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("/sim/channels"));
    let (status, _) = fault(&sim, json!({"kind": "rest_errors", "status": 200})).await;
    assert_eq!(status, 400);
    let (status, _) = fault(&sim, json!({"kind": "clear"})).await;
    assert_eq!(status, 200);
}
