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
//!
//! Fenced (`holdline deliver --cluster`), each POST carries `X-Holdline-Fence: <token>`
//! and `X-Holdline-Fence-Key: <lease>`; a receiver that keeps the largest token it has
//! seen and answers `409 Conflict` to a smaller one fences off a deliverer that lost its
//! lease, which then stops writing.

mod config;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::Write;

use aws_lc_rs::hmac;
use bytes::Bytes;

use crate::{Delivery, Sink, SinkError};

pub use config::*;

/// The webhook sink. Its HTTP client is made at first use.
pub struct WebhookSink {
    config: WebhookConfig,
    name: String,
    label: String,
    fence: Option<crate::Fence>,
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
            fence: None,
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
        if let Some(fence) = &self.fence {
            req = req
                .header("x-holdline-fence", fence.token.to_string())
                .header("x-holdline-fence-key", &fence.key);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| self.fail(e.without_url()))?;
        if resp.status().is_success() {
            Ok(())
        } else if self.fence.is_some() && resp.status() == reqwest::StatusCode::CONFLICT {
            Err(SinkError::Fenced {
                sink: self.label.clone(),
                detail: "the receiver answered 409: it has seen a newer deliverer's token"
                    .to_owned(),
            })
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

    fn fence(&mut self, fence: &crate::Fence) {
        self.fence = Some(fence.clone());
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
