//! The `Authorization: Bearer` check every `/api/v2` call goes through (with the
//! per-token rate limit).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::state::{Caller, Core};

/// An authenticated caller, extracted from the bearer token.
pub struct Auth(pub Caller);

impl FromRequestParts<Arc<Core>> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, core: &Arc<Core>) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        core.authorize(bearer).map(Auth).map_err(ApiError)
    }
}
