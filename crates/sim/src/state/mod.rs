//! The simulator's shared state: tokens, channels, the ledger, rate limits and pending
//! faults, behind one mutex held only for short, non-blocking critical sections. HTTP
//! handlers and socket tasks call the methods here; nothing here awaits.

pub mod channels;
pub mod history;
pub mod ledger;
mod limiter;
mod publish;
pub mod refusal;
mod tokens;

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use holdline_proto::rest::{Channel, ChannelTopic};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::{ChannelScope, ClientSpec, Handover, SimConfig};
use crate::org::Org;
use crate::rng::Rng;
use channels::{ChannelMap, ChannelRec, Control, DeliveryFaults, Mode, SocketLink};
use ledger::Ledger;
use limiter::Limiter;
pub use publish::Published;
use refusal::Refusal;
use tokens::{TokenProblem, Tokens};

/// An authenticated REST caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The bearer token.
    pub token: String,
    /// The OAuth client behind it.
    pub client: ClientSpec,
}

/// Why a token request failed (reference §1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthProblem {
    /// No Basic credentials.
    NoCredentials,
    /// Unknown client id.
    UnknownClient,
    /// Wrong secret.
    WrongSecret,
    /// Not `grant_type=client_credentials`.
    UnsupportedGrant,
}

/// A `rest_errors` fault waiting to fire.
#[derive(Debug, Clone)]
pub struct RestFault {
    /// Status to answer.
    pub status: u16,
    /// Calls left to fail.
    pub remaining: u32,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// Only paths starting with this.
    pub path_prefix: Option<String>,
    /// Only this method.
    pub method: Option<String>,
    /// Fails every matching call until then (instead of counting calls).
    pub until: Option<Instant>,
}

/// Channels the 20-channel rule evicted, by whether a socket was connected to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// A socket was receiving on the channel: its events stopped.
    pub connected: u64,
    /// Nothing was connected.
    pub unconnected: u64,
}

pub(crate) struct Inner {
    tokens: Tokens,
    pub(crate) channels: ChannelMap,
    pub(crate) ledger: Ledger,
    limiter: Limiter,
    pub(crate) rest_faults: Vec<RestFault>,
    pub(crate) global_faults: DeliveryFaults,
    pub(crate) rng: Rng,
    next_conn: u64,
    /// A `slow_upgrade` fault: delay and upgrades left.
    pub(crate) slow_upgrades: Option<(std::time::Duration, u32)>,
    evictions: Evictions,
    /// Serialisation style of the next channel created.
    next_style: u64,
    /// The OAuth clients that exist now (the configured ones, less any revoked, with their
    /// permissions as last granted).
    pub(crate) clients: Vec<ClientSpec>,
}

/// The state of one simulator.
pub struct Core {
    /// Its configuration.
    pub config: SimConfig,
    /// The simulated org.
    pub org: Org,
    /// `http://host:port` of the simulator.
    pub base_url: String,
    /// The org's name (`org-1` …).
    pub name: Arc<str>,
    /// The name again, for ledger entries, when the simulator serves more than one org.
    org_label: Option<Arc<str>>,
    inner: Mutex<Inner>,
    published: broadcast::Sender<Arc<Published>>,
    rest_calls: std::sync::atomic::AtomicU64,
    org_changes: Mutex<OrgChanges>,
    /// What the generator did, for the analytics and conversation endpoints.
    pub history: Arc<Mutex<history::History>>,
    /// The analytics details jobs submitted, by id.
    pub jobs: Mutex<std::collections::HashMap<String, Job>>,
}

/// A conversation details job: whose it is, when its results can be read, and what they
/// are (the conversations the data lake held when it was submitted).
#[derive(Debug)]
pub struct Job {
    /// The OAuth client that submitted it (no other may read it).
    pub client: String,
    pub submitted: OffsetDateTime,
    pub ready: OffsetDateTime,
    pub expires: OffsetDateTime,
    pub available: OffsetDateTime,
    pub rows: Vec<serde_json::Value>,
}

/// Queues and users added or deleted through `/sim/org` after start. They change what the
/// REST API lists (so clients that track the org can be tested); the generator keeps
/// producing traffic for the org it started with.
#[derive(Debug, Default)]
struct OrgChanges {
    queues: Vec<crate::org::SimQueue>,
    users: Vec<crate::org::SimAgent>,
    deleted: std::collections::HashSet<String>,
}

impl Core {
    /// New state for a simulator reachable at `base_url`.
    pub fn new(config: SimConfig, base_url: String) -> Arc<Core> {
        Core::for_org(config, base_url, 1)
    }

    /// The state of org number `n` (from 1) of a simulator reachable at `base_url`: its
    /// seed is the configured one plus `n - 1`, and with more than one org it accepts the
    /// client `org-N` (org 1 also the configured clients).
    pub fn for_org(mut config: SimConfig, base_url: String, n: usize) -> Arc<Core> {
        let name: Arc<str> = Arc::from(format!("org-{n}"));
        let client = ClientSpec {
            id: name.to_string(),
            secret: format!("secret-{n}"),
            permissions: vec!["*".to_owned()],
        };
        if n > 1 {
            config.clients.clear();
        }
        // A simulator of one org keeps exactly the clients it was given.
        if config.orgs > 1 && !config.clients.iter().any(|c| c.id == client.id) {
            config.clients.push(client);
        }
        config.seed = config.seed.wrapping_add(n as u64 - 1);
        let org_label = (config.orgs > 1).then(|| name.clone());
        let org = Org::generate(config.seed, config.queues, config.agents);
        let inner = Inner {
            tokens: Tokens::default(),
            channels: ChannelMap::new(),
            ledger: Ledger::new(config.ledger_capacity),
            limiter: Limiter::new(config.rate_limit_per_minute),
            rest_faults: Vec::new(),
            global_faults: DeliveryFaults::default(),
            rng: Rng::from_entropy(),
            next_conn: 1,
            slow_upgrades: None,
            evictions: Evictions::default(),
            next_style: 0,
            clients: config.clients.clone(),
        };
        let (published, _) = broadcast::channel(4096);
        let history = Arc::new(Mutex::new(history::History::new(config.history_capacity)));
        Arc::new(Core {
            config,
            org,
            base_url,
            name,
            org_label,
            inner: Mutex::new(inner),
            published,
            rest_calls: Default::default(),
            org_changes: Mutex::default(),
            history,
            jobs: Mutex::default(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters to a simulator, so keep serving rather than poisoning every later call.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues as the REST API lists them now, with their member counts.
    pub fn listed_queues(&self) -> Vec<(crate::org::SimQueue, usize)> {
        let changes = self.org_changes.lock().unwrap_or_else(|p| p.into_inner());
        let initial = self
            .org
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.clone(), self.org.member_count(i)));
        let added = changes.queues.iter().map(|q| (q.clone(), 0));
        initial
            .chain(added)
            .filter(|(q, _)| !changes.deleted.contains(&q.id))
            .collect()
    }

    /// Users as the REST API lists them now.
    pub fn listed_users(&self) -> Vec<crate::org::SimAgent> {
        let changes = self.org_changes.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.org.agents.iter().chain(changes.users.iter());
        all.filter(|a| !changes.deleted.contains(&a.id))
            .cloned()
            .collect()
    }

    /// Adds a queue (or, with an email, a user) to what the REST API lists; returns its id.
    pub fn add_entity(&self, name: &str, email: Option<&str>) -> String {
        let id = self.lock().rng.uuid();
        let mut changes = self.org_changes.lock().unwrap_or_else(|p| p.into_inner());
        match email {
            None => changes.queues.push(crate::org::SimQueue {
                id: id.clone(),
                name: name.to_owned(),
            }),
            Some(email) => changes.users.push(crate::org::SimAgent {
                id: id.clone(),
                name: name.to_owned(),
                email: email.to_owned(),
                queues: Vec::new(),
            }),
        }
        id
    }

    /// Deletes a queue or user from what the REST API lists; false if unknown.
    pub fn delete_entity(&self, id: &str) -> bool {
        let known = self.listed_queues().iter().any(|(q, _)| q.id == id)
            || self.listed_users().iter().any(|u| u.id == id);
        if known {
            self.org_changes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .deleted
                .insert(id.to_owned());
        }
        known
    }

    /// Counts one REST call (token and `/api/` paths).
    pub fn count_rest_call(&self) {
        self.rest_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// REST calls served so far (token and `/api/` paths).
    pub fn rest_calls(&self) -> u64 {
        self.rest_calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A stream of everything published (for live views of the simulator).
    pub fn watch_published(&self) -> broadcast::Receiver<Arc<Published>> {
        self.published.subscribe()
    }

    /// `POST /oauth/token`: issues a token to a known client.
    pub fn issue_token(&self, id: &str, secret: &str) -> Result<String, OAuthProblem> {
        let mut inner = self.lock();
        let Inner {
            tokens,
            rng,
            clients,
            ..
        } = &mut *inner;
        match clients.iter().find(|c| c.id == id) {
            None => Err(OAuthProblem::UnknownClient),
            Some(c) if c.secret != secret => Err(OAuthProblem::WrongSecret),
            Some(c) => Ok(tokens.issue(&c.id, self.config.token_ttl, Instant::now(), rng)),
        }
    }

    /// Checks a bearer token and takes one call from its rate budget.
    pub fn authorize(&self, bearer: Option<&str>) -> Result<Caller, Refusal> {
        let token = bearer.ok_or(Refusal::NoToken)?;
        let now = Instant::now();
        let mut inner = self.lock();
        let rec = inner.tokens.check(token, now).map_err(|p| match p {
            TokenProblem::Bad => Refusal::BadToken,
            TokenProblem::Expired => Refusal::ExpiredToken,
        })?;
        let client_id = rec.client_id.clone();
        inner
            .limiter
            .take(token, now)
            .map_err(Refusal::RateLimited)?;
        let client = inner
            .clients
            .iter()
            .find(|c| c.id == client_id)
            .cloned()
            .ok_or(Refusal::BadToken)?;
        Ok(Caller {
            token: token.to_owned(),
            client,
        })
    }

    /// The first pending `rest_errors` fault matching this call, consuming one use.
    pub fn take_rest_fault(&self, method: &str, path: &str) -> Option<Refusal> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner
            .rest_faults
            .retain(|f| f.until.is_none_or(|until| until > now));
        let idx = inner.rest_faults.iter().position(|f| {
            f.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let fault = &mut inner.rest_faults[idx];
        if fault.until.is_none() {
            fault.remaining -= 1;
        }
        let refusal = Refusal::Injected {
            status: fault.status,
            retry_after: fault.retry_after,
        };
        if fault.until.is_none() && fault.remaining == 0 {
            inner.rest_faults.remove(idx);
        }
        Some(refusal)
    }

    fn connect_uri(&self, id: &str) -> String {
        let ws = self
            .base_url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        match (&self.config.domain, self.config.public_url.is_none()) {
            // The streaming host of the domain, on the simulator's port.
            (Some(domain), true) => {
                let port = ws.rsplit(':').next().unwrap_or_default();
                let scheme = ws.split("://").next().unwrap_or("ws");
                format!("{scheme}://streaming.{domain}:{port}/channels/{id}")
            }
            _ => format!("{ws}/channels/{id}"),
        }
    }

    /// With a domain, the host a path belongs to (`login.` for tokens, `api.` for the REST
    /// API, `streaming.` for sockets); None for paths any host serves.
    pub fn host_for(&self, path: &str) -> Option<String> {
        let domain = self.config.domain.as_deref()?;
        let host = if path.starts_with("/oauth/") {
            "login"
        } else if path.starts_with("/api/") {
            "api"
        } else if path.starts_with("/channels/") {
            "streaming"
        } else {
            return None;
        };
        Some(format!("{host}.{domain}"))
    }

    fn channel_view(&self, rec: &ChannelRec, now: Instant) -> Channel {
        Channel {
            connect_uri: self.connect_uri(&rec.id),
            id: rec.id.to_string(),
            expires: wall_in(rec.expires.saturating_duration_since(now)),
        }
    }

    /// `POST /api/v2/notifications/channels`. Evicts the client's least recently used
    /// channel (unconnected first) when the client is at its limit.
    pub fn create_channel(&self, caller: &Caller) -> Channel {
        let now = Instant::now();
        let mut inner = self.lock();
        let owned = inner
            .channels
            .values()
            .filter(|c| c.client_id == caller.client.id)
            .count();
        if owned >= self.config.channels_per_client
            && let Some(victim) = channels::eviction_victim(&inner.channels, &caller.client.id)
        {
            let connected = inner
                .channels
                .get(&victim)
                .is_some_and(|c| c.socket.is_some());
            if connected {
                inner.evictions.connected += 1;
            } else {
                inner.evictions.unconnected += 1;
            }
            let notice = self.evict_notice(&mut inner, &victim);
            let code = self.config.close_codes.evicted;
            remove_channel(
                &mut inner,
                &victim,
                notice,
                code,
                "channel evicted: over quota",
            );
        }
        let id: Arc<str> = Arc::from(format!("streaming-0-{}", inner.rng.token(26)));
        let rec = ChannelRec::new(
            id.clone(),
            &caller.client.id,
            &caller.token,
            now,
            self.config.channel_ttl,
        );
        let mut rec = rec;
        rec.style = inner.next_style;
        inner.next_style += 1;
        let view = self.channel_view(&rec, now);
        inner.channels.insert(id, rec);
        view
    }

    /// How many channels the 20-channel rule has evicted so far.
    pub fn evictions(&self) -> Evictions {
        self.lock().evictions
    }

    /// `GET /api/v2/notifications/channels`: this token's channels, or with `all` every
    /// channel of the client (other tokens' ids hidden).
    pub fn list_channels(&self, caller: &Caller, all: bool) -> Vec<Channel> {
        let now = Instant::now();
        let inner = self.lock();
        let mut out: Vec<(Instant, Channel)> = inner
            .channels
            .values()
            .filter(|c| c.client_id == caller.client.id && (all || c.token == caller.token))
            .map(|c| {
                let mut view = self.channel_view(c, now);
                if c.token != caller.token {
                    view.id = String::new();
                    view.connect_uri = String::new();
                }
                (c.created, view)
            })
            .collect();
        out.sort_by_key(|(created, _)| *created);
        out.into_iter().map(|(_, c)| c).collect()
    }

    /// Whether `caller` may use channel `c` over REST (`unknowns.channel_scope`).
    fn may_use(&self, c: &ChannelRec, caller: &Caller) -> bool {
        c.client_id == caller.client.id
            && match self.config.unknowns.channel_scope {
                ChannelScope::Client => true,
                ChannelScope::Token => c.token == caller.token,
            }
    }

    /// `HEAD /api/v2/notifications/channels/{id}`.
    pub fn channel_exists(&self, caller: &Caller, id: &str) -> bool {
        let mut inner = self.lock();
        match inner.channels.get_mut(id) {
            Some(c) if self.may_use(c, caller) => {
                c.last_used = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Subscriptions over REST (`GET` when `topics` is `None`).
    pub fn subscriptions(
        &self,
        caller: &Caller,
        id: &str,
        change: Option<(&[String], Mode, bool)>,
    ) -> Result<Vec<ChannelTopic>, Refusal> {
        let now = Instant::now();
        let mut inner = self.lock();
        let chan = inner
            .channels
            .get_mut(id)
            .filter(|c| self.may_use(c, caller))
            .ok_or_else(|| Refusal::NotFound(format!("channel {id} not found")))?;
        chan.last_used = now;
        let Some((topics, mode, ignore_errors)) = change else {
            return Ok(chan
                .topics
                .iter()
                .map(|t| channels::permitted_entry(t))
                .collect());
        };
        let out = chan
            .subscribe(
                &caller.client,
                topics,
                mode,
                ignore_errors,
                self.config.topics_per_channel,
            )
            .map_err(Refusal::Subscribe)?;
        chan.expires = now + self.config.channel_ttl;
        Ok(out)
    }

    /// Subscribe or unsubscribe sent over a channel's socket.
    pub fn ws_subscribe(&self, id: &str, topics: &[String], mode: Mode) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut guard = self.lock();
        let Inner {
            channels, clients, ..
        } = &mut *guard;
        let chan = channels
            .get_mut(id)
            .ok_or_else(|| Refusal::NotFound(format!("channel {id} not found")))?;
        let client = clients
            .iter()
            .find(|c| c.id == chan.client_id)
            .ok_or_else(|| Refusal::NotFound("client removed".to_owned()))?;
        chan.subscribe(client, topics, mode, false, self.config.topics_per_channel)
            .map_err(Refusal::Subscribe)?;
        chan.expires = now + self.config.channel_ttl;
        chan.last_used = now;
        Ok(())
    }

    /// Whether this org holds the channel `id` (expired or not).
    pub fn has_channel(&self, id: &str) -> bool {
        self.lock().channels.contains_key(id)
    }

    /// Whether this org issued `token` (expired or not).
    pub fn issued(&self, token: &str) -> bool {
        self.lock().tokens.get(token).is_some()
    }

    /// Whether this org was configured with this client id (revoked or not), for routing
    /// a token request to the org that answers it.
    pub fn has_client(&self, id: &str) -> bool {
        self.config.clients.iter().any(|c| c.id == id)
    }

    /// True when a socket may connect to this channel.
    pub fn channel_is_live(&self, id: &str) -> bool {
        self.lock()
            .channels
            .get(id)
            .is_some_and(|c| c.expires > Instant::now())
    }

    /// The delay a `slow_upgrade` fault puts on this upgrade, consuming one use.
    pub fn take_upgrade_delay(&self) -> Option<std::time::Duration> {
        let mut inner = self.lock();
        let (delay, left) = inner.slow_upgrades.as_mut()?;
        let delay = *delay;
        *left -= 1;
        if *left == 0 {
            inner.slow_upgrades = None;
        }
        Some(delay)
    }

    /// Reserves a connection number.
    pub fn next_conn(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_conn += 1;
        inner.next_conn
    }

    /// Connects a socket to a channel, closing the socket already there. False when the
    /// channel is gone.
    pub fn attach(&self, id: &str, link: SocketLink) -> bool {
        let mut inner = self.lock();
        let Some(chan) = inner.channels.get_mut(id) else {
            return false;
        };
        chan.last_used = link.since;
        let since = link.since;
        if let Some(old) = chan.socket.replace(link) {
            let code = self.config.close_codes.replaced;
            let reason = "another socket connected to this channel".to_owned();
            let order = match self.config.unknowns.handover {
                Handover::Perfect => Control::Close {
                    notice: None,
                    code,
                    reason,
                },
                Handover::Lossy => {
                    chan.paused_until = Some(since + self.config.unknowns.handover_loss);
                    Control::Kick { code, reason }
                }
            };
            let _ = old.ctl.send(order);
        }
        true
    }

    /// Notes the close code a client sent on channel `id`'s socket.
    pub fn client_closed(&self, id: &str, code: u16) {
        if let Some(chan) = self.lock().channels.get_mut(id) {
            chan.client_close = Some(code);
        }
    }

    /// Disconnects socket `conn` from its channel (a newer socket is left alone).
    pub fn detach(&self, id: &str, conn: u64) {
        let mut inner = self.lock();
        if let Some(chan) = inner.channels.get_mut(id)
            && chan.socket.as_ref().is_some_and(|s| s.conn == conn)
        {
            chan.socket = None;
            chan.last_used = Instant::now();
        }
    }

    /// Maps every channel (with its token's label) through `f`, oldest first.
    pub fn channel_infos<T>(&self, f: impl Fn(&ChannelRec, &str) -> T) -> Vec<T> {
        let inner = self.lock();
        let mut list: Vec<&ChannelRec> = inner.channels.values().collect();
        list.sort_by_key(|c| c.created);
        list.into_iter()
            .map(|c| {
                f(
                    c,
                    inner.tokens.get(&c.token).map_or("?", |t| t.label.as_str()),
                )
            })
            .collect()
    }

    /// Ledger entries after `since`.
    pub fn ledger_since(&self, since: u64, limit: usize) -> Vec<ledger::LedgerEntry> {
        self.lock().ledger.since(since, limit)
    }

    pub(crate) fn evict_notice(&self, inner: &mut Inner, id: &str) -> Option<Utf8Bytes> {
        use crate::config::EvictNotice;
        match self.config.evict_notice {
            EvictNotice::None => None,
            EvictNotice::Result404 => Some(publish::gone_frame(&format!(
                "channel {id} was removed: the client exceeded {} channels",
                self.config.channels_per_client
            ))),
            EvictNotice::NoLongerSubscribed => Some(publish::system_frame(
                &mut inner.rng,
                &format!("v2.system.no_longer_subscribed.{id}"),
                id,
                "no_longer_subscribed",
                "another_channel_subscribed",
                "channel removed: the client created more channels than it may hold",
            )),
        }
    }
}

/// `{"result":"404","message":...}`.
pub(crate) fn publish_gone(message: &str) -> Utf8Bytes {
    publish::gone_frame(message)
}

/// A `v2.system.socket_closing` frame for channel `id`.
pub(crate) fn closing_frame(rng: &mut Rng, id: &str) -> Utf8Bytes {
    let body = serde_json::json!({"channelId": id, "message": "socket closing for maintenance"});
    holdline_proto::frame::notification_json(
        "v2.system.socket_closing",
        &body.to_string(),
        &rng.uuid(),
    )
    .into()
}

/// Removes a channel and closes its socket after an optional notice.
pub(crate) fn remove_channel(
    inner: &mut Inner,
    id: &str,
    notice: Option<Utf8Bytes>,
    code: u16,
    reason: &str,
) -> Option<ChannelRec> {
    let rec = inner.channels.remove(id)?;
    if let Some(link) = &rec.socket {
        let _ = link.ctl.send(Control::Close {
            notice,
            code,
            reason: reason.to_owned(),
        });
    }
    Some(rec)
}

/// ISO-8601 UTC with milliseconds, `after` from now, as the service writes `expires`.
pub fn wall_in(after: std::time::Duration) -> String {
    format_ms(OffsetDateTime::now_utc() + after)
}

/// `2024-05-02T09:15:01.120Z`.
pub fn format_ms(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}
