//! REST error responses shaped like the service's: an `ErrorBody` with a correlation id,
//! and `Retry-After` on 429s.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdline_proto::rest::ErrorBody;

use crate::rng::Rng;
use crate::state::refusal::Refusal;

/// A refused call, ready to become a response.
#[derive(Debug)]
pub struct ApiError(pub Refusal);

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError(r)
    }
}

impl ApiError {
    /// 400 with a message.
    pub fn bad_request(why: impl Into<String>) -> Self {
        ApiError(Refusal::BadRequest(why.into()))
    }

    /// 404 with a message.
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError(Refusal::NotFound(what.into()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body, retry_after) = self.0.to_parts();
        error_response(status, body, retry_after)
    }
}

/// An error body response with a fresh correlation id.
pub fn error_response(status: u16, mut body: ErrorBody, retry_after: Option<u64>) -> Response {
    let correlation = Rng::from_entropy().uuid();
    body.context_id = Some(correlation.clone());
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        headers.insert("inin-correlation-id", v);
    }
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
