//! A semaphore of an OAuth client's channels: slot `i` of a client is the lease
//! `chan.<client>.<i>`, and a holder may have in use as many channels as it holds slots.
//! The holders of one org share its client's channels this way, so together they never
//! use more than the service allows, and the service (which evicts unconnected channels
//! first) never evicts a live one. A holder that dies or is cut off loses its slots when
//! their leases age out.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::lease::{Bucket, Lease, LeaseError};

/// What the holding task is told and tells.
pub trait Share: Send + Sync {
    /// Channels wanted now.
    fn wanted(&self) -> usize;
    /// Channels granted now.
    fn grant(&self, n: usize);
}

/// The key prefix of `client`'s slots: a hash of the login host and client id.
pub fn client_key(login: &str, client_id: &str) -> String {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{login}\n{client_id}").as_bytes());
    format!("chan.{h:016x}")
}

/// Keeps as many of `client`'s `cap` slots as `share` wants (or as many as are free),
/// grants what it holds, until `stop`; every slot is released on the way out. `owner`
/// names this holder in the leases. `woken` is awaited between rounds besides the tick
/// (the share's wants changing).
pub async fn hold<S: Share, F: std::future::Future<Output = ()>>(
    bucket: Bucket,
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
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = woken() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let renewed = held.len();
        held = renew(held, ttl / 3).await;
        let want = share.wanted().min(cap);
        while held.len() > want {
            if let Some(lease) = held.pop() {
                let _ = tokio::time::timeout(ttl / 3, lease.release()).await;
            }
        }
        if held.len() < want {
            let _ = tokio::time::timeout(
                ttl / 3,
                take(&bucket, &client, &owner, cap, want, &mut held),
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
