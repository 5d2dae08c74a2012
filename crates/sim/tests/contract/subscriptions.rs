//! Subscriptions over REST: add, replace, list, clear, the 1,000-topic cap, unknown and
//! forbidden topics, combined topics, available topics (§7 line 5).

use holdline_sim::{ClientSpec, SimConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

fn ids(body: &Value) -> Vec<String> {
    body["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn user_topic(i: usize, suffix: &str) -> String {
    format!("v2.users.00000000-0000-4000-8000-{i:012}.{suffix}")
}

#[tokio::test]
async fn post_adds_put_replaces_get_lists_delete_clears() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let channel = api.create_channel().await;
    let path = format!(
        "/api/v2/notifications/channels/{}/subscriptions",
        channel.id
    );
    let (a, b, c) = (
        user_topic(1, "presence"),
        user_topic(2, "presence"),
        user_topic(3, "activity"),
    );
    let (status, body) = api
        .subscribe(Method::POST, &channel.id, std::slice::from_ref(&a), "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), std::slice::from_ref(&a));
    assert_eq!(body["entities"][0]["state"], "Permitted");
    let (_, body) = api
        .subscribe(Method::POST, &channel.id, &[b.clone(), a.clone()], "")
        .await;
    assert_eq!(
        ids(&body),
        [a.clone(), b.clone()],
        "POST adds with set semantics"
    );
    let (_, body) = api
        .subscribe(Method::PUT, &channel.id, std::slice::from_ref(&c), "")
        .await;
    assert_eq!(ids(&body), std::slice::from_ref(&c), "PUT replaces");
    let listed: Value = api
        .req(Method::GET, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&listed), [c]);
    let status = api
        .req(Method::DELETE, &path)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success());
    let listed: Value = api
        .req(Method::GET, &path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ids(&listed).is_empty());
}

#[tokio::test]
async fn more_than_1000_topics_is_a_400_and_changes_nothing() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let channel = api.create_channel().await;
    let thousand: Vec<String> = (0..1000).map(|i| user_topic(i, "presence")).collect();
    let (status, _) = api.subscribe(Method::PUT, &channel.id, &thousand, "").await;
    assert_eq!(status, 200);
    let (status, body) = api
        .subscribe(
            Method::POST,
            &channel.id,
            &[user_topic(5000, "presence")],
            "",
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("1000"), "{body}");
    let (_, listed) = api.subscribe(Method::POST, &channel.id, &[], "").await;
    assert_eq!(listed["entities"].as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn unknown_topic_is_a_400_that_names_the_nearest_real_topics() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let channel = api.create_channel().await;
    let bogus = format!("v2.conversations.{USER}");
    let (status, body) = api
        .subscribe(
            Method::PUT,
            &channel.id,
            &[presence(USER), bogus],
            "?ignoreErrors=true",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "bad.request");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("v2.users.{userId}.conversations"),
        "{message}"
    );
}

#[tokio::test]
async fn forbidden_topic_is_403_for_the_whole_request_or_rejected_with_ignore_errors() {
    let limited = ClientSpec::parse("limited:secret:routing:queue:view").unwrap();
    let sim = start(SimConfig {
        clients: vec![limited],
        ..fast()
    })
    .await;
    let api = Api::login_as(&sim, "limited", "secret").await;
    let channel = api.create_channel().await;
    let conversations = format!("v2.users.{USER}.conversations");
    let wanted = [presence(USER), conversations.clone()];
    let (status, body) = api.subscribe(Method::PUT, &channel.id, &wanted, "").await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], "missing.permissions");
    let (_, listed) = api.subscribe(Method::POST, &channel.id, &[], "").await;
    assert!(ids(&listed).is_empty(), "a 403 subscribes nothing");

    let (status, body) = api
        .subscribe(Method::PUT, &channel.id, &wanted, "?ignoreErrors=true")
        .await;
    assert_eq!(status, 200);
    let entities = body["entities"].as_array().unwrap();
    let rejected = entities
        .iter()
        .find(|e| e["id"] == conversations.as_str())
        .unwrap();
    assert_eq!(rejected["state"], "Rejected");
    assert_eq!(
        rejected["missingPermissions"],
        json!(["conversation:communication:view"])
    );
    let permitted = entities
        .iter()
        .find(|e| e["id"] == presence(USER).as_str())
        .unwrap();
    assert_eq!(permitted["state"], "Permitted");
}

#[tokio::test]
async fn combined_topics_deliver_every_part_as_its_own_topic() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let combined = format!("v2.users.{USER}?presence&routingStatus");
    let (_, mut ws) = live_channel(&api, &[combined]).await;
    publish(
        &sim,
        &format!("v2.users.{USER}.routingStatus"),
        json!({"n": 1}),
    )
    .await;
    publish(&sim, &format!("v2.users.{USER}.activity"), json!({"n": 2})).await;
    publish(&sim, &presence(USER), json!({"n": 3})).await;
    let first = ws.expect(WAIT, |v| v["eventBody"].get("n").is_some()).await;
    assert_eq!(first["topicName"], format!("v2.users.{USER}.routingStatus"));
    let second = ws.expect(WAIT, |v| v["eventBody"].get("n").is_some()).await;
    assert_eq!(
        second["topicName"],
        presence(USER),
        "activity was not subscribed"
    );
    let too_long = format!("v2.users.{USER}?{}", vec!["presence"; 25].join("&"));
    let channel = api.create_channel().await;
    let (status, body) = api
        .subscribe(Method::PUT, &channel.id, &[too_long], "")
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn available(api: &Api, query: &str) -> Vec<Value> {
    let body: Value = api
        .req(
            Method::GET,
            &format!("/api/v2/notifications/availabletopics{query}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["entities"].as_array().unwrap().clone()
}

#[tokio::test]
async fn available_topics_list_the_templates_with_what_expand_names() {
    let sim = start(fast()).await;
    let api = Api::login(&sim).await;
    let bare = available(&api, "").await;
    assert!(bare.len() > 40);
    assert!(
        bare.iter().all(|e| e.as_object().unwrap().len() == 1),
        "ids only"
    );
    assert!(
        bare.iter()
            .any(|e| e["id"] == "v2.analytics.queues.{id}.observations")
    );
    let expanded = available(
        &api,
        "?expand=description,requiresPermissions,permissionDetails,transports,schema,topicParameters",
    )
    .await;
    let queue = expanded
        .iter()
        .find(|e| e["id"] == "v2.routing.queues.{id}.conversations")
        .unwrap();
    assert!(
        queue["requiresPermissions"]
            .as_array()
            .unwrap()
            .contains(&json!("routing:queue:view"))
    );
    assert!(queue["description"].is_string());
    assert_eq!(queue["transports"], json!(["All"]));
    assert_eq!(queue["topicParameters"], json!(["id"]));
    assert_eq!(queue["schema"]["type"], "object");
    assert_eq!(
        queue["permissionDetails"][0]["permissions"],
        queue["requiresPermissions"]
    );
    let only = available(&api, "?expand=requiresPermissions").await;
    let queue = only
        .iter()
        .find(|e| e["id"] == "v2.routing.queues.{id}.conversations")
        .unwrap();
    assert!(queue.get("description").is_none() && queue.get("schema").is_none());
}

#[tokio::test]
async fn another_clients_channel_is_not_found() {
    let clients = vec![
        ClientSpec::demo(),
        ClientSpec::parse("other:secret").unwrap(),
    ];
    let sim = start(SimConfig { clients, ..fast() }).await;
    let owner = Api::login(&sim).await;
    let other = Api::login_as(&sim, "other", "secret").await;
    let channel = owner.create_channel().await;
    let (status, body) = other
        .subscribe(Method::PUT, &channel.id, &[presence(USER)], "")
        .await;
    assert_eq!(status, 404, "{body}");
}
