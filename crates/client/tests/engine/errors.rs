//! What cannot be retried is reported clearly: bad credentials, unknown and forbidden
//! topics; what can be retried is ridden out: 429 and 5xx bursts.

use holdline_client::rest::auth::{AuthError, ClientProblem};
use holdline_client::{Client, ClientError, Stats};
use holdline_sim::faults::Fault;
use holdline_sim::{ClientSpec, SimConfig};

use crate::common::*;

#[tokio::test]
async fn a_wrong_secret_is_fatal_and_names_the_client_not_the_secret() {
    let sim = sim(SimConfig::default()).await;
    let mut cfg = config(&sim, org_topics(&sim));
    cfg.credentials.client_secret = holdline_client::Secret::new("not-the-secret");
    let err = Client::start(cfg).await.err().expect("refused");
    let ClientError::Auth(AuthError::InvalidClient { problem, .. }) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*problem, ClientProblem::WrongSecret);
    let text = err.to_string();
    assert!(
        text.contains("holdline-demo") && text.contains("secret is wrong"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"));
}

#[tokio::test]
async fn an_unknown_client_points_at_the_region() {
    let sim = sim(SimConfig::default()).await;
    let mut cfg = config(&sim, org_topics(&sim));
    cfg.credentials.client_id = "someone-else".into();
    let err = Client::start(cfg).await.err().expect("refused");
    let ClientError::Auth(AuthError::InvalidClient { problem, .. }) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*problem, ClientProblem::UnknownClient);
    assert!(err.to_string().contains("another region"), "{err}");
}

#[tokio::test]
async fn an_unknown_topic_fails_before_any_call() {
    let sim = sim(SimConfig::default()).await;
    let cfg = config(
        &sim,
        vec![format!("v2.conversations.{}", sim.core().org.queues[0].id)],
    );
    let err = Client::start(cfg).await.err().expect("refused");
    assert!(
        matches!(&err, ClientError::Config(m) if m.contains("did you mean")),
        "{err}"
    );
    assert!(
        sim.core().channel_infos(|c, _| c.id.clone()).is_empty(),
        "no channel was created"
    );
}

#[tokio::test]
async fn forbidden_topics_are_reported_and_the_rest_stream() {
    let limited = ClientSpec::parse("holdline-demo:holdline-demo:routing:queue:view").unwrap();
    let sim = sim(SimConfig {
        rate: 200.0,
        clients: vec![limited],
        ..SimConfig::default()
    })
    .await;
    let org = &sim.core().org;
    let presence = format!("v2.users.{}.presence", org.agents[0].id);
    let conversations = format!("v2.users.{}.conversations", org.agents[0].id);
    let queues: Vec<String> = org
        .queues
        .iter()
        .map(|q| format!("v2.users.{}.presence", q.id))
        .collect();
    let mut topics = vec![presence, conversations.clone()];
    topics.extend(queues);
    let client = Collector::start(config(&sim, topics)).await;
    client
        .until("the rejection to be reported", |s| {
            s.states.iter().any(|(k, d, _)| {
                *k == holdline_client::StateKind::Rejected && d.contains(&conversations)
            })
        })
        .await;
    client.live_since().await;
    let seen = client.stop().await;
    assert!(seen.error.is_none());
    let refused: Vec<_> = seen
        .rejected
        .iter()
        .filter(|r| r.topic == conversations)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one record per rejected topic: {:?}",
        seen.rejected
    );
    assert!(!refused[0].missing_permissions.is_empty());
    assert!(
        seen.states
            .iter()
            .any(|(k, d, _)| *k == holdline_client::StateKind::Live && d.contains("rejected)")),
        "the live count leaves the rejected topics out: {:?}",
        seen.states
    );
}

#[tokio::test]
async fn only_forbidden_topics_is_a_permission_error() {
    let limited = ClientSpec::parse("holdline-demo:holdline-demo:").unwrap();
    let sim = sim(SimConfig {
        clients: vec![limited],
        ..SimConfig::default()
    })
    .await;
    let topic = format!("v2.users.{}.conversations", sim.core().org.agents[0].id);
    let client = Collector::start(config(&sim, vec![topic])).await;
    client
        .until("the permission error", |s| s.error.is_some())
        .await;
    let seen = client.stop().await;
    let err = seen.error.unwrap();
    assert!(
        matches!(&err, ClientError::Permission(m) if m.contains("conversation:communication:view")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_on_setup_are_ridden_out() {
    let sim = sim(SimConfig {
        rate: 100.0,
        ..SimConfig::default()
    })
    .await;
    let faults = [
        Fault::RestErrors {
            status: 502,
            count: Some(2),
            for_ms: None,
            retry_after: None,
            path: Some("/oauth/token".into()),
            method: None,
        },
        Fault::RestErrors {
            status: 503,
            count: Some(3),
            for_ms: None,
            retry_after: None,
            path: Some("/api/v2/notifications/channels".into()),
            method: Some("POST".into()),
        },
        Fault::RestErrors {
            status: 429,
            count: Some(2),
            for_ms: None,
            retry_after: Some(1),
            path: Some("/api/v2/notifications/channels/".into()),
            method: Some("PUT".into()),
        },
    ];
    for fault in &faults {
        sim.core().apply_fault(fault).unwrap();
    }
    let client = Collector::start(config(&sim, org_topics(&sim))).await;
    client.live_since().await;
    let stats = client.handle.stats().clone();
    client
        .until("events", |_| Stats::get(&stats.emitted) > 20)
        .await;
    let seen = client.stop().await;
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert_eq!(
        sim.core().channel_infos(|c, _| c.id.clone()).len(),
        1,
        "retries did not create extra channels"
    );
}
