//! Logs go to stderr (stdout carries data), filtered by `RUST_LOG` (default `info`), as
//! text (coloured only on a terminal) or as one JSON object per line.
//!
//! Levels follow one rule: ERROR means data was lost or an operator must act (a gap, a
//! fatal configuration or credential problem); WARN means holdline is working around
//! something (a dropped socket, a retried call, a malformed frame); INFO is the life of
//! channels and sockets; DEBUG is detail for diagnosing holdline itself.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

/// Set while a command keeps a status line at the bottom of the terminal (the demo): each
/// log line then first clears it, so the two never share a line.
pub static STATUS_LINE: AtomicBool = AtomicBool::new(false);

/// stderr, clearing the status line before each log record when there is one.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut err = std::io::stderr().lock();
        if STATUS_LINE.load(Ordering::Relaxed) {
            err.write_all(b"\r\x1b[2K")?;
        }
        err.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (timestamp, level, message, fields).
    Json,
}

/// Installs the stderr logger (`verbose`: debug for holdline's own crates).
pub fn init(verbose: bool, format: Format) {
    let default = if verbose {
        "info,holdline=debug,holdline_client=debug,holdline_sim=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_target(false);
    let _ = match format {
        Format::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}
