//! `--metrics-addr`: Prometheus `/metrics`, `/healthz` (the process answers) and `/readyz`
//! (every shard has a socket receiving; 503 with a JSON reason otherwise), for scrapers
//! and Kubernetes probes. Off unless asked; loopback unless told otherwise.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use holdline_client::Stats;
use holdline_client::telemetry::metrics::{self, NotReady};
use tokio::net::TcpListener;

/// Where `--metrics-addr` without a value listens.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(addr: SocketAddr, stats: Arc<Stats>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve metrics on {addr}; pick a free address with --metrics-addr HOST:PORT")
    })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(stats);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!("metrics on http://{bound}/metrics (health: /healthz, readiness: /readyz)");
    Ok(bound)
}

async fn metrics_text(State(stats): State<Arc<Stats>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&stats),
    )
        .into_response()
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

async fn readyz(State(stats): State<Arc<Stats>>) -> Response {
    let (status, body) = match metrics::readiness(&stats) {
        Ok(shards) => (
            StatusCode::OK,
            serde_json::json!({ "ready": true, "shards": shards }),
        ),
        Err(NotReady::Starting) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "ready": false, "reason": "starting: no shard is subscribed yet" }),
        ),
        Err(NotReady::SlotsFailed(n)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "ready": false,
                "reason": format!("{n} slot(s) died (an internal error, logged) and are being restarted; their events may be missed"),
                "slots_failed": n,
            }),
        ),
        Err(NotReady::ShardsDown(down)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({
                "ready": false,
                "reason": format!("{} shard(s) have no socket receiving; their events are being missed", down.len()),
                "shards_down": down,
            }),
        ),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
