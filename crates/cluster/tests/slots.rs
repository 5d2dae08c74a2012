//! Channel slots against a real `nats-server -js`: the holders of one OAuth client keep
//! to its cap less the channels listed that none of them made, a slot past that limit is
//! kept only while it covers a channel in use, and what a holder made stays recorded
//! after it stops (the service counts those channels until they expire).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use holdline_cluster::Bucket;
use holdline_cluster::slots::{self, Made, Share};
use tokio::sync::{Notify, watch};

const TTL: Duration = Duration::from_secs(1);
const HOUR: u64 = 3600;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A client's side of the share: it uses every channel granted up to what it wants, and
/// says it made one channel, lasting an hour, for each.
#[derive(Default)]
struct Fake {
    wanted: AtomicUsize,
    granted: AtomicUsize,
    /// Channels in use, when told (else: what is granted, up to what is wanted).
    using: Mutex<Option<usize>>,
    listing: Mutex<Option<(u64, Vec<u64>)>>,
    changed: Notify,
}

impl Fake {
    fn want(&self, n: usize) {
        self.wanted.store(n, Ordering::SeqCst);
        self.changed.notify_one();
    }

    fn list(&self, n: u64, expiries: Vec<u64>) {
        *self.listing.lock().unwrap() = Some((n, expiries));
        self.changed.notify_one();
    }

    fn use_only(&self, n: usize) {
        *self.using.lock().unwrap() = Some(n);
        self.changed.notify_one();
    }

    fn granted(&self) -> usize {
        self.granted.load(Ordering::SeqCst)
    }
}

impl Share for Fake {
    fn wanted(&self) -> usize {
        self.wanted.load(Ordering::SeqCst)
    }

    fn grant(&self, n: usize) {
        self.granted.store(n, Ordering::SeqCst);
    }

    fn using(&self) -> usize {
        self.using
            .lock()
            .unwrap()
            .unwrap_or_else(|| self.granted().min(self.wanted()))
    }

    fn made(&self) -> Vec<u64> {
        vec![now() + HOUR; self.using()]
    }

    fn listing(&self) -> Option<(u64, Vec<u64>)> {
        self.listing.lock().unwrap().clone()
    }
}

struct Setup {
    _store: tempfile::TempDir,
    _server: holdline_sinks::testing::Server,
    bucket: Bucket,
    made: Made,
}

async fn setup() -> Setup {
    let store = tempfile::tempdir().unwrap();
    let server = holdline_sinks::testing::nats_2_10(store.path());
    let client = async_nats::connect(server.addr()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = Bucket::open(&js, "slots", TTL, 1).await.unwrap();
    let made = Made::open(&js, 1).await.unwrap();
    Setup {
        _store: store,
        _server: server,
        bucket,
        made,
    }
}

/// Runs a holder of `client`'s 20 slots for `share` until the returned sender says stop.
fn holder(
    s: &Setup,
    owner: &str,
    share: &'static Fake,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(slots::hold(
        s.bucket.clone(),
        s.made.clone(),
        "chan.test".to_owned(),
        owner.to_owned(),
        20,
        share,
        || share.changed.notified(),
        stopped,
    ));
    (stop, task)
}

async fn settle(what: &str, within: Duration, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn channels_no_holder_made_leave_the_holders_the_rest() {
    let s = setup().await;
    let a: &'static Fake = Box::leak(Box::default());
    let b: &'static Fake = Box::leak(Box::default());
    // Another program holds 8 of the client's channels.
    let theirs = vec![now() + HOUR; 8];
    a.list(1, theirs.clone());
    b.list(1, theirs.clone());
    a.want(7);
    b.want(7);
    let (stop_a, task_a) = holder(&s, "a", a);
    let (stop_b, task_b) = holder(&s, "b", b);
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        most = most.max(a.granted() + b.granted());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(most, 12, "20 less the 8 that are no holder's");
    // A later listing shows the holders' own channels as well: theirs are recorded as
    // made, so the limit stays.
    let all: Vec<u64> = theirs
        .iter()
        .copied()
        .chain(vec![now() + HOUR; 12])
        .collect();
    a.list(2, all.clone());
    b.list(2, all);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let now = a.granted() + b.granted();
        assert!(now <= 12, "{now} granted");
        most = most.max(now);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(most, 12);
    assert_eq!(s.made.alive("chan.test", now()).await.unwrap(), 12);
    for stop in [stop_a, stop_b] {
        stop.send(true).unwrap();
    }
    task_a.await.unwrap();
    task_b.await.unwrap();
    // Stopped, the holders' channels still count until they expire.
    assert_eq!(s.made.alive("chan.test", now()).await.unwrap(), 12);
    assert_eq!(
        s.made.alive("chan.test", now() + HOUR + 1).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_slot_past_the_limit_is_kept_only_while_its_channel_is_in_use() {
    let s = setup().await;
    let a: &'static Fake = Box::leak(Box::default());
    a.list(1, Vec::new());
    a.want(8);
    a.use_only(7);
    let (stop, task) = holder(&s, "a", a);
    settle("eight slots", Duration::from_secs(5), || a.granted() == 8).await;
    // Another program takes 16 channels: the limit falls to 4, but the 7 in use keep
    // their slots (none is closed to make room); the spare goes.
    let mut listed = vec![now() + HOUR; 16];
    listed.extend(vec![now() + HOUR; 7]);
    a.list(2, listed);
    settle("the spare let go", Duration::from_secs(5), || {
        a.granted() == 7
    })
    .await;
    // Down to 3 in use, it keeps the 4 below the limit.
    a.use_only(3);
    a.want(4);
    settle("down to the limit", Duration::from_secs(5), || {
        a.granted() == 4
    })
    .await;
    a.want(6);
    a.use_only(4);
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(a.granted(), 4, "no slot taken past the limit");
    stop.send(true).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_holder_whose_channels_have_expired_is_dropped_from_the_record() {
    let s = setup().await;
    let t = now();
    s.made
        .record("chan.x", "old", &[t - 10, t - 5], t)
        .await
        .unwrap();
    s.made
        .record("chan.x", "new", &[t + HOUR], t)
        .await
        .unwrap();
    assert_eq!(s.made.alive("chan.x", t).await.unwrap(), 1);
    s.made.record("chan.x", "new", &[], t).await.unwrap();
    assert_eq!(s.made.alive("chan.x", t).await.unwrap(), 0);
}

#[tokio::test]
async fn a_full_listing_never_lowers_the_count_of_another_programs_channels() {
    let s = setup().await;
    // A holder that stopped made 4 channels; they count until they expire.
    s.made
        .record("chan.test", "gone", &[now() + HOUR; 4], now())
        .await
        .unwrap();
    let a: &'static Fake = Box::leak(Box::default());
    // Another program's 8, and the stopped holder's 4.
    a.list(1, vec![now() + HOUR; 12]);
    a.want(14);
    let (stop, task) = holder(&s, "a", a);
    settle("twelve slots", Duration::from_secs(5), || a.granted() == 12).await;
    // Its 12 made, the service evicted the stopped holder's 4 (unconnected, they go
    // first) to make room: the listing is full, the record still has them.
    a.list(2, vec![now() + HOUR; 20]);
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        assert!(
            a.granted() <= 12,
            "{} granted past the other program's 8",
            a.granted()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once the other program's channels are gone, the listing has room again and the
    // estimate follows it.
    a.list(3, vec![now() + HOUR; 12]);
    settle("every slot wanted", Duration::from_secs(5), || {
        a.granted() == 14
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
}
