//! The subcommands.

pub mod demo;
pub mod sim;

use std::time::Duration;

/// A configuration or usage problem (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        crate::exit::USAGE
    } else {
        crate::exit::OTHER
    }
}

/// Parses a human duration flag (`200ms`, `8s`, `24h`).
pub fn duration(text: &str) -> Result<Duration, String> {
    holdline_sim::config::parse_duration(text)
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    // Either signal ends the wait; both futures are cancel-safe.
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
