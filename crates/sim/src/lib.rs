//! holdline-sim: a faithful local simulator of the Genesys Cloud Notification Service.
//!
//! It serves the OAuth token endpoint, the notifications REST API, the channel WebSockets
//! and a small org (queues, users) on one port, generates the traffic of a small contact
//! centre, injects every fault the real service can throw (`/sim/faults`) and keeps a
//! ledger of everything it published (`/sim/ledger`), which is what tests compare a
//! client's output against. Behaviour follows `reference/genesys-notifications.md`; where
//! the real service is unknown, [`SimConfig`] makes the behaviour a choice.

pub mod config;
pub mod faults;
pub mod firehose;
pub mod generator;
mod http;
mod net;
pub mod org;
pub mod restyle;
mod rng;
pub mod state;
mod tls;
mod ws;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{ChannelScope, ClientSpec, Frames, Handover, Pings, SimConfig, Unknowns};
pub use state::Core;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often expired channels and tokens are swept.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Serves the simulator on `listener` until `shutdown` completes, then closes every socket.
pub async fn run(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (cores, tls) = cores_for(&listener, config)?;
    serve(listener, cores, tls.map(|t| t.server), shutdown).await
}

/// One core per org (`config.orgs`, at least one).
fn cores_for(
    listener: &TcpListener,
    config: SimConfig,
) -> io::Result<(Vec<Arc<Core>>, Option<tls::SimTls>)> {
    let addr = listener.local_addr()?;
    let tls = if config.tls {
        Some(tls::generate(config.domain.as_deref()).map_err(io::Error::other)?)
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = config
        .public_url
        .clone()
        .unwrap_or_else(|| base_url(scheme, addr));
    let base = base.trim_end_matches('/').to_owned();
    let cores = (1..=config.orgs.max(1))
        .map(|n| Core::for_org(config.clone(), base.clone(), n))
        .collect();
    Ok((cores, tls))
}

/// `http://127.0.0.1:PORT` for a bound address (unspecified addresses become loopback).
fn base_url(scheme: &str, addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_owned(),
            SocketAddr::V6(_) => "[::1]".to_owned(),
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("{scheme}://{ip}:{}", addr.port())
}

async fn serve(
    listener: TcpListener,
    cores: Vec<Arc<Core>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = net::SimListener::new(listener, tls)?;
    let mut tasks = Vec::with_capacity(cores.len() * 2);
    for core in &cores {
        tasks.push(tokio::spawn(sweep(core.clone())));
        tasks.push(tokio::spawn(generator::run(core.clone())));
    }
    let router = match cores.as_slice() {
        [one] => http::router(one.clone()),
        _ => http::Orgs::new(cores.clone()).router(),
    };
    let app = router.into_make_service_with_connect_info::<net::ConnInfo>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            for core in &cores {
                core.close_all();
            }
        })
        .await;
    for task in tasks {
        task.abort();
    }
    result
}

async fn sweep(core: Arc<Core>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        core.sweep();
    }
}

/// A simulator running in the background of this process (tests, `holdline demo`).
pub struct Simulator {
    cores: Vec<Arc<Core>>,
    cert_pem: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl Simulator {
    /// Starts serving on `listener`.
    pub fn start(listener: TcpListener, config: SimConfig) -> io::Result<Simulator> {
        let (cores, tls) = cores_for(&listener, config)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let cert_pem = tls.as_ref().map(|t| t.cert_pem.clone());
        let server_tls = tls.map(|t| t.server);
        let task = tokio::spawn(serve(listener, cores.clone(), server_tls, async move {
            let _ = stopped.await;
        }));
        Ok(Simulator {
            cores,
            cert_pem,
            stop: Some(stop),
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: the base of the API, the token endpoint and `/sim/`.
    pub fn url(&self) -> &str {
        &self.cores[0].base_url
    }

    /// With `tls`, the self-signed certificate (PEM) clients must trust.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// The state (ledger, org, publishing) of the first org, `org-1`.
    pub fn core(&self) -> &Arc<Core> {
        &self.cores[0]
    }

    /// Every org's state, `org-1` first.
    pub fn cores(&self) -> &[Arc<Core>] {
        &self.cores
    }

    /// Closes every socket and stops serving.
    pub async fn stop(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}
