//! The file sink's settings, read from its URL.

use std::path::PathBuf;
use std::time::Duration;

use crate::duration_option;

/// `file:///path/events.jsonl?max_bytes=N&rotate=1h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    pub path: PathBuf,
    /// Rotate before a file would grow past this.
    pub max_bytes: Option<u64>,
    /// Rotate files older than this.
    pub rotate_every: Option<Duration>,
}

impl FileConfig {
    pub(crate) fn from_parts(path: &str, params: &[(String, String)]) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!(
                "file sink path {path:?} must be absolute: file:///var/log/holdline/events.jsonl"
            ));
        }
        let mut config = FileConfig {
            path: PathBuf::from(path),
            max_bytes: None,
            rotate_every: None,
        };
        for (k, v) in params {
            match k.as_str() {
                "max_bytes" => {
                    let n: u64 = v.parse().map_err(|_| {
                        format!("sink option max_bytes={v} is not a number of bytes")
                    })?;
                    config.max_bytes = Some(n.max(1));
                }
                "rotate" => config.rotate_every = Some(duration_option(k, v)?),
                other => {
                    return Err(format!(
                        "unknown file sink option {other:?}; the options are max_bytes and rotate"
                    ));
                }
            }
        }
        Ok(config)
    }
}
