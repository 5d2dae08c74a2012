//! Many orgs on one port: each its own clients, channels, ledger and faults.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

async fn get(sim: &holdline_sim::Simulator, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{}{path}", sim.url())).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn each_org_has_its_client_channels_ledger_and_faults() {
    let sim = start(holdline_sim::SimConfig { orgs: 3, ..fast() }).await;
    assert_eq!(sim.cores().len(), 3);
    assert_ne!(
        sim.cores()[0].org.queues[0].id,
        sim.cores()[1].org.queues[0].id,
        "each org has its own entities"
    );
    let one = Api::login_as(&sim, "org-1", "secret-1").await;
    let two = Api::login_as(&sim, "org-2", "secret-2").await;
    let refused = reqwest::Client::new()
        .post(format!("{}/oauth/token", sim.url()))
        .header("authorization", basic("org-2", "secret-1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401, "another org's secret");

    let a = one.create_channel().await;
    let b = two.create_channel().await;
    let topic = |core: &holdline_sim::Core| {
        format!("v2.routing.queues.{}.conversations", core.org.queues[0].id)
    };
    let (t1, t2) = (topic(&sim.cores()[0]), topic(&sim.cores()[1]));
    assert_eq!(
        one.subscribe(Method::PUT, &a.id, std::slice::from_ref(&t1), "")
            .await
            .0,
        200
    );
    assert_eq!(
        two.subscribe(Method::PUT, &b.id, std::slice::from_ref(&t2), "")
            .await
            .0,
        200
    );
    // One org's token does not reach the other's channel.
    let cross = one
        .req(
            Method::GET,
            &format!("/api/v2/notifications/channels/{}/subscriptions", b.id),
        )
        .send()
        .await
        .unwrap();
    assert!(cross.status().is_client_error(), "{}", cross.status());

    let _on_a = Ws::connect(&a.connect_uri).await;
    let mut ws = Ws::connect(&b.connect_uri).await;
    let listed: Vec<Value> = serde_json::from_str(&get(&sim, "/sim/channels").await.1).unwrap();
    assert_eq!(listed.len(), 2, "without ?org= every org's channels");
    let (_, of_two) = get(&sim, "/sim/channels?org=org-2").await;
    let of_two: Vec<Value> = serde_json::from_str(&of_two).unwrap();
    assert_eq!(of_two.len(), 1);
    assert_eq!(of_two[0]["id"], b.id.as_str());
    assert_eq!(of_two[0]["client"], "org-2");

    let published = reqwest::Client::new()
        .post(format!("{}/sim/publish?org=org-2", sim.url()))
        .json(&json!({"topic": t2, "body": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status().as_u16(), 200);
    let frame = ws.next_text(Duration::from_secs(5)).await.unwrap();
    assert!(frame.contains(r#""n":1"#), "{frame}");
    let (status, two_ledger) = get(&sim, "/sim/ledger?org=org-2").await;
    assert_eq!(status, 200);
    let entries: Vec<Value> = two_ledger
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["org"], "org-2");
    assert_eq!(entries[0]["delivered_to"][0], b.id.as_str());
    assert!(get(&sim, "/sim/ledger?org=org-1").await.1.is_empty());
    let (status, body) = get(&sim, "/sim/ledger").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("?org="), "{body}");
    assert_eq!(get(&sim, "/sim/ledger?org=org-9").await.0, 404);

    // A fault aimed at org-1 leaves org-2's socket alone.
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/faults?org=org-1", sim.url()))
        .json(&json!({"kind": "drop"}))
        .send()
        .await
        .unwrap();
    let applied: Value = resp.json().await.unwrap();
    assert_eq!(applied["applied_to"], json!([a.id]));
    let (_, of_two) = get(&sim, "/sim/channels?org=org-2").await;
    let of_two: Vec<Value> = serde_json::from_str(&of_two).unwrap();
    assert_eq!(of_two[0]["connected"], true, "org-2's socket stays up");
    // REST errors aimed at org-2 fail its calls only.
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/faults?org=org-2", sim.url()))
        .json(&json!({"kind": "rest_errors", "status": 429, "count": 5, "retry_after": 1}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let status = |api: &Api| {
        let req = api.req(Method::GET, "/api/v2/notifications/channels");
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&two).await, 429);
    assert_eq!(status(&one).await, 200);
    // A fault aimed at a channel finds its org without ?org=.
    let (code, applied) = fault(&sim, json!({"kind": "drop", "channel": b.id})).await;
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["applied_to"], json!([b.id]));
    // Without ?org= a fault reaches every org.
    let (code, applied) = fault(&sim, json!({"kind": "expire"})).await;
    assert_eq!(code, 200);
    assert_eq!(
        applied["applied_to"].as_array().unwrap().len(),
        2,
        "{applied}"
    );
}

async fn token_status(sim: &holdline_sim::Simulator, id: &str, secret: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/oauth/token", sim.url()))
        .header("authorization", basic(id, secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_revoked_client_or_a_narrowed_grant_touches_its_org_only() {
    let sim = start(holdline_sim::SimConfig { orgs: 2, ..fast() }).await;
    let one = Api::login_as(&sim, "org-1", "secret-1").await;
    let two = Api::login_as(&sim, "org-2", "secret-2").await;
    let queue_topic = |core: &holdline_sim::Core| {
        format!("v2.routing.queues.{}.conversations", core.org.queues[0].id)
    };
    let (t1, t2) = (queue_topic(&sim.cores()[0]), queue_topic(&sim.cores()[1]));
    let (_, mut ws_one) = live_channel(&one, std::slice::from_ref(&t1)).await;
    let (b, _ws_two) = live_channel(&two, std::slice::from_ref(&t2)).await;

    // The grant changes what org-1's client may subscribe from now on.
    let (code, body) = fault(
        &sim,
        json!({"kind": "grant", "client": "org-1", "permissions": ["routing:queue:view"]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let fresh = one.create_channel().await;
    let (status, body) = one
        .subscribe(Method::PUT, &fresh.id, std::slice::from_ref(&t1), "")
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.to_string().contains("conversation:communication:view"),
        "the missing permission is named: {body}"
    );
    let (status, _) = two
        .subscribe(Method::PUT, &b.id, std::slice::from_ref(&t2), "")
        .await;
    assert_eq!(status, 200, "org-2's client keeps its permissions");

    // Revoking org-1's client: no more tokens, its channel ends, org-2 carries on.
    let (code, body) = fault(&sim, json!({"kind": "revoke_client", "client": "org-1"})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(token_status(&sim, "org-1", "secret-1").await, 400);
    assert_eq!(token_status(&sim, "org-2", "secret-2").await, 200);
    let ended = ws_one
        .expect(Duration::from_secs(5), |v| {
            v["topicName"]
                .as_str()
                .is_some_and(|t| t.contains("token_revoked"))
        })
        .await;
    assert!(ended["topicName"].is_string());
    let (status, _) = one
        .subscribe(Method::PUT, &fresh.id, std::slice::from_ref(&t1), "")
        .await;
    assert_eq!(status, 401, "the revoked client's tokens are dead");
    let (code, body) = fault(&sim, json!({"kind": "revoke_client", "client": "nobody"})).await;
    assert_eq!(code, 400, "an unknown client is refused: {body}");
    let listed: Vec<Value> =
        serde_json::from_str(&get(&sim, "/sim/channels?org=org-2").await.1).unwrap();
    assert_eq!(listed[0]["connected"], true, "{listed:?}");
}

#[tokio::test]
async fn the_close_code_a_client_sends_is_listed() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let (channel, mut ws) = live_channel(&api, &[]).await;
    ws.inner
        .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    wait_connected(sim.url(), &channel.id, false).await;
    let listed: Vec<Value> = serde_json::from_str(&get(&sim, "/sim/channels").await.1).unwrap();
    assert_eq!(listed[0]["client_close_code"], 1000, "{listed:?}");
}
