//! Many orgs on one port. Each org is a whole simulator core (its clients, tokens,
//! channels, ledger, rate limits, faults and generator) behind its own router; a request
//! goes to the org it belongs to: a token request by its client id, an API call by its
//! bearer token, a socket by its channel id, a `/sim/` call by `?org=` (a fault naming a
//! channel or a client also by that). Nothing one org
//! does can reach another's state.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use super::error::ApiError;
use crate::faults::Applied;
use crate::state::Core;

/// The orgs and their routers.
pub struct Orgs {
    cores: Vec<Arc<Core>>,
    routers: Vec<axum::Router>,
}

impl Orgs {
    /// Routes over `cores` (at least one).
    pub fn new(cores: Vec<Arc<Core>>) -> Orgs {
        let routers = cores.iter().map(|c| super::router(c.clone())).collect();
        Orgs { cores, routers }
    }

    /// One router for every org.
    pub fn router(self) -> axum::Router {
        let orgs = Arc::new(self);
        axum::Router::new().fallback(move |req: Request| {
            let orgs = orgs.clone();
            async move { orgs.dispatch(req).await }
        })
    }

    async fn dispatch(&self, req: Request) -> Response {
        let path = req.uri().path();
        let picked = if path.starts_with("/sim/") {
            match self.by_query(&req) {
                Ok(Some(i)) => Some(i),
                Ok(None) => return self.every_org(req).await,
                Err(e) => return e.into_response(),
            }
        } else if path.starts_with("/oauth/") {
            super::oauth::basic_credentials(req.headers())
                .and_then(|(id, _)| self.cores.iter().position(|c| c.has_client(&id)))
        } else if let Some(id) = path.strip_prefix("/channels/") {
            self.cores.iter().position(|c| c.has_channel(id))
        } else {
            bearer(&req).and_then(|t| self.cores.iter().position(|c| c.issued(t)))
        };
        // Nobody's: the first org answers (an unknown client, token or channel).
        let router = self.routers[picked.unwrap_or(0)].clone();
        match router.oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    /// The org a `/sim/` call names with `?org=`; None when it names none.
    fn by_query(&self, req: &Request) -> Result<Option<usize>, ApiError> {
        let Some(name) = req
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|kv| kv.strip_prefix("org="))
        else {
            return Ok(None);
        };
        match self.cores.iter().position(|c| &*c.name == name) {
            Some(i) => Ok(Some(i)),
            None => Err(ApiError::not_found(format!(
                "no org {name:?}; this simulator serves org-1 … org-{}",
                self.cores.len()
            ))),
        }
    }

    /// A `/sim/` call that names no org: channels and faults apply to every org; the rest
    /// need `?org=`.
    async fn every_org(&self, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/sim/channels" | "/sim/faults" => {}
            _ => {
                return ApiError::bad_request(format!(
                    "{path} is per org here: add ?org=org-1 (… org-{})",
                    self.cores.len()
                ))
                .into_response();
            }
        }
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, 1 << 20).await {
            Ok(b) => b,
            Err(e) => {
                return ApiError::bad_request(format!("cannot read the body: {e}")).into_response();
            }
        };
        // A fault aimed at one channel or one client goes to the org that holds it.
        let fault = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let field = |key: &str| fault.as_ref()?.get(key)?.as_str().map(str::to_owned);
        let aimed = match (field("channel"), field("client")) {
            (Some(channel), _) => Some(self.cores.iter().position(|c| c.has_channel(&channel))),
            (None, Some(client)) => Some(self.cores.iter().position(|c| c.has_client(&client))),
            (None, None) => None,
        };
        if let Some(i) = aimed {
            let mut one = Request::from_parts(parts.clone(), Body::from(body.clone()));
            *one.extensions_mut() = parts.extensions.clone();
            return match self.routers[i.unwrap_or(0)].clone().oneshot(one).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
        }
        let mut merged: Vec<serde_json::Value> = Vec::new();
        let mut kind = String::new();
        for router in &self.routers {
            let mut one = Request::from_parts(parts.clone(), Body::from(body.clone()));
            *one.extensions_mut() = parts.extensions.clone();
            let resp = match router.clone().oneshot(one).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            if !resp.status().is_success() {
                return resp;
            }
            let Ok(bytes) = axum::body::to_bytes(resp.into_body(), usize::MAX).await else {
                continue;
            };
            if path == "/sim/faults" {
                if let Ok(applied) = serde_json::from_slice::<Applied>(&bytes) {
                    kind = applied.kind;
                    merged.extend(
                        applied
                            .applied_to
                            .into_iter()
                            .map(serde_json::Value::String),
                    );
                }
            } else if let Ok(serde_json::Value::Array(list)) = serde_json::from_slice(&bytes) {
                merged.extend(list);
            }
        }
        if path == "/sim/faults" {
            Json(serde_json::json!({"kind": kind, "applied_to": merged})).into_response()
        } else {
            Json(merged).into_response()
        }
    }
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim()
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}
