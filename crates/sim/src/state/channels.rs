//! Notification channels: their topics, expiry, last use and the socket connected to
//! each. Subscription rules (reference §2.1–§2.2, §7 lines 3–6) live here as plain methods
//! over a map, so they are tested without HTTP or sockets.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use holdline_proto::rest::{ChannelTopic, TopicState};
use holdline_proto::topic::{self, TopicError};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use crate::config::ClientSpec;

/// A frame queued for a socket, optionally held back until `not_before`.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The text frame.
    pub frame: Utf8Bytes,
    /// Delay injected by a `delay` fault, jitter or lateness.
    pub not_before: Option<Instant>,
    /// A late copy: held on its own, so later frames may overtake it.
    pub late: bool,
}

/// Orders to a socket task that bypass the data queue.
#[derive(Debug, Clone)]
pub enum Control {
    /// Optionally send a notice, then close with this code and reason.
    Close {
        /// A frame sent just before the close frame.
        notice: Option<Utf8Bytes>,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Close with this code and reason, dropping what is queued or held back for the
    /// socket instead of sending it (a hand-over that loses what was in flight).
    Kick {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Abort the TCP connection (RST, no close frame).
    Reset,
    /// Send and read nothing for this long (half-open connection).
    Stall(Duration),
    /// Send `v2.system.socket_closing`, then close after `grace`.
    Closing {
        /// The warning frame.
        notice: Utf8Bytes,
        /// Time until the server closes the socket.
        grace: Duration,
        /// Close code used at the end of the grace.
        code: u16,
    },
}

/// The socket connected to a channel.
#[derive(Debug, Clone)]
pub struct SocketLink {
    /// Connection number, unique for the simulator's life.
    pub conn: u64,
    /// Event frames.
    pub data: mpsc::Sender<Outbound>,
    /// Control orders.
    pub ctl: mpsc::UnboundedSender<Control>,
    /// When it connected.
    pub since: Instant,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the last event handed to it on time is due (`unknowns.jitter`; later ones
    /// never overtake it).
    pub due: Option<Instant>,
}

/// A fault that alters delivery for a while or for a number of events.
#[derive(Debug, Clone)]
pub struct TimedFault<T> {
    /// The fault's parameter.
    pub value: T,
    /// Ends at this instant, if set.
    pub until: Option<Instant>,
    /// Ends after this many more events, if set.
    pub remaining: Option<u64>,
}

impl<T: Clone> TimedFault<T> {
    /// The fault's value if it is still active, consuming one use.
    pub fn take(slot: &mut Option<TimedFault<T>>, now: Instant) -> Option<T> {
        let fault = slot.as_mut()?;
        if fault.until.is_some_and(|u| u <= now) || fault.remaining == Some(0) {
            *slot = None;
            return None;
        }
        if let Some(n) = fault.remaining.as_mut() {
            *n -= 1;
        }
        Some(fault.value.clone())
    }
}

/// Faults that change how events are delivered.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFaults {
    /// Added latency.
    pub delay: Option<TimedFault<Duration>>,
    /// Deliver each event twice.
    pub duplicate: Option<TimedFault<()>>,
}

/// One channel.
#[derive(Debug)]
pub struct ChannelRec {
    /// Channel id.
    pub id: Arc<str>,
    /// Owning OAuth client.
    pub client_id: String,
    /// The token that created it.
    pub token: String,
    /// Creation time.
    pub created: Instant,
    /// Expiry; reset by (re)subscribing.
    pub expires: Instant,
    /// Last REST use or connect, for eviction order.
    pub last_used: Instant,
    /// Topics as subscribed (combined topics kept whole), in order.
    pub topics: Vec<String>,
    /// Every single topic name the channel receives (combined topics expanded).
    pub expanded: HashSet<String>,
    /// The connected socket.
    pub socket: Option<SocketLink>,
    /// Delivery faults on this channel.
    pub faults: DeliveryFaults,
    /// Its serialisation style when frames differ per channel (see [`crate::restyle`]).
    pub style: u64,
    /// A lossy hand-over: events published before this go to no socket.
    pub paused_until: Option<Instant>,
    /// The close code of the last close frame a client sent on this channel's socket.
    pub client_close: Option<u16>,
}

/// How a subscribe request treats the existing list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// POST: add to the list.
    Add,
    /// PUT: replace the list.
    Replace,
    /// WebSocket unsubscribe: remove from the list.
    Remove,
}

/// Why a subscribe request was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// A topic name is not valid (400).
    BadTopic(TopicError),
    /// Topics the client lacks permissions for, with the missing permissions (403).
    Forbidden(Vec<(String, Vec<String>)>),
    /// The list would exceed the per-channel cap (400).
    TooMany {
        /// Topics the list would hold.
        count: usize,
        /// The cap.
        max: usize,
    },
}

impl ChannelRec {
    /// A new channel for `client_id`, created with `token`.
    pub fn new(id: Arc<str>, client_id: &str, token: &str, now: Instant, ttl: Duration) -> Self {
        ChannelRec {
            id,
            client_id: client_id.to_owned(),
            token: token.to_owned(),
            created: now,
            expires: now + ttl,
            last_used: now,
            topics: Vec::new(),
            expanded: HashSet::new(),
            socket: None,
            faults: DeliveryFaults::default(),
            style: 0,
            paused_until: None,
            client_close: None,
        }
    }

    /// Applies a subscribe request; returns the entries to report (the channel's whole list
    /// as Permitted, then any Rejected ones).
    pub fn subscribe(
        &mut self,
        client: &ClientSpec,
        requested: &[String],
        mode: Mode,
        ignore_errors: bool,
        max_topics: usize,
    ) -> Result<Vec<ChannelTopic>, SubscribeError> {
        let mut permitted = Vec::new();
        let mut rejected = Vec::new();
        for name in requested {
            let parts = topic::expand(name).map_err(SubscribeError::BadTopic)?;
            let missing = missing_permissions(client, &parts);
            if missing.is_empty() || mode == Mode::Remove {
                permitted.push(name.clone());
            } else {
                rejected.push((name.clone(), missing));
            }
        }
        if !rejected.is_empty() && !ignore_errors {
            return Err(SubscribeError::Forbidden(rejected));
        }
        let new_list = match mode {
            Mode::Replace => dedup(permitted),
            Mode::Add => dedup(self.topics.iter().cloned().chain(permitted).collect()),
            Mode::Remove => {
                let gone: HashSet<&String> = permitted.iter().collect();
                self.topics
                    .iter()
                    .filter(|t| !gone.contains(t))
                    .cloned()
                    .collect()
            }
        };
        if new_list.len() > max_topics {
            return Err(SubscribeError::TooMany {
                count: new_list.len(),
                max: max_topics,
            });
        }
        self.expanded = new_list
            .iter()
            .flat_map(|t| topic::expand(t).unwrap_or_default())
            .collect();
        self.topics = new_list;
        let mut out: Vec<ChannelTopic> = self.topics.iter().map(|t| permitted_entry(t)).collect();
        out.extend(rejected.into_iter().map(|(id, missing)| ChannelTopic {
            id,
            state: Some(TopicState::Rejected),
            rejection_reason: Some("missing permissions".to_owned()),
            missing_permissions: missing,
            self_uri: None,
        }));
        Ok(out)
    }

    /// True when events on `topic` go to this channel.
    pub fn wants(&self, topic: &str) -> bool {
        self.expanded.contains(topic)
    }
}

/// A Permitted entry for a topic.
pub fn permitted_entry(topic: &str) -> ChannelTopic {
    ChannelTopic {
        id: topic.to_owned(),
        state: Some(TopicState::Permitted),
        self_uri: Some(format!("/api/v2/notifications/availabletopics/{topic}")),
        ..ChannelTopic::default()
    }
}

fn missing_permissions(client: &ClientSpec, parts: &[String]) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    for part in parts {
        let Ok(m) = topic::classify(part) else {
            continue;
        };
        for perm in m.template.permissions {
            if !client.has(perm) && !missing.iter().any(|p| p == perm) {
                missing.push((*perm).to_owned());
            }
        }
    }
    missing
}

fn dedup(list: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    list.into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// All channels, by id.
pub type ChannelMap = HashMap<Arc<str>, ChannelRec>;

/// The channel `client_id` should lose to make room: least recently used among those
/// without a socket, else least recently used overall.
pub fn eviction_victim(channels: &ChannelMap, client_id: &str) -> Option<Arc<str>> {
    channels
        .values()
        .filter(|c| c.client_id == client_id)
        .min_by_key(|c| (c.socket.is_some(), c.last_used))
        .map(|c| c.id.clone())
}

#[cfg(test)]
#[path = "channels_tests.rs"]
mod tests;
