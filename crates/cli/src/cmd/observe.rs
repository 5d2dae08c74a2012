//! `--metrics-addr`: `/metrics` (OpenMetrics text: the engine's, the spool's and each
//! sink's series, each registered by its component), `/healthz` (the process answers) and `/readyz`
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
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Where `--metrics-addr` without a value listens.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// What `/readyz` judges: one engine, or every org's.
#[derive(Clone)]
pub enum Readiness {
    One(Arc<Stats>),
    Orgs(super::orgs::Status),
    /// A deliverer: why it is not ready, if it is not.
    Deliver(Arc<std::sync::Mutex<Option<String>>>),
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    ready: Readiness,
    registry: Registry,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot serve metrics on {addr}; pick a free address with --metrics-addr HOST:PORT")
    })?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Served {
            ready,
            registry: Arc::new(registry),
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!("metrics on http://{bound}/metrics (health: /healthz, readiness: /readyz)");
    Ok(bound)
}

#[derive(Clone)]
struct Served {
    ready: Readiness,
    registry: Arc<Registry>,
}

/// The registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail; a collector's error would leave the text short.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "a metrics collector failed");
    }
    out
}

async fn metrics_text(State(served): State<Served>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(&served.registry),
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

async fn readyz(State(served): State<Served>) -> Response {
    let (status, body) = match &served.ready {
        Readiness::One(stats) => readiness(stats),
        Readiness::Deliver(trouble) => {
            match trouble.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                None => (StatusCode::OK, serde_json::json!({ "ready": true })),
                Some(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "ready": false, "reason": why }),
                ),
            }
        }
        Readiness::Orgs(orgs) => {
            // Ready when every org is: one org missing events is events being missed.
            let cluster = orgs.cluster();
            let orgs = super::orgs::snapshot(orgs);
            // No org at all receives nothing, unless this is a cluster node that holds
            // none for now; a node that may not hold any says why.
            let mut all = match (&cluster, orgs.is_empty()) {
                (Some(Some(_)), _) | (None, true) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::OK,
            };
            let mut each = serde_json::Map::new();
            for (name, state) in orgs {
                let (status, body) = match state {
                    super::orgs::OrgState::Running(stats) => readiness(&stats),
                    super::orgs::OrgState::Starting => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({ "ready": false, "reason": "starting" }),
                    ),
                    super::orgs::OrgState::Down(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({ "ready": false, "reason": format!("not receiving: {why}") }),
                    ),
                };
                if status != StatusCode::OK {
                    all = status;
                }
                each.insert(name.to_string(), body);
            }
            let mut body = serde_json::json!({ "ready": all == StatusCode::OK, "orgs": each });
            if let Some(Some(why)) = cluster {
                body["reason"] =
                    serde_json::Value::String(format!("this cluster node holds no org: {why}"));
            }
            (all, body)
        }
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// One engine's readiness and its JSON.
fn readiness(stats: &Stats) -> (StatusCode, serde_json::Value) {
    match metrics::readiness(stats) {
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
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use holdline_client::Stats;
    use holdline_sinks::{Deliverer, SinkConfig, SinkMetrics};
    use holdline_spool::{Durability, Spool};
    use prometheus_client::registry::Registry;

    /// The registry `listen --spool` serves: the engine's, the spool's and a sink's series.
    fn served() -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), Durability::Eventual).unwrap());
        let mut registry = Registry::default();
        holdline_spool::register(spool.clone(), &mut registry);
        let metrics = SinkMetrics::default();
        metrics.register(&mut registry);
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let sink = holdline_sinks::open(&SinkConfig::Stdout).unwrap();
        let _deliverer = Deliverer::new(
            spool,
            sink,
            metrics,
            Arc::default(),
            stopped,
            std::time::Duration::from_millis(1),
            std::time::Duration::from_millis(1),
        )
        .unwrap();
        let stats = Arc::new(Stats::default());
        stats.rest_call("create channel", 200);
        stats.socket_live(
            1,
            holdline_client::telemetry::stats::SocketState {
                shard: 0,
                slot: 0,
                channel: "streaming-0-abc".into(),
                last_heartbeat: std::time::SystemTime::now(),
            },
        );
        holdline_client::telemetry::metrics::register(stats, &mut registry);
        (super::render(&registry), dir)
    }

    /// Every sample line's series name.
    fn sample_names(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap())
            .collect()
    }

    /// The alert rules and the dashboard in docs/ only use series that /metrics serves,
    /// with a sample to read.
    #[test]
    fn the_docs_alerts_and_dashboard_read_real_series() {
        let (text, _dir) = served();
        let samples = sample_names(&text);
        for (file, doc) in [
            ("alerts.yml", include_str!("../../../../docs/alerts.yml")),
            (
                "grafana-dashboard.json",
                include_str!("../../../../docs/grafana-dashboard.json"),
            ),
        ] {
            let mut names = 0;
            for (i, _) in doc.match_indices("holdline_") {
                let name: String = doc[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names += 1;
                assert!(
                    samples.contains(&name.as_str()),
                    "{file} uses {name}, which /metrics does not serve:\n{text}"
                );
            }
            assert!(names >= 8, "{file} names only {names} series");
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/grafana-dashboard.json")).unwrap();
        assert!(dashboard["panels"].as_array().unwrap().len() >= 8);
    }

    #[test]
    fn the_spool_and_sink_series_keep_their_names() {
        let (text, _dir) = served();
        let samples = sample_names(&text);
        for name in [
            "holdline_spool_depth",
            "holdline_spool_bytes",
            "holdline_spool_dropped_total",
            "holdline_sink_delivered_total",
            "holdline_sink_failures_total",
            "holdline_sink_dead_lettered_total",
            "holdline_sink_pending",
            "holdline_events_emitted_total",
            "holdline_ping_rtt_seconds_bucket",
        ] {
            assert!(samples.contains(&name), "no {name} in\n{text}");
        }
        assert!(
            text.contains(r#"holdline_sink_pending{sink="stdout"} 0"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
