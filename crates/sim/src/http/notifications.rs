//! `/api/v2/notifications/*`: channels, subscriptions and available topics
//! (reference §2.1).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use holdline_proto::rest::{AvailableTopic, Channel, ChannelTopic, EntityListing, TopicRef};
use holdline_proto::topic::templates;

use super::auth::Auth;
use super::error::ApiError;
use crate::state::Core;
use crate::state::channels::Mode;

/// `POST /api/v2/notifications/channels`.
pub async fn create_channel(State(core): State<Arc<Core>>, Auth(caller): Auth) -> Json<Channel> {
    Json(core.create_channel(&caller))
}

/// `GET /api/v2/notifications/channels?includechannels=token|oauthclient`.
pub async fn list_channels(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<EntityListing<Channel>>, ApiError> {
    let all = match q
        .get("includechannels")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("token") => false,
        Some("oauthclient") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "includechannels must be token or oauthclient, not {other:?}"
            )));
        }
    };
    Ok(Json(EntityListing::of(core.list_channels(&caller, all))))
}

/// `HEAD /api/v2/notifications/channels/{id}`: 200 if the channel exists, else 404.
pub async fn head_channel(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> StatusCode {
    if core.channel_exists(&caller, &id) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// `GET .../subscriptions`.
pub async fn get_subscriptions(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Json<EntityListing<ChannelTopic>>, ApiError> {
    Ok(Json(EntityListing::of(
        core.subscriptions(&caller, &id, None)?,
    )))
}

/// `POST .../subscriptions`: adds topics.
pub async fn add_subscriptions(
    state: State<Arc<Core>>,
    auth: Auth,
    path: Path<String>,
    query: Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<EntityListing<ChannelTopic>>, ApiError> {
    change(state, auth, path, query, body, Mode::Add)
}

/// `PUT .../subscriptions`: replaces the topic list.
pub async fn replace_subscriptions(
    state: State<Arc<Core>>,
    auth: Auth,
    path: Path<String>,
    query: Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<EntityListing<ChannelTopic>>, ApiError> {
    change(state, auth, path, query, body, Mode::Replace)
}

fn change(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
    mode: Mode,
) -> Result<Json<EntityListing<ChannelTopic>>, ApiError> {
    let ignore_errors = match q
        .get("ignoreErrors")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "ignoreErrors must be true or false, not {other:?}"
            )));
        }
    };
    let topics: Vec<TopicRef> = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be a JSON array of {{\"id\": \"<topic>\"}} objects ({e})"
        ))
    })?;
    let names: Vec<String> = topics.into_iter().map(|t| t.id).collect();
    let out = core.subscriptions(&caller, &id, Some((&names, mode, ignore_errors)))?;
    Ok(Json(EntityListing::of(out)))
}

/// `DELETE .../subscriptions`: removes every topic.
pub async fn delete_subscriptions(
    State(core): State<Arc<Core>>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    core.subscriptions(&caller, &id, Some((&[], Mode::Replace, false)))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v2/notifications/availabletopics[?expand=a,b]`: every template by id, with
/// the fields `expand` names (`description`, `requiresPermissions`, `permissionDetails`,
/// `visibility`, `transports`, `schema`, `topicParameters`).
pub async fn available_topics(
    Auth(_caller): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> Json<EntityListing<AvailableTopic>> {
    let expand: Vec<&str> = q
        .get("expand")
        .map(|e| e.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let want = |field: &str| expand.iter().any(|e| e.eq_ignore_ascii_case(field));
    let topics = templates()
        .iter()
        .map(|t| {
            let permissions: Vec<String> = t.permissions.iter().map(|p| (*p).to_owned()).collect();
            AvailableTopic {
                id: t.pattern.clone(),
                description: want("description").then(|| t.description.to_owned()),
                requires_permissions: if want("requiresPermissions") {
                    permissions.clone()
                } else {
                    Vec::new()
                },
                permission_details: if want("permissionDetails") && !permissions.is_empty() {
                    vec![serde_json::json!({
                        "type": "PERMISSION",
                        "permissions": permissions,
                        "allowsCurrentUser": false,
                        "enforced": true,
                    })]
                } else {
                    Vec::new()
                },
                visibility: want("visibility").then(|| "Public".to_owned()),
                transports: if want("transports") {
                    vec!["All".to_owned()]
                } else {
                    Vec::new()
                },
                // The simulator knows a body's shape by its family, not the full schema.
                schema: want("schema").then(|| {
                    serde_json::json!({
                        "type": "object",
                        "title": t.family.name(),
                        "description": t.description,
                    })
                }),
                topic_parameters: if want("topicParameters") {
                    parameters(&t.pattern)
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    Json(EntityListing::of(topics))
}

/// The `{name}` parts of a template, in order.
fn parameters(pattern: &str) -> Vec<String> {
    pattern
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .collect()
}
