//! A semaphore of an OAuth client's channels: slot `i` of a client is the lease
//! `chan.<client>.<i>`, and a holder may have in use as many channels as it holds slots.
//! The holders of one org share its client's channels this way, so together they never
//! use more than the service allows, and the service (which evicts unconnected channels
//! first) never evicts a live one. A holder that dies or is cut off loses its slots when
//! their leases age out.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, kv};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::lease::{Bucket, Lease, LeaseError};

/// What the holding task is told and tells.
pub trait Share: Send + Sync {
    /// Channels wanted now.
    fn wanted(&self) -> usize;
    /// Channels granted now.
    fn grant(&self, n: usize);
    /// Channels in use or being created now.
    fn using(&self) -> usize;
    /// This holder's channels that the service still counts, each one's expiry (unix
    /// seconds).
    fn made(&self) -> Vec<u64>;
    /// The last listing of every channel of the OAuth client, numbered (a new one has a
    /// higher number): each channel's expiry (unix seconds).
    fn listing(&self) -> Option<(u64, Vec<u64>)>;
}

/// The key prefix of `client`'s slots: a hash of the login host and client id.
pub fn client_key(login: &str, client_id: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{login}\n{client_id}").as_bytes());
    format!("chan.{h:016x}")
}

/// The bucket of the channels the cluster's holders made.
pub const MADE_BUCKET: &str = "holdline_channels_made";

/// How long an entry of [`MADE_BUCKET`] lasts unwritten: past a channel's longest life.
const MADE_KEPT: Duration = Duration::from_secs(49 * 3600);

/// The channels the holders of each OAuth client made that the service still counts, so
/// that those it lists beyond them are known to be another program's. One entry per
/// client (the key of its slots): `{"<holder>": [expiry, …]}`, in unix seconds. A holder
/// that dies leaves its channels there until they expire, as the service does.
#[derive(Clone)]
pub struct Made {
    kv: kv::Store,
}

impl Made {
    /// Opens the bucket, creating it (file storage, `replicas` copies) if it is missing.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Made, LeaseError> {
        let kv = crate::lease::open_kv(
            js,
            MADE_BUCKET,
            "holdline: the channels each holder made",
            MADE_KEPT,
            replicas,
        )
        .await?;
        Ok(Made { kv })
    }

    async fn read(
        &self,
        client: &str,
    ) -> Result<(BTreeMap<String, Vec<u64>>, Option<u64>), LeaseError> {
        match self.kv.entry(client).await.map_err(nats)? {
            Some(e) if e.operation == kv::Operation::Put => {
                // An entry holdline cannot read is replaced: it only ever undercounts.
                let map = serde_json::from_slice(&e.value).unwrap_or_default();
                Ok((map, Some(e.revision)))
            }
            Some(e) => Ok((BTreeMap::new(), Some(e.revision))),
            None => Ok((BTreeMap::new(), None)),
        }
    }

    /// Records that `holder` has made the channels expiring at `expiries` (none: it has
    /// none left), dropping every holder whose channels have all expired by `now`.
    pub async fn record(
        &self,
        client: &str,
        holder: &str,
        expiries: &[u64],
        now: u64,
    ) -> Result<(), LeaseError> {
        for _ in 0..5 {
            let (mut map, revision) = self.read(client).await?;
            map.retain(|_, e| e.iter().any(|&t| t > now));
            if expiries.iter().any(|&t| t > now) {
                map.insert(holder.to_owned(), expiries.to_vec());
            } else {
                map.remove(holder);
            }
            let value = serde_json::to_vec(&map).unwrap_or_default().into();
            let written = match revision {
                Some(revision) => self
                    .kv
                    .update(client, value, revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self
                    .kv
                    .create(client, value)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(()) => return Ok(()),
                // Another holder wrote meanwhile: read again.
                Err((true, _)) => continue,
                Err((false, e)) => return Err(LeaseError::Nats(e)),
            }
        }
        Err(LeaseError::Nats(format!(
            "the record of {client}'s channels kept changing; tried 5 times"
        )))
    }

    /// How many channels of `client` the holders made that the service counts at `now`.
    pub async fn alive(&self, client: &str, now: u64) -> Result<usize, LeaseError> {
        let (map, _) = self.read(client).await?;
        Ok(map.values().flatten().filter(|&&t| t > now).count())
    }
}

fn nats(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Nats(e.to_string())
}

/// Channels of the OAuth client listed at `now` beyond those the holders made: another
/// program's (or another holdline's outside the cluster). The service may evict a live
/// one of ours for each that is connected, so the holders together keep that many fewer.
pub fn foreign(listed: &[u64], made: usize, now: u64) -> usize {
    listed
        .iter()
        .filter(|&&t| t > now)
        .count()
        .saturating_sub(made)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The slot number of a lease's key (`<client>.<i>`).
fn index(lease: &Lease) -> usize {
    lease
        .key()
        .rsplit('.')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Keeps as many of `client`'s slots as `share` wants (or as many as are free),
/// grants what it holds, until `stop`; every slot is released on the way out. `owner`
/// names this holder in the leases. `woken` is awaited between rounds besides the tick
/// (the share's wants changing).
///
/// The slots open to take are the `cap` less the channels listed that no holder made
/// (recorded in `made`): with another program on the same OAuth client, the cluster
/// keeps to what is left. A slot above that limit taken earlier is kept only while it
/// covers a channel in use; none is ever closed to make room.
#[allow(clippy::too_many_arguments)]
pub async fn hold<S: Share, F: std::future::Future<Output = ()>>(
    bucket: Bucket,
    made: Made,
    client: String,
    owner: String,
    cap: usize,
    share: &S,
    mut woken: impl FnMut() -> F,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = bucket.ttl();
    let mut held: Vec<Lease> = Vec::new();
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut short: Option<(usize, usize)> = None;
    let mut recorded: Option<Vec<u64>> = None;
    let mut audited: Option<u64> = None;
    let mut others = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = woken() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        // What this holder made is recorded before it may make more.
        let mine = share.made();
        if recorded.as_ref() != Some(&mine)
            && let Ok(Ok(())) =
                tokio::time::timeout(ttl / 3, made.record(&client, &owner, &mine, now_secs())).await
        {
            recorded = Some(mine);
        }
        if let Some((n, listed)) = share.listing()
            && audited != Some(n)
            && let Ok(Ok(alive)) =
                tokio::time::timeout(ttl / 3, made.alive(&client, now_secs())).await
        {
            audited = Some(n);
            let found = foreign(&listed, alive, now_secs());
            // Once the listing is full, the service may have evicted channels a holder
            // made (unconnected ones go first) while they stay recorded: the estimate
            // then only rises, lest another program's live channels go unseen.
            let full = listed.iter().filter(|&&t| t > now_secs()).count() >= cap;
            let found = if full { found.max(others) } else { found };
            if found != others {
                if found > 0 {
                    tracing::warn!(client = %client, foreign = found, slots = cap.saturating_sub(found), "channels: this OAuth client holds channels that are no holder's (another program uses it, or a holdline outside the cluster); the holders keep to the rest, so none of its live channels is evicted. Give holdline an OAuth client of its own");
                } else {
                    tracing::info!(client = %client, "channels: every channel of this OAuth client is the holders' again");
                }
                others = found;
            }
        }
        let limit = cap.saturating_sub(others);
        let renewed = held.len();
        held = renew(held, ttl / 3).await;
        held.sort_by_key(index);
        let want = share.wanted().min(cap);
        // Slots past the limit cover channels in use, no more (the highest go first).
        loop {
            let low = held.iter().filter(|l| index(l) < limit).count();
            let high = held.len() - low;
            if held.len() <= want && high <= share.using().saturating_sub(low) {
                break;
            }
            let Some(lease) = held.pop() else { break };
            let _ = tokio::time::timeout(ttl / 3, lease.release()).await;
        }
        if held.len() < want.min(limit) {
            let _ = tokio::time::timeout(
                ttl / 3,
                take(&bucket, &client, &owner, limit, want.min(limit), &mut held),
            )
            .await;
        }
        let valid = held
            .iter()
            .filter(|l| Instant::now() < Instant::from_std(l.valid_until()))
            .count();
        share.grant(valid);
        let now_short = (valid < want).then_some((valid, want));
        if now_short != short {
            match now_short {
                Some((got, want)) => {
                    tracing::warn!(client = %client, got, want, renewed, "channel slots: the other holders of this OAuth client use the rest; waiting for one to free up")
                }
                None => tracing::info!(client = %client, slots = valid, "channel slots held"),
            }
            short = now_short;
        }
    }
    share.grant(0);
    for lease in held {
        let _ = tokio::time::timeout(ttl / 3, lease.release()).await;
    }
    // What it made stays recorded: the service counts those channels until they expire.
}

/// Renews every lease; one lost (or past its time) is dropped.
async fn renew(held: Vec<Lease>, within: Duration) -> Vec<Lease> {
    let mut kept = Vec::with_capacity(held.len());
    for mut lease in held {
        match tokio::time::timeout(within, lease.renew()).await {
            Ok(Ok(())) => kept.push(lease),
            Ok(Err(LeaseError::Lost { .. })) => {}
            // NATS did not answer: kept while it surely holds.
            _ if Instant::now() < Instant::from_std(lease.valid_until()) => kept.push(lease),
            _ => {}
        }
    }
    kept
}

/// Takes free slots until `want` are held.
async fn take(
    bucket: &Bucket,
    client: &str,
    owner: &str,
    cap: usize,
    want: usize,
    held: &mut Vec<Lease>,
) {
    for i in 0..cap {
        if held.len() >= want {
            return;
        }
        let key = format!("{client}.{i}");
        if held.iter().any(|l| l.key() == key) {
            continue;
        }
        if let Ok(Some(lease)) = bucket.acquire(&key, owner).await {
            held.push(lease);
        }
    }
}
