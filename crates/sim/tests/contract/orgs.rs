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
