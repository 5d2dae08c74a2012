//! Publishing: an event goes, at the moment it is published, to every connected socket
//! whose channel has its topic, and nowhere else. No buffering, no replay. Also the
//! periodic sweep that ends expired channels and channels whose token died.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use holdline_proto::EventId;
use holdline_proto::frame::notification_json;
use time::OffsetDateTime;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use super::channels::{Control, Outbound, TimedFault};
use super::ledger::LedgerEntry;
use super::{Core, Inner, remove_channel};
use crate::config::Frames;
use crate::restyle::restyle;
use crate::rng::Rng;

/// An event as published, for live views.
#[derive(Debug, Clone)]
pub struct Published {
    /// Its ledger entry.
    pub entry: LedgerEntry,
    /// Its body.
    pub body: Arc<str>,
}

/// Where one event goes: the channel and a sender to its socket.
pub type Recipient = (Arc<str>, mpsc::Sender<Outbound>);

impl Core {
    /// Publishes one event now and records it in the ledger.
    pub fn publish(&self, topic: &str, body: &str) -> LedgerEntry {
        let now = Instant::now();
        let published_at = OffsetDateTime::now_utc();
        let mut guard = self.lock();
        let Inner {
            channels,
            ledger,
            rng,
            global_faults,
            ..
        } = &mut *guard;
        let seq = ledger.next_seq();
        let unknowns = &self.config.unknowns;
        let per_channel = unknowns.frames == Frames::PerChannel;
        // Parsed once, only to write the body again in each channel's style.
        let value: Option<serde_json::Value> = per_channel
            .then(|| serde_json::from_str(body).ok())
            .flatten();
        // One frame for every channel, unless each gets its own.
        let shared: Option<Utf8Bytes> = value
            .is_none()
            .then(|| notification_json(topic, body, &rng.uuid()).into());
        let original = value
            .as_ref()
            .and_then(|_| holdline_proto::value_hash::value_hash(body.as_bytes()));
        let global_delay = TimedFault::take(&mut global_faults.delay, now);
        let global_dup = TimedFault::take(&mut global_faults.duplicate, now).is_some();
        let mut delivered_to = Vec::new();
        for chan in channels.values_mut() {
            if !chan.wants(topic) || chan.paused_until.is_some_and(|t| t > now) {
                continue;
            }
            let Some(link) = chan.socket.as_mut() else {
                continue;
            };
            let delay = TimedFault::take(&mut chan.faults.delay, now).or(global_delay);
            let copies =
                if TimedFault::take(&mut chan.faults.duplicate, now).is_some() || global_dup {
                    2
                } else {
                    1
                };
            let frame = match &value {
                Some(value) => {
                    // A style that would change the value (a number beyond a double, a
                    // repeated key) is not used: the body goes as it is.
                    let styled = restyle(body, value, chan.style);
                    let same = original.is_some()
                        && holdline_proto::value_hash::value_hash(styled.as_bytes()) == original;
                    let styled = if same { styled.as_str() } else { body };
                    notification_json(topic, styled, &rng.uuid()).into()
                }
                None => shared.clone().unwrap_or_default(),
            };
            let mut late = false;
            let lag = (!unknowns.jitter.is_zero() || unknowns.late_share > 0.0).then(|| {
                let on_time = now + unknowns.jitter.mul_f64(fraction(rng));
                if unknowns.late_share > 0.0 && rng.chance(unknowns.late_share) {
                    // A late copy is held on its own; what follows may overtake it.
                    late = true;
                    return on_time + unknowns.latency.mul_f64(fraction(rng));
                }
                let due = link.due.map_or(on_time, |last| last.max(on_time));
                link.due = Some(due);
                due
            });
            let fault_due = delay.map(|d| now + d);
            let out = Outbound {
                late: late && fault_due.is_none(),
                frame,
                not_before: match (lag, fault_due) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                },
            };
            let mut sent = true;
            for _ in 0..copies {
                match link.data.try_send(out.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        let _ = link.ctl.send(Control::Close {
                            notice: None,
                            code: 1008,
                            reason: "slow consumer: socket queue full".to_owned(),
                        });
                        sent = false;
                    }
                    Err(TrySendError::Closed(_)) => sent = false,
                }
            }
            if sent {
                delivered_to.push(chan.id.clone());
            }
        }
        let entry = LedgerEntry {
            seq,
            org: self.org_label.clone(),
            id: EventId::of(topic, body.as_bytes()),
            topic: Arc::from(topic),
            published_at,
            delivered_to,
        };
        ledger.push(entry.clone());
        drop(guard);
        if self.published.receiver_count() > 0 {
            let _ = self.published.send(Arc::new(Published {
                entry: entry.clone(),
                body: body.into(),
            }));
        }
        entry
    }

    /// The sockets that would receive an event on `topic` now, and a sequence number,
    /// for publishers that wait for socket capacity (the firehose).
    pub fn recipients(&self, topic: &str) -> (u64, Vec<Recipient>) {
        let mut inner = self.lock();
        let seq = inner.ledger.next_seq();
        let list = inner
            .channels
            .values()
            .filter(|c| c.wants(topic))
            .filter_map(|c| c.socket.as_ref().map(|s| (c.id.clone(), s.data.clone())))
            .collect();
        (seq, list)
    }

    /// Records an event published outside [`Core::publish`].
    pub fn record(&self, mut entry: LedgerEntry) {
        entry.org = self.org_label.clone();
        self.lock().ledger.push(entry);
    }

    /// Ends channels that expired and, when configured, channels whose token expired or
    /// was revoked. Called periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let dead_tokens = inner.tokens.dead(now);
        for token in &dead_tokens {
            inner.limiter.forget(token);
        }
        let mut doomed: Vec<(Arc<str>, bool)> = Vec::new();
        for chan in inner.channels.values() {
            if chan.expires <= now {
                doomed.push((chan.id.clone(), false));
            } else if self.config.channels_die_with_token && dead_tokens.contains(&chan.token) {
                let revoked = inner.tokens.get(&chan.token).is_some_and(|t| t.revoked);
                doomed.push((chan.id.clone(), revoked));
            }
        }
        for (id, revoked) in doomed {
            if revoked {
                self.end_revoked(inner, &id);
            } else {
                let notice = gone_frame(&format!("channel {id} expired"));
                let code = self.config.close_codes.expired;
                remove_channel(inner, &id, Some(notice), code, "channel expired");
            }
        }
    }

    /// Ends a channel whose token was revoked: `token_revoked` notice, then close.
    pub(crate) fn end_revoked(&self, inner: &mut Inner, id: &str) {
        let notice = system_frame(
            &mut inner.rng,
            &format!("v2.system.token_revoked.{id}"),
            id,
            "token_revoked",
            "user_tokens_revoked",
            "the access token of this channel was revoked",
        );
        let code = self.config.close_codes.revoked;
        if self.config.channels_die_with_token {
            remove_channel(inner, id, Some(notice), code, "token revoked");
        } else if let Some(link) = inner.channels.get(id).and_then(|c| c.socket.as_ref()) {
            let _ = link.data.try_send(Outbound {
                frame: notice,
                not_before: None,
                late: false,
            });
        }
    }

    /// Revokes a token and ends its channels.
    pub(crate) fn revoke(&self, inner: &mut Inner, token: &str) {
        inner.tokens.revoke(token);
        let ids: Vec<Arc<str>> = inner
            .channels
            .values()
            .filter(|c| c.token == token)
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            self.end_revoked(inner, &id);
        }
    }

    /// Live tokens of a client (for the fault API).
    pub(crate) fn tokens_of(&self, inner: &Inner, client_id: &str) -> Vec<String> {
        inner.tokens.of_client(client_id, Instant::now())
    }

    /// Closes every socket (the simulator is stopping).
    pub fn close_all(&self) {
        let inner = self.lock();
        for link in inner.channels.values().filter_map(|c| c.socket.as_ref()) {
            let _ = link.ctl.send(Control::Close {
                notice: None,
                code: self.config.close_codes.shutdown,
                reason: "simulator shutting down".to_owned(),
            });
        }
    }
}

/// A number in [0, 1].
fn fraction(rng: &mut Rng) -> f64 {
    rng.next_u64() as f64 / u64::MAX as f64
}

/// A `v2.system.*` notice frame.
pub(crate) fn system_frame(
    rng: &mut Rng,
    topic: &str,
    channel_id: &str,
    kind: &str,
    reason: &str,
    message: &str,
) -> Utf8Bytes {
    let body = serde_json::json!({
        "channelId": channel_id,
        "systemTopicType": kind,
        "reason": reason,
        "message": message,
    });
    notification_json(topic, &body.to_string(), &rng.uuid()).into()
}

/// `{"result":"404","message":...}`.
pub(crate) fn gone_frame(message: &str) -> Utf8Bytes {
    holdline_proto::ServerFrame::ChannelGone {
        message: Some(message.into()),
    }
    .to_json()
    .into()
}
