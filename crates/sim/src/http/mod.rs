//! The simulator's HTTP surface: the OAuth token endpoint, the `/api/v2` REST API, the
//! channel WebSockets and the `/sim/` control API, on one router.

mod analytics;
mod auth;
mod control;
mod error;
mod notifications;
mod oauth;
mod org;
mod orgs;

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, post};
use holdline_proto::rest::ErrorBody;

use crate::net::ConnInfo;
use crate::state::Core;
pub use error::ApiError;
pub use orgs::Orgs;

/// The whole simulator as one router.
pub fn router(core: Arc<Core>) -> Router {
    let channels = "/api/v2/notifications/channels";
    Router::new()
        .route("/oauth/token", post(oauth::token))
        .route(
            channels,
            post(notifications::create_channel).get(notifications::list_channels),
        )
        .route(
            &format!("{channels}/{{id}}"),
            head(notifications::head_channel),
        )
        .route(
            &format!("{channels}/{{id}}/subscriptions"),
            get(notifications::get_subscriptions)
                .post(notifications::add_subscriptions)
                .put(notifications::replace_subscriptions)
                .delete(notifications::delete_subscriptions),
        )
        .route(
            "/api/v2/notifications/availabletopics",
            get(notifications::available_topics),
        )
        .route(
            "/api/v2/analytics/conversations/details/query",
            post(analytics::conversation_details),
        )
        .route(
            "/api/v2/analytics/conversations/details/jobs",
            post(analytics::submit_job),
        )
        .route(
            "/api/v2/analytics/conversations/details/jobs/availability",
            get(analytics::job_availability),
        )
        .route(
            "/api/v2/analytics/conversations/details/jobs/{id}",
            get(analytics::job_status),
        )
        .route(
            "/api/v2/analytics/conversations/details/jobs/{id}/results",
            get(analytics::job_results),
        )
        .route(
            "/api/v2/analytics/users/details/query",
            post(analytics::user_details),
        )
        .route("/api/v2/conversations/{id}", get(analytics::conversation))
        .route(
            "/api/v2/users/presences/purecloud/bulk",
            get(analytics::bulk_presence),
        )
        .route(
            "/api/v2/users/{id}/routingstatus",
            get(analytics::routing_status),
        )
        .route("/api/v2/routing/queues", get(org::queues))
        .route("/api/v2/users", get(org::users))
        .route("/channels/{id}", get(socket))
        .route("/sim/faults", post(control::fault))
        .route("/sim/publish", post(control::publish))
        .route("/sim/channels", get(control::channels))
        .route("/sim/ledger", get(control::ledger))
        .route("/sim/stats", get(control::stats))
        .route("/sim/org", get(control::org))
        .route("/sim/org/queues", post(control::add_queue))
        .route("/sim/org/users", post(control::add_user))
        .route(
            "/sim/org/{id}",
            axum::routing::delete(control::delete_entity),
        )
        .route("/sim/firehose", post(control::firehose))
        .fallback(control::not_found)
        .method_not_allowed_fallback(control::method_not_allowed)
        .layer(middleware::from_fn_with_state(core.clone(), rest_faults))
        .layer(middleware::from_fn_with_state(core.clone(), host_rules))
        .with_state(core)
}

/// With a domain, each host serves only its own part: a token request to `api.` or a
/// socket on `login.` is refused with 421 and the host it belongs on, as a client that
/// builds its hosts wrongly would be by the real service (which has no such endpoint).
async fn host_rules(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    if let Some(wanted) = core.host_for(req.uri().path()) {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if !name.eq_ignore_ascii_case(&wanted) {
            let body = ErrorBody::new(
                421,
                "misdirected.request",
                format!(
                    "{} is served on {wanted}, not on {host:?}",
                    req.uri().path()
                ),
            );
            return error::error_response(421, body, None);
        }
    }
    next.run(req).await
}

/// Fails REST calls (token and `/api/` paths) while a `rest_errors` fault is pending.
async fn rest_faults(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with("/api/") || path.starts_with("/oauth/") {
        core.count_rest_call();
        if let Some(refusal) = core.take_rest_fault(req.method().as_str(), path) {
            return ApiError(refusal).into_response();
        }
    }
    next.run(req).await
}

/// `GET /channels/{id}`: the channel's WebSocket (the `connectUri`). No authentication:
/// the channel id is the capability.
async fn socket(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    ConnectInfo(info): ConnectInfo<ConnInfo>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if !core.channel_is_live(&id) {
        let status = core.config.unknown_channel_status;
        let body = ErrorBody::new(
            status,
            "not.found",
            format!(
                "channel {id} does not exist or has expired; create one with \
                 POST /api/v2/notifications/channels and dial its connectUri"
            ),
        );
        return error::error_response(status, body, None);
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let body = ErrorBody::new(
                426,
                "upgrade.required",
                format!(
                    "this is a notification WebSocket; connect with a WebSocket client ({rejection})"
                ),
            );
            return error::error_response(426, body, None);
        }
    };
    if let Some(delay) = core.take_upgrade_delay() {
        tokio::time::sleep(delay).await;
    }
    let limit = (core.config.max_client_message_bytes * 4).max(1 << 20);
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |ws| crate::ws::serve(core, id, ws, info))
}
