//! The subcommands.

pub mod demo;
pub mod listen;
pub mod observe;
pub mod sim;
pub mod spooled;
pub mod top;

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
    if err.downcast_ref::<UsageError>().is_some() {
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
