//! The REST API: channels, subscriptions, the org look-ups. Every call has a timeout;
//! 429 waits for `Retry-After`; 502/503/504 and transport errors are retried with capped,
//! jittered backoff; a 401 renews the token once. What cannot succeed by retrying
//! (400, 403, bad credentials) comes back as a fatal error that says what to do.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use holdline_proto::rest::{
    AvailableTopic, Channel, ChannelTopic, EntityListing, ErrorBody, Queue, TopicState, User,
};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::de::DeserializeOwned;

use crate::config::Timings;
use crate::rest::auth::{AuthError, Token, TokenSource, transport_detail};
use crate::rest::backoff::Backoff;
use crate::telemetry::stats::Stats;

/// Retries of 5xx/transport failures per call.
const RETRIES: u32 = 5;
/// 429s honoured per call before giving up.
const RATE_LIMIT_WAITS: u32 = 10;
/// Longest `Retry-After` believed: a longer one (or an absurd number) waits this long.
/// The wait runs beside the sockets, never in front of them.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Wait when a 429 has no `Retry-After` (the SDKs' default).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(3);

/// A REST call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No token could be had.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 401 even with a fresh token.
    #[error("{what}: the service refused a fresh token (401 {message})")]
    Unauthorized {
        /// The call.
        what: &'static str,
        /// The service's message.
        message: String,
    },
    /// 403.
    #[error(
        "{what}: permission denied (403 {message}); grant the OAuth client's role the permission named"
    )]
    Forbidden {
        /// The call.
        what: &'static str,
        /// The service's message.
        message: String,
    },
    /// 400.
    #[error("{what}: bad request (400 {message})")]
    BadRequest {
        /// The call.
        what: &'static str,
        /// The service's message.
        message: String,
    },
    /// 404.
    #[error("{what}: not found")]
    NotFound {
        /// The call.
        what: &'static str,
    },
    /// Kept failing with 429/5xx/transport errors, or another status.
    #[error("{what}: {detail}")]
    Unavailable {
        /// The call.
        what: &'static str,
        /// The last failure.
        detail: String,
    },
}

impl ApiError {
    /// True when retrying cannot help.
    pub fn is_fatal(&self) -> bool {
        match self {
            ApiError::Auth(e) => e.is_fatal(),
            ApiError::Unauthorized { .. }
            | ApiError::Forbidden { .. }
            | ApiError::BadRequest { .. } => true,
            ApiError::NotFound { .. } | ApiError::Unavailable { .. } => false,
        }
    }
}

/// A topic the service would not subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The topic.
    pub topic: String,
    /// Permissions the OAuth client lacks.
    pub missing_permissions: Vec<String>,
    /// The service's reason.
    pub reason: Option<String>,
}

/// What a subscribe call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscribed {
    /// Topics now on the channel.
    pub permitted: Vec<String>,
    /// Topics refused.
    pub rejected: Vec<Rejected>,
}

/// The notifications and org REST API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    auth: Arc<TokenSource>,
    timings: Timings,
    stats: Option<Arc<Stats>>,
    /// Calls use this token while it lasts, instead of the source's newest.
    pinned: Option<Token>,
}

/// A pinned token is used only while it has at least this much life left.
const PIN_MARGIN: Duration = Duration::from_secs(1);

/// The `Retry-After` header in seconds, if present, capped at [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !text.bytes().all(|b| b.is_ascii_digit()) || text.is_empty() {
        return None;
    }
    // Digits that do not fit a u64 are still a number of seconds: a very long one.
    let secs = text.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER.as_secs())))
}

impl Api {
    /// An API client for `base` using `auth` for tokens.
    pub fn new(
        http: reqwest::Client,
        base: String,
        auth: Arc<TokenSource>,
        timings: Timings,
    ) -> Self {
        Api {
            http,
            base,
            auth,
            timings,
            stats: None,
            pinned: None,
        }
    }

    /// The same API, calling with `token` while it lasts (then, or after a 401, with the
    /// token source's). For calls on a channel: a service may answer only the token that
    /// created a channel for it.
    pub fn pinned_to(&self, token: Token) -> Api {
        Api {
            pinned: Some(token),
            ..self.clone()
        }
    }

    /// Counts calls (by what they did and their status) and 429 waits in `stats`, and
    /// token requests too.
    pub fn observed(mut self, stats: Arc<Stats>) -> Self {
        self.auth.observe(stats.clone());
        self.stats = Some(stats);
        self
    }

    /// The token source.
    pub fn auth(&self) -> &Arc<TokenSource> {
        &self.auth
    }

    /// Sends a call with the retry policy; returns the success response, its body and the
    /// token used.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &'static str,
    ) -> Result<(StatusCode, String, Token), ApiError> {
        let url = format!("{}{path}", self.base);
        let mut backoff = Backoff::new(self.timings.backoff_base, self.timings.backoff_max);
        let (mut refreshed, mut failures, mut waits) = (false, 0, 0);
        loop {
            let pinned = self
                .pinned
                .as_ref()
                .filter(|t| !refreshed && t.expires > Instant::now() + PIN_MARGIN);
            let token = match pinned {
                Some(token) => token.clone(),
                None => self.auth.token().await?,
            };
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .timeout(self.timings.request_timeout);
            if let Some(body) = body {
                req = req.json(body);
            }
            let (status, headers, text) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if let Some(stats) = &self.stats {
                        stats.rest_call(what, status.as_u16());
                    }
                    let headers = resp.headers().clone();
                    match resp.text().await {
                        Ok(text) => (status, headers, text),
                        Err(e) => (StatusCode::BAD_GATEWAY, headers, transport_detail(&e)),
                    }
                }
                Err(e) => {
                    if let Some(stats) = &self.stats {
                        stats.rest_call(what, 0);
                    }
                    (
                        StatusCode::BAD_GATEWAY,
                        HeaderMap::new(),
                        transport_detail(&e),
                    )
                }
            };
            let message = || error_message(&text);
            match status.as_u16() {
                200..=299 => return Ok((status, text, token)),
                401 if !refreshed => {
                    refreshed = true;
                    self.auth.invalidate(&token).await;
                }
                401 => {
                    return Err(ApiError::Unauthorized {
                        what,
                        message: message(),
                    });
                }
                403 => {
                    return Err(ApiError::Forbidden {
                        what,
                        message: message(),
                    });
                }
                400 => {
                    return Err(ApiError::BadRequest {
                        what,
                        message: message(),
                    });
                }
                404 => return Err(ApiError::NotFound { what }),
                429 if waits < RATE_LIMIT_WAITS => {
                    waits += 1;
                    let wait = retry_after(&headers).unwrap_or(DEFAULT_RETRY_AFTER);
                    crate::telemetry::notable::rate_limited(self.stats.as_deref(), what, wait);
                    tokio::time::sleep(wait).await;
                }
                429 | 500..=599 if failures < RETRIES => {
                    failures += 1;
                    let wait = backoff.next().unwrap_or_default();
                    crate::telemetry::notable::rest_retry(
                        what,
                        status.as_u16(),
                        &short(&text),
                        wait,
                    );
                    tokio::time::sleep(wait).await;
                }
                code => {
                    return Err(ApiError::Unavailable {
                        what,
                        detail: format!("HTTP {code}: {}", short(&message())),
                    });
                }
            }
        }
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &'static str,
    ) -> Result<T, ApiError> {
        let (_, text, _) = self.call(Method::GET, path, None, what).await?;
        decode(&text, what)
    }

    /// A JSON value from `GET path`.
    pub async fn get_value(
        &self,
        path: &str,
        what: &'static str,
    ) -> Result<serde_json::Value, ApiError> {
        self.get_json(path, what).await
    }

    /// A JSON value from `POST path` with `body`.
    pub async fn post_value(
        &self,
        path: &str,
        body: &serde_json::Value,
        what: &'static str,
    ) -> Result<serde_json::Value, ApiError> {
        let (_, text, _) = self.call(Method::POST, path, Some(body), what).await?;
        decode(&text, what)
    }

    /// `POST /api/v2/notifications/channels`; also returns the token the channel belongs to.
    pub async fn create_channel(&self) -> Result<(Channel, Token), ApiError> {
        let what = "create channel";
        let (_, text, token) = self
            .call(Method::POST, "/api/v2/notifications/channels", None, what)
            .await?;
        Ok((decode(&text, what)?, token))
    }

    /// `HEAD` the channel: true if it still exists.
    pub async fn channel_exists(&self, id: &str) -> Result<bool, ApiError> {
        let path = format!("/api/v2/notifications/channels/{id}");
        match self.call(Method::HEAD, &path, None, "check channel").await {
            Ok(_) => Ok(true),
            Err(ApiError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /api/v2/notifications/channels` (`all`: every channel of the OAuth client).
    pub async fn list_channels(&self, all: bool) -> Result<Vec<Channel>, ApiError> {
        let q = if all {
            "?includechannels=oauthclient"
        } else {
            ""
        };
        let listing: EntityListing<Channel> = self
            .get_json(
                &format!("/api/v2/notifications/channels{q}"),
                "list channels",
            )
            .await?;
        Ok(listing.entities)
    }

    /// `PUT …/subscriptions?ignoreErrors=true`: replaces the channel's topics; topics the
    /// client may not see come back as rejected instead of failing the call.
    pub async fn set_subscriptions(
        &self,
        channel: &str,
        topics: &[String],
    ) -> Result<Subscribed, ApiError> {
        let what = "subscribe topics";
        let path =
            format!("/api/v2/notifications/channels/{channel}/subscriptions?ignoreErrors=true");
        let body = serde_json::Value::Array(
            topics
                .iter()
                .map(|t| serde_json::json!({"id": t}))
                .collect(),
        );
        let (_, text, _) = self.call(Method::PUT, &path, Some(&body), what).await?;
        let listing: EntityListing<ChannelTopic> = decode(&text, what)?;
        let mut out = Subscribed::default();
        for entry in listing.entities {
            match entry.state {
                Some(TopicState::Rejected) => out.rejected.push(Rejected {
                    topic: entry.id,
                    missing_permissions: entry.missing_permissions,
                    reason: entry.rejection_reason,
                }),
                _ => out.permitted.push(entry.id),
            }
        }
        Ok(out)
    }

    /// `DELETE …/subscriptions`.
    pub async fn clear_subscriptions(&self, channel: &str) -> Result<(), ApiError> {
        let path = format!("/api/v2/notifications/channels/{channel}/subscriptions");
        self.call(Method::DELETE, &path, None, "clear subscriptions")
            .await
            .map(|_| ())
    }

    /// `GET /api/v2/notifications/availabletopics`: the topics the service offers, with the
    /// permissions each needs.
    pub async fn available_topics(&self) -> Result<Vec<AvailableTopic>, ApiError> {
        let path = "/api/v2/notifications/availabletopics?expand=description,requiresPermissions,transports";
        let listing: EntityListing<AvailableTopic> =
            self.get_json(path, "list available topics").await?;
        Ok(listing.entities)
    }

    /// Every queue (optionally only those matching `name`), following the pages.
    pub async fn queues(&self, name: Option<&str>) -> Result<Vec<Queue>, ApiError> {
        let filter = name
            .map(|n| format!("&name={}", encode(n)))
            .unwrap_or_default();
        self.all_pages(
            |page| format!("/api/v2/routing/queues?pageSize=100&pageNumber={page}{filter}"),
            "list queues",
        )
        .await
    }

    /// Every user, following the pages.
    pub async fn users(&self) -> Result<Vec<User>, ApiError> {
        self.all_pages(
            |page| format!("/api/v2/users?pageSize=100&pageNumber={page}"),
            "list users",
        )
        .await
    }

    async fn all_pages<T: DeserializeOwned>(
        &self,
        path: impl Fn(u32) -> String,
        what: &'static str,
    ) -> Result<Vec<T>, ApiError> {
        let mut out = Vec::new();
        for page in 1.. {
            let listing: EntityListing<T> = self.get_json(&path(page), what).await?;
            let done = listing.entities.is_empty() || listing.page_count.is_none_or(|c| page >= c);
            out.extend(listing.entities);
            if done {
                break;
            }
        }
        Ok(out)
    }
}

/// How long from now until `expires` (an RFC 3339 time from the service), capped at
/// 48 h (no channel lives longer); None when it cannot be read.
pub fn left_until(expires: &str) -> Option<Duration> {
    let at = time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        .ok()?;
    let left = at - time::OffsetDateTime::now_utc();
    Some(
        Duration::try_from(left)
            .unwrap_or(Duration::ZERO)
            .min(crate::channel::rollover::MAX_LIFE),
    )
}

fn decode<T: DeserializeOwned>(text: &str, what: &'static str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError::Unavailable {
        what,
        detail: format!("unreadable reply: {e}"),
    })
}

fn error_message(text: &str) -> String {
    serde_json::from_str::<ErrorBody>(text)
        .ok()
        .filter(|b| !b.message.is_empty())
        .map_or_else(
            || short(text),
            |b| {
                if b.code.is_empty() {
                    b.message
                } else {
                    format!("{}: {}", b.code, b.message)
                }
            },
        )
}

fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("Sales & Support"), "Sales%20%26%20Support");
        assert_eq!(encode("Sup*"), "Sup*");
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "42".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(42)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
        for absurd in [
            "18446744073709551615",
            "99999999999999999999999999",
            "86400",
        ] {
            h.insert(reqwest::header::RETRY_AFTER, absurd.parse().unwrap());
            assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER), "{absurd}");
        }
        h.insert(reqwest::header::RETRY_AFTER, "-5".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_messages_prefer_the_error_body() {
        assert_eq!(
            error_message(r#"{"message":"nope","code":"bad.request","status":400}"#),
            "bad.request: nope"
        );
        assert_eq!(error_message("plain"), "plain");
    }
}
