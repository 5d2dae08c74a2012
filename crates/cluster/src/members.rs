//! Membership: each node keeps a lease on `node.<id>` in the nodes bucket and reads the
//! others' from it. A node sees the members whose leases are still renewed; a node that
//! cannot renew its own lease within the lease time holds nothing (it may have been cut
//! off, and the others have stopped counting it).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::lease::{Bucket, Lease, LeaseError, Writes};

/// What a node knows of the cluster now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// The live members, this node among them, by id.
    pub members: Vec<String>,
    /// False while this node's own lease may have lapsed: it must hold no work.
    pub holding: bool,
    /// Why it holds nothing, when it does not.
    pub reason: Option<String>,
}

impl View {
    /// The pieces of `work` this node holds, `n` holders each.
    pub fn mine<'a>(&self, id: &str, work: &'a [String], n: usize) -> Vec<&'a str> {
        if !self.holding {
            return Vec::new();
        }
        work.iter()
            .filter(|w| crate::assign::holders(w, &self.members, n).contains(&id))
            .map(String::as_str)
            .collect()
    }
}

/// The key of a node's lease.
pub fn node_key(id: &str) -> String {
    format!("node.{id}")
}

/// Runs the membership of node `id` until `stop`: renews its lease every third of the
/// lease time, reads the members, and publishes each change of the view. Between
/// renewals it watches the bucket: a node that joins or leaves in order is seen at once,
/// and the members are read again as soon as another node's lease would have aged out
/// (a lease time after its last renewal), so a dead node's work moves on without waiting
/// for the next renewal.
pub async fn run(
    bucket: Bucket,
    id: String,
    view: watch::Sender<View>,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = bucket.ttl();
    let every = ttl / 3;
    let key = node_key(&id);
    // The lease's value names this process, not only the id: a second process given the
    // same id (or this node's previous run, until its lease ends) cannot take it over.
    let owner = format!("{id} {}", process_nonce());
    let mut lease: Option<Lease> = None;
    // Renewals keep their pace whatever a slow answer took.
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watched = Watched::default();
    loop {
        // Some(read) when woken by the watch: read the members when `read`.
        let watch = tokio::select! {
            _ = tick.tick() => None,
            _ = stop.wait_for(|s| *s) => break,
            read = watched.next(&key, ttl) => Some(read),
        };
        if let Some(read) = watch {
            // Only the members are read, and only within what is left of the lease (the
            // lease is renewed at its own pace, and lapses on time).
            let until = lease.as_ref().map(|l| Instant::from_std(l.valid_until()));
            if read
                && let Some(until) = until
                && let Ok(Ok(members)) =
                    tokio::time::timeout_at(until.min(Instant::now() + every), members_of(&bucket))
                        .await
                && Instant::now() < until
            {
                watched.read(&members);
                let next = View {
                    members,
                    holding: true,
                    reason: None,
                };
                view.send_if_modified(|v| {
                    let changed = *v != next;
                    *v = next;
                    changed
                });
            }
            continue;
        }
        // Woken past the lease's end (the process was paused, or its renewals went
        // unanswered): others may hold its work by now, so it holds nothing this round
        // and joins again with a new lease the next.
        if lease
            .as_ref()
            .is_some_and(|l| Instant::now() >= Instant::from_std(l.valid_until()))
        {
            lease = None;
            let next = View {
                members: Vec::new(),
                holding: false,
                reason: Some(format!(
                    "the lease {key} lapsed (this node was paused or cut off for longer than {ttl:?}); joining again"
                )),
            };
            view.send_replace(next);
            continue;
        }
        // NATS calls wait for an answer while NATS is away; the lease time does not.
        let outcome =
            match tokio::time::timeout(every, step(&bucket, &key, &owner, &mut lease)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(LeaseError::Nats(format!("no answer within {every:?}"))),
            };
        let lapsed = lease
            .as_ref()
            .is_none_or(|l| Instant::now() >= Instant::from_std(l.valid_until()));
        let next = match outcome {
            Ok(members) if !lapsed => View {
                members,
                holding: true,
                reason: None,
            },
            Ok(members) => View {
                members,
                holding: false,
                reason: Some(format!(
                    "the lease {key} is held by another process: another node has the id {id:?}, or this node's previous run held it (its lease ends within {ttl:?})"
                )),
            },
            Err(e) if lapsed => View {
                members: Vec::new(),
                holding: false,
                reason: Some(format!("cannot renew the lease {key} within {ttl:?}: {e}")),
            },
            // Not renewed this time, but the lease still holds: keep the last view.
            Err(_) => view.borrow().clone(),
        };
        view.send_if_modified(|v| {
            let changed = *v != next;
            *v = next;
            changed
        });
        if watched.watch.is_none() {
            // Briefly: the next renewal is due a third of the lease after this one.
            watched.start(&bucket, every / 2).await;
        }
    }
    if let Some(lease) = lease {
        // Leaving: the others need not wait out the lease time.
        let _ = lease.release().await;
    }
}

/// What tells this process's lease (or anything else it writes) from another's with the
/// same node id.
pub fn process_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos:x}", std::process::id())
}

/// Renews (or takes) the node's lease and lists the members.
async fn step(
    bucket: &Bucket,
    key: &str,
    owner: &str,
    lease: &mut Option<Lease>,
) -> Result<Vec<String>, LeaseError> {
    let renewed = match lease.as_mut() {
        Some(l) => l.renew().await,
        None => Err(LeaseError::Lost {
            key: key.to_owned(),
            detail: "not taken yet".to_owned(),
        }),
    };
    match renewed {
        Ok(()) => {}
        Err(LeaseError::Lost { .. }) => {
            *lease = bucket.acquire(key, owner).await?;
        }
        Err(e) => return Err(e),
    }
    members_of(bucket).await
}

/// The nodes whose leases are held now.
async fn members_of(bucket: &Bucket) -> Result<Vec<String>, LeaseError> {
    let held = bucket.held("node.").await?;
    Ok(held
        .into_iter()
        .filter_map(|(k, _)| k.strip_prefix("node.").map(str::to_owned))
        .collect())
}

/// A node whose lease should have aged out but is still listed is read again this soon
/// (the server removes entries a moment late), this many times.
const LATE_READ: Duration = Duration::from_millis(250);
const LATE_READS: u32 = 8;

/// What the watch of the nodes bucket has seen: when to read the members again for each
/// other node, a little after its lease would age out unless renewed.
#[derive(Default)]
struct Watched {
    /// None until started, and again once it fails (started again at the next renewal).
    watch: Option<Writes>,
    /// By key: when its lease ends unless renewed, and the reads since that found it.
    due: std::collections::HashMap<String, (Instant, u32)>,
}

impl Watched {
    async fn start(&mut self, bucket: &Bucket, within: Duration) {
        if let Ok(Ok(w)) = tokio::time::timeout(within, bucket.watch("node.")).await {
            self.watch = Some(w);
        }
    }

    /// Waits until the members should be read again (true): a node joined or left, or
    /// the lease of one not seen renewing since has aged out. False when the watch failed.
    async fn next(&mut self, mine: &str, ttl: Duration) -> bool {
        use futures_util::StreamExt;
        let due = self.due.iter().map(|(k, (at, _))| (*at, k.clone())).min();
        let Some(watch) = self.watch.as_mut() else {
            return std::future::pending().await;
        };
        let expiry = async {
            match &due {
                Some((at, _)) => tokio::time::sleep_until(*at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            write = watch.next() => match write {
                Some(Ok((key, _))) if key == mine => false,
                Some(Ok((key, true))) => {
                    // A little past the server's removal of the entry.
                    let ends = Instant::now() + ttl + Duration::from_millis(100);
                    self.due.insert(key, (ends, 0)).is_none()
                }
                Some(Ok((key, false))) => {
                    self.due.remove(&key);
                    true
                }
                Some(Err(_)) | None => {
                    self.watch = None;
                    false
                }
            },
            _ = expiry => {
                if let Some((_, key)) = due
                    && let Some((at, reads)) = self.due.get_mut(&key)
                {
                    *at = Instant::now() + LATE_READ;
                    *reads += 1;
                    // Listed long after its lease should have ended: its renewals went
                    // unseen, and the renewals' own reads take over.
                    if *reads > LATE_READS {
                        self.due.remove(&key);
                    }
                }
                true
            }
        }
    }

    /// The members read: a node no longer among them is not waited for.
    fn read(&mut self, members: &[String]) {
        self.due.retain(|key, _| {
            key.strip_prefix("node.")
                .is_some_and(|id| members.iter().any(|m| m == id))
        });
    }
}

/// Waits (up to `within`) for a view that `ok` accepts; the last view seen otherwise.
pub async fn wait_for(
    view: &mut watch::Receiver<View>,
    within: Duration,
    ok: impl Fn(&View) -> bool,
) -> Result<View, View> {
    let found = tokio::time::timeout(within, async {
        view.wait_for(|v| ok(v)).await.map(|v| v.clone())
    })
    .await;
    match found {
        Ok(Ok(v)) => Ok(v),
        _ => Err(view.borrow().clone()),
    }
}
