//! Logs go to stderr (stdout carries data), filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the stderr logger (`verbose`: debug for holdline's own crates).
pub fn init(verbose: bool) {
    let default = if verbose {
        "info,holdline=debug,holdline_client=debug,holdline_sim=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
