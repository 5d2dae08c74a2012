//! `POST /oauth/token` (§7 line 1, reference §1.2).

use holdline_sim::{ClientSpec, SimConfig};
use serde_json::Value;
use std::time::Duration;

use crate::common::*;

async fn token_call(url: &str, auth: Option<String>, body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn client_credentials_grant_issues_a_bearer_token_with_the_configured_ttl() {
    let sim = start(SimConfig {
        token_ttl: Duration::from_secs(7200),
        ..fast()
    })
    .await;
    let (status, body) = token_call(
        sim.url(),
        Some(basic("holdline-demo", "holdline-demo")),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 7200);
    assert!(body["access_token"].as_str().unwrap().len() >= 32);
}

#[tokio::test]
async fn configured_clients_replace_the_demo_client() {
    let clients = vec![ClientSpec::parse("acme:s3cret").unwrap()];
    let sim = start(SimConfig { clients, ..fast() }).await;
    let ok = token_call(
        sim.url(),
        Some(basic("acme", "s3cret")),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(ok.0, 200);
    let demo = token_call(
        sim.url(),
        Some(basic("holdline-demo", "holdline-demo")),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(demo.0, 400);
}

#[tokio::test]
async fn unknown_client_is_400_client_not_found() {
    let sim = start(fast()).await;
    let (status, body) = token_call(
        sim.url(),
        Some(basic("nobody", "x")),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["description"], "client not found");
    assert_eq!(body["error_description"], "client not found");
}

#[tokio::test]
async fn wrong_secret_is_401_authentication_failed() {
    let sim = start(fast()).await;
    let (status, body) = token_call(
        sim.url(),
        Some(basic("holdline-demo", "wrong")),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["description"], "authentication failed");
}

#[tokio::test]
async fn other_grants_and_missing_credentials_are_refused() {
    let sim = start(fast()).await;
    let auth = Some(basic("holdline-demo", "holdline-demo"));
    let (status, body) = token_call(sim.url(), auth.clone(), "grant_type=password").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body) = token_call(sim.url(), auth, "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (status, body) = token_call(
        sim.url(),
        None,
        "grant_type=client_credentials&client_id=holdline-demo&client_secret=holdline-demo",
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body["description"].as_str().unwrap().contains("HTTP Basic"),
        "{body}"
    );
}
