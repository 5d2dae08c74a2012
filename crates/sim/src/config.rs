//! Simulator configuration: one serde struct, defaults in one place, every duration a
//! human duration (`200ms`, `8s`, `24h`) so a whole day of channel life runs in seconds.
//! Where the real service's behaviour is UNKNOWN (reference §9) the choice is a field here.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the simulator can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// OAuth clients accepted by `POST /oauth/token`.
    pub clients: Vec<ClientSpec>,
    /// Lifetime of an access token (`expires_in`).
    #[serde(with = "human")]
    pub token_ttl: Duration,
    /// Lifetime of a channel; (re)subscribing resets it.
    #[serde(with = "human")]
    pub channel_ttl: Duration,
    /// Period of the `channel.metadata` heartbeat.
    #[serde(with = "human")]
    pub heartbeat: Duration,
    /// Whether heartbeats are sent at a fixed rate or only after that much silence.
    pub heartbeat_mode: HeartbeatMode,
    /// Time between `v2.system.socket_closing` and the server closing the socket.
    #[serde(with = "human")]
    pub closing_grace: Duration,
    /// Channels one OAuth client may hold; creating one more evicts the least recently used.
    pub channels_per_client: usize,
    /// Topics one channel may hold.
    pub topics_per_channel: usize,
    /// REST calls per token per minute before 429 (0 turns the limit off).
    pub rate_limit_per_minute: u32,
    /// Whether a channel dies when the token that created it expires or is revoked.
    pub channels_die_with_token: bool,
    /// HTTP status of a WebSocket upgrade to an unknown or expired channel.
    pub unknown_channel_status: u16,
    /// Close codes the server uses, by cause.
    pub close_codes: CloseCodes,
    /// What an evicted channel's socket is told before it is closed.
    pub evict_notice: EvictNotice,
    /// Answer unknown client messages with `{"result":"400","status":"error",...}` instead of
    /// ignoring them.
    pub answer_unknown_messages: bool,
    /// Largest client message accepted; larger ones close the socket with 1009.
    pub max_client_message_bytes: usize,
    /// Frames queued for one socket before it counts as a slow consumer and is closed.
    pub socket_queue_frames: usize,
    /// Events per second from the contact-centre generator (0 = none).
    pub rate: f64,
    /// Seed of the generator (same seed, same org and same sequence of events).
    pub seed: u64,
    /// Queues in the simulated org.
    pub queues: usize,
    /// Agents in the simulated org.
    pub agents: usize,
    /// Orgs served on the one port (`org-1` … `org-N`), each with its own queues, agents,
    /// generator, ledger, rate limits, faults and OAuth client `org-I` (secret
    /// `secret-I`); the `clients` above belong to `org-1`.
    pub orgs: usize,
    /// Ledger entries kept (oldest dropped first).
    pub ledger_capacity: usize,
    /// Conversations the analytics endpoints remember (the oldest half dropped when full).
    pub history_capacity: usize,
    /// Seconds the contact centre's clock is ahead of (or, negative, behind) the real one:
    /// the times in its events and in what the analytics endpoints answer (to run a day's
    /// end, say, at any hour).
    pub clock_offset_secs: i64,
    /// Base URL handed out in `connectUri`s and links; derived from the bound address when
    /// absent.
    pub public_url: Option<String>,
    /// Serve HTTPS and WSS with a self-signed certificate generated at start.
    pub tls: bool,
    /// Answer as the service's three hosts of this domain: `login.` for tokens, `api.`
    /// for the REST API, `streaming.` for sockets (by `Host` header and TLS name), and
    /// hand out `connectUri`s on `streaming.`. Clients reach them with a resolver
    /// override (`holdline listen --resolve`). None: one origin for everything.
    pub domain: Option<String>,
    /// What the simulator does where the service's behaviour is not known
    /// (docs/simulator.md); the default is the kindest reading, `realistic` the unkindest.
    pub unknowns: Unknowns,
}

impl SimConfig {
    /// The contact centre's time now (the real time moved by `clock_offset_secs`).
    pub fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::seconds(self.clock_offset_secs)
    }

    /// The defaults of a preset: `kind` (the defaults) or `realistic` (every unknown at
    /// its unkind setting).
    pub fn preset(name: &str) -> Result<Self, String> {
        let unknowns = match name {
            "kind" => Unknowns::default(),
            "realistic" => Unknowns::realistic(),
            other => {
                return Err(format!(
                    "unknown preset {other:?}; the presets are \"kind\" and \"realistic\""
                ));
            }
        };
        Ok(SimConfig {
            unknowns,
            ..SimConfig::default()
        })
    }
}

/// The service's unknowns as settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Unknowns {
    /// How late a late copy of an event can be: it reaches its socket after a delay
    /// drawn in `[0, latency]`, and later events may overtake it.
    #[serde(with = "human")]
    pub latency: Duration,
    /// The share of copies (each event, each socket) that are late, from 0 to 1.
    pub late_share: f64,
    /// Latency of every copy, drawn in `[0, jitter]` (these keep their order).
    #[serde(with = "human")]
    pub jitter: Duration,
    /// How an event's frame is written on each channel.
    pub frames: Frames,
    /// Which tokens may use a channel over REST.
    pub channel_scope: ChannelScope,
    /// Which client texts get a pong.
    pub pings: Pings,
    /// What happens to delivery when a second socket connects to a channel.
    pub handover: Handover,
    /// With a lossy hand-over: how long after the second socket connects the channel's
    /// events go to neither socket.
    #[serde(with = "human")]
    pub handover_loss: Duration,
    /// How long after it happened the analytics endpoints show a change (a conversation
    /// starting or ending, a segment, a presence or routing status).
    #[serde(with = "human")]
    pub analytics_delay: Duration,
    /// The largest `pageSize` the analytics queries take (larger is refused with 400).
    pub analytics_page_size: usize,
    /// How long a details job runs before its results can be read.
    #[serde(with = "human")]
    pub analytics_job_time: Duration,
    /// How far the data lake the details jobs read lags behind now (their
    /// `dataAvailabilityDate`).
    #[serde(with = "human")]
    pub analytics_lake_delay: Duration,
}

impl Default for Unknowns {
    fn default() -> Self {
        Unknowns {
            latency: Duration::ZERO,
            late_share: 0.0,
            jitter: Duration::ZERO,
            frames: Frames::Identical,
            channel_scope: ChannelScope::Client,
            pings: Pings::Lenient,
            handover: Handover::Perfect,
            handover_loss: Duration::from_millis(500),
            analytics_delay: Duration::ZERO,
            analytics_page_size: 200,
            analytics_job_time: Duration::ZERO,
            analytics_lake_delay: Duration::ZERO,
        }
    }
}

impl Unknowns {
    /// Every unknown at its unkind setting: one copy in a hundred up to 20 s late (as
    /// seen between two sockets of the real service), frames serialised
    /// per channel, channels scoped to their token, only the documented ping answered,
    /// a hand-over that loses what was in flight and half a second after it.
    pub fn realistic() -> Self {
        Unknowns {
            latency: Duration::from_secs(20),
            late_share: 0.01,
            jitter: Duration::from_millis(50),
            frames: Frames::PerChannel,
            channel_scope: ChannelScope::Token,
            pings: Pings::Strict,
            handover: Handover::Lossy,
            handover_loss: Duration::from_millis(500),
            analytics_delay: Duration::from_secs(60),
            analytics_page_size: 100,
            analytics_job_time: Duration::from_secs(5),
            analytics_lake_delay: Duration::from_secs(3600),
        }
    }
}

/// Delivery when a second socket connects to a channel (the `socket_closing` replacement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Handover {
    /// Everything queued for the old socket is sent before it is closed, and delivery
    /// moves to the new socket at once.
    Perfect,
    /// What is in flight to the old socket is lost, and for `handover_loss` events go
    /// to neither socket.
    Lossy,
}

/// How one event's frame is written on each channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Frames {
    /// The same bytes and `CorrelationId` on every channel.
    Identical,
    /// Each channel its own serialisation of the body (key order, whitespace, escapes,
    /// number spelling) and its own `CorrelationId`.
    PerChannel,
}

/// Which tokens may `HEAD`, list or (re)subscribe a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChannelScope {
    /// Any token of the OAuth client that created it.
    Client,
    /// Only the token that created it; other tokens get 404.
    Token,
}

/// Which client texts are answered with a pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pings {
    /// `{"message":"ping"}`, `{"message":"PING"}` and pings with extra fields.
    Lenient,
    /// Only `{"message":"ping"}` (the documented form).
    Strict,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clients: vec![ClientSpec::demo()],
            token_ttl: Duration::from_secs(86_400),
            channel_ttl: Duration::from_secs(86_400),
            heartbeat: Duration::from_secs(30),
            heartbeat_mode: HeartbeatMode::Fixed,
            closing_grace: Duration::from_secs(60),
            channels_per_client: 20,
            topics_per_channel: 1000,
            rate_limit_per_minute: 300,
            channels_die_with_token: true,
            unknown_channel_status: 401,
            close_codes: CloseCodes::default(),
            evict_notice: EvictNotice::NoLongerSubscribed,
            answer_unknown_messages: false,
            max_client_message_bytes: 64 * 1024,
            socket_queue_frames: 65_536,
            rate: 0.0,
            seed: 1,
            queues: 4,
            agents: 12,
            orgs: 1,
            ledger_capacity: 1_000_000,
            history_capacity: 100_000,
            clock_offset_secs: 0,
            public_url: None,
            tls: false,
            domain: None,
            unknowns: Unknowns::default(),
        }
    }
}

/// An OAuth client (`--client id:secret`). `Debug` hides the secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The client id.
    pub id: String,
    /// The client secret.
    pub secret: String,
    /// Permissions granted; `*` grants all.
    #[serde(default = "all_permissions")]
    pub permissions: Vec<String>,
}

fn all_permissions() -> Vec<String> {
    vec!["*".to_owned()]
}

impl ClientSpec {
    /// The default client, `holdline-demo:holdline-demo`, with every permission.
    pub fn demo() -> Self {
        ClientSpec {
            id: "holdline-demo".into(),
            secret: "holdline-demo".into(),
            permissions: all_permissions(),
        }
    }

    /// Parses `id:secret` or `id:secret:perm1,perm2` (an empty list grants nothing).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, ':');
        let id = parts.next().unwrap_or_default();
        let secret = parts.next().ok_or_else(|| {
            format!("client {id:?} has no secret; write it as id:secret or id:secret:perm1,perm2")
        })?;
        if id.is_empty() || secret.is_empty() {
            return Err("client id and secret must not be empty (id:secret)".to_owned());
        }
        let permissions = match parts.next() {
            None => all_permissions(),
            Some(list) => list
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        Ok(ClientSpec {
            id: id.to_owned(),
            secret: secret.to_owned(),
            permissions,
        })
    }

    /// True when the client holds `permission`.
    pub fn has(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == "*" || p == permission)
    }
}

impl fmt::Debug for ClientSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSpec")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// When heartbeats are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeartbeatMode {
    /// Every period, whatever else was sent.
    Fixed,
    /// Only after a full period in which nothing was sent.
    IdleOnly,
}

/// What an evicted channel's socket receives before the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictNotice {
    /// `v2.system.no_longer_subscribed.{channelId}` with reason `another_channel_subscribed`.
    NoLongerSubscribed,
    /// `{"result":"404","message":...}`.
    Result404,
    /// Nothing; just the close.
    None,
}

/// WebSocket close codes by cause (the real codes are UNKNOWN).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloseCodes {
    /// A second socket connected to the same channel.
    pub replaced: u16,
    /// The channel was evicted by the 20-channel rule.
    pub evicted: u16,
    /// The channel expired (or died with its token).
    pub expired: u16,
    /// The token was revoked.
    pub revoked: u16,
    /// Maintenance after `socket_closing`.
    pub maintenance: u16,
    /// The simulator is shutting down.
    pub shutdown: u16,
}

impl Default for CloseCodes {
    fn default() -> Self {
        CloseCodes {
            replaced: 1000,
            evicted: 1000,
            expired: 1000,
            revoked: 1000,
            maintenance: 1001,
            shutdown: 1001,
        }
    }
}

/// Parses a human duration such as `200ms`, `8s` or `24h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write it like 200ms, 8s or 24h"))
}

/// Serde for durations as human text.
pub mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `1m 30s`-style text.
    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    /// Reads `200ms`, `8s`, `24h`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_spec_forms() {
        let all = ClientSpec::parse("a:b").unwrap();
        assert!(all.has("anything"));
        let some = ClientSpec::parse("a:b:x:y,z").unwrap();
        assert!(some.has("x:y") && some.has("z") && !some.has("w"));
        let none = ClientSpec::parse("a:b:").unwrap();
        assert!(!none.has("x"));
        assert!(ClientSpec::parse("a").is_err());
        assert!(ClientSpec::parse(":b").is_err());
    }

    #[test]
    fn secret_is_not_in_debug() {
        let spec = ClientSpec::parse("id:hunter2").unwrap();
        assert!(!format!("{spec:?}").contains("hunter2"));
    }

    #[test]
    fn durations_read_as_human_text() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("soon").unwrap_err().contains("200ms"));
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        let err = serde_json::from_str::<SimConfig>(r#"{"heartbeet":"1s"}"#).unwrap_err();
        assert!(err.to_string().contains("heartbeet"), "{err}");
        let ok: SimConfig = serde_json::from_str(r#"{"heartbeat":"50ms"}"#).unwrap();
        assert_eq!(ok.heartbeat, Duration::from_millis(50));
        assert_eq!(ok.channels_per_client, 20);
    }
}
