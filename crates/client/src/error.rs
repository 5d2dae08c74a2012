//! Errors that stop the client, sorted by what the user must fix.

use crate::rest::api::ApiError;
use crate::rest::auth::AuthError;

/// The client cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Bad configuration: a topic, a URL, a certificate file.
    #[error("{0}")]
    Config(String),
    /// The OAuth client was refused.
    #[error(transparent)]
    Auth(AuthError),
    /// The OAuth client may not subscribe what was asked.
    #[error("{0}")]
    Permission(String),
    /// A REST call failed in a way retrying cannot fix.
    #[error(transparent)]
    Api(ApiError),
    /// A bug: a task of the engine kept dying.
    #[error("internal error: {0} (please report this with the log)")]
    Internal(String),
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Auth(a) => ClientError::Auth(a),
            ApiError::Forbidden { .. } => ClientError::Permission(e.to_string()),
            ApiError::BadRequest { .. } => ClientError::Config(e.to_string()),
            other => ClientError::Api(other),
        }
    }
}

impl From<AuthError> for ClientError {
    fn from(e: AuthError) -> Self {
        ClientError::Auth(e)
    }
}

impl ClientError {
    /// True when trying again later can succeed (the service was unavailable); false when
    /// the user must change something first.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api(a) => !a.is_fatal(),
            ClientError::Auth(a) => !a.is_fatal(),
            ClientError::Config(_) | ClientError::Permission(_) | ClientError::Internal(_) => false,
        }
    }
}
