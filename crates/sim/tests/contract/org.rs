//! The simulated org over REST: queues by name and users, paged.

use reqwest::Method;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn queues_page_and_filter_by_name() {
    let sim = start(holdline_sim::SimConfig {
        queues: 7,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let get = |q: &'static str| {
        let req = api.req(Method::GET, &format!("/api/v2/routing/queues{q}"));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let page = get("?pageSize=3&pageNumber=3").await;
    assert_eq!(page["total"], 7);
    assert_eq!(page["pageCount"], 3);
    assert_eq!(page["entities"].as_array().unwrap().len(), 1);
    assert!(page.get("nextUri").is_none());
    let support = get("?name=support").await;
    let entities = support["entities"].as_array().unwrap();
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0]["name"], "Support");
    assert_eq!(entities[0]["id"], sim.core().org.queues[0].id.as_str());
    let bad = api
        .req(Method::GET, "/api/v2/routing/queues?pageSize=0")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
}

#[tokio::test]
async fn users_list_every_agent_with_an_email() {
    let sim = start(holdline_sim::SimConfig {
        agents: 30,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    let mut seen = Vec::new();
    let mut next = Some("/api/v2/users?pageSize=25".to_owned());
    while let Some(path) = next {
        let page: Value = api
            .req(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for user in page["entities"].as_array().unwrap() {
            assert!(user["email"].as_str().unwrap().ends_with("@example.com"));
            seen.push(user["id"].as_str().unwrap().to_owned());
        }
        next = page["nextUri"].as_str().map(str::to_owned);
    }
    assert_eq!(seen.len(), 30);
    assert_eq!(seen[0], sim.core().org.agents[0].id);
}

#[tokio::test]
async fn queues_and_users_can_be_added_and_deleted_through_the_control_api() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let http = reqwest::Client::new();
    let added: Value = http
        .post(format!("{}/sim/org/queues", sim.url()))
        .json(&serde_json::json!({"name": "Escalations"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Value = api
        .req(Method::GET, "/api/v2/routing/queues?name=escalations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["entities"][0]["id"], added["id"]);
    let status = http
        .delete(format!(
            "{}/sim/org/{}",
            sim.url(),
            added["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 204);
    let listed: Value = api
        .req(Method::GET, "/api/v2/routing/queues?name=escalations")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["entities"].as_array().unwrap().is_empty());
    let user = http
        .post(format!("{}/sim/org/users", sim.url()))
        .json(&serde_json::json!({"name": "New Hire", "email": "new.hire@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status().as_u16(), 200);
    let no_email = http
        .post(format!("{}/sim/org/users", sim.url()))
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_email.status().as_u16(), 400);
}
