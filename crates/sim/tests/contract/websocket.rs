//! The channel WebSocket (§7 lines 8–13): no auth, one socket per channel, heartbeats,
//! ping/pong, RFC pings, unknown text, subscribe over the socket, the client message limit,
//! delivery only to sockets connected at publish time.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use holdline_sim::SimConfig;
use holdline_sim::config::HeartbeatMode;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test]
async fn unknown_channel_upgrade_is_refused_with_the_configured_status() {
    let sim = start(fast()).await;
    let uri = format!(
        "{}/channels/streaming-0-nope",
        sim.url().replace("http", "ws")
    );
    let err = tokio_tungstenite::connect_async(uri.as_str())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let sim = start(SimConfig {
        unknown_channel_status: 404,
        ..fast()
    })
    .await;
    let uri = format!(
        "{}/channels/streaming-0-nope",
        sim.url().replace("http", "ws")
    );
    let err = tokio_tungstenite::connect_async(uri.as_str())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
}

#[tokio::test]
async fn a_second_socket_on_the_channel_closes_the_first() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (channel, mut first) = live_channel(&api, &[presence(USER)]).await;
    let mut second = Ws::connect(&channel.connect_uri).await;
    match first.end(WAIT).await {
        End::Closed(Some((code, reason))) => {
            assert_eq!(code, 1000);
            assert!(reason.contains("another socket"), "{reason}");
        }
        other => panic!("first socket was not closed: {other:?}"),
    }
    wait_connected(sim.url(), &channel.id, true).await;
    publish(&sim, &presence(USER), json!({"to": "second"})).await;
    second.expect(WAIT, topic_is(&presence(USER))).await;
}

#[tokio::test]
async fn heartbeats_arrive_every_period() {
    let sim = start(SimConfig {
        heartbeat: Duration::from_millis(60),
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    let started = Instant::now();
    for _ in 0..4 {
        let frame = ws.next_text(WAIT).await.unwrap();
        assert_eq!(
            frame,
            r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(180),
        "4 heartbeats in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_only_heartbeats_pause_while_events_flow() {
    let heartbeat = Duration::from_millis(500);
    let sim = start(SimConfig {
        heartbeat,
        heartbeat_mode: HeartbeatMode::IdleOnly,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[presence(USER)]).await;
    for n in 0..15 {
        publish(&sim, &presence(USER), json!({"n": n})).await;
        let frame: serde_json::Value =
            serde_json::from_str(&ws.next_text(WAIT).await.unwrap()).unwrap();
        assert_eq!(
            frame["eventBody"]["n"], n,
            "no heartbeat while traffic flows"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    ws.expect(WAIT, is_heartbeat).await;
}

#[tokio::test]
async fn app_ping_gets_a_pong_and_rfc_ping_gets_a_pong_frame() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    ws.send(r#"{"message":"ping"}"#).await;
    let pong = ws.next_text(WAIT).await.unwrap();
    assert_eq!(
        pong,
        r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#
    );
    ws.inner
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.inner.next())
            .await
            .expect("no pong frame")
        {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn unknown_text_is_ignored_unless_configured_to_answer() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    ws.send(r#"{"type":"keepalive"}"#).await;
    ws.send("2021-06-04 10:00:01.0 +0000 UTC m=+1.0").await;
    ws.send(r#"{"message":"ping"}"#).await;
    let next = ws.next_text(WAIT).await.unwrap();
    assert!(next.contains("pong"), "the first reply is the pong: {next}");

    let sim = start(SimConfig {
        answer_unknown_messages: true,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    ws.send(r#"{"type":"keepalive"}"#).await;
    let reply = ws.expect(WAIT, |v| v["result"] == "400").await;
    assert_eq!(reply["status"], "error");
}

#[tokio::test]
async fn subscribe_and_unsubscribe_over_the_socket_reply_with_the_correlation_id() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    ws.send(&format!(
        r#"{{"message":"subscribe","topics":["{}"],"correlationId":"abc"}}"#,
        presence(USER)
    ))
    .await;
    let reply = ws.expect(WAIT, |v| v["correlationId"] == "abc").await;
    assert_eq!(reply["result"], "200");
    assert_eq!(reply["status"], "subscribed");
    assert_eq!(reply["topics"], json!([presence(USER)]));
    publish(&sim, &presence(USER), json!({"n": 1})).await;
    ws.expect(WAIT, topic_is(&presence(USER))).await;

    ws.send(&format!(
        r#"{{"message":"unsubscribe","topics":["{}"],"correlationId":"def"}}"#,
        presence(USER)
    ))
    .await;
    let reply = ws.expect(WAIT, |v| v["correlationId"] == "def").await;
    assert_eq!(reply["status"], "unsubscribed");
    let entry = publish(&sim, &presence(USER), json!({"n": 2})).await;
    assert_eq!(entry["delivered_to"], json!([]));

    ws.send(r#"{"message":"subscribe","correlationId":"uno5VlaUHt5t2Mul"}"#)
        .await;
    let reply = ws
        .expect(WAIT, |v| v["correlationId"] == "uno5VlaUHt5t2Mul")
        .await;
    assert_eq!(
        reply,
        json!({"correlationId":"uno5VlaUHt5t2Mul","topics":[],"result":"400","status":"error","message":"Required data missing from subscribe request."})
    );
    ws.send(r#"{"message":"subscribe","topics":["v2.nonsense"],"correlationId":"bad"}"#)
        .await;
    let reply = ws.expect(WAIT, |v| v["correlationId"] == "bad").await;
    assert_eq!(reply["result"], "400");
}

#[tokio::test]
async fn a_client_message_over_64_kib_closes_the_socket_with_1009() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    let big = format!(r#"{{"message":"ping","pad":"{}"}}"#, "x".repeat(70 * 1024));
    ws.send(&big).await;
    match ws.end(WAIT).await {
        End::Closed(Some((code, _))) => assert_eq!(code, 1009),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
}

#[tokio::test]
async fn events_go_only_to_sockets_connected_when_they_are_published() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let channel = api.create_channel().await;
    let (status, _) = api
        .subscribe(reqwest::Method::PUT, &channel.id, &[presence(USER)], "")
        .await;
    assert_eq!(status, 200);
    let missed = publish(&sim, &presence(USER), json!({"n": "before connect"})).await;
    assert_eq!(missed["delivered_to"], json!([]));
    let mut ws = Ws::connect(&channel.connect_uri).await;
    wait_connected(sim.url(), &channel.id, true).await;
    let seen = publish(&sim, &presence(USER), json!({"n": "after connect"})).await;
    assert_eq!(seen["delivered_to"], json!([channel.id]));
    let frame = ws.expect(WAIT, topic_is(&presence(USER))).await;
    assert_eq!(
        frame["eventBody"]["n"], "after connect",
        "no buffering, no replay"
    );
    assert_eq!(frame["version"], "2");
    assert!(frame["metadata"]["CorrelationId"].is_string());
}

#[tokio::test]
async fn nothing_a_client_sends_takes_the_socket_or_the_server_down() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &[]).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let many: Vec<String> = (0..1100)
        .map(|i| format!("v2.users.00000000-0000-4000-8000-{i:012}.presence"))
        .collect();
    let garbage = [
        String::new(),
        "null".to_owned(),
        "{".to_owned(),
        deep,
        r#"{"message":null}"#.to_owned(),
        r#"{"message":"subscribe","topics":"v2.users.x.presence"}"#.to_owned(),
        r#"{"message":"subscribe","topics":[1,2,{"a":[]}],"correlationId":7}"#.to_owned(),
        json!({"message": "subscribe", "topics": many, "correlationId": "many"}).to_string(),
        "\u{0}\u{1}\u{2}".to_owned(),
    ];
    for text in &garbage {
        ws.send(text).await;
    }
    ws.inner
        .send(Message::Binary(vec![0xff, 0x00, 0xfe].into()))
        .await
        .unwrap();
    let too_many = ws.expect(WAIT, |v| v["correlationId"] == "many").await;
    assert_eq!(too_many["result"], "400");
    ws.send(r#"{"message":"ping"}"#).await;
    ws.expect(WAIT, |v| v["eventBody"]["message"] == "pong")
        .await;
    // The server still serves other clients.
    Api::login(&sim).await.create_channel().await;
}
