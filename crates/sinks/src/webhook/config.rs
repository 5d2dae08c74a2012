//! The webhook sink's settings, read from its URL.

use std::path::PathBuf;
use std::time::Duration;

use crate::duration_option;

/// The most bytes per POST unless `max_bytes` says otherwise: under the request limits
/// common receivers and gateways set (1 MiB by default in many frameworks).
pub const DEFAULT_MAX_BYTES: usize = 1 << 20;

/// Webhook settings.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where to POST (the query holdline's options were taken from is removed).
    pub url: String,
    /// The signing secret (from the environment variable named by `secret_env`).
    pub secret: Option<String>,
    /// Tries per batch before it is dead-lettered (needs `dead_letter`).
    pub attempts: Option<u32>,
    /// JSON-lines file for batches that kept failing.
    pub dead_letter: Option<PathBuf>,
    /// Per request.
    pub timeout: Duration,
    /// The most bytes of records per POST (at least one record is always sent).
    pub max_bytes: usize,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("attempts", &self.attempts)
            .field("dead_letter", &self.dead_letter)
            .field("timeout", &self.timeout)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl WebhookConfig {
    pub(crate) fn from_parts(url: &str, params: &[(String, String)]) -> Result<Self, String> {
        let mut config = WebhookConfig {
            url: url.to_owned(),
            secret: None,
            attempts: None,
            dead_letter: None,
            timeout: Duration::from_secs(10),
            max_bytes: DEFAULT_MAX_BYTES,
        };
        for (k, v) in params {
            match k.as_str() {
                "secret_env" => {
                    let secret = std::env::var(v).map_err(|_| {
                        format!("webhook secret_env={v}: set the environment variable {v} to the signing secret")
                    })?;
                    config.secret = Some(secret);
                }
                "attempts" => {
                    let n: u32 =
                        v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            format!("webhook attempts={v} must be a number above 0")
                        })?;
                    config.attempts = Some(n);
                }
                "dead_letter" => config.dead_letter = Some(PathBuf::from(v)),
                "timeout" => config.timeout = duration_option(k, v)?,
                "max_bytes" => {
                    config.max_bytes = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("webhook max_bytes={v} must be a number of bytes above 0")
                    })?;
                }
                other => {
                    return Err(format!(
                        "unknown webhook option {other:?}; the options are secret_env, attempts, dead_letter, timeout and max_bytes"
                    ));
                }
            }
        }
        if config.attempts.is_some() && config.dead_letter.is_none() {
            return Err("webhook attempts=N needs dead_letter=/path/file.jsonl for the batches that keep failing".into());
        }
        Ok(config)
    }
}
