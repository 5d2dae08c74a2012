//! The coverage bucket: what every holder covered (its reports), each shard's topics, and
//! how far the gap-finder of each org has settled (its marks). Holders write through a
//! [`Reporter`]; every node keeps the whole bucket in memory through a watch
//! ([`Coverage::follow`]) and finds the gaps of the orgs it is the first holder of.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cover::{Heard, Hole, Report, holes};
use crate::lease::LeaseError;

/// The bucket of reports, topics and marks.
pub const COVERAGE_BUCKET: &str = "holdline_coverage";

/// How long an entry is kept after its last write.
pub const KEPT: Duration = Duration::from_secs(3600);

/// A NATS call's longest wait here (reports are sent again anyway).
const CALL: Duration = Duration::from_secs(5);

fn nats(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Nats(e.to_string())
}

/// A shard's topics, as stored once per shard.
#[derive(Serialize, Deserialize)]
struct Topics {
    org: String,
    key: String,
    topics: Vec<String>,
}

/// How far an org's shard is settled.
#[derive(Serialize, Deserialize)]
struct Mark {
    org: String,
    key: String,
    mark: u64,
}

/// A holder's report, with its org.
#[derive(Serialize, Deserialize)]
struct Stored {
    org: String,
    #[serde(flatten)]
    report: Report,
}

/// The coverage bucket.
#[derive(Clone)]
pub struct Coverage {
    kv: kv::Store,
}

impl Coverage {
    /// Opens the bucket, creating it (file storage, `replicas` copies) if it is missing.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Coverage, LeaseError> {
        let kv = crate::lease::open_kv(
            js,
            COVERAGE_BUCKET,
            "holdline: what each holder covered",
            KEPT,
            replicas,
        )
        .await?;
        Ok(Coverage { kv })
    }

    /// A reporter for one run of `org`'s client, `run` unique to it.
    pub fn reporter(&self, org: &str, run: &str) -> Reporter {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(report(
            self.kv.clone(),
            org.to_owned(),
            key("cov", org, run),
            rx,
        ));
        Reporter { tx, task }
    }

    /// Settles `org`'s shard `shard` up to `mark`.
    pub async fn settle(&self, org: &str, shard: &str, mark: u64) -> Result<(), LeaseError> {
        let value = serde_json::to_vec(&Mark {
            org: org.to_owned(),
            key: shard.to_owned(),
            mark,
        })
        .map_err(nats)?;
        tokio::time::timeout(CALL, self.kv.put(key("mark", org, shard), value.into()))
            .await
            .map_err(|_| nats("no answer"))?
            .map_err(nats)?;
        Ok(())
    }

    /// Keeps a copy of the whole bucket, updated as it changes, until the returned
    /// [`Known`] is dropped.
    pub fn follow(&self) -> Known {
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(follow(self.kv.clone(), state.clone()));
        Known {
            state,
            _follow: Arc::new(Abort(task)),
        }
    }
}

/// `<kind>.<org>.<rest>`, with any character a key may not hold replaced.
fn key(kind: &str, org: &str, rest: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(
                |c| match c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    true => c,
                    false => '_',
                },
            )
            .collect()
    };
    format!("{kind}.{}.{}", clean(org), clean(rest))
}

/// Each shard's topics, by shard key.
pub type ShardTopics = Vec<(String, Arc<[String]>)>;

/// Sends a run's reports: the newest each time, and each new shard's topics once.
pub struct Reporter {
    tx: watch::Sender<Option<(Report, ShardTopics)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// The run's coverage now, and the topics of each of its shards by key.
    pub fn send(&self, report: Report, topics: ShardTopics) {
        self.tx.send_replace(Some((report, topics)));
    }

    /// Sends the run's last report (waiting up to a few seconds for NATS) and ends.
    pub async fn finish(self, report: Report, topics: ShardTopics) {
        self.tx.send_replace(Some((report, topics)));
        let Reporter { tx, task } = self;
        drop(tx);
        let _ = tokio::time::timeout(CALL * 2, task).await;
    }
}

async fn report(
    kv: kv::Store,
    org: String,
    key_of_run: String,
    mut rx: watch::Receiver<Option<(Report, ShardTopics)>>,
) {
    // Each shard's topics are written again well before the bucket would drop them.
    let mut written: HashMap<String, Instant> = HashMap::new();
    loop {
        let next = rx.borrow_and_update().clone();
        if let Some((report, topics)) = next {
            for (shard, topics) in topics {
                if written
                    .get(&shard)
                    .is_some_and(|at| at.elapsed() < KEPT / 4)
                {
                    continue;
                }
                let value = Topics {
                    org: org.clone(),
                    key: shard.clone(),
                    topics: topics.to_vec(),
                };
                let Ok(value) = serde_json::to_vec(&value) else {
                    continue;
                };
                let put = kv.put(key("topics", &org, &shard), value.into());
                if let Ok(Ok(_)) = tokio::time::timeout(CALL, put).await {
                    written.insert(shard, Instant::now());
                }
            }
            let stored = Stored {
                org: org.clone(),
                report,
            };
            if let Ok(value) = serde_json::to_vec(&stored) {
                let put = kv.put(&key_of_run, value.into());
                if let Ok(Err(e)) = tokio::time::timeout(CALL, put).await {
                    // Sent again next round.
                    tracing::debug!(key = %key_of_run, error = %e, "coverage report not stored");
                }
            }
        }
        if rx.changed().await.is_err() {
            // The holder finished: its last report went out above.
            if rx.has_changed().unwrap_or(false) {
                continue;
            }
            return;
        }
    }
}

/// What a node knows of the bucket.
#[derive(Clone)]
pub struct Known {
    state: Arc<Mutex<State>>,
    /// Stops following when the last copy is dropped.
    _follow: Arc<Abort>,
}

struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`Known::covered_elsewhere`] over `s` at `now`.
fn covered_elsewhere(s: &State, org: &str, me: &str, stale: Duration, now: Instant) -> bool {
    let fresh = |at: &Instant| now.duration_since(*at) < stale;
    let mine: Vec<&str> = s
        .reports
        .values()
        .filter(|(o, r, _, at)| o == org && r.node == me && fresh(at))
        .flat_map(|(_, r, ..)| {
            r.shards
                .iter()
                .filter(|sh| sh.open)
                .map(|sh| sh.key.as_str())
        })
        .collect();
    let covers = |key: Option<&str>| {
        s.reports.values().any(|(o, r, _, at)| {
            o == org
                && r.node != me
                && fresh(at)
                && r.shards.iter().any(|sh| {
                    key.is_none_or(|k| sh.key == k)
                        && sh.open
                        && sh.runs.last().is_some_and(|(a, b)| b > a)
                })
        })
    };
    match mine.is_empty() {
        // Not reported yet (a run just started): what it covers is not known, so
        // another holder must be seen covering the org at all.
        true => covers(None),
        false => mine.iter().all(|key| covers(Some(key))),
    }
}

#[derive(Default)]
struct State {
    /// Reports by key: the org, the report, its revision and when that revision arrived.
    reports: HashMap<String, (String, Report, u64, Instant)>,
    /// Topics by (org, shard).
    topics: HashMap<(String, String), Arc<[String]>>,
    /// Marks by (org, shard).
    marks: HashMap<(String, String), u64>,
}

async fn follow(kv: kv::Store, state: Arc<Mutex<State>>) {
    loop {
        if let Ok(Ok(mut watch)) = tokio::time::timeout(CALL, kv.watch_with_history(">")).await {
            while let Some(Ok(entry)) = watch.next().await {
                take(&state, entry);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn take(state: &Mutex<State>, entry: kv::Entry) {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    if entry.operation != kv::Operation::Put {
        s.reports.remove(&entry.key);
        return;
    }
    if entry.key.starts_with("cov.") {
        if let Ok(stored) = serde_json::from_slice::<Stored>(&entry.value) {
            let fresh = match s.reports.get(&entry.key) {
                Some((.., revision, at)) if *revision == entry.revision => *at,
                _ => Instant::now(),
            };
            s.reports.insert(
                entry.key,
                (stored.org, stored.report, entry.revision, fresh),
            );
        }
    } else if entry.key.starts_with("topics.") {
        if let Ok(t) = serde_json::from_slice::<Topics>(&entry.value) {
            s.topics.insert((t.org, t.key), t.topics.into());
        }
    } else if entry.key.starts_with("mark.")
        && let Ok(m) = serde_json::from_slice::<Mark>(&entry.value)
    {
        let mark = s.marks.entry((m.org, m.key)).or_insert(m.mark);
        *mark = (*mark).max(m.mark);
    }
}

/// A gap the cluster found: no holder of `org` covered shard `shard` in `hole`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub org: String,
    pub shard: String,
    pub topics: Arc<[String]>,
    pub hole: Hole,
}

impl Found {
    /// The gap's id: the same whichever node finds it.
    pub fn id(&self) -> String {
        format!("gap:{}:{}:{}", self.org, self.shard, self.hole.from)
    }
}

impl Known {
    /// The certain gaps of `org` not yet reported, each shard's reports counted fresh
    /// while they changed within `stale`, and settled up to `settled` (microseconds since
    /// the epoch). Each shard's mark moves past what it returns; the second list gives
    /// the marks that moved, to store. A hole without end is reported in stretches of
    /// `open_after` (see [`crate::cover::holes`]).
    pub fn gaps(
        &self,
        org: &str,
        stale: Duration,
        settled: u64,
        open_after: Duration,
    ) -> (Vec<Found>, Vec<(String, u64)>) {
        let open_after = u64::try_from(open_after.as_micros()).unwrap_or(u64::MAX);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut by_shard: HashMap<&str, Vec<Heard<'_>>> = HashMap::new();
        for (o, report, _, at) in s.reports.values() {
            if o != org {
                continue;
            }
            for shard in &report.shards {
                by_shard.entry(shard.key.as_str()).or_default().push(Heard {
                    node: &report.node,
                    shard,
                    fresh: now.duration_since(*at) < stale,
                });
            }
        }
        let mut found = Vec::new();
        let mut moved = Vec::new();
        for (shard, heard) in &by_shard {
            let id = (org.to_owned(), (*shard).to_owned());
            let Some(topics) = s.topics.get(&id) else {
                continue;
            };
            let mark = s.marks.get(&id).copied();
            let (holes, next) = holes(heard, mark, settled, open_after);
            for hole in holes {
                found.push(Found {
                    org: org.to_owned(),
                    shard: (*shard).to_owned(),
                    topics: topics.clone(),
                    hole,
                });
            }
            if let Some(next) = next
                && Some(next) != mark
            {
                moved.push(((*shard).to_owned(), next));
            }
        }
        drop(by_shard);
        for (shard, mark) in &moved {
            s.marks.insert((org.to_owned(), shard.clone()), *mark);
        }
        (found, moved)
    }

    /// Whether every shard node `me` covers of `org` is covered by another node too: some
    /// other node's report, changed within `stale`, says it covers the shard now and has
    /// covered it for longer than its look-back. A node handing an org over stops it then.
    pub fn covered_elsewhere(&self, org: &str, me: &str, stale: Duration) -> bool {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        covered_elsewhere(&s, org, me, stale, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cover::{Report, ShardReport};

    fn report(node: &str, open: bool, runs: &[(u64, u64)]) -> Report {
        Report {
            node: node.to_owned(),
            shards: vec![ShardReport {
                key: "k".to_owned(),
                runs: runs.to_vec(),
                open,
                reason: String::new(),
            }],
        }
    }

    #[test]
    fn a_run_not_yet_reported_is_handed_over_only_once_another_holder_covers() {
        let now = Instant::now();
        let stale = Duration::from_secs(5);
        let mut s = State::default();
        let put = |s: &mut State, key: &str, r: Report| {
            s.reports
                .insert(key.to_owned(), ("o".to_owned(), r, 1, now));
        };
        // Nothing of mine reported yet, nobody else covering: keep the org.
        assert!(!covered_elsewhere(&s, "o", "n1", stale, now));
        // Another node has started but covered nothing yet.
        put(&mut s, "cov.o.n2-1", report("n2", true, &[(10, 10)]));
        assert!(!covered_elsewhere(&s, "o", "n1", stale, now));
        put(&mut s, "cov.o.n2-1", report("n2", true, &[(10, 20)]));
        assert!(covered_elsewhere(&s, "o", "n1", stale, now));
        // Once mine is reported, its shards must each be covered.
        put(&mut s, "cov.o.n1-1", report("n1", true, &[(5, 30)]));
        assert!(covered_elsewhere(&s, "o", "n1", stale, now));
        put(&mut s, "cov.o.n2-1", report("n2", false, &[(10, 20)]));
        assert!(!covered_elsewhere(&s, "o", "n1", stale, now));
    }
}
