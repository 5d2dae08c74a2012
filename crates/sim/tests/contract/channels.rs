//! Channels: create, list, HEAD, the 20-channel eviction rule, expiry and dying with the
//! token (§7 lines 3, 4, 6).

use std::time::Duration;

use holdline_sim::SimConfig;
use reqwest::Method;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn created_channel_has_an_opaque_id_a_connect_uri_and_an_expiry() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let channel = api.create_channel().await;
    assert!(
        channel.id.starts_with("streaming-0-") && channel.id.len() == 38,
        "{}",
        channel.id
    );
    let ws_base = sim.url().replace("http://", "ws://");
    assert_eq!(
        channel.connect_uri,
        format!("{ws_base}/channels/{}", channel.id)
    );
    let expires = time::OffsetDateTime::parse(
        &channel.expires,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::hours(23) && left <= time::Duration::hours(24),
        "{left}"
    );
    assert!(
        channel.expires.ends_with('Z') && channel.expires.len() == 24,
        "{}",
        channel.expires
    );
}

#[tokio::test]
async fn head_says_whether_a_channel_exists() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let channel = api.create_channel().await;
    let head = |id: String| {
        api.req(
            Method::HEAD,
            &format!("/api/v2/notifications/channels/{id}"),
        )
        .send()
    };
    assert_eq!(
        head(channel.id.clone()).await.unwrap().status().as_u16(),
        200
    );
    assert_eq!(
        head("streaming-0-nope".into())
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
}

#[tokio::test]
async fn listing_shows_this_tokens_channels_or_all_of_the_clients() {
    let sim = start(fast()).await;
    let first = Api::login(&sim).await;
    let second = Api::login(&sim).await;
    let mine = first.create_channel().await;
    second.create_channel().await;
    let list = |q: &'static str| {
        let req = first.req(Method::GET, &format!("/api/v2/notifications/channels{q}"));
        async move {
            let body: Value = req.send().await.unwrap().json().await.unwrap();
            body["entities"].as_array().unwrap().clone()
        }
    };
    let by_token = list("").await;
    assert_eq!(by_token.len(), 1);
    assert_eq!(by_token[0]["id"], mine.id);
    let by_client = list("?includechannels=oauthclient").await;
    assert_eq!(by_client.len(), 2);
    assert_eq!(
        by_client.iter().filter(|c| c["id"] == "").count(),
        1,
        "other token's id hidden"
    );
}

#[tokio::test]
async fn the_21st_channel_evicts_the_least_recently_used_unconnected_one() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (connected, mut ws) = live_channel(&api, &[]).await;
    let mut idle = Vec::new();
    for _ in 0..19 {
        idle.push(api.create_channel().await);
    }
    let newest = api.create_channel().await;
    let head = |id: &str| {
        api.req(
            Method::HEAD,
            &format!("/api/v2/notifications/channels/{id}"),
        )
        .send()
    };
    assert_eq!(
        head(&idle[0].id).await.unwrap().status().as_u16(),
        404,
        "oldest idle channel evicted"
    );
    assert_eq!(
        head(&connected.id).await.unwrap().status().as_u16(),
        200,
        "connected channel kept"
    );
    assert_eq!(head(&newest.id).await.unwrap().status().as_u16(), 200);
    // The connected socket is untouched: it still answers a ping.
    ws.send(r#"{"message":"ping"}"#).await;
    ws.expect(WAIT, |v| v["eventBody"]["message"] == "pong")
        .await;
}

#[tokio::test]
async fn when_every_channel_is_connected_the_lru_one_is_evicted_and_told_why() {
    let sim = start(SimConfig {
        channels_per_client: 2,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let (oldest, mut ws_old) = live_channel(&api, &[]).await;
    let (_other, _ws) = live_channel(&api, &[]).await;
    api.create_channel().await;
    let notice = ws_old
        .expect(WAIT, |v| {
            v["topicName"]
                .as_str()
                .is_some_and(|t| t.starts_with("v2.system.no_longer_subscribed"))
        })
        .await;
    assert_eq!(
        notice["topicName"],
        format!("v2.system.no_longer_subscribed.{}", oldest.id)
    );
    assert_eq!(notice["eventBody"]["reason"], "another_channel_subscribed");
    assert!(matches!(
        ws_old.end(WAIT).await,
        End::Closed(Some((1000, _)))
    ));
}

#[tokio::test]
async fn channels_expire_and_resubscribing_extends_them() {
    let ttl = Duration::from_millis(600);
    let sim = start(SimConfig {
        channel_ttl: ttl,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let (kept, _ws) = live_channel(&api, &[presence(USER)]).await;
    let (lapsed, mut ws) = live_channel(&api, &[presence(USER)]).await;
    let head = |id: String| {
        let req = api.req(
            Method::HEAD,
            &format!("/api/v2/notifications/channels/{id}"),
        );
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // Keep one channel alive by re-subscribing every ttl/3; the other lapses.
    let deadline = tokio::time::Instant::now() + ttl * 3;
    let mut resubscribe = tokio::time::interval(ttl / 3);
    while tokio::time::Instant::now() < deadline {
        resubscribe.tick().await;
        let (status, _) = api
            .subscribe(Method::POST, &kept.id, &[presence(USER)], "")
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(head(kept.id.clone()).await, 200);
    assert_eq!(head(lapsed.id.clone()).await, 404);
    let gone = ws.expect(WAIT, |v| v["result"] == "404").await;
    assert!(gone["message"].as_str().unwrap().contains("expired"));
    assert!(matches!(ws.end(WAIT).await, End::Closed(Some(_))));
    // The socket of an expired channel cannot reconnect.
    let err = tokio_tungstenite::connect_async(lapsed.connect_uri.as_str())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn channels_die_with_their_token() {
    let sim = start(SimConfig {
        token_ttl: Duration::from_millis(500),
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &[]).await;
    let gone = ws.expect(WAIT, |v| v["result"] == "404").await;
    assert!(gone["message"].as_str().unwrap().contains(&channel.id));
    assert!(matches!(ws.end(WAIT).await, End::Closed(Some(_))));
    let fresh = Api::login(&sim).await;
    let status = fresh
        .req(
            Method::HEAD,
            &format!("/api/v2/notifications/channels/{}", channel.id),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404);
}

#[tokio::test]
async fn channels_can_outlive_their_token_when_configured() {
    let sim = start(SimConfig {
        token_ttl: Duration::from_millis(200),
        channels_die_with_token: false,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let channel = api.create_channel().await;
    // Wait past the token's life by waiting for the token to be refused.
    let deadline = tokio::time::Instant::now() + WAIT;
    while api
        .req(Method::GET, "/api/v2/notifications/channels")
        .send()
        .await
        .unwrap()
        .status()
        != 401
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = Api::login(&sim).await;
    let status = fresh
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
