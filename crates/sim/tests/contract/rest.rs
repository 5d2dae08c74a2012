//! Bearer authentication, the per-token rate limit and injected REST errors
//! (§7 lines 2 and 7).

use std::time::Duration;

use holdline_sim::SimConfig;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

async fn call(api: &Api, token: Option<&str>) -> (u16, Value, Option<String>) {
    let mut req = api
        .http
        .post(format!("{}/api/v2/notifications/channels", api.base));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), resp.json().await.unwrap(), retry)
}

#[tokio::test]
async fn api_calls_need_a_live_bearer_token() {
    let sim = start(SimConfig {
        token_ttl: Duration::from_millis(300),
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let (status, body, _) = call(&api, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("authentication.required"))
    );
    assert!(body["contextId"].is_string());
    let (status, body, _) = call(&api, Some("not-a-token")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("bad.credentials"))
    );
    let (status, _, _) = call(&api, Some(&api.token)).await;
    assert_eq!(status, 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body, _) = call(&api, Some(&api.token)).await;
        if status == 401 {
            assert_eq!(body["code"], "credentials.expired");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_and_the_documented_body() {
    let sim = start(SimConfig {
        rate_limit_per_minute: 5,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    for _ in 0..5 {
        assert_eq!(call(&api, Some(&api.token)).await.0, 200);
    }
    let (status, body, retry) = call(&api, Some(&api.token)).await;
    assert_eq!(status, 429);
    assert_eq!(body["code"], "too.many.requests.retry.after");
    let secs: u64 = retry.expect("Retry-After header").parse().unwrap();
    assert!((1..=12).contains(&secs), "{secs}");
    assert_eq!(
        body["message"],
        format!("Rate limit exceeded the maximum. Retry the request in [{secs}] seconds")
    );
    // Another token has its own budget.
    let other = Api::login(&sim).await;
    assert_eq!(call(&other, Some(&other.token)).await.0, 200);
}

#[tokio::test]
async fn rest_error_fault_fails_the_next_calls_then_recovers() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (status, _) = fault(
        &sim,
        json!({"kind": "rest_errors", "status": 503, "count": 2}),
    )
    .await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let (status, body, _) = call(&api, Some(&api.token)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("service.unavailable"))
        );
    }
    assert_eq!(call(&api, Some(&api.token)).await.0, 200);
}

#[tokio::test]
async fn rest_error_fault_can_target_a_path_and_send_retry_after() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let channel = api.create_channel().await;
    fault(&sim, json!({"kind": "rest_errors", "status": 429, "retry_after": 3, "path": "/api/v2/notifications/channels/", "method": "PUT"})).await;
    // Other calls pass.
    assert_eq!(call(&api, Some(&api.token)).await.0, 200);
    let resp = api
        .req(
            Method::PUT,
            &format!(
                "/api/v2/notifications/channels/{}/subscriptions",
                channel.id
            ),
        )
        .json(&json!([{"id": presence(USER)}]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    let (status, _) = api
        .subscribe(Method::PUT, &channel.id, &[presence(USER)], "")
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn token_endpoint_can_fail_too() {
    let sim = start(fast()).await;
    fault(
        &sim,
        json!({"kind": "rest_errors", "status": 502, "path": "/oauth/token"}),
    )
    .await;
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/token", sim.url()))
        .header("authorization", basic("holdline-demo", "holdline-demo"))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    Api::login(&sim).await;
}

#[tokio::test]
async fn unknown_paths_and_bad_bodies_get_error_bodies() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let resp = api
        .req(Method::GET, "/api/v2/nothing/here")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not.found");
    let channel = api.create_channel().await;
    let resp = api
        .req(
            Method::PUT,
            &format!(
                "/api/v2/notifications/channels/{}/subscriptions",
                channel.id
            ),
        )
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad.request");
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/faults", sim.url()))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = api
        .req(Method::DELETE, "/api/v2/notifications/channels")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}
