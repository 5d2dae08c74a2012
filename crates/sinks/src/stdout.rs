//! The stdout sink: JSON lines on standard output, flushed before a batch counts as
//! delivered. A closed stdout (the reader went away) is fatal, not retried.

use std::io::Write;

use crate::{BlockingSink, SinkError};

/// Standard output.
#[derive(Debug, Default)]
pub struct StdoutSink;

impl BlockingSink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn deliver(&mut self, records: &[&[u8]]) -> Result<(), SinkError> {
        let mut out = std::io::stdout().lock();
        let fatal = |e: std::io::Error| SinkError::Fatal {
            sink: "stdout".into(),
            detail: e.to_string(),
            broken_pipe: e.kind() == std::io::ErrorKind::BrokenPipe,
        };
        for record in records {
            out.write_all(record).map_err(fatal)?;
        }
        out.flush().map_err(fatal)
    }
}
