//! Joining a cluster whose NATS asks for credentials: the token from the environment
//! variable the URL names is used, and a missing or wrong one is refused with a message
//! that never shows it.

use std::time::Duration;

use holdline_cluster::{ClusterUrl, members};

#[tokio::test]
async fn a_node_joins_with_the_token_its_url_names_and_not_without() {
    let store = tempfile::tempdir().unwrap();
    let server = holdline_sinks::testing::nats_2_10_with(store.path(), &["--auth", "t0ps3cret"]);
    let addr = server.addr();
    // SAFETY: no other test of this binary reads these variables.
    unsafe {
        std::env::set_var("HOLDLINE_TEST_JOIN_TOKEN", "t0ps3cret");
        std::env::set_var("HOLDLINE_TEST_JOIN_WRONG", "guess");
    }
    let lease = Duration::from_secs(2);
    let url =
        ClusterUrl::parse(&format!("nats://{addr}?token_env=HOLDLINE_TEST_JOIN_TOKEN")).unwrap();
    let mut joined = holdline_cluster::join(&url, "a", lease).await.unwrap();
    let view = members::wait_for(&mut joined.view, Duration::from_secs(10), |v| v.holding)
        .await
        .expect("the node holds work once joined");
    assert_eq!(view.members, ["a"]);
    joined.leave().await;

    for query in ["", "?token_env=HOLDLINE_TEST_JOIN_WRONG"] {
        let url = ClusterUrl::parse(&format!("nats://{addr}{query}")).unwrap();
        let err = match holdline_cluster::join(&url, "b", lease).await {
            Ok(_) => panic!("joined without the right token ({query:?})"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("cannot connect"), "{err}");
        assert!(
            !err.contains("guess") && !err.contains("t0ps3cret"),
            "{err}"
        );
    }
}
