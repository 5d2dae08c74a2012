//! The webhook sink: each batch is one HTTP POST of JSON lines
//! (`application/x-ndjson`), signed with HMAC-SHA256 over the body in
//! `X-Holdline-Signature: sha256=<hex>` when a secret is configured. Any 2xx confirms the
//! batch; anything else (or a timeout) is retried by the service with backoff. After
//! `attempts` failed tries a batch is written to the dead-letter file (when configured)
//! and counts as handled, so one poisoned batch cannot block the stream forever.
//!
//! `https://host/path?secret_env=NAME&attempts=10&dead_letter=/var/lib/holdline/dead.jsonl&timeout=10s&max_bytes=1048576`
//! (`max_bytes`: the most bytes of records per POST, default 1 MiB).
//! The secret is read from the environment variable NAME, never from the URL.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use aws_lc_rs::hmac;
use bytes::Bytes;

use crate::{Delivery, Sink, SinkError, duration_option};

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

/// The webhook sink. Its HTTP client is made at first use.
pub struct WebhookSink {
    config: WebhookConfig,
    name: String,
    label: String,
    key: Option<hmac::Key>,
    client: Option<reqwest::Client>,
    /// The dead-letter file once opened (taken while a blocking thread writes it).
    dead: Option<File>,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> WebhookSink {
        let key = config
            .secret
            .as_ref()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes()));
        let (scheme, rest) = config.url.split_once("://").unwrap_or(("", &config.url));
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        WebhookSink {
            name: format!("webhook:{}", config.url),
            label: format!("webhook:{scheme}://{host}/…"),
            config,
            key,
            client: None,
            dead: None,
        }
    }

    fn fail(&self, detail: impl std::fmt::Display) -> SinkError {
        SinkError::Failed {
            sink: self.label.clone(),
            detail: detail.to_string(),
        }
    }
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let mut out = String::from("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl WebhookSink {
    async fn post(&mut self, records: &[Bytes]) -> Result<(), SinkError> {
        if self.client.is_none() {
            let client = reqwest::Client::builder()
                .timeout(self.config.timeout)
                .user_agent(concat!("holdline/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| self.fail(e))?;
            self.client = Some(client);
        }
        let mut body = Vec::with_capacity(records.iter().map(Bytes::len).sum());
        for r in records {
            body.extend_from_slice(r);
        }
        let mut req = self
            .client
            .as_ref()
            .expect("made above")
            .post(&self.config.url)
            .header("content-type", "application/x-ndjson")
            .header("x-holdline-records", records.len().to_string());
        if let Some(key) = &self.key {
            req = req.header("x-holdline-signature", signature(key, &body));
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| self.fail(e.without_url()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(format!("HTTP {}", resp.status())))
        }
    }

    async fn keep(&mut self, records: &[Bytes]) -> Result<(), SinkError> {
        let Some(path) = self.config.dead_letter.clone() else {
            return Err(self.fail("no dead_letter file configured"));
        };
        let file = self.dead.take();
        let records = records.to_vec();
        let written = tokio::task::spawn_blocking(move || -> Result<File, String> {
            let mut file = match file {
                Some(f) => f,
                None => {
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                    }
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| format!("cannot open {}: {e}", path.display()))?
                }
            };
            records
                .iter()
                .try_for_each(|r| file.write_all(r))
                .and_then(|()| file.sync_data())
                .map_err(|e| e.to_string())?;
            Ok(file)
        })
        .await
        .map_err(|e| self.fail(format!("the dead-letter write panicked: {e}")))?;
        self.dead = Some(written.map_err(|e| self.fail(e))?);
        Ok(())
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn deliver<'a>(&'a mut self, records: &'a [Bytes]) -> Delivery<'a> {
        Box::pin(self.post(records))
    }

    fn attempts(&self) -> Option<u32> {
        self.config.attempts
    }

    fn batch_bytes(&self) -> usize {
        self.config.max_bytes
    }

    fn dead_letter<'a>(&'a mut self, records: &'a [Bytes]) -> Delivery<'a> {
        Box::pin(self.keep(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn options_parse_and_the_secret_stays_out_of_debug() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("HOLDLINE_TEST_HOOK_SECRET", "s3cr3t-hook") };
        let params = vec![
            (
                "secret_env".to_owned(),
                "HOLDLINE_TEST_HOOK_SECRET".to_owned(),
            ),
            ("attempts".to_owned(), "3".to_owned()),
            ("dead_letter".to_owned(), "/tmp/dead.jsonl".to_owned()),
        ];
        let c = WebhookConfig::from_parts("https://example.com/hook", &params).unwrap();
        assert_eq!(c.url, "https://example.com/hook");
        assert_eq!(c.attempts, Some(3));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let err =
            WebhookConfig::from_parts("https://x", &[("attempts".into(), "3".into())]).unwrap_err();
        assert!(err.contains("dead_letter"), "{err}");
        let err = WebhookConfig::from_parts(
            "https://x",
            &[("secret_env".into(), "HOLDLINE_NO_SUCH_VAR".into())],
        )
        .unwrap_err();
        assert!(err.contains("HOLDLINE_NO_SUCH_VAR"), "{err}");
    }

    #[tokio::test]
    async fn logs_and_metrics_name_the_hook_without_its_path() {
        let c =
            WebhookConfig::from_parts("https://hooks.example.com/services/T0/B0/s3cr3tpath", &[])
                .unwrap();
        let sink = WebhookSink::new(c);
        assert_eq!(sink.label(), "webhook:https://hooks.example.com/…");
        assert!(
            sink.name().contains("s3cr3tpath"),
            "the spool cursor keeps the full name"
        );
        // Nothing listens on port 9 (discard): the error names the label only.
        let mut sink9 = WebhookSink::new(
            WebhookConfig::from_parts("http://127.0.0.1:9/s3cr3tpath?x=1", &[]).unwrap(),
        );
        let err = sink9
            .deliver(&[Bytes::from_static(b"{}\n")])
            .await
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}
