//! The endpoints a back-fill reads: what the conversation and user details queries
//! return is what the generator did (and what the topics carried), under the service's
//! interval, paging and permission rules.

use std::collections::HashSet;

use holdline_proto::ServerFrame;
use holdline_sim::SimConfig;
use holdline_sim::config::ClientSpec;
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use crate::common::*;

fn iso(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// The last hour up to a minute from now.
fn last_hour() -> String {
    let now = OffsetDateTime::now_utc();
    format!(
        "{}/{}",
        iso(now - time::Duration::hours(1)),
        iso(now + time::Duration::minutes(1))
    )
}

async fn post(api: &Api, path: &str, body: Value) -> (u16, Value) {
    let resp = api
        .req(Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn get(api: &Api, path: &str) -> Value {
    api.req(Method::GET, path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const CONVERSATIONS: &str = "/api/v2/analytics/conversations/details/query";
const USERS: &str = "/api/v2/analytics/users/details/query";

/// Every conversation of a query, page by page.
async fn every_page(api: &Api, mut query: Value, size: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for number in 1.. {
        query["paging"] = json!({ "pageSize": size, "pageNumber": number });
        let (status, page) = post(api, CONVERSATIONS, query.clone()).await;
        assert_eq!(status, 200, "{page}");
        let Some(rows) = page["conversations"].as_array() else {
            break;
        };
        assert!(rows.len() <= size);
        out.extend(rows.iter().cloned());
    }
    out
}

fn queue_filter(queue: &str) -> Value {
    json!([{ "type": "or", "predicates": [{ "dimension": "queueId", "value": queue }] }])
}

#[tokio::test]
async fn the_details_query_finds_every_conversation_the_topics_carried() {
    let sim = start(SimConfig {
        rate: 300.0,
        queues: 2,
        agents: 4,
        ..fast()
    })
    .await;
    let org = &sim.core().org;
    let queues: Vec<String> = org.queues.iter().map(|q| q.id.clone()).collect();
    let topics: Vec<String> = queues
        .iter()
        .map(|q| format!("v2.routing.queues.{q}.conversations"))
        .collect();
    let api = Api::login(&sim).await;
    let (_, mut ws) = live_channel(&api, &topics).await;
    // Conversation ids by the queue whose topic carried them.
    let mut carried: Vec<HashSet<String>> = vec![HashSet::new(); queues.len()];
    let deadline = Instant::now() + WAIT;
    while carried.iter().map(HashSet::len).sum::<usize>() < 40 {
        let left = deadline.saturating_duration_since(Instant::now());
        let text = ws.next_text(left).await.expect("traffic stopped");
        if let Ok(ServerFrame::Notification(n)) = ServerFrame::parse(&text) {
            let body: Value = serde_json::from_str(n.body.get()).unwrap();
            let q = queues
                .iter()
                .position(|q| n.topic.contains(q.as_str()))
                .unwrap();
            carried[q].insert(body["id"].as_str().unwrap().to_owned());
        }
    }
    let all = every_page(&api, json!({ "interval": last_hour() }), 7).await;
    let found: HashSet<&str> = all
        .iter()
        .map(|c| c["conversationId"].as_str().unwrap())
        .collect();
    assert_eq!(found.len(), all.len(), "no conversation twice across pages");
    for id in carried.iter().flatten() {
        assert!(found.contains(id.as_str()), "{id} carried but not found");
    }
    let starts: Vec<&str> = all
        .iter()
        .map(|c| c["conversationStart"].as_str().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "by start");
    // Filtered by a queue: its conversations, each with a segment on it.
    let q0 = every_page(
        &api,
        json!({ "interval": last_hour(), "segmentFilters": queue_filter(&queues[0]) }),
        100,
    )
    .await;
    let ids: HashSet<&str> = q0
        .iter()
        .map(|c| c["conversationId"].as_str().unwrap())
        .collect();
    assert!(carried[0].iter().all(|id| ids.contains(id.as_str())));
    assert!(carried[1].iter().all(|id| !ids.contains(id.as_str())));
    for c in &q0 {
        let on_queue = c["participants"].as_array().unwrap().iter().any(|p| {
            p["sessions"][0]["segments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["queueId"] == queues[0].as_str())
        });
        assert!(on_queue, "{c}");
    }
    // The live conversation, as its topics carried it last.
    let id = carried[0].iter().next().unwrap();
    let live = get(&api, &format!("/api/v2/conversations/{id}")).await;
    assert_eq!(live["id"], id.as_str());
    let missing = api
        .req(Method::GET, "/api/v2/conversations/no-such-conversation")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[tokio::test]
async fn user_details_and_current_states_agree() {
    let sim = start(SimConfig {
        rate: 300.0,
        queues: 2,
        agents: 4,
        ..fast()
    })
    .await;
    let api = Api::login(&sim).await;
    // Let the contact centre run a little.
    let deadline = Instant::now() + WAIT;
    while ledger(&sim).await.len() < 300 {
        assert!(Instant::now() < deadline, "no traffic");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let agents: Vec<String> = sim.core().org.agents.iter().map(|a| a.id.clone()).collect();
    let filter = json!([{ "type": "or", "predicates": agents.iter().map(|a| json!({"dimension": "userId", "value": a})).collect::<Vec<_>>() }]);
    let (status, details) = post(
        &api,
        USERS,
        json!({ "interval": last_hour(), "userFilters": filter, "paging": {"pageSize": 100} }),
    )
    .await;
    assert_eq!(status, 200, "{details}");
    let rows = details["userDetails"].as_array().unwrap();
    assert_eq!(rows.len(), agents.len(), "every agent has a presence");
    let ids: Vec<String> = agents.iter().map(|a| format!("id={a}")).collect();
    let bulk = get(
        &api,
        &format!("/api/v2/users/presences/purecloud/bulk?{}", ids.join("&")),
    )
    .await;
    let bulk = bulk.as_array().unwrap();
    for row in rows {
        let user = row["userId"].as_str().unwrap();
        // The states now are the last spans, still open.
        let last_presence = row["primaryPresence"].as_array().unwrap().last().unwrap();
        let last_routing = row["routingStatus"].as_array().unwrap().last().unwrap();
        let now = get(&api, &format!("/api/v2/users/{user}/routingstatus")).await;
        // The generator may have moved on between the two calls: compare only when the
        // span the query saw began when the current status did.
        if now["startTime"] == last_routing["startTime"] {
            assert_eq!(now["status"], last_routing["routingStatus"]);
            assert!(last_routing.get("endTime").is_none());
        }
        let p = bulk.iter().find(|p| p["userId"] == user).unwrap();
        if p["modifiedDate"] == last_presence["startTime"] {
            assert_eq!(
                p["presenceDefinition"]["systemPresence"],
                last_presence["systemPresence"]
            );
        }
    }
    let too_many: Vec<String> = (0..51).map(|i| format!("id=u{i}")).collect();
    let resp = api
        .req(
            Method::GET,
            &format!(
                "/api/v2/users/presences/purecloud/bulk?{}",
                too_many.join("&")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[tokio::test]
async fn intervals_paging_and_permissions_follow_the_service_rules() {
    let mut config = SimConfig {
        rate: 50.0,
        ..fast()
    };
    config.clients.push(ClientSpec {
        id: "no-analytics".into(),
        secret: "s".into(),
        permissions: vec!["routing:queue:view".into()],
    });
    let sim = start(config).await;
    let api = Api::login(&sim).await;
    let queue = sim.core().org.queues[0].id.clone();
    let now = OffsetDateTime::now_utc();
    let days = |n: i64| format!("{}/{}", iso(now - time::Duration::days(n)), iso(now));
    let cases = [
        (json!({ "interval": days(7) }), 200),
        (json!({ "interval": days(8) }), 400),
        (
            json!({ "interval": days(8), "segmentFilters": queue_filter(&queue) }),
            200,
        ),
        (
            json!({ "interval": days(32), "segmentFilters": queue_filter(&queue) }),
            400,
        ),
        (json!({ "interval": "yesterday" }), 400),
        (
            json!({ "interval": format!("{}/{}", iso(now), iso(now - time::Duration::hours(1))) }),
            400,
        ),
        (
            json!({ "interval": days(1), "paging": { "pageSize": 201 } }),
            400,
        ),
        (
            json!({ "interval": days(1), "paging": { "pageSize": 100, "pageNumber": 1001 } }),
            400,
        ),
        (
            json!({ "interval": days(1), "segmentFilters": [{"predicates": [{"dimension": "mediaType", "value": "voice"}]}] }),
            400,
        ),
    ];
    for (query, want) in cases {
        let (status, body) = post(&api, CONVERSATIONS, query.clone()).await;
        assert_eq!(status, want, "{query}: {body}");
        if want == 400 {
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
    }
    let limited = Api::login_as(&sim, "no-analytics", "s").await;
    for (path, permission) in [
        (CONVERSATIONS, "analytics:conversationDetail:view"),
        (USERS, "analytics:userDetail:view"),
    ] {
        let (status, body) = post(&limited, path, json!({ "interval": days(1) })).await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(permission),
            "{body}"
        );
    }
}

#[tokio::test]
async fn recent_changes_are_not_in_the_analytics_yet() {
    let (_sim, api) = busy(|u| u.analytics_delay = std::time::Duration::from_secs(3600)).await;
    let (status, body) = post(&api, CONVERSATIONS, json!({ "interval": last_hour() })).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["totalHits"], 0,
        "an hour's delay hides the last hour: {body}"
    );
    assert!(body.get("conversations").is_none());
}

const JOBS: &str = "/api/v2/analytics/conversations/details/jobs";

/// A job's results, every page (`size` a page) through the cursors.
async fn job_rows(api: &Api, id: &str, size: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{JOBS}/{id}/results?pageSize={size}&cursor={c}"),
            None => format!("{JOBS}/{id}/results?pageSize={size}"),
        };
        let page = get(api, &path).await;
        let rows = page["conversations"].as_array().expect("conversations");
        assert!(rows.len() <= size, "{page}");
        out.extend(rows.iter().cloned());
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

/// Waits (up to `WAIT`) until job `id` says it is fulfilled.
async fn fulfilled(api: &Api, id: &str) {
    let deadline = Instant::now() + WAIT;
    while get(api, &format!("{JOBS}/{id}")).await["state"] != "FULFILLED" {
        assert!(Instant::now() < deadline, "job {id} was never fulfilled");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A simulator publishing 300 events/s with `unknowns` changed as `tweak` says, once it
/// has published 100, and a client of it.
async fn busy(tweak: impl FnOnce(&mut holdline_sim::Unknowns)) -> (holdline_sim::Simulator, Api) {
    let mut config = SimConfig {
        rate: 300.0,
        ..fast()
    };
    tweak(&mut config.unknowns);
    let sim = start(config).await;
    let api = Api::login(&sim).await;
    let deadline = Instant::now() + WAIT;
    while ledger(&sim).await.len() < 100 {
        assert!(Instant::now() < deadline, "no traffic");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (sim, api)
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|c| c["conversationId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_details_job_finds_every_conversation_whose_life_overlaps_its_interval() {
    // The contact centre's clock two seconds before midnight (UTC); jobs take a second.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let to_midnight = 86_400 - now.rem_euclid(86_400);
    let mut config = SimConfig {
        rate: 300.0,
        queues: 2,
        agents: 6,
        clock_offset_secs: to_midnight - 2,
        ..SimConfig::default()
    };
    config.unknowns.analytics_job_time = std::time::Duration::from_secs(1);
    config.clients.push(ClientSpec {
        id: "other".into(),
        secret: "s".into(),
        permissions: vec!["*".into()],
    });
    let sim = start(config).await;
    let api = Api::login(&sim).await;
    let midnight = OffsetDateTime::from_unix_timestamp(now + to_midnight).unwrap();
    let deadline = Instant::now() + WAIT;
    while sim.core().config.now() < midnight + time::Duration::milliseconds(1500) {
        assert!(Instant::now() < deadline, "the clock never passed midnight");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (from, to) = (
        midnight + time::Duration::milliseconds(500),
        sim.core().config.now(),
    );
    let interval = format!("{}/{}", iso(from), iso(to));
    let (status, body) = post(&api, JOBS, json!({ "interval": interval })).await;
    assert_eq!(status, 202, "{body}");
    let id = body["jobId"].as_str().unwrap().to_owned();
    let status = get(&api, &format!("{JOBS}/{id}")).await;
    assert_eq!(status["state"], "PENDING", "{status}");
    let early = api
        .req(Method::GET, &format!("{JOBS}/{id}/results"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        early.status().as_u16(),
        400,
        "no results before it is fulfilled"
    );
    fulfilled(&api, &id).await;
    let job = job_rows(&api, &id, 3).await;
    // What overlaps the interval, whatever day it started: a query from an hour before
    // (touching the day before) cut to the interval.
    let before = format!("{}/{}", iso(from - time::Duration::hours(1)), iso(to));
    let wider = every_page(&api, json!({ "interval": before }), 100).await;
    let overlapping: Vec<Value> = wider
        .into_iter()
        .filter(|c| {
            let end = c["conversationEnd"]
                .as_str()
                .map(|e| OffsetDateTime::parse(e, &Rfc3339).unwrap());
            end.is_none_or(|e| e > from)
        })
        .collect();
    assert_eq!(
        ids(&job),
        ids(&overlapping),
        "oldest start first, every one"
    );
    // The query keeps to conversations that started on the interval's day.
    let query: HashSet<String> = ids(&every_page(&api, json!({ "interval": interval }), 100).await)
        .into_iter()
        .collect();
    let job_ids: HashSet<String> = ids(&job).into_iter().collect();
    assert!(query.is_subset(&job_ids));
    assert!(
        job_ids.len() > query.len(),
        "the job finds conversations that began before midnight: {} against {}",
        job_ids.len(),
        query.len()
    );
    // With startOfDayIntervalMatching, only those that began on the interval's day.
    let (_, body) = post(
        &api,
        JOBS,
        json!({ "interval": interval, "startOfDayIntervalMatching": true }),
    )
    .await;
    let day = body["jobId"].as_str().unwrap().to_owned();
    fulfilled(&api, &day).await;
    let same_day: HashSet<String> = ids(&job_rows(&api, &day, 100).await).into_iter().collect();
    assert_eq!(same_day, query);
    // A job is its OAuth client's.
    let other = Api::login_as(&sim, "other", "s").await;
    let theirs = other
        .req(Method::GET, &format!("{JOBS}/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status().as_u16(), 404);
}

#[tokio::test]
async fn a_details_job_reads_the_data_lake_as_far_as_it_has_caught_up() {
    let (_sim, api) = busy(|u| u.analytics_lake_delay = std::time::Duration::from_secs(3600)).await;
    let available = get(&api, &format!("{JOBS}/availability")).await;
    let at = OffsetDateTime::parse(
        available["dataAvailabilityDate"].as_str().unwrap(),
        &Rfc3339,
    )
    .unwrap();
    let lag = OffsetDateTime::now_utc() - at;
    assert!(
        lag >= time::Duration::minutes(59) && lag <= time::Duration::minutes(61),
        "{available}"
    );
    let (status, body) = post(&api, JOBS, json!({ "interval": last_hour() })).await;
    assert_eq!(status, 202, "{body}");
    let id = body["jobId"].as_str().unwrap();
    let page = get(&api, &format!("{JOBS}/{id}/results")).await;
    assert_eq!(
        page["conversations"].as_array().map(Vec::len),
        Some(0),
        "the lake has not caught up with the last hour: {page}"
    );
    assert!(page["dataAvailabilityDate"].is_string());
}
