//! Back-fill against the simulator: for a stretch of a live stream taken as a gap, every
//! conversation and every user whose events fell in it has a `backfill` record of its
//! state, nothing outside the gap's topics is asked for, and a client without the
//! analytics permissions is told which it lacks.

#[path = "engine/common.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use common::*;
use holdline_client::backfill::{self, GapToFill, Kinds, Pace};
use holdline_client::rest::api::Api;
use holdline_client::rest::auth::TokenSource;
use holdline_client::{Client, Credentials, Endpoints, Event, Secret};
use holdline_proto::record::{Record, read};
use holdline_proto::topic::{Family, classify};
use holdline_sim::SimConfig;
use holdline_sim::config::ClientSpec;
use serde_json::Value;
use tokio::time::Instant;

const ALL: Kinds = Kinds {
    conversations: true,
    users: true,
};

/// What one event said: its topic, the conversation (for a conversation topic) or user it
/// is about, and when it arrived.
struct Seen {
    family: Family,
    topic: String,
    entity: String,
    at: SystemTime,
}

/// The REST API as `id:secret` of the simulator.
async fn api_as(sim: &holdline_sim::Simulator, id: &str, secret: &str) -> Api {
    let endpoints = Endpoints::Custom {
        api_base: sim.url().to_owned(),
        login_base: sim.url().to_owned(),
    };
    let credentials = Credentials {
        client_id: id.into(),
        client_secret: Secret::new(secret),
    };
    let http = reqwest::Client::new();
    let auth = TokenSource::new(http.clone(), &endpoints, credentials, fast_timings());
    Api::new(http, endpoints.api_base(), auth, fast_timings())
}

async fn fill(api: &Api, gap: &GapToFill, kinds: Kinds) -> (Vec<Vec<u8>>, &'static str) {
    let (lines, outcome) = fill_outcome(api, gap, kinds).await;
    (lines, outcome.status)
}

/// The records of a back-fill and its outcome, which must tell what the records say.
async fn fill_outcome(
    api: &Api,
    gap: &GapToFill,
    kinds: Kinds,
) -> (Vec<Vec<u8>>, backfill::Outcome) {
    let mut lines = Vec::new();
    let mut pace = Pace::per_minute(1200.0);
    let outcome = backfill::fill(api, gap, kinds, &mut pace, &mut |l| lines.push(l)).await;
    let mut by_source: std::collections::BTreeMap<String, u64> = Default::default();
    for line in &lines {
        if let Record::Backfill(b) = read(line).unwrap() {
            *by_source.entry(b.source.into_owned()).or_default() += 1;
        }
    }
    let told: std::collections::BTreeMap<String, u64> = outcome
        .records
        .iter()
        .map(|(s, n)| ((*s).to_owned(), *n))
        .collect();
    assert_eq!(told, by_source, "the outcome counts the records written");
    let (_, done) = records(&lines);
    assert_eq!(done["status"], outcome.status);
    assert_eq!(
        done["counts"]["requests"].as_u64(),
        Some(outcome.requests),
        "{done}"
    );
    (lines, outcome)
}

/// `(source, entity) → topic` of the back-fill records, and the done record.
fn records(lines: &[Vec<u8>]) -> (HashMap<(String, String), String>, Value) {
    let mut out = HashMap::new();
    let mut done = Value::Null;
    for (i, line) in lines.iter().enumerate() {
        match read(line).unwrap() {
            Record::Backfill(b) => {
                out.insert(
                    (b.source.into_owned(), b.entity.into_owned()),
                    b.topic.into_owned(),
                );
            }
            Record::BackfillDone(_) => {
                assert_eq!(i, lines.len() - 1, "backfill_done comes last");
                done = serde_json::from_slice(line).unwrap();
            }
            other => panic!("not a back-fill record: {other:?}"),
        }
    }
    (out, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conversation_and_user_of_a_gap_is_back_filled_and_nothing_else() {
    let mut config = SimConfig {
        rate: 300.0,
        queues: 2,
        agents: 6,
        ..SimConfig::default()
    };
    config.clients.push(ClientSpec {
        id: "no-analytics".into(),
        secret: "s".into(),
        permissions: vec!["routing:queue:view".into()],
    });
    let sim = sim(config).await;
    let topics = org_topics(&sim);
    let seen = watch(&sim, &topics, 600).await;
    // The stretch from the 200th to the 500th event, as if no socket had received it.
    let (from, to) = (seen[200].at, seen[500].at);
    let margin = Duration::from_millis(100);
    let inside = |s: &&Seen| s.at >= from + margin && s.at + margin <= to;
    let conversations: HashSet<&str> = seen
        .iter()
        .filter(inside)
        .filter(|s| s.family == Family::QueueConversations)
        .map(|s| s.entity.as_str())
        .collect();
    let users: HashSet<&str> = seen
        .iter()
        .filter(inside)
        .filter(|s| matches!(s.family, Family::Presence | Family::RoutingStatus))
        .map(|s| s.entity.as_str())
        .collect();
    assert!(!conversations.is_empty() && !users.is_empty());
    let gap = GapToFill {
        id: "gap:o:k:1".into(),
        org: "o".into(),
        topics: topics.clone(),
        from,
        to,
    };
    let api = api_as(&sim, "holdline-demo", "holdline-demo").await;
    let (lines, status) = fill(&api, &gap, ALL).await;
    let (got, done) = records(&lines);
    assert_eq!(status, "complete", "{done}");
    assert_eq!(done["status"], "complete");
    for c in &conversations {
        assert!(
            got.contains_key(&("analytics.conversations".to_owned(), c.to_string())),
            "conversation {c} had events in the gap but no back-fill"
        );
    }
    for u in &users {
        for source in ["analytics.users", "presence"] {
            assert!(
                got.contains_key(&(source.to_owned(), u.to_string())),
                "user {u} had events in the gap but no {source} back-fill"
            );
        }
    }
    assert_eq!(
        done["counts"]["analytics.conversations"].as_u64().unwrap() as usize,
        got.keys()
            .filter(|(s, _)| s == "analytics.conversations")
            .count()
    );
    assert!(done["counts"]["requests"].as_u64().unwrap() > 0);

    // A gap of one queue's conversations alone: only that queue's, no user state.
    let queue_topic = topics[0].clone();
    let one = GapToFill {
        topics: vec![queue_topic.clone()],
        ..gap.clone()
    };
    let (lines, _) = fill(&api, &one, ALL).await;
    let (got, _) = records(&lines);
    assert!(!got.is_empty());
    for ((source, entity), topic) in &got {
        assert_eq!(topic, &queue_topic, "{source} {entity}");
        assert!(source.starts_with("analytics.conversations") || source == "conversations");
    }
    let of_queue: HashSet<&str> = seen
        .iter()
        .filter(inside)
        .filter(|s| s.topic == queue_topic)
        .map(|s| s.entity.as_str())
        .collect();
    for c in of_queue {
        assert!(got.contains_key(&("analytics.conversations".to_owned(), c.to_owned())));
    }

    // Without the analytics permissions: failed, naming what is missing.
    let limited = api_as(&sim, "no-analytics", "s").await;
    let (lines, outcome) = fill_outcome(&limited, &gap, ALL).await;
    let (got, done) = records(&lines);
    assert_ne!(outcome.status, "complete");
    assert_eq!(
        outcome.missing,
        [
            "analytics:conversationDetail:view",
            "analytics:userDetail:view"
        ],
        "the outcome names what was refused"
    );
    for u in &users {
        assert!(
            got.contains_key(&("routingstatus".to_owned(), u.to_string())),
            "without the analytics, user {u}'s routing status is asked for"
        );
    }
    let reason = done["reason"].as_str().unwrap();
    for p in [
        "analytics:conversationDetail:view",
        "analytics:userDetail:view",
    ] {
        assert!(reason.contains(p), "{reason}");
    }
    assert!(
        got.keys()
            .all(|(s, _)| s == "presence" || s == "routingstatus"),
        "only what needs no analytics permission: {got:?}"
    );
}

/// The first `n` events of `topics`, as a client received them.
async fn watch(sim: &holdline_sim::Simulator, topics: &[String], n: usize) -> Vec<Seen> {
    let (handle, mut stream) = Client::start(common::config(sim, topics.to_vec()))
        .await
        .expect("client starts");
    let mut seen: Vec<Seen> = Vec::new();
    let deadline = Instant::now() + WAIT * 3;
    while seen.len() < n {
        assert!(Instant::now() < deadline, "not enough traffic");
        let Ok(Some(item)) = tokio::time::timeout(WAIT, stream.next()).await else {
            panic!("the stream stopped");
        };
        let Ok(Event::Notification(n)) = item else {
            continue;
        };
        let m = classify(n.topic()).unwrap();
        let body: Value = serde_json::from_str(n.body()).unwrap();
        let entity = match m.family() {
            Family::QueueConversations | Family::UserConversations => {
                body["id"].as_str().unwrap().to_owned()
            }
            _ => m.entity_id.unwrap_or_default().to_owned(),
        };
        seen.push(Seen {
            family: m.family(),
            topic: n.topic().to_owned(),
            entity,
            at: n.received_at,
        });
    }
    handle.shutdown();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_of_more_conversations_than_a_page_is_read_page_by_page_through_a_429_storm() {
    let sim = sim(SimConfig {
        rate: 2000.0,
        queues: 1,
        agents: 40,
        ..SimConfig::default()
    })
    .await;
    let topics: Vec<String> = org_topics(&sim).into_iter().take(1).collect();
    let seen = watch(&sim, &topics, 3000).await;
    let (from, to) = (seen[0].at, seen[seen.len() - 1].at);
    let margin = Duration::from_millis(100);
    let conversations: HashSet<&str> = seen
        .iter()
        .filter(|s| s.at >= from + margin && s.at + margin <= to)
        .map(|s| s.entity.as_str())
        .collect();
    assert!(
        conversations.len() > 150,
        "more than a page: {}",
        conversations.len()
    );
    // The analytics answer 429 for the first two seconds (Retry-After: 1).
    let (status, body) = fault(
        &sim,
        serde_json::json!({"kind": "rest_errors", "status": 429, "for_ms": 2000, "retry_after": 1, "path": "/api/v2/analytics"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let gap = GapToFill {
        id: "gap:o:k:2".into(),
        org: "o".into(),
        topics,
        from,
        to,
    };
    let api = api_as(&sim, "holdline-demo", "holdline-demo").await;
    let (lines, status) = fill(&api, &gap, ALL).await;
    let (got, done) = records(&lines);
    assert_eq!(status, "complete", "{done}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited the storm out"
    );
    for c in &conversations {
        assert!(
            got.contains_key(&("analytics.conversations".to_owned(), c.to_string())),
            "conversation {c} had events in the gap but no back-fill"
        );
    }
    eprintln!(
        "{} conversations in the gap: {}",
        conversations.len(),
        done["counts"]
    );
}

async fn fault(sim: &holdline_sim::Simulator, fault: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/faults", sim.url()))
        .json(&fault)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_after_midnight_finds_the_conversations_that_began_the_day_before() {
    // The contact centre's clock two seconds before midnight (UTC).
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let to_midnight = 86_400 - now.rem_euclid(86_400);
    let offset = to_midnight - 2;
    let sim = sim(SimConfig {
        rate: 300.0,
        queues: 2,
        agents: 6,
        clock_offset_secs: offset,
        ..SimConfig::default()
    })
    .await;
    let topics: Vec<String> = org_topics(&sim).into_iter().take(2).collect();
    let seen = watch(&sim, &topics, 1200).await;
    let shift = |t: SystemTime| t + Duration::from_secs(offset as u64);
    let midnight = SystemTime::UNIX_EPOCH + Duration::from_secs((now + to_midnight) as u64);
    let last = shift(seen[seen.len() - 1].at);
    assert!(
        last > midnight + Duration::from_secs(1),
        "ran past midnight"
    );
    // The gap: from half a second after midnight to the end.
    let (from, to) = (midnight + Duration::from_millis(500), last);
    let margin = Duration::from_millis(100);
    let conversations: HashSet<&str> = seen
        .iter()
        .filter(|s| shift(s.at) >= from + margin && shift(s.at) + margin <= to)
        .map(|s| s.entity.as_str())
        .collect();
    let gap = GapToFill {
        id: "gap:o:k:3".into(),
        org: "o".into(),
        topics,
        from,
        to,
    };
    let api = api_as(&sim, "holdline-demo", "holdline-demo").await;
    let (lines, status) = fill(&api, &gap, ALL).await;
    assert_eq!(status, "complete");
    let mut before_midnight = 0;
    let mut found = HashSet::new();
    for line in &lines {
        let Record::Backfill(b) = read(line).unwrap() else {
            continue;
        };
        if b.source != "analytics.conversations" {
            continue;
        }
        let body: Value = serde_json::from_str(b.body.get()).unwrap();
        let start =
            holdline_proto::record::parse_rfc3339(body["conversationStart"].as_str().unwrap())
                .unwrap();
        if start < midnight {
            before_midnight += 1;
        }
        found.insert(b.entity.into_owned());
    }
    for c in &conversations {
        assert!(
            found.contains(*c),
            "conversation {c} had events in the gap but no back-fill"
        );
    }
    assert!(
        before_midnight > 0,
        "some conversation of the gap began the day before"
    );
}
