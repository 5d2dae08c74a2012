//! `POST /oauth/token`: the client-credentials grant with HTTP Basic client
//! authentication, and the RFC 6749 error bodies the service answers with (reference §1.2).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use holdline_proto::rest::{OAuthError, TokenReply};

use crate::state::{Core, OAuthProblem};

/// Issues a token.
pub async fn token(State(core): State<Arc<Core>>, headers: HeaderMap, body: String) -> Response {
    let form = form_pairs(&body);
    let grant = form
        .iter()
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.as_str());
    let Some((id, secret)) = basic_credentials(&headers) else {
        let hint = if form.iter().any(|(k, _)| k == "client_id") {
            "send the client id and secret as HTTP Basic authentication, not in the form body"
        } else {
            "client authentication required (HTTP Basic with client id and secret)"
        };
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", hint);
    };
    if grant != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    match core.issue_token(&id, &secret) {
        Ok(access_token) => Json(TokenReply {
            access_token,
            token_type: "bearer".to_owned(),
            expires_in: core.config.token_ttl.as_secs().max(1),
        })
        .into_response(),
        Err(OAuthProblem::UnknownClient) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "client not found",
        ),
        Err(OAuthProblem::WrongSecret) => oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "authentication failed",
        ),
        Err(problem) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("{problem:?}"),
        ),
    }
}

fn oauth_error(status: StatusCode, error: &str, text: &str) -> Response {
    let body = OAuthError {
        error: error.to_owned(),
        description: Some(text.to_owned()),
        error_description: Some(text.to_owned()),
    };
    (status, Json(body)).into_response()
}

/// `Authorization: Basic base64(id:secret)`.
pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// Decodes `application/x-www-form-urlencoded` pairs.
pub fn form_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3) {
                Some(&[h, l]) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                    out.push(digit(h) * 16 + digit(l));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        assert_eq!(
            form_pairs("grant_type=client_credentials&x=a%20b+c&bad=%zz&end=%4"),
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("x".into(), "a b c".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }
}
