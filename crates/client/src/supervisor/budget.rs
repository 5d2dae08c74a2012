//! The OAuth client's 20 channels, counted as the service counts them (sans-io).
//!
//! The service keeps every channel until it expires: one replaced at rollover still
//! counts, and so do channels left by an earlier run of the same client. Creating a 21st
//! evicts the least recently used channel, unconnected ones first. A channel is created
//! only when that is safe: the count is under the cap, or a channel we no longer use
//! (retired, or an earlier run's) is there to be evicted instead of a live one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::{Duration, Instant};

/// Whose channel: (shard, slot).
pub type Owner = (usize, usize);

/// How long to wait before asking again when no place is free.
const FULL_RETRY: Duration = Duration::from_millis(100);

/// A share of an OAuth client's channels granted from outside the process: the holders
/// of one org in a cluster use its one client, and a semaphore among them grants each a
/// number of channels. The service evicts unconnected channels first, so as long as the
/// channels in use (connected or being created) across holders stay within the
/// service's cap, a live channel is never evicted; channels no longer used (retired, or
/// left by a node that died) need no share.
#[derive(Debug, Default)]
pub struct ChannelShare {
    granted: AtomicUsize,
    wanted: AtomicUsize,
    changed: tokio::sync::Notify,
    /// Channels in use or being created.
    using: AtomicUsize,
    /// The channels of this client the service still counts, each one's expiry (unix
    /// seconds): in use, being created (counted for a channel's longest life) and retired.
    made: Mutex<Vec<u64>>,
    /// The last listing of every channel of the OAuth client (any token's): its number
    /// and each channel's expiry (unix seconds).
    listed: Mutex<Option<(u64, Vec<u64>)>>,
    /// How often the client lists them, in milliseconds (0: [`DEFAULT_AUDIT`]).
    audit_ms: std::sync::atomic::AtomicU64,
}

/// How often a client of a cluster lists its OAuth client's channels unless told.
pub const DEFAULT_AUDIT: Duration = Duration::from_secs(60);

impl ChannelShare {
    /// A share of none, until granted.
    pub fn new() -> Arc<ChannelShare> {
        Arc::new(ChannelShare::default())
    }

    /// Channels this client may have in use now.
    pub fn grant(&self, n: usize) {
        self.granted.store(n, Ordering::Relaxed);
    }

    /// What was granted.
    pub fn granted(&self) -> usize {
        self.granted.load(Ordering::Relaxed)
    }

    /// Channels the client would like: in use, being created, waited for, and one spare
    /// for a rollover.
    pub fn wanted(&self) -> usize {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Waits until the wanted count changes.
    pub async fn want_changed(&self) {
        self.changed.notified().await;
    }

    fn want(&self, n: usize) {
        if self.wanted.swap(n, Ordering::Relaxed) != n {
            self.changed.notify_one();
        }
    }

    /// Lists the OAuth client's channels every `every` (at least a second).
    pub fn audit_every(&self, every: Duration) {
        let ms = u64::try_from(every.max(Duration::from_secs(1)).as_millis()).unwrap_or(u64::MAX);
        self.audit_ms.store(ms, Ordering::Relaxed);
    }

    /// How often the OAuth client's channels are listed.
    pub fn audit(&self) -> Duration {
        match self.audit_ms.load(Ordering::Relaxed) {
            0 => DEFAULT_AUDIT,
            ms => Duration::from_millis(ms),
        }
    }

    /// Channels in use or being created now.
    pub fn using(&self) -> usize {
        self.using.load(Ordering::Relaxed)
    }

    /// This client's channels that the service still counts, each one's expiry (unix
    /// seconds, in order).
    pub fn made(&self) -> Vec<u64> {
        self.made.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records a listing of every channel of the OAuth client: each one's expiry.
    pub fn listed(&self, expires: Vec<u64>) {
        let mut listed = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        let n = listed.as_ref().map_or(1, |(n, _)| n + 1);
        *listed = Some((n, expires));
        drop(listed);
        self.changed.notify_one();
    }

    /// The last listing, numbered (a new listing has a higher number), if any.
    pub fn listing(&self) -> Option<(u64, Vec<u64>)> {
        self.listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note_made(&self, using: usize, made: Vec<u64>) {
        self.using.store(using, Ordering::Relaxed);
        let mut mine = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let grew = mine.len() != made.len();
        *mine = made;
        drop(mine);
        if grew {
            self.changed.notify_one();
        }
    }
}

/// `t` as unix seconds, rounded up.
pub fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// A [`ChannelShare`] in a [`ClientConfig`](crate::ClientConfig): equal only to itself.
#[derive(Debug, Clone)]
pub struct SharedChannels(pub Arc<ChannelShare>);

impl PartialEq for SharedChannels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedChannels {}

/// The channels the service counts against one OAuth client.
#[derive(Debug)]
pub struct Budget {
    cap: usize,
    /// In a cluster, the share of the client's channels this process may use.
    share: Option<Arc<ChannelShare>>,
    /// Creations under way.
    reserved: usize,
    /// Channels in use, by id: their owner and when the service drops them.
    in_use: HashMap<Arc<str>, (Owner, Instant)>,
    /// Channels no longer used that the service still counts, until they expire.
    retired: Vec<(Arc<str>, Instant)>,
    /// Channels of this client we did not create (an earlier run), until they expire.
    foreign: Vec<Instant>,
    /// Slots refused a place: when they need one by (the most urgent goes first) and
    /// when they last asked (one that stops asking is forgotten).
    waiting: HashMap<Owner, (Instant, Instant)>,
}

/// A channel creation the budget allowed; dropped unused, it is given back.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Mutex<Budget>>,
    used: bool,
}

impl Reservation {
    /// The channel was created: it now counts as in use by `owner` until `until`.
    pub fn created(mut self, id: Arc<str>, owner: Owner, until: Instant) {
        self.used = true;
        let mut b = lock(&self.budget);
        b.reserved = b.reserved.saturating_sub(1);
        b.in_use.insert(id, (owner, until));
        b.note();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used {
            let mut b = lock(&self.budget);
            b.reserved = b.reserved.saturating_sub(1);
            b.note();
        }
    }
}

fn lock(b: &Mutex<Budget>) -> std::sync::MutexGuard<'_, Budget> {
    // Every update leaves the counts consistent, so a panic elsewhere cannot corrupt them.
    b.lock().unwrap_or_else(|p| p.into_inner())
}

impl Budget {
    /// A budget of `cap` channels.
    pub fn new(cap: usize) -> Self {
        Budget {
            cap,
            share: None,
            reserved: 0,
            in_use: HashMap::new(),
            retired: Vec::new(),
            foreign: Vec::new(),
            waiting: HashMap::new(),
        }
    }

    /// A budget of `cap` channels of which this process may use what `share` grants; other
    /// processes' channels are theirs to count.
    pub fn shared(cap: usize, share: Arc<ChannelShare>) -> Self {
        Budget {
            share: Some(share),
            ..Budget::new(cap)
        }
    }

    /// The cluster's share this budget uses, if any.
    pub fn share(&self) -> Option<Arc<ChannelShare>> {
        self.share.clone()
    }

    /// Tells the share what this client would like now, and what it has made.
    fn note(&self) {
        if let Some(share) = &self.share {
            let now = Instant::now();
            let wall = std::time::SystemTime::now();
            let at = |until: Instant| unix_secs(wall + until.saturating_duration_since(now));
            let mut made: Vec<u64> = self
                .in_use
                .values()
                .map(|(_, until)| at(*until))
                .chain(self.retired.iter().map(|(_, until)| at(*until)))
                .chain(std::iter::repeat_n(
                    at(now + crate::channel::rollover::MAX_LIFE),
                    self.reserved,
                ))
                .collect();
            made.sort_unstable();
            share.note_made(self.reserved + self.in_use.len(), made);
            share.want(self.reserved + self.in_use.len() + self.waiting.len() + 1);
        }
    }

    /// Channels of this client found at start that are not ours, each counted until it
    /// expires.
    pub fn foreign(&mut self, expires: impl IntoIterator<Item = Instant>) {
        self.foreign.extend(expires);
    }

    /// Channels the service counts now.
    pub fn held(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.reserved + self.in_use.len() + self.retired.len() + self.foreign.len()
    }

    fn prune(&mut self, now: Instant) {
        self.retired.retain(|(_, until)| *until > now);
        self.foreign.retain(|until| *until > now);
        self.in_use.retain(|_, (_, until)| *until > now);
    }

    /// Whether `owner` may create a channel now; it needs one by `deadline` (now, for a
    /// slot that is down). Places go to the most urgent slot first. When the count is at
    /// the cap, the oldest channel we no longer use is taken to be the one the service
    /// evicts. `Err` says when to ask again.
    pub fn try_reserve(
        this: &Arc<Mutex<Budget>>,
        owner: Owner,
        deadline: Instant,
        now: Instant,
    ) -> Result<Reservation, Instant> {
        let mut b = lock(this);
        if let Some(share) = b.share.clone() {
            return Budget::try_share(&mut b, this, &share, owner, deadline, now);
        }
        let held = b.held(now);
        let places = (b.cap + b.retired.len() + b.foreign.len()).saturating_sub(held);
        b.take_turn(owner, places, deadline, now)?;
        if held >= b.cap {
            let oldest_retired = (0..b.retired.len()).min_by_key(|&i| b.retired[i].1);
            let oldest_foreign = (0..b.foreign.len()).min_by_key(|&i| b.foreign[i]);
            if let Some(i) = oldest_foreign {
                b.foreign.swap_remove(i);
            } else if let Some(i) = oldest_retired {
                b.retired.swap_remove(i);
            }
        }
        b.reserved += 1;
        drop(b);
        Ok(Reservation {
            budget: this.clone(),
            used: false,
        })
    }

    /// Whether `owner`, needing a channel by `deadline`, may take one of `places` now:
    /// places go to the most urgent slot first. `Err` says when to ask again.
    fn take_turn(
        &mut self,
        owner: Owner,
        places: usize,
        deadline: Instant,
        now: Instant,
    ) -> Result<(), Instant> {
        self.waiting.remove(&owner);
        self.waiting
            .retain(|_, (_, asked)| now.saturating_duration_since(*asked) < FULL_RETRY * 10);
        let ahead = self.waiting.values().filter(|(d, _)| *d < deadline).count();
        if places <= ahead {
            self.waiting.insert(owner, (deadline, now));
            return Err(now + FULL_RETRY);
        }
        Ok(())
    }

    /// [`Budget::try_reserve`] within a share: places are what was granted less the
    /// channels in use and being created.
    fn try_share(
        b: &mut Budget,
        this: &Arc<Mutex<Budget>>,
        share: &ChannelShare,
        owner: Owner,
        deadline: Instant,
        now: Instant,
    ) -> Result<Reservation, Instant> {
        b.prune(now);
        let using = b.reserved + b.in_use.len();
        let places = share.granted().min(b.cap).saturating_sub(using);
        if let Err(retry) = b.take_turn(owner, places, deadline, now) {
            b.note();
            return Err(retry);
        }
        b.reserved += 1;
        b.note();
        Ok(Reservation {
            budget: this.clone(),
            used: false,
        })
    }

    /// `id` is no longer used; the service counts it until `until`.
    pub fn retired(&mut self, id: Arc<str>, until: Instant) {
        self.in_use.remove(&id);
        self.retired.push((id, until));
        self.note();
    }

    /// `id` is gone from the service.
    pub fn gone(&mut self, id: &str) {
        self.in_use.remove(id);
        self.retired.retain(|(r, _)| &**r != id);
        self.note();
    }

    /// `owner`'s task ended without letting go of its channels: they are no longer used
    /// but count until they expire.
    pub fn orphaned(&mut self, owner: Owner) {
        self.waiting.remove(&owner);
        let theirs: Vec<Arc<str>> = self
            .in_use
            .iter()
            .filter(|(_, (o, _))| *o == owner)
            .map(|(id, _)| id.clone())
            .collect();
        for id in theirs {
            if let Some((_, until)) = self.in_use.remove(&id) {
                self.retired.push((id, until));
            }
        }
        self.note();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn budget(cap: usize) -> Arc<Mutex<Budget>> {
        Arc::new(Mutex::new(Budget::new(cap)))
    }

    fn fill(b: &Arc<Mutex<Budget>>, n: usize, now: Instant) {
        for i in 0..n {
            let r = Budget::try_reserve(b, (i, 0), now, now).expect("room");
            r.created(format!("c{i}").into(), (i, 0), now + HOUR);
        }
    }

    #[test]
    fn a_channel_replaced_at_rollover_counts_until_it_expires() {
        let now = Instant::now();
        let b = budget(3);
        fill(&b, 3, now);
        lock(&b).retired("c0".into(), now + Duration::from_secs(60));
        assert_eq!(lock(&b).held(now), 3, "the retired channel still counts");
        assert_eq!(lock(&b).held(now + Duration::from_secs(61)), 2);
    }

    #[test]
    fn creating_at_the_cap_is_refused_while_every_channel_is_in_use() {
        let now = Instant::now();
        let b = budget(3);
        fill(&b, 3, now);
        let retry = Budget::try_reserve(&b, (9, 9), now, now).expect_err("all live");
        assert!(retry > now);
    }

    #[test]
    fn at_the_cap_a_retired_channel_is_the_one_evicted() {
        let now = Instant::now();
        let b = budget(3);
        fill(&b, 3, now);
        lock(&b).retired("c1".into(), now + HOUR);
        let r = Budget::try_reserve(&b, (9, 9), now, now).expect("the retired one makes room");
        r.created("c3".into(), (1, 0), now + HOUR);
        assert_eq!(lock(&b).held(now), 3);
        assert!(
            Budget::try_reserve(&b, (9, 9), now, now).is_err(),
            "now every one is live"
        );
    }

    #[test]
    fn an_earlier_runs_channels_make_room_before_our_retired_ones() {
        let now = Instant::now();
        let b = budget(2);
        lock(&b).foreign([now + HOUR]);
        fill(&b, 1, now);
        lock(&b).retired("c0".into(), now + HOUR);
        let _r = Budget::try_reserve(&b, (9, 9), now, now).expect("room");
        let b = lock(&b);
        assert!(b.foreign.is_empty() && b.retired.len() == 1);
    }

    #[test]
    fn an_unused_reservation_is_given_back() {
        let now = Instant::now();
        let b = budget(1);
        let r = Budget::try_reserve(&b, (9, 9), now, now).unwrap();
        assert!(Budget::try_reserve(&b, (9, 9), now, now).is_err());
        drop(r);
        assert!(Budget::try_reserve(&b, (9, 9), now, now).is_ok());
    }

    #[test]
    fn a_dead_owners_channels_count_as_retired() {
        let now = Instant::now();
        let b = budget(2);
        fill(&b, 2, now);
        assert!(Budget::try_reserve(&b, (9, 9), now, now).is_err());
        lock(&b).orphaned((0, 0));
        assert_eq!(lock(&b).held(now), 2);
        assert!(
            Budget::try_reserve(&b, (9, 9), now, now).is_ok(),
            "the orphan can go"
        );
    }

    #[test]
    fn a_shared_budget_uses_only_what_is_granted_and_says_what_it_wants() {
        let now = Instant::now();
        let share = ChannelShare::new();
        let b = Arc::new(Mutex::new(Budget::shared(20, share.clone())));
        lock(&b).foreign([now + HOUR; 5]);
        assert!(
            Budget::try_reserve(&b, (0, 0), now, now).is_err(),
            "nothing granted yet"
        );
        assert_eq!(share.wanted(), 2, "the waiting slot and a spare");
        share.grant(2);
        fill(&b, 2, now);
        assert!(
            Budget::try_reserve(&b, (5, 5), now, now).is_err(),
            "both in use"
        );
        assert_eq!(share.wanted(), 4);
        // A retired channel needs no share: unconnected, it is what the service evicts.
        lock(&b).retired("c0".into(), now + HOUR);
        let r = Budget::try_reserve(&b, (5, 5), now, now).expect("a place again");
        r.created("c2".into(), (5, 5), now + HOUR);
        assert_eq!(share.wanted(), 3, "two in use and a spare");
        assert_eq!(share.using(), 2);
        assert_eq!(
            share.made().len(),
            3,
            "the retired one still counts as made"
        );
    }

    #[test]
    fn a_shared_budget_counts_a_channel_as_made_before_it_is_created() {
        let now = Instant::now();
        let share = ChannelShare::new();
        let b = Arc::new(Mutex::new(Budget::shared(20, share.clone())));
        share.grant(1);
        let r = Budget::try_reserve(&b, (0, 0), now, now).expect("granted");
        let wall = unix_secs(std::time::SystemTime::now());
        assert_eq!(share.using(), 1);
        let made = share.made();
        assert_eq!(made.len(), 1, "the creation under way is counted");
        assert!(made[0] >= wall + crate::channel::rollover::MAX_LIFE.as_secs());
        r.created("c0".into(), (0, 0), now + HOUR);
        let made = share.made();
        assert_eq!(made.len(), 1);
        assert!(made[0] >= wall + 3599 && made[0] <= wall + 3602, "{made:?}");
        lock(&b).gone("c0");
        assert!(share.made().is_empty());
        assert_eq!(share.using(), 0);
    }

    #[test]
    fn a_gone_channel_frees_its_place() {
        let now = Instant::now();
        let b = budget(1);
        fill(&b, 1, now);
        lock(&b).gone("c0");
        assert_eq!(lock(&b).held(now), 0);
    }
}

#[cfg(test)]
mod order {
    use super::*;

    #[test]
    fn the_most_urgent_slot_gets_the_free_place() {
        let now = Instant::now();
        let b = Arc::new(Mutex::new(Budget::new(2)));
        let r = Budget::try_reserve(&b, (0, 0), now, now).unwrap();
        r.created("c0".into(), (0, 0), now + Duration::from_secs(60));
        let r = Budget::try_reserve(&b, (1, 0), now, now).unwrap();
        r.created("c1".into(), (1, 0), now + Duration::from_secs(60));
        let soon = now + Duration::from_secs(5);
        let later = now + Duration::from_secs(50);
        assert!(Budget::try_reserve(&b, (0, 0), later, now).is_err());
        assert!(Budget::try_reserve(&b, (1, 0), soon, now).is_err());
        lock(&b).retired("c0".into(), now + Duration::from_secs(60));
        assert!(
            Budget::try_reserve(&b, (0, 0), later, now).is_err(),
            "a more urgent slot is waiting"
        );
        assert!(Budget::try_reserve(&b, (1, 0), soon, now).is_ok());
    }

    #[test]
    fn two_slots_that_keep_asking_are_served_in_the_order_they_went_down() {
        let now = Instant::now();
        let b = Arc::new(Mutex::new(Budget::new(1)));
        let r = Budget::try_reserve(&b, (9, 0), now, now).unwrap();
        r.created("c".into(), (9, 0), now + Duration::from_secs(60));
        let (a_down, b_down) = (now, now + Duration::from_millis(10));
        for k in 0..5 {
            let t = now + Duration::from_millis(100 * k);
            assert!(Budget::try_reserve(&b, (0, 0), a_down, t).is_err());
            assert!(Budget::try_reserve(&b, (1, 0), b_down, t).is_err());
        }
        lock(&b).gone("c");
        let t = now + Duration::from_millis(600);
        assert!(
            Budget::try_reserve(&b, (1, 0), b_down, t).is_err(),
            "a is first"
        );
        assert!(Budget::try_reserve(&b, (0, 0), a_down, t).is_ok());
    }
}
