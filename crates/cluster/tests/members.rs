//! Membership against a real `nats-server -js`: nodes see each other, every piece of work
//! has two holders among the live nodes, a node that leaves or dies drops out within the
//! lease time, and a node cut off from NATS stops holding work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use holdline_cluster::Bucket;
use holdline_cluster::members::{self, View};
use tokio::sync::watch;

const TTL: Duration = Duration::from_millis(1500);

struct Node {
    id: String,
    view: watch::Receiver<View>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn node(addr: &str, id: &str) -> Node {
    node_with(addr, id, TTL).await
}

async fn node_with(addr: &str, id: &str, ttl: Duration) -> Node {
    let client = async_nats::connect(addr).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = Bucket::open(&js, "nodes", ttl, 1).await.unwrap();
    let (view_tx, view) = watch::channel(View::default());
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(members::run(bucket, id.to_owned(), view_tx, stopped));
    Node {
        id: id.to_owned(),
        view,
        stop,
        task,
    }
}

async fn sees(node: &mut Node, members: &[&str], within: Duration) -> View {
    let want: Vec<String> = members.iter().map(|m| m.to_string()).collect();
    members::wait_for(&mut node.view, within, |v| v.holding && v.members == want)
        .await
        .unwrap_or_else(|last| panic!("{} never saw {want:?}; last {last:?}", node.id))
}

/// Who holds each piece, from every node's own view.
fn holders_of(nodes: &[&Node], work: &[String]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for n in nodes {
        let view = n.view.borrow().clone();
        for w in view.mine(&n.id, work, 2) {
            out.entry(w.to_owned()).or_default().push(n.id.clone());
        }
    }
    out
}

#[tokio::test]
async fn every_piece_has_two_live_holders_through_leaving_and_dying() {
    let store = tempfile::tempdir().unwrap();
    let server = holdline_sinks::testing::nats_2_10(store.path());
    let addr = server.addr();
    let mut a = node(&addr, "a").await;
    let mut b = node(&addr, "b").await;
    let mut c = node(&addr, "c").await;
    for n in [&mut a, &mut b, &mut c] {
        sees(n, &["a", "b", "c"], TTL * 3).await;
    }
    let work: Vec<String> = (1..=20).map(|i| format!("org-{i}")).collect();
    let held = holders_of(&[&a, &b, &c], &work);
    assert_eq!(held.len(), 20);
    assert!(held.values().all(|h| h.len() == 2), "{held:?}");
    for id in ["a", "b", "c"] {
        let count = held.values().filter(|h| h.contains(&id.to_owned())).count();
        assert!(count >= 5, "{id} holds {count} of 20");
    }

    // c leaves in order: its lease is released, so the others see it go at once.
    let _ = c.stop.send(true);
    c.task.await.unwrap();
    let left = Instant::now();
    sees(&mut a, &["a", "b"], TTL).await;
    sees(&mut b, &["a", "b"], TTL).await;
    assert!(
        left.elapsed() < TTL,
        "a release is seen before the lease time"
    );
    let held = holders_of(&[&a, &b], &work);
    assert!(held.values().all(|h| h.len() == 2), "{held:?}");

    // b dies (no release): a sees it go once its lease ages out.
    b.task.abort();
    let died = Instant::now();
    sees(&mut a, &["a"], TTL * 4).await;
    let noticed = died.elapsed();
    assert!(
        noticed >= TTL / 3,
        "not before b's lease could lapse: {noticed:?}"
    );
    let held = holders_of(&[&a], &work);
    assert!(
        held.len() == 20 && held.values().all(|h| h == &["a"]),
        "{held:?}"
    );

    // a is cut off from NATS: within its lease time it holds nothing, and says why.
    drop(server);
    let cut = Instant::now();
    let view = members::wait_for(&mut a.view, TTL * 3, |v| !v.holding)
        .await
        .unwrap_or_else(|last| panic!("a kept holding: {last:?}"));
    assert!(
        cut.elapsed() <= TTL * 2,
        "stepped down after {:?}",
        cut.elapsed()
    );
    assert!(view.mine("a", &work, 2).is_empty());
    let reason = view.reason.unwrap();
    assert!(
        reason.contains("cannot renew") || reason.contains("lapsed"),
        "{reason}"
    );
    let _ = a.stop.send(true);
}

#[tokio::test]
async fn joining_and_leaving_are_seen_at_once_not_at_the_next_renewal() {
    let store = tempfile::tempdir().unwrap();
    let server = holdline_sinks::testing::nats_2_10(store.path());
    let addr = server.addr();
    // A minute's lease: a renews (and reads) every 20 s, so only the watch of the bucket
    // can show it b's arrival or departure within 10 s.
    let ttl = Duration::from_secs(60);
    let mut a = node_with(&addr, "a", ttl).await;
    sees(&mut a, &["a"], Duration::from_secs(10)).await;
    let mut b = node_with(&addr, "b", ttl).await;
    sees(&mut b, &["a", "b"], Duration::from_secs(10)).await;
    sees(&mut a, &["a", "b"], Duration::from_secs(10)).await;
    // b leaves in order: its lease is released, and a sees it go.
    let _ = b.stop.send(true);
    b.task.await.unwrap();
    sees(&mut a, &["a"], Duration::from_secs(10)).await;
    let _ = a.stop.send(true);
    a.task.await.unwrap();
}
