//! The subcommands.

pub mod backfill;
mod cluster;
pub mod config;
pub mod deliver;
pub mod demo;
pub mod listen;
pub mod observe;
pub mod orgs;
pub mod service;
pub mod sim;
pub mod spooled;
pub mod top;
pub mod topics;

use std::time::Duration;

use holdline_client::ClientError;

/// Ends the process with this exit code; whatever explains it was already printed.
#[derive(Debug, thiserror::Error)]
#[error("exit {0}")]
pub struct Exit(pub u8);

/// A configuration or usage problem (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error (see the README).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if let Some(Exit(code)) = err.downcast_ref::<Exit>() {
        return *code;
    }
    if err.downcast_ref::<UsageError>().is_some()
        || err.downcast_ref::<config::ConfigError>().is_some()
    {
        return crate::exit::USAGE;
    }
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Config(_)) => crate::exit::USAGE,
        Some(ClientError::Auth(holdline_client::rest::auth::AuthError::Tls { .. })) => {
            crate::exit::USAGE
        }
        Some(ClientError::Auth(a)) if a.is_fatal() => crate::exit::AUTH,
        Some(ClientError::Permission(_)) => crate::exit::PERMISSION,
        _ => crate::exit::OTHER,
    }
}

/// Parses a human duration flag (`200ms`, `8s`, `24h`).
pub fn duration(text: &str) -> Result<Duration, String> {
    holdline_sim::config::parse_duration(text)
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn interrupted() {
    match Signals::new() {
        Ok(mut signals) => loop {
            if signals.next().await == Signal::Stop {
                return;
            }
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A signal `listen` acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: stop.
    Stop,
    /// SIGHUP: read the topic lists again.
    Reload,
}

/// The signals of a long-running command, installed once and read for as long as it
/// runs (a second SIGINT must be seen while the first is being handled).
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (from now on SIGHUP no longer ends the process).
    pub fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                // Each recv() is cancel-safe; a closed stream never resolves again.
                Some(()) = self.int.recv() => Signal::Stop,
                Some(()) = self.term.recv() => Signal::Stop,
                Some(()) = self.hup.recv() => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

/// `HH:MM:SS.mmm` (UTC) of a wall-clock time.
pub fn clock(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        since.subsec_millis()
    )
}
