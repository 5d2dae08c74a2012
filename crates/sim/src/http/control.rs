//! The simulator's own API under `/sim/`: inject faults, publish events, list channels,
//! read the ledger and the org, run the firehose. Used by holdline's tests and by anyone
//! testing their own Genesys client.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::error::ApiError;
use crate::faults::{Applied, Fault, FaultError};
use crate::firehose::{Firehose, FirehoseReport, FirehoseRequest};
use crate::state::Core;
use crate::state::ledger::LedgerEntry;

fn parse<T: for<'de> Deserialize<'de>>(body: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("bad {what}: {e}")))
}

/// `POST /sim/faults`.
pub async fn fault(State(core): State<Arc<Core>>, body: Bytes) -> Result<Json<Applied>, ApiError> {
    let fault: Fault = parse(
        &body,
        "fault (see the README for the kinds and their fields)",
    )?;
    tracing::info!(?fault, "fault injected");
    core.apply_fault(&fault).map(Json).map_err(|e| match e {
        FaultError::NoChannel(_) => ApiError::not_found(e.to_string()),
        FaultError::Invalid(_) => ApiError::bad_request(e.to_string()),
    })
}

/// `POST /sim/publish` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Topic name.
    pub topic: String,
    /// Any JSON value; its bytes are published exactly as written here.
    pub body: Box<serde_json::value::RawValue>,
}

/// `POST /sim/publish`: publishes one event now.
pub async fn publish(
    State(core): State<Arc<Core>>,
    body: Bytes,
) -> Result<Json<LedgerEntry>, ApiError> {
    let req: PublishRequest = parse(&body, "publish request ({\"topic\": ..., \"body\": {...}})")?;
    holdline_proto::topic::classify(&req.topic)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(core.publish(&req.topic, req.body.get())))
}

/// One channel in `GET /sim/channels`.
#[derive(Debug, Serialize)]
pub struct ChannelInfo {
    id: String,
    client: String,
    token: String,
    topics: Vec<String>,
    connected: bool,
    connected_for_ms: Option<u128>,
    peer: Option<String>,
    expires_in_ms: u128,
    age_ms: u128,
    /// The code of the last close frame the client sent (none yet: absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    client_close_code: Option<u16>,
}

/// `GET /sim/channels`.
pub async fn channels(State(core): State<Arc<Core>>) -> Json<Vec<ChannelInfo>> {
    let now = Instant::now();
    let list = core.channel_infos(|c, token_label| ChannelInfo {
        id: c.id.to_string(),
        client: c.client_id.clone(),
        token: token_label.to_owned(),
        topics: c.topics.clone(),
        connected: c.socket.is_some(),
        connected_for_ms: c
            .socket
            .as_ref()
            .map(|s| now.saturating_duration_since(s.since).as_millis()),
        peer: c.socket.as_ref().map(|s| s.peer.to_string()),
        expires_in_ms: c.expires.saturating_duration_since(now).as_millis(),
        age_ms: now.saturating_duration_since(c.created).as_millis(),
        client_close_code: c.client_close,
    });
    Json(list)
}

/// `GET /sim/stats`: counts of what clients made the service do.
pub async fn stats(State(core): State<Arc<Core>>) -> Json<serde_json::Value> {
    let evictions = core.evictions();
    Json(serde_json::json!({
        "rest_calls": core.rest_calls(),
        "evictions": {"connected": evictions.connected, "unconnected": evictions.unconnected},
    }))
}

/// `GET /sim/ledger?since=SEQ&limit=N`: JSON lines, oldest first.
pub async fn ledger(
    State(core): State<Arc<Core>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let number = |key: &str, default: u64| -> Result<u64, ApiError> {
        q.get(key).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("{key} must be a number")))
        })
    };
    let since = number("since", 0)?;
    let limit = number("limit", u64::MAX)?;
    let entries = core.ledger_since(since, usize::try_from(limit).unwrap_or(usize::MAX));
    let mut out = String::with_capacity(entries.len() * 160);
    for entry in &entries {
        out.push_str(&serde_json::to_string(entry).unwrap_or_default());
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

/// `GET /sim/org`: the simulated queues and agents.
pub async fn org(State(core): State<Arc<Core>>) -> Json<serde_json::Value> {
    let queues: Vec<_> = core
        .listed_queues()
        .into_iter()
        .map(|(q, members)| serde_json::json!({"id": q.id, "name": q.name, "members": members}))
        .collect();
    let agents: Vec<_> = core
        .listed_users()
        .into_iter()
        .map(|a| {
            let queues: Vec<&str> = a
                .queues
                .iter()
                .filter_map(|i| core.org.queues.get(*i))
                .map(|q| q.id.as_str())
                .collect();
            serde_json::json!({"id": a.id, "name": a.name, "email": a.email, "queues": queues})
        })
        .collect();
    Json(serde_json::json!({"queues": queues, "agents": agents}))
}

/// `POST /sim/org/queues` and `POST /sim/org/users` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntity {
    /// Name.
    pub name: String,
    /// Email (users only).
    pub email: Option<String>,
}

/// `POST /sim/org/queues`: a new queue appears in `GET /api/v2/routing/queues`.
pub async fn add_queue(
    State(core): State<Arc<Core>>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: NewEntity = parse(&body, "queue ({\"name\": ...})")?;
    Ok(Json(
        serde_json::json!({"id": core.add_entity(&req.name, None), "name": req.name}),
    ))
}

/// `POST /sim/org/users`: a new user appears in `GET /api/v2/users`.
pub async fn add_user(
    State(core): State<Arc<Core>>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: NewEntity = parse(&body, "user ({\"name\": ..., \"email\": ...})")?;
    let email = req
        .email
        .clone()
        .ok_or_else(|| ApiError::bad_request("a user needs an email"))?;
    Ok(Json(
        serde_json::json!({"id": core.add_entity(&req.name, Some(&email)), "name": req.name, "email": email}),
    ))
}

/// `DELETE /sim/org/{id}`: the queue or user disappears from the listings.
pub async fn delete_entity(
    State(core): State<Arc<Core>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    if core.delete_entity(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no queue or user {id}")))
    }
}

/// `POST /sim/firehose`: publishes N pre-built events as fast as the sockets take them, or
/// at `rate` events per second.
pub async fn firehose(
    State(core): State<Arc<Core>>,
    body: Bytes,
) -> Result<Json<FirehoseReport>, ApiError> {
    let req: FirehoseRequest = parse(
        &body,
        "firehose request ({\"count\": N, \"topics\": [...]})",
    )?;
    if req.count == 0 || req.count > 10_000_000 {
        return Err(ApiError::bad_request(
            "count must be between 1 and 10000000",
        ));
    }
    if req.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(ApiError::bad_request(
            "rate must be a positive number of events per second (or left out for full speed)",
        ));
    }
    let built = Firehose::build(&core.org, core.config.seed, &req);
    Ok(Json(built.publish(&core, req.rate).await))
}

/// Anything else.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such resource in the simulator; see the README for its endpoints")
}

/// 405 for known paths with other methods.
pub async fn method_not_allowed() -> Response {
    let body =
        holdline_proto::rest::ErrorBody::new(405, "method.not.allowed", "method not allowed");
    super::error::error_response(StatusCode::METHOD_NOT_ALLOWED.as_u16(), body, None)
}
