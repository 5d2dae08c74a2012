//! The delivery loop against a spool on disk and a sink that fails as told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use holdline_sinks::{DeliverError, Deliverer, Delivery, Sink, SinkError, SinkMetrics};
use holdline_spool::{Durability, Spool};
use tokio::sync::{Notify, watch};

#[derive(Default)]
struct Log {
    calls: u32,
    got: Vec<Vec<u8>>,
    dead: Vec<Vec<u8>>,
}

/// Fails its first `fail` deliveries (all of them with `u32::MAX`), with `fatal` as the
/// error when set.
struct Fake {
    log: Arc<Mutex<Log>>,
    fail: u32,
    fatal: Option<SinkError>,
    attempts: Option<u32>,
}

impl Sink for Fake {
    fn name(&self) -> &str {
        "fake"
    }

    fn deliver<'a>(&'a mut self, records: &'a [Bytes]) -> Delivery<'a> {
        Box::pin(async move {
            let mut log = self.log.lock().unwrap();
            log.calls += 1;
            if let Some(e) = self.fatal.take() {
                return Err(e);
            }
            if log.calls <= self.fail {
                return Err(SinkError::Failed {
                    sink: "fake".into(),
                    detail: "down".into(),
                });
            }
            log.got.extend(records.iter().map(|r| r.to_vec()));
            Ok(())
        })
    }

    fn attempts(&self) -> Option<u32> {
        self.attempts
    }

    fn dead_letter<'a>(&'a mut self, records: &'a [Bytes]) -> Delivery<'a> {
        Box::pin(async move {
            let mut log = self.log.lock().unwrap();
            log.dead.extend(records.iter().map(|r| r.to_vec()));
            Ok(())
        })
    }
}

struct Setup {
    spool: Arc<Spool>,
    log: Arc<Mutex<Log>>,
    metrics: SinkMetrics,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), DeliverError>>,
    _dir: tempfile::TempDir,
}

fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
        .collect()
}

fn start(n: usize, fail: u32, fatal: Option<SinkError>, attempts: Option<u32>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path(), Durability::Eventual).unwrap());
    let log = Arc::new(Mutex::new(Log::default()));
    let sink = Fake {
        log: log.clone(),
        fail,
        fatal,
        attempts,
    };
    let metrics = SinkMetrics::default();
    let (stop, stopped) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let d = Deliverer::new(
        spool.clone(),
        Box::new(sink),
        metrics.clone(),
        wake.clone(),
        stopped,
        Duration::from_millis(1),
        Duration::from_millis(4),
    )
    .unwrap();
    spool.append(&records(n)).unwrap();
    wake.notify_one();
    Setup {
        spool,
        log,
        metrics,
        stop,
        task: tokio::spawn(d.run()),
        _dir: dir,
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn everything_is_delivered_in_order_and_acknowledged_once_confirmed() {
    let s = start(2500, 0, None, None);
    until("delivered", || s.log.lock().unwrap().got.len() == 2500).await;
    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
    assert_eq!(s.log.lock().unwrap().got, records(2500));
    assert!(s.spool.is_empty().unwrap());
    let h = s.metrics.health("fake");
    assert_eq!((h.delivered, h.failures, h.pending), (2500, 0, 0));
}

#[tokio::test]
async fn a_failing_sink_is_retried_and_its_records_wait_in_the_spool() {
    let s = start(10, 3, None, None);
    until("delivered after 3 failures", || {
        s.log.lock().unwrap().got.len() == 10
    })
    .await;
    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
    assert_eq!(s.log.lock().unwrap().calls, 4);
    let h = s.metrics.health("fake");
    assert_eq!((h.delivered, h.failures), (10, 3));
    assert!(s.spool.is_empty().unwrap());
}

#[tokio::test]
async fn after_its_attempts_a_batch_is_dead_lettered_and_counts_as_handled() {
    let s = start(5, u32::MAX, None, Some(3));
    until("dead-lettered", || s.log.lock().unwrap().dead.len() == 5).await;
    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
    let log = s.log.lock().unwrap();
    assert_eq!(log.calls, 3, "three tries, then the dead-letter file");
    assert!(log.got.is_empty());
    assert!(s.spool.is_empty().unwrap());
    assert_eq!(s.metrics.health("fake").dead_lettered, 5);
}

#[tokio::test]
async fn a_closed_stdout_ends_the_loop_and_leaves_the_records_spooled() {
    let fatal = SinkError::Fatal {
        sink: "fake".into(),
        detail: "broken pipe".into(),
        broken_pipe: true,
    };
    let s = start(7, 0, Some(fatal), None);
    let ended = s.task.await.unwrap();
    assert!(matches!(ended, Err(DeliverError::BrokenPipe)), "{ended:?}");
    assert_eq!(
        s.spool.depth("fake").unwrap(),
        7,
        "nothing was acknowledged"
    );
}

#[tokio::test]
async fn stopping_while_the_sink_fails_leaves_its_records_for_the_next_run() {
    let s = start(4, u32::MAX, None, None);
    until("a failure", || s.log.lock().unwrap().calls >= 2).await;
    s.stop.send(true).unwrap();
    s.task.await.unwrap().unwrap();
    assert_eq!(s.spool.depth("fake").unwrap(), 4);
    assert_eq!(s.metrics.health("fake").pending, 4);
}
