//! The fault control API (`POST /sim/faults`): what can go wrong with the service, on
//! demand. Socket faults act on connected sockets; channel faults on channels; delivery
//! faults change how later events are delivered; `rest_errors` fails the next REST calls.
//! `channel` omitted means every channel.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::{Duration, Instant};

use crate::state::channels::{Control, DeliveryFaults, Outbound, TimedFault};
use crate::state::{Core, Inner, RestFault, remove_channel};

/// One fault to inject.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Abort the TCP connection: RST, no close frame.
    Drop {
        /// Target channel (all when omitted).
        channel: Option<String>,
    },
    /// Send a close frame.
    Close {
        /// Target channel.
        channel: Option<String>,
        /// Close code (default 1000).
        code: Option<u16>,
        /// Close reason.
        reason: Option<String>,
    },
    /// Keep TCP open but send and read nothing for `ms` (a half-open connection).
    Stall {
        /// Target channel.
        channel: Option<String>,
        /// How long.
        ms: u64,
    },
    /// Send `v2.system.socket_closing`, then close after `grace_ms`.
    SocketClosing {
        /// Target channel.
        channel: Option<String>,
        /// Grace before the close (default: the configured closing grace).
        grace_ms: Option<u64>,
    },
    /// Remove the channel as the 20-channel rule would.
    Evict {
        /// Target channel.
        channel: Option<String>,
    },
    /// Expire the channel now.
    Expire {
        /// Target channel.
        channel: Option<String>,
    },
    /// Revoke the token behind a channel, or every token of a client.
    RevokeToken {
        /// The channel whose token to revoke.
        channel: Option<String>,
        /// The client whose tokens to revoke.
        client: Option<String>,
    },
    /// Delete an OAuth client (as an admin would, or as deleting its org does): the token
    /// endpoint answers `invalid_client` for it from now on and its tokens are revoked
    /// (their channels end as revoked tokens' channels do).
    RevokeClient {
        /// The client id.
        client: String,
    },
    /// Give an OAuth client these permissions from now on (its role changed): later
    /// subscriptions are checked against them; topics already subscribed stay.
    Grant {
        /// The client id.
        client: String,
        /// The permissions (`*` for all; empty for none).
        permissions: Vec<String>,
    },
    /// Fail the next `count` REST calls with `status` (or every call for `for_ms`).
    RestErrors {
        /// HTTP status (429, 500, 502, 503, 504, ...).
        status: u16,
        /// How many calls (default 1).
        count: Option<u32>,
        /// Fail every matching call for this long instead (an outage).
        for_ms: Option<u64>,
        /// `Retry-After` seconds (429s get 1 when omitted).
        retry_after: Option<u64>,
        /// Only calls whose path starts with this.
        path: Option<String>,
        /// Only calls with this method.
        method: Option<String>,
    },
    /// Add `ms` of latency to deliveries.
    Delay {
        /// Target channel.
        channel: Option<String>,
        /// Added latency.
        ms: u64,
        /// Lasts this long (until cleared when omitted).
        for_ms: Option<u64>,
        /// Lasts this many events.
        count: Option<u64>,
    },
    /// Deliver each event twice.
    Duplicate {
        /// Target channel.
        channel: Option<String>,
        /// Lasts this long (until cleared when omitted).
        for_ms: Option<u64>,
        /// Lasts this many events.
        count: Option<u64>,
    },
    /// Send one frame that is not valid JSON.
    Malformed {
        /// Target channel.
        channel: Option<String>,
        /// The text to send (a truncated notification by default).
        text: Option<String>,
    },
    /// Send one frame of `bytes` bytes.
    Oversized {
        /// Target channel.
        channel: Option<String>,
        /// Frame size.
        bytes: usize,
    },
    /// Hold the next `count` WebSocket upgrades (default 1) for `ms` before answering
    /// them (a slow load balancer).
    SlowUpgrade {
        /// Delay of each upgrade.
        ms: u64,
        /// How many upgrades.
        count: Option<u32>,
    },
    /// Remove pending REST faults and delivery faults.
    Clear {},
}

/// The fault could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// The named channel does not exist.
    #[error("no channel {0}; GET /sim/channels lists them")]
    NoChannel(String),
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// What a fault touched.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The fault kind.
    pub kind: String,
    /// Channels it was applied to.
    pub applied_to: Vec<String>,
}

const DEFAULT_MALFORMED: &str = r#"{"topicName":"v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.presence","eventBody":{"source":"PURE"#;

impl Fault {
    fn channel(&self) -> Option<&str> {
        match self {
            Fault::Drop { channel }
            | Fault::Close { channel, .. }
            | Fault::Stall { channel, .. }
            | Fault::SocketClosing { channel, .. }
            | Fault::Evict { channel }
            | Fault::Expire { channel }
            | Fault::RevokeToken { channel, .. }
            | Fault::Delay { channel, .. }
            | Fault::Duplicate { channel, .. }
            | Fault::Malformed { channel, .. }
            | Fault::Oversized { channel, .. } => channel.as_deref(),
            Fault::RestErrors { .. }
            | Fault::RevokeClient { .. }
            | Fault::Grant { .. }
            | Fault::SlowUpgrade { .. }
            | Fault::Clear {} => None,
        }
    }

    fn kind(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }
}

impl Core {
    /// Applies a fault.
    pub fn apply_fault(&self, fault: &Fault) -> Result<Applied, FaultError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let targets: Vec<Arc<str>> = match fault.channel() {
            Some(id) => {
                let key = inner.channels.get_key_value(id).map(|(k, _)| k.clone());
                vec![key.ok_or_else(|| FaultError::NoChannel(id.to_owned()))?]
            }
            None => inner.channels.keys().cloned().collect(),
        };
        let applied_to = self.apply_to(inner, fault, &targets)?;
        Ok(Applied {
            kind: fault.kind(),
            applied_to,
        })
    }

    fn apply_to(
        &self,
        inner: &mut Inner,
        fault: &Fault,
        targets: &[Arc<str>],
    ) -> Result<Vec<String>, FaultError> {
        let now = Instant::now();
        let mut applied = Vec::new();
        match fault {
            Fault::RestErrors {
                status,
                count,
                for_ms,
                retry_after,
                path,
                method,
            } => {
                if !(400..=599).contains(status) {
                    return Err(FaultError::Invalid(format!(
                        "status {status} is not an error status"
                    )));
                }
                let retry_after = retry_after.or((*status == 429).then_some(1));
                inner.rest_faults.push(RestFault {
                    status: *status,
                    remaining: count.unwrap_or(1).max(1),
                    retry_after,
                    path_prefix: path.clone(),
                    method: method.clone(),
                    until: for_ms.map(|ms| now + Duration::from_millis(ms)),
                });
                return Ok(applied);
            }
            Fault::SlowUpgrade { ms, count } => {
                inner.slow_upgrades = Some((Duration::from_millis(*ms), count.unwrap_or(1).max(1)));
                return Ok(applied);
            }
            Fault::Clear {} => {
                inner.slow_upgrades = None;
                inner.rest_faults.clear();
                inner.global_faults = DeliveryFaults::default();
                for chan in inner.channels.values_mut() {
                    chan.faults = DeliveryFaults::default();
                }
                return Ok(applied);
            }
            Fault::RevokeToken {
                channel: None,
                client: Some(client),
            } => {
                for token in self.tokens_of(inner, client) {
                    self.revoke(inner, &token);
                }
                return Ok(applied);
            }
            Fault::RevokeClient { client } => {
                let before = inner.clients.len();
                inner.clients.retain(|c| &c.id != client);
                if inner.clients.len() == before {
                    return Err(FaultError::Invalid(format!(
                        "no client {client:?} in this org"
                    )));
                }
                for token in self.tokens_of(inner, client) {
                    self.revoke(inner, &token);
                }
                return Ok(applied);
            }
            Fault::Grant {
                client,
                permissions,
            } => {
                let Some(spec) = inner.clients.iter_mut().find(|c| &c.id == client) else {
                    return Err(FaultError::Invalid(format!(
                        "no client {client:?} in this org"
                    )));
                };
                spec.permissions = permissions.clone();
                return Ok(applied);
            }
            Fault::Delay { channel: None, .. } | Fault::Duplicate { channel: None, .. } => {
                set_delivery(&mut inner.global_faults, fault, now);
                return Ok(targets.iter().map(|t| t.to_string()).collect());
            }
            _ => {}
        }
        for id in targets {
            if self.apply_one(inner, fault, id, now) {
                applied.push(id.to_string());
            }
        }
        Ok(applied)
    }

    /// Applies a fault to one channel; false when it had nothing to act on.
    fn apply_one(&self, inner: &mut Inner, fault: &Fault, id: &str, now: Instant) -> bool {
        let codes = &self.config.close_codes;
        match fault {
            Fault::Evict { .. } => {
                let notice = self.evict_notice(inner, id);
                remove_channel(inner, id, notice, codes.evicted, "channel evicted").is_some()
            }
            Fault::Expire { .. } => {
                let notice = crate::state::publish_gone(&format!("channel {id} expired"));
                remove_channel(inner, id, Some(notice), codes.expired, "channel expired").is_some()
            }
            Fault::RevokeToken { .. } => {
                let Some(token) = inner.channels.get(id).map(|c| c.token.clone()) else {
                    return false;
                };
                self.revoke(inner, &token);
                true
            }
            Fault::Delay { .. } | Fault::Duplicate { .. } => {
                let Some(chan) = inner.channels.get_mut(id) else {
                    return false;
                };
                set_delivery(&mut chan.faults, fault, now);
                true
            }
            _ => self.socket_fault(inner, fault, id),
        }
    }

    fn socket_fault(&self, inner: &mut Inner, fault: &Fault, id: &str) -> bool {
        let Some(link) = inner.channels.get(id).and_then(|c| c.socket.clone()) else {
            return false;
        };
        let data = |frame: Utf8Bytes| {
            link.data
                .try_send(Outbound {
                    frame,
                    not_before: None,
                    late: false,
                })
                .is_ok()
        };
        match fault {
            Fault::Drop { .. } => link.ctl.send(Control::Reset).is_ok(),
            Fault::Close { code, reason, .. } => link
                .ctl
                .send(Control::Close {
                    notice: None,
                    code: code.unwrap_or(1000),
                    reason: reason.clone().unwrap_or_default(),
                })
                .is_ok(),
            Fault::Stall { ms, .. } => link
                .ctl
                .send(Control::Stall(Duration::from_millis(*ms)))
                .is_ok(),
            Fault::SocketClosing { grace_ms, .. } => {
                let grace = grace_ms.map_or(self.config.closing_grace, Duration::from_millis);
                let notice = crate::state::closing_frame(&mut inner.rng, id);
                let code = self.config.close_codes.maintenance;
                link.ctl
                    .send(Control::Closing {
                        notice,
                        grace,
                        code,
                    })
                    .is_ok()
            }
            Fault::Malformed { text, .. } => data(
                text.clone()
                    .unwrap_or_else(|| DEFAULT_MALFORMED.to_owned())
                    .into(),
            ),
            Fault::Oversized { bytes, .. } => data(oversized_frame(*bytes).into()),
            _ => false,
        }
    }
}

fn set_delivery(faults: &mut DeliveryFaults, fault: &Fault, now: Instant) {
    let until = |for_ms: &Option<u64>| for_ms.map(|ms| now + Duration::from_millis(ms));
    match fault {
        Fault::Delay {
            ms, for_ms, count, ..
        } => {
            faults.delay = Some(TimedFault {
                value: Duration::from_millis(*ms),
                until: until(for_ms),
                remaining: *count,
            });
        }
        Fault::Duplicate { for_ms, count, .. } => {
            faults.duplicate = Some(TimedFault {
                value: (),
                until: until(for_ms),
                remaining: *count,
            });
        }
        _ => {}
    }
}

/// A valid JSON object of exactly `bytes` bytes (or the smallest one when `bytes` is
/// smaller), of no known frame shape, so a client that can hold it just counts it.
pub fn oversized_frame(bytes: usize) -> String {
    const HEAD: &str = r#"{"oversized":""#;
    const TAIL: &str = r#""}"#;
    let pad = bytes.saturating_sub(HEAD.len() + TAIL.len());
    let mut out = String::with_capacity(HEAD.len() + pad + TAIL.len());
    out.push_str(HEAD);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str(TAIL);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_the_documented_json() {
        let f: Fault =
            serde_json::from_str(r#"{"kind":"close","code":4000,"reason":"bye"}"#).unwrap();
        assert_eq!(
            f,
            Fault::Close {
                channel: None,
                code: Some(4000),
                reason: Some("bye".into())
            }
        );
        let f: Fault = serde_json::from_str(
            r#"{"kind":"rest_errors","status":429,"count":3,"retry_after":2}"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            Fault::RestErrors {
                status: 429,
                count: Some(3),
                ..
            }
        ));
        assert!(
            serde_json::from_str::<Fault>(r#"{"kind":"stall"}"#).is_err(),
            "ms is required"
        );
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"drop","chanel":"x"}"#).is_err());
        assert_eq!(f.kind(), "rest_errors");
    }

    #[test]
    fn oversized_frame_has_the_asked_size_and_is_json() {
        let frame = oversized_frame(100_000);
        assert_eq!(frame.len(), 100_000);
        assert!(serde_json::from_str::<serde_json::Value>(&frame).is_ok());
    }
}
