//! The token source: client-credentials tokens from the `login.` host, cached, renewed at
//! 80 % of their life and after a 401. `invalid_client` is fatal and explained (region,
//! client id, likely causes); the secret never appears anywhere.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use holdline_proto::rest::{OAuthError, TokenReply};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::channel::rollover::MAX_LIFE;
use crate::config::{Credentials, Endpoints, Secret, Timings};
use crate::rest::backoff::Backoff;
use crate::telemetry::stats::Stats;

/// Fraction of a token's life after which it is renewed.
const RENEW_AT: f64 = 0.8;
/// Attempts at the token endpoint before reporting it unavailable.
const ATTEMPTS: u32 = 5;

/// A bearer token. `Debug` shows only its expiry.
#[derive(Clone)]
pub struct Token {
    value: Secret,
    /// When it was obtained.
    pub issued: Instant,
    /// When it stops working.
    pub expires: Instant,
    /// The same, as wall-clock time.
    pub expires_wall: SystemTime,
}

impl Token {
    /// The token for an `Authorization: Bearer` header.
    pub fn expose(&self) -> &str {
        self.value.expose()
    }

    /// The token a reply describes, its life taken as at most 48 h (the most an OAuth
    /// client may be set to) and at least a second, whatever `expires_in` says.
    fn from_reply(reply: TokenReply, now: Instant, wall: SystemTime) -> Token {
        let secs = reply.expires_in.clamp(1, MAX_LIFE.as_secs());
        let life = Duration::from_secs(secs);
        Token {
            value: Secret::new(reply.access_token),
            issued: now,
            expires: now + life,
            expires_wall: wall + life,
        }
    }

    fn renew_at(&self) -> Instant {
        self.issued + (self.expires - self.issued).mul_f64(RENEW_AT)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[redacted]")
            .field("expires", &self.expires)
            .finish()
    }
}

/// Why the token endpoint said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientProblem {
    /// `client not found`.
    UnknownClient,
    /// `authentication failed`.
    WrongSecret,
    /// Any other `invalid_client`.
    Other(String),
}

/// A token could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// The OAuth client was refused: fatal.
    #[error("{}", invalid_client_text(.endpoints, .client_id, .problem))]
    InvalidClient {
        /// Where we asked.
        endpoints: String,
        /// The client id (never the secret).
        client_id: String,
        /// What the service said.
        problem: ClientProblem,
    },
    /// Another refusal (4xx): fatal.
    #[error("the token endpoint {url} refused the request ({status}: {detail})")]
    Refused {
        /// Token URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Error and description.
        detail: String,
    },
    /// The server's TLS certificate is not trusted: fatal.
    #[error(
        "TLS with {url} failed: {detail}. If a proxy inspects TLS, pass its root certificate with --ca-file"
    )]
    Tls {
        /// Token URL.
        url: String,
        /// What rustls said.
        detail: String,
    },
    /// The endpoint could not be reached or kept failing: retryable.
    #[error("the token endpoint {url} is unavailable: {detail}")]
    Unavailable {
        /// Token URL.
        url: String,
        /// The last failure.
        detail: String,
    },
}

impl AuthError {
    /// True when retrying cannot help.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, AuthError::Unavailable { .. })
    }
}

fn invalid_client_text(endpoints: &str, client_id: &str, problem: &ClientProblem) -> String {
    match problem {
        ClientProblem::UnknownClient => format!(
            "OAuth client {client_id:?} was not found at {endpoints}. Likely causes: the client \
             belongs to another region (set GENESYSCLOUD_REGION or --region to the region of \
             your org), the client id is mistyped, or the client was deleted."
        ),
        ClientProblem::WrongSecret => format!(
            "OAuth client {client_id:?} exists at {endpoints} but authentication failed: the \
             client secret is wrong (check GENESYSCLOUD_OAUTHCLIENT_SECRET; secrets are shown \
             once when the client is created, so regenerate it if in doubt)."
        ),
        ClientProblem::Other(text) => format!(
            "OAuth client {client_id:?} was refused at {endpoints}: {text}. Check that it is a \
             client-credentials client of this region."
        ),
    }
}

/// Gets and caches tokens.
pub struct TokenSource {
    http: reqwest::Client,
    url: String,
    endpoints: String,
    credentials: Credentials,
    timings: Timings,
    cached: Mutex<Option<Token>>,
    stats: std::sync::OnceLock<Arc<Stats>>,
}

impl TokenSource {
    /// A token source for `endpoints`.
    pub fn new(
        http: reqwest::Client,
        endpoints: &Endpoints,
        credentials: Credentials,
        timings: Timings,
    ) -> Arc<Self> {
        Arc::new(TokenSource {
            http,
            url: format!("{}/oauth/token", endpoints.login_base()),
            endpoints: endpoints.to_string(),
            credentials,
            timings,
            cached: Mutex::new(None),
            stats: std::sync::OnceLock::new(),
        })
    }

    /// Counts token requests and their answers in `stats` from now on.
    pub fn observe(&self, stats: Arc<Stats>) {
        let _ = self.stats.set(stats);
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.credentials.client_id
    }

    /// A valid token: the cached one until 80 % of its life, then a new one.
    pub async fn token(&self) -> Result<Token, AuthError> {
        self.token_lasting(Duration::ZERO).await
    }

    /// A token that stays valid for at least `at_least` (fetches a new one if the cached
    /// token would expire sooner). Channels die with their token, so a new channel is
    /// created with a token that will outlive it.
    pub async fn token_lasting(&self, at_least: Duration) -> Result<Token, AuthError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some(token) = cached.as_ref()
            && now < token.renew_at()
            && token.expires > now + at_least
        {
            return Ok(token.clone());
        }
        let token = self.fetch().await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Forgets `token` after the API refused it, so the next call fetches a new one.
    pub async fn invalidate(&self, token: &Token) {
        let mut cached = self.cached.lock().await;
        if cached
            .as_ref()
            .is_some_and(|t| t.expose() == token.expose())
        {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<Token, AuthError> {
        let mut backoff = Backoff::new(self.timings.backoff_base, self.timings.backoff_max);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff.next().unwrap_or_default()).await;
            }
            match self.request().await {
                Ok(token) => {
                    crate::telemetry::notable::token_fetched(self.stats.get().map(|s| &**s));
                    return Ok(token);
                }
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry { detail, wait }) => {
                    crate::telemetry::notable::token_retry(&self.url, attempt, &detail);
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                    last = detail;
                }
            }
        }
        Err(AuthError::Unavailable {
            url: self.url.clone(),
            detail: last,
        })
    }

    async fn request(&self) -> Result<Token, Attempt> {
        let sent = self
            .http
            .post(&self.url)
            .basic_auth(
                &self.credentials.client_id,
                Some(self.credentials.client_secret.expose()),
            )
            .form(&[("grant_type", "client_credentials")])
            .timeout(self.timings.request_timeout)
            .send()
            .await;
        let stats = self.stats.get();
        if let (Some(stats), Err(_)) = (stats, &sent) {
            stats.rest_call("request token", 0);
        }
        let resp = sent.map_err(|e| match tls_failure(&e) {
            Some(detail) => Attempt::Fatal(AuthError::Tls {
                url: self.url.clone(),
                detail,
            }),
            None => Attempt::Retry {
                detail: transport_detail(&e),
                wait: None,
            },
        })?;
        let status = resp.status().as_u16();
        if let Some(stats) = stats {
            stats.rest_call("request token", status);
        }
        let retry_after = crate::rest::api::retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        match status {
            200 => {
                let reply: TokenReply = serde_json::from_str(&text).map_err(|e| {
                    Attempt::Fatal(AuthError::Refused {
                        url: self.url.clone(),
                        status,
                        detail: format!("unreadable token reply: {e}"),
                    })
                })?;
                tracing::debug!(expires_in = reply.expires_in, "token obtained");
                Ok(Token::from_reply(reply, Instant::now(), SystemTime::now()))
            }
            429 | 500..=599 => Err(Attempt::Retry {
                detail: format!("HTTP {status}"),
                wait: retry_after,
            }),
            _ => Err(Attempt::Fatal(self.refusal(status, &text))),
        }
    }

    fn refusal(&self, status: u16, text: &str) -> AuthError {
        let body: Option<OAuthError> = serde_json::from_str(text).ok();
        let Some(body) = body else {
            return AuthError::Refused {
                url: self.url.clone(),
                status,
                detail: short(text),
            };
        };
        let described = body
            .description
            .or(body.error_description)
            .unwrap_or_default();
        if body.error != "invalid_client" {
            return AuthError::Refused {
                url: self.url.clone(),
                status,
                detail: format!("{}: {described}", body.error),
            };
        }
        let problem = match described.as_str() {
            "client not found" => ClientProblem::UnknownClient,
            "authentication failed" => ClientProblem::WrongSecret,
            other => ClientProblem::Other(other.to_owned()),
        };
        AuthError::InvalidClient {
            endpoints: self.endpoints.clone(),
            client_id: self.credentials.client_id.clone(),
            problem,
        }
    }
}

enum Attempt {
    Fatal(AuthError),
    Retry {
        detail: String,
        wait: Option<Duration>,
    },
}

/// The TLS error behind a transport error, if that is what it was.
pub(crate) fn tls_failure(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // hyper wraps the TLS error in an io::Error; rustls describes certificate failures
        // as "invalid peer certificate: …".
        let text = s.to_string();
        if text.contains("invalid peer certificate")
            || text.contains("certificate") && text.contains("TLS")
        {
            return Some(text);
        }
        source = s.source();
    }
    None
}

/// A transport error described without its URL's query or any header.
pub(crate) fn transport_detail(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    let mut detail = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    detail
}

fn short(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_token_life_is_capped_and_cannot_overflow() {
        let now = Instant::now();
        for expires_in in [u64::MAX, 10 * 365 * 86_400] {
            let reply: TokenReply = serde_json::from_str(&format!(
                r#"{{"access_token":"a","token_type":"bearer","expires_in":{expires_in}}}"#
            ))
            .unwrap();
            let token = Token::from_reply(reply, now, SystemTime::now());
            assert_eq!(token.expires - now, MAX_LIFE);
            assert!(token.renew_at() > now);
        }
        let zero: TokenReply =
            serde_json::from_str(r#"{"access_token":"a","token_type":"bearer","expires_in":0}"#)
                .unwrap();
        assert_eq!(
            Token::from_reply(zero, now, SystemTime::now()).expires - now,
            Duration::from_secs(1)
        );
    }
}
