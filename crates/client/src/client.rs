//! The public face: [`Client::start`] checks the configuration, gets a first token (so bad
//! credentials fail at once), shards the topics, starts the slots and returns a cheap
//! cloneable [`ClientHandle`] plus the [`EventStream`].

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdline_proto::topic;
use tokio::sync::mpsc;

use crate::api::Api;
use crate::auth::TokenSource;
use crate::config::ClientConfig;
use crate::coverage::ShardCoverage;
use crate::dedupe::Dedupe;
use crate::error::ClientError;
use crate::liveness::LivenessConfig;
use crate::session::SessionConfig;
use crate::slot::{self, SlotCmd, SlotCtx};
use crate::stats::Stats;
use crate::stream::EventStream;

/// Channels one OAuth client may hold.
pub const CHANNEL_BUDGET: usize = 20;
/// Frames queued between the sockets and the stream's consumer.
const QUEUE: usize = 4096;

/// Starts clients.
pub struct Client;

/// A handle on a running client: change topics, read counters, shut down.
#[derive(Clone)]
pub struct ClientHandle {
    shards: Arc<Vec<Vec<mpsc::UnboundedSender<SlotCmd>>>>,
    topics: Arc<Mutex<Vec<Vec<String>>>>,
    stats: Arc<Stats>,
    api: Arc<Api>,
    per_channel: usize,
}

impl Client {
    /// Validates the configuration, authenticates and starts every slot.
    pub async fn start(config: ClientConfig) -> Result<(ClientHandle, EventStream), ClientError> {
        let named = !config.queues.is_empty() || !config.users.is_empty();
        let mut topics = if named && config.topics.is_empty() {
            Vec::new()
        } else {
            validate_topics(&config.topics)?
        };
        let tls = crate::tls::client_config(config.ca_file.as_deref())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .user_agent(concat!("holdline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        let auth = TokenSource::new(
            http.clone(),
            &config.endpoints,
            config.credentials.clone(),
            config.timings,
        );
        auth.token().await?;
        let api = Arc::new(Api::new(
            http,
            config.endpoints.api_base(),
            auth,
            config.timings,
        ));
        if named {
            topics.extend(
                crate::resolve::conversation_topics(&api, &config.queues, &config.users).await?,
            );
            topics = validate_topics(&topics)?;
        }
        let per_channel = config
            .topics_per_channel
            .clamp(1, topic::MAX_TOPICS_PER_CHANNEL);
        let shards: Vec<Vec<String>> = topics.chunks(per_channel).map(<[String]>::to_vec).collect();
        let redundancy = config.redundancy.max(1);
        // Each slot holds one channel, plus one more while it rolls over.
        let needed = shards.len() * redundancy + redundancy;
        if needed > CHANNEL_BUDGET {
            let fit = (CHANNEL_BUDGET / redundancy).saturating_sub(1) * per_channel;
            return Err(ClientError::Config(format!(
                "{} topics need {} shards × {redundancy} channels plus rollover spares = {needed} channels, \
                 but an OAuth client may hold {CHANNEL_BUDGET}; with redundancy {redundancy} at most {fit} topics fit \
                 (combine topics as prefix?a&b to save room)",
                topics.len(),
                shards.len()
            )));
        }
        let stats = Arc::new(Stats::default());
        let (out, rx) = mpsc::channel(QUEUE);
        let session = SessionConfig {
            liveness: LivenessConfig {
                ping_every: config.timings.ping_interval,
                pong_timeout: config.timings.pong_timeout,
                watchdog: config.timings.watchdog,
            },
            connect_timeout: config.timings.connect_timeout,
            max_frame_bytes: config.max_frame_bytes,
            tls,
            stats: stats.clone(),
        };
        let session_ids = Arc::new(AtomicU64::new(1));
        let mut coverage = Vec::new();
        let mut senders = Vec::new();
        for (shard, shard_topics) in shards.iter().enumerate() {
            let shared: Arc<[String]> = shard_topics.clone().into();
            coverage.push(ShardCoverage::new(
                shared.clone(),
                redundancy,
                config.timings.gap_lookback,
            ));
            let mut slots = Vec::new();
            for slot in 0..redundancy {
                let (tx, cmds) = mpsc::unbounded_channel();
                let ctx = SlotCtx {
                    api: api.clone(),
                    session: session.clone(),
                    timings: config.timings,
                    shard,
                    slot,
                    out: out.clone(),
                    stats: stats.clone(),
                    session_ids: session_ids.clone(),
                    start_delay: stagger(slot, redundancy, config.timings.rollover_margin),
                };
                tokio::spawn(slot::run(ctx, shared.clone(), cmds));
                slots.push(tx);
            }
            senders.push(slots);
        }
        let dedupe = Dedupe::new(config.dedupe_window, config.dedupe_max_ids);
        let stream = EventStream::new(rx, dedupe, coverage, stats.clone());
        let handle = ClientHandle {
            shards: Arc::new(senders),
            topics: Arc::new(Mutex::new(shards)),
            stats,
            api,
            per_channel,
        };
        Ok((handle, stream))
    }
}

/// Redundant slots start a little apart so their sockets and rollovers do not coincide.
fn stagger(slot: usize, redundancy: usize, margin: Duration) -> Duration {
    if slot == 0 {
        return Duration::ZERO;
    }
    (margin / (2 * redundancy as u32)).min(Duration::from_millis(500)) * slot as u32
}

/// Checks every topic locally (so a typo fails before any network call) and drops repeats.
pub fn validate_topics(topics: &[String]) -> Result<Vec<String>, ClientError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in topics {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        topic::expand(name).map_err(|e| ClientError::Config(e.to_string()))?;
        if seen.insert(name.to_owned()) {
            out.push(name.to_owned());
        }
    }
    if out.is_empty() {
        return Err(ClientError::Config(
            "no topics to subscribe: give --topic, --topics-file, --queue or --user".to_owned(),
        ));
    }
    Ok(out)
}

impl ClientHandle {
    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The REST API the client uses (for look-ups such as queue names).
    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Adds topics, to the last shard with room; fails when every shard is full.
    pub fn add_topics(&self, topics: &[String]) -> Result<(), ClientError> {
        let new = validate_topics(topics)?;
        let mut shards = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let known: HashSet<&String> = shards.iter().flatten().collect();
        let new: Vec<String> = new.into_iter().filter(|t| !known.contains(t)).collect();
        let Some(idx) = shards
            .iter()
            .position(|s| s.len() + new.len() <= self.per_channel)
        else {
            return Err(ClientError::Config(format!(
                "no shard has room for {} more topics (at most {} per channel)",
                new.len(),
                self.per_channel
            )));
        };
        shards[idx].extend(new);
        self.send(idx, shards[idx].clone());
        Ok(())
    }

    /// Removes topics wherever they are.
    pub fn remove_topics(&self, topics: &[String]) {
        let gone: HashSet<&String> = topics.iter().collect();
        let mut shards = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        for idx in 0..shards.len() {
            let before = shards[idx].len();
            shards[idx].retain(|t| !gone.contains(t));
            if shards[idx].len() != before {
                self.send(idx, shards[idx].clone());
            }
        }
    }

    fn send(&self, shard: usize, topics: Vec<String>) {
        let topics: Arc<[String]> = topics.into();
        for slot in self.shards.get(shard).into_iter().flatten() {
            let _ = slot.send(SlotCmd::SetTopics(topics.clone()));
        }
    }

    /// Closes every socket with 1000; the stream ends once they are closed.
    pub fn shutdown(&self) {
        for slot in self.shards.iter().flatten() {
            let _ = slot.send(SlotCmd::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_checked_and_deduplicated() {
        let user = "6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11";
        let ok = validate_topics(&[
            format!("v2.users.{user}.presence"),
            format!("v2.users.{user}.presence"),
            " ".into(),
        ])
        .unwrap();
        assert_eq!(ok.len(), 1);
        let err = validate_topics(&[format!("v2.conversations.{user}")]).unwrap_err();
        assert!(
            matches!(err, ClientError::Config(ref m) if m.contains("did you mean")),
            "{err}"
        );
        assert!(matches!(validate_topics(&[]), Err(ClientError::Config(_))));
    }

    #[test]
    fn redundant_slots_start_apart() {
        let m = Duration::from_secs(300);
        assert_eq!(stagger(0, 2, m), Duration::ZERO);
        assert_eq!(stagger(1, 2, m), Duration::from_millis(500));
    }
}
