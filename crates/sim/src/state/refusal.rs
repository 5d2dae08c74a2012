//! Why the simulator refused a REST call, and the service-shaped error body for each case
//! (reference §2.3 for codes and the 429 body).

use holdline_proto::rest::ErrorBody;

use super::channels::SubscribeError;

/// A refused REST call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    NoToken,
    /// Unknown or revoked token.
    BadToken,
    /// Expired token.
    ExpiredToken,
    /// Over the per-token budget; retry after this many seconds.
    RateLimited(u64),
    /// No such entity (or not the caller's).
    NotFound(String),
    /// Malformed request.
    BadRequest(String),
    /// The OAuth client lacks this permission.
    MissingPermission(&'static str),
    /// A subscription request refused as a whole.
    Subscribe(SubscribeError),
    /// A status injected by the `rest_errors` fault.
    Injected {
        /// HTTP status.
        status: u16,
        /// `Retry-After` seconds, if any.
        retry_after: Option<u64>,
    },
}

impl Refusal {
    /// The HTTP status, the error body and the `Retry-After` seconds.
    pub fn to_parts(&self) -> (u16, ErrorBody, Option<u64>) {
        match self {
            Refusal::NoToken => (
                401,
                ErrorBody::new(
                    401,
                    "authentication.required",
                    "No authentication bearer token specified in authorization header.",
                ),
                None,
            ),
            Refusal::BadToken => (
                401,
                ErrorBody::new(401, "bad.credentials", "Invalid login credentials."),
                None,
            ),
            Refusal::ExpiredToken => (
                401,
                ErrorBody::new(
                    401,
                    "credentials.expired",
                    "The supplied credentials are expired and cannot be used.",
                ),
                None,
            ),
            Refusal::RateLimited(secs) => (429, rate_limited(*secs), Some(*secs)),
            Refusal::NotFound(what) => (404, ErrorBody::new(404, "not.found", what.clone()), None),
            Refusal::BadRequest(why) => {
                (400, ErrorBody::new(400, "bad.request", why.clone()), None)
            }
            Refusal::MissingPermission(p) => (
                403,
                ErrorBody::new(
                    403,
                    "missing.any.permissions",
                    format!(
                        "Unable to perform the requested action. You are missing the following permission(s): [{p}]"
                    ),
                ),
                None,
            ),
            Refusal::Subscribe(err) => subscribe_parts(err),
            Refusal::Injected {
                status,
                retry_after,
            } => {
                let body = match status {
                    429 => rate_limited(retry_after.unwrap_or(1)),
                    502 => ErrorBody::new(502, "bad.gateway", "Bad gateway (injected fault)"),
                    503 => ErrorBody::new(
                        503,
                        "service.unavailable",
                        "Service unavailable (injected fault)",
                    ),
                    504 => {
                        ErrorBody::new(504, "request.timeout", "Gateway timeout (injected fault)")
                    }
                    s => ErrorBody::new(*s, "internal.server.error", "Injected fault"),
                };
                (*status, body, *retry_after)
            }
        }
    }
}

fn rate_limited(secs: u64) -> ErrorBody {
    ErrorBody::new(
        429,
        "too.many.requests.retry.after",
        format!("Rate limit exceeded the maximum. Retry the request in [{secs}] seconds"),
    )
}

fn subscribe_parts(err: &SubscribeError) -> (u16, ErrorBody, Option<u64>) {
    match err {
        SubscribeError::BadTopic(e) => {
            (400, ErrorBody::new(400, "bad.request", e.to_string()), None)
        }
        SubscribeError::Forbidden(list) => {
            let detail: Vec<String> = list
                .iter()
                .map(|(t, p)| format!("{t} (needs {})", p.join(", ")))
                .collect();
            let body = ErrorBody::new(
                403,
                "missing.permissions",
                format!(
                    "Missing permissions for {}; no topic of this request was subscribed. \
                     Grant the permissions or subscribe with ignoreErrors=true.",
                    detail.join("; ")
                ),
            );
            (403, body, None)
        }
        SubscribeError::TooMany { count, max } => (
            400,
            ErrorBody::new(
                400,
                "bad.request",
                format!(
                    "A channel may hold at most {max} topics; this request would leave {count}."
                ),
            ),
            None,
        ),
    }
}
