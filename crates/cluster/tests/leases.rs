//! Leases against a real `nats-server -js`: one holder at a time, renewal keeps a lease,
//! a lease not renewed ages out and passes on, and the old holder's renewal then fails.

use std::time::{Duration, Instant};

use holdline_cluster::{Bucket, LeaseError};

async fn js(addr: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(addr)
        .await
        .expect("connect to the test nats");
    async_nats::jetstream::new(client)
}

/// Polls `f` every 50 ms until it returns Some, failing after `within`.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const TTL: Duration = Duration::from_secs(2);

#[tokio::test]
async fn a_lease_is_one_nodes_until_it_stops_renewing() {
    let store = tempfile::tempdir().unwrap();
    let server = holdline_sinks::testing::nats_2_10(store.path());
    let js = js(&server.addr()).await;
    let a = Bucket::open(&js, "leases", TTL, 1).await.unwrap();
    let b = Bucket::open(&js, "leases", TTL, 1).await.unwrap();

    let mut lease = a
        .acquire("org.acme.0", "node-a")
        .await
        .unwrap()
        .expect("free");
    assert!(b.acquire("org.acme.0", "node-b").await.unwrap().is_none());
    assert_eq!(
        b.holder("org.acme.0").await.unwrap().as_deref(),
        Some("node-a")
    );
    // Renewed for longer than the lease time: it stays node-a's.
    let first = lease.revision();
    let until = Instant::now() + TTL * 2;
    while Instant::now() < until {
        lease.renew().await.unwrap();
        assert!(b.acquire("org.acme.0", "node-b").await.unwrap().is_none());
        tokio::time::sleep(TTL / 4).await;
    }
    assert!(
        lease.revision() > first,
        "each renewal writes a new revision"
    );
    // node-a stops renewing: the entry ages out and node-b takes it.
    let stopped = Instant::now();
    let mut taken = wait_for(TTL * 4, "node-b takes the lease", || {
        let b = b.clone();
        async move { b.acquire("org.acme.0", "node-b").await.unwrap() }
    })
    .await;
    let after = stopped.elapsed();
    assert!(after >= TTL / 2, "not before the lease aged out: {after:?}");
    // node-a's late renewal is refused: the revision fences it.
    assert!(matches!(lease.renew().await, Err(LeaseError::Lost { .. })));
    taken.renew().await.unwrap();
    assert_eq!(
        a.holder("org.acme.0").await.unwrap().as_deref(),
        Some("node-b")
    );
    // A node that restarts takes its own lease back at once.
    let again = b
        .acquire("org.acme.0", "node-b")
        .await
        .unwrap()
        .expect("its own");
    assert!(
        matches!(taken.renew().await, Err(LeaseError::Lost { .. })),
        "the old handle is fenced"
    );
    again.release().await.unwrap();
    assert!(
        a.acquire("org.acme.0", "node-a").await.unwrap().is_some(),
        "released: free at once"
    );
}

#[tokio::test]
async fn members_are_the_node_leases_still_renewed() {
    let store = tempfile::tempdir().unwrap();
    let server = holdline_sinks::testing::nats_2_10(store.path());
    let js = js(&server.addr()).await;
    let bucket = Bucket::open(&js, "nodes", TTL, 1).await.unwrap();
    let mut leases = Vec::new();
    for id in ["a", "b", "c"] {
        leases.push(
            bucket
                .acquire(&format!("node.{id}"), id)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let held = bucket.held("node.").await.unwrap();
    assert_eq!(
        held,
        [("node.a", "a"), ("node.b", "b"), ("node.c", "c")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    // c stops renewing; a and b go on.
    let c = leases.pop().unwrap();
    drop(c);
    let deadline = Instant::now() + TTL * 4;
    let members = loop {
        for lease in leases.iter_mut() {
            lease.renew().await.unwrap();
        }
        let held = bucket.held("node.").await.unwrap();
        if held.len() == 2 {
            break held;
        }
        assert!(Instant::now() < deadline, "c never aged out: {held:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(members[0].1, "a");
    assert_eq!(members[1].1, "b");
}

#[tokio::test]
async fn a_bucket_with_another_lease_time_is_refused_with_what_to_do() {
    let store = tempfile::tempdir().unwrap();
    let server = holdline_sinks::testing::nats_2_10(store.path());
    let js = js(&server.addr()).await;
    Bucket::open(&js, "leases", TTL, 1).await.unwrap();
    let err = Bucket::open(&js, "leases", TTL * 3, 1)
        .await
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(
        text.contains("same lease time") && text.contains("nats kv del leases"),
        "{text}"
    );
    assert!(matches!(
        Bucket::open(&js, "leases", TTL, 1)
            .await
            .unwrap()
            .acquire("bad key", "x")
            .await,
        Err(LeaseError::BadKey(_))
    ));
}
