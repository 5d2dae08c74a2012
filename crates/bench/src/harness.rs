//! The test bed: an embedded simulator per run, the REST calls a peer's caller makes for
//! it, waiting until a client's sockets are subscribed, and watching a client's output.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use holdline_sim::config::HeartbeatMode;
use holdline_sim::state::ledger::LedgerEntry;
use holdline_sim::{SimConfig, Simulator};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// The OAuth client every bench client uses (the simulator's default one).
pub const CLIENT_ID: &str = "holdline-demo";
pub const CLIENT_SECRET: &str = "holdline-demo";

/// `k` topics: half queue conversation topics (1–8 KB snapshots), half user presence
/// topics (~400 B), interleaved so a round-robin firehose alternates sizes.
pub fn topics(k: usize) -> Vec<String> {
    (0..k)
        .map(|i| {
            let id = format!("{:08x}-b0b0-4000-8000-{:012x}", i / 2, i);
            if i % 2 == 0 {
                format!("v2.routing.queues.{id}.conversations")
            } else {
                format!("v2.users.{id}.presence")
            }
        })
        .collect()
}

/// A simulator for one run: heartbeats only on idle sockets (a firehose run sees none),
/// no generated traffic, room for every firehose event in the ledger, and a REST rate
/// limit high enough for 19 shards to subscribe at once.
pub fn sim_config(ledger_capacity: usize) -> SimConfig {
    SimConfig {
        heartbeat_mode: HeartbeatMode::IdleOnly,
        rate_limit_per_minute: 10_000,
        ledger_capacity: ledger_capacity.max(1),
        rate: 0.0,
        ..SimConfig::default()
    }
}

/// A running simulator and an HTTP client for its REST API.
pub struct Bed {
    pub sim: Simulator,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Channel {
    connect_uri: String,
}

impl Bed {
    /// Starts a simulator on a free loopback port.
    pub async fn start(config: SimConfig) -> Result<Bed> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let sim = Simulator::start(listener, config)?;
        Ok(Bed {
            sim,
            http: reqwest::Client::new(),
        })
    }

    pub fn url(&self) -> &str {
        self.sim.url()
    }

    /// Creates a channel (subscribed to `topics` over REST when given) the way a peer's
    /// caller must, and returns its `connectUri`.
    pub async fn channel(&self, topics: &[String]) -> Result<String> {
        let token: Token = self
            .http
            .post(format!("{}/oauth/token", self.url()))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let bearer = token.access_token;
        let channel: Channel = self
            .http
            .post(format!("{}/api/v2/notifications/channels", self.url()))
            .bearer_auth(&bearer)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if !topics.is_empty() {
            let id = channel
                .connect_uri
                .rsplit('/')
                .next()
                .context("connectUri without a channel id")?;
            let body: Vec<_> = topics
                .iter()
                .map(|t| serde_json::json!({ "id": t }))
                .collect();
            self.http
                .put(format!(
                    "{}/api/v2/notifications/channels/{id}/subscriptions",
                    self.url()
                ))
                .bearer_auth(&bearer)
                .json(&body)
                .send()
                .await?
                .error_for_status()
                .context("subscribing the bench topics")?;
        }
        Ok(channel.connect_uri)
    }

    /// True once at least `sockets` connected sockets are subscribed and every topic
    /// reaches at least `redundancy` of them.
    pub fn ready(&self, topics: &[String], redundancy: usize, sockets: usize) -> bool {
        let wanted: Vec<Vec<usize>> = self.sim.core().channel_infos(|c, _| {
            if c.socket.is_none() {
                return Vec::new();
            }
            topics
                .iter()
                .enumerate()
                .filter(|(_, t)| c.wants(t))
                .map(|(i, _)| i)
                .collect()
        });
        if wanted.iter().filter(|w| !w.is_empty()).count() < sockets {
            return false;
        }
        let mut reach = vec![0usize; topics.len()];
        for i in wanted.iter().flatten() {
            reach[*i] += 1;
        }
        reach.iter().all(|&n| n >= redundancy)
    }

    /// Waits until [`Bed::ready`].
    pub async fn wait_ready(
        &self,
        topics: &[String],
        redundancy: usize,
        sockets: usize,
        client: &mut Watched,
        within: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        while !self.ready(topics, redundancy, sockets) {
            client.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not have {sockets} sockets covering every topic {redundancy}× \
                     after {within:?}; its stderr ends:\n{}",
                    client.name,
                    client.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The ledger from the start.
    pub fn ledger(&self, limit: usize) -> Vec<LedgerEntry> {
        self.sim.core().ledger_since(0, limit)
    }
}

/// What happens to a client's stdout.
pub enum Capture {
    /// A thread reads the pipe into memory (about this many bytes), counting lines.
    Collect(usize),
    /// Left piped for the caller to take from `child.stdout`.
    Raw,
    /// Sent to /dev/null: nothing reads it (holdline is then counted from its `/metrics`).
    Discard,
}

/// Least the collector's buffer grows by when a client wrote more than expected.
const GROW_MIN: usize = 1 << 20;

/// A buffer of `len` bytes whose pages are all mapped, so writing into it later
/// costs no page faults.
fn prefaulted(len: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; len];
    for page in buffer.chunks_mut(4096) {
        // A zeroed allocation may be lazily mapped; a non-zero store makes the kernel
        // map each page now (the collector overwrites it).
        page[0] = 1;
    }
    buffer
}

/// A client process: stdout into a pipe (read as it comes), stderr into a file.
pub struct Watched {
    pub name: String,
    pub child: Child,
    err: PathBuf,
    lines: Arc<AtomicUsize>,
    collector: Option<JoinHandle<Vec<u8>>>,
}

impl Watched {
    /// Spawns `cmd` with stderr into `dir/<name>.err`.
    ///
    /// Output goes through a pipe, the cost every consumer of a stdout stream pays (a
    /// file on tmpfs would charge the client for page allocation; /dev/null would leave
    /// nothing to check).
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path, capture: Capture) -> Result<Watched> {
        let err = dir.join(format!("{name}.err"));
        // The output lands in memory that is already mapped: faulting in a quarter of a
        // gigabyte while the client runs would spend the machine's CPU on the runner, not
        // on the client being measured.
        let buffer = match capture {
            Capture::Collect(capacity) => prefaulted(capacity),
            Capture::Raw | Capture::Discard => Vec::new(),
        };
        let stdout = match capture {
            Capture::Discard => Stdio::null(),
            _ => Stdio::piped(),
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(File::create(&err)?)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let lines = Arc::new(AtomicUsize::new(0));
        let collector = match capture {
            Capture::Raw | Capture::Discard => None,
            Capture::Collect(_) => {
                let mut stdout = child.stdout.take().context("piped stdout")?;
                let counter = lines.clone();
                Some(std::thread::spawn(move || {
                    let mut all = buffer;
                    let mut len = 0;
                    loop {
                        if len == all.len() {
                            // Only when the estimate was short: growing zero-fills (and
                            // faults in) the new part while the client runs.
                            all.resize(all.len() + all.len() / 2 + GROW_MIN, 0);
                        }
                        match stdout.read(&mut all[len..]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let newlines =
                                    memchr::memchr_iter(b'\n', &all[len..len + n]).count();
                                len += n;
                                counter.fetch_add(newlines, Ordering::Release);
                            }
                        }
                    }
                    all.truncate(len);
                    all
                }))
            }
        };
        Ok(Watched {
            name: name.to_owned(),
            child,
            err,
            lines,
            collector,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error (with the end of its stderr) if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its stderr ends:\n{}",
                self.name,
                self.stderr_tail()
            );
        }
        Ok(())
    }

    /// Lines read from its stdout so far.
    pub fn lines(&self) -> usize {
        self.lines.load(Ordering::Acquire)
    }

    /// Polls every millisecond until the output holds `lines` lines; returns when it did.
    pub async fn wait_lines(&mut self, lines: usize, within: Duration) -> Result<Instant> {
        let deadline = Instant::now() + within;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if self.lines() >= lines {
                return Ok(Instant::now());
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} wrote {} of {lines} lines within {within:?}; its stderr ends:\n{}",
                    self.name,
                    self.lines(),
                    self.stderr_tail()
                );
            }
            tick.tick().await;
        }
    }

    /// The metrics URL `holdline listen --metrics-addr` logged on stderr, once it has.
    pub fn metrics_url(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.err).ok()?;
        let after = text.find("metrics on ")? + "metrics on ".len();
        let start = after + text[after..].find("http://")?;
        let end = start + text[start..].find("/metrics")? + "/metrics".len();
        Some(text[start..end].to_owned())
    }

    /// The last lines of stderr.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.err).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Kills the process and returns everything it wrote (empty for [`Capture::Raw`]).
    pub fn finish(mut self) -> Vec<u8> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.err);
        self.collector
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_alternate_conversations_and_presence_and_are_valid() {
        let t = topics(6);
        assert_eq!(t.len(), 6);
        assert!(t[0].ends_with(".conversations") && t[1].ends_with(".presence"));
        for topic in &t {
            assert!(
                holdline_proto::topic::classify(topic).is_ok(),
                "{topic} is not a valid topic"
            );
        }
        let unique: std::collections::HashSet<_> = t.iter().collect();
        assert_eq!(unique.len(), 6);
    }
}
