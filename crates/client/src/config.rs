//! The client's configuration: where the service is, who we are, what to subscribe, and
//! every duration of the lifecycle (so tests can run a day in seconds). Defaults follow the
//! reference (§8): ping every 30 s, pong within 10 s, watchdog 66 s (2.2 heartbeats).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use holdline_proto::Region;

/// Where the service is: a Genesys Cloud region, or explicit base URLs (the simulator,
/// proxies, private deployments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoints {
    /// A Genesys Cloud region.
    Region(Region),
    /// Explicit bases.
    Custom {
        /// Base of the REST API, e.g. `http://127.0.0.1:7411`.
        api_base: String,
        /// Base of the token endpoint.
        login_base: String,
    },
}

impl Endpoints {
    /// Base URL of the REST API (no trailing slash).
    pub fn api_base(&self) -> String {
        match self {
            Endpoints::Region(r) => r.api_base(),
            Endpoints::Custom { api_base, .. } => api_base.trim_end_matches('/').to_owned(),
        }
    }

    /// Base URL of the token endpoint (no trailing slash).
    pub fn login_base(&self) -> String {
        match self {
            Endpoints::Region(r) => r.login_base(),
            Endpoints::Custom { login_base, .. } => login_base.trim_end_matches('/').to_owned(),
        }
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoints::Region(r) => write!(f, "region {r}"),
            Endpoints::Custom {
                api_base,
                login_base,
            } => {
                write!(f, "api {api_base}, login {login_base}")
            }
        }
    }
}

/// A resolver override, as curl's `--resolve HOST:PORT:ADDR`: connections to `host` on
/// `port` go to `addr` (TLS still names `host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// The host name.
    pub host: String,
    /// The port it applies to.
    pub port: u16,
    /// Where to connect instead.
    pub addr: std::net::IpAddr,
}

/// Read from the `HOST:PORT:ADDRESS` text form.
impl<'de> serde::Deserialize<'de> for Resolve {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Resolve::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Resolve {
    /// Parses `HOST:PORT:ADDR` (an IPv6 address may be in brackets).
    pub fn parse(text: &str) -> Result<Resolve, String> {
        let bad = || {
            format!(
                "--resolve {text:?}: write it as HOST:PORT:ADDRESS, e.g. api.example.test:443:127.0.0.1"
            )
        };
        let (host, rest) = text.split_once(':').ok_or_else(bad)?;
        let (port, addr) = rest.split_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        let addr = addr.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Resolve {
            host: host.to_ascii_lowercase(),
            port,
            addr,
        })
    }

    /// Where `host:port` goes under `overrides`, if one applies.
    pub fn find(overrides: &[Resolve], host: &str, port: u16) -> Option<std::net::SocketAddr> {
        overrides
            .iter()
            .find(|r| r.port == port && r.host.eq_ignore_ascii_case(host))
            .map(|r| std::net::SocketAddr::new(r.addr, port))
    }
}

/// Channels holding each shard unless told otherwise: with two, one socket fault costs
/// nothing.
pub const DEFAULT_REDUNDANCY: usize = 2;

/// A secret string: shown as `[redacted]` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Read from a string; a value of another type is refused without being repeated.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_TEXT))
            }
        }
        d.deserialize_str(Text)
    }
}

const NOT_TEXT: &str = "a secret must be a string (in quotes)";

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An OAuth client (client-credentials grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: Secret,
}

/// Every duration of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often to send `{"message":"ping"}`.
    pub ping_interval: Duration,
    /// How long a ping may go unanswered.
    pub pong_timeout: Duration,
    /// How long a socket may stay silent before it counts as dead.
    pub watchdog: Duration,
    /// Roll over to a new channel this long before the channel or its token expires
    /// (capped at a quarter of the channel's life).
    pub rollover_margin: Duration,
    /// The shortest time the service leaves between `socket_closing` and closing the socket
    /// (documented as about a minute). holdline falls back to a second socket on the same
    /// channel if no fresh channel is receiving half-way through it; a socket closed sooner
    /// while that replacement was connecting was closed by the replacement.
    pub closing_grace: Duration,
    /// The least time trimmed from the end of every socket's coverage (and from the start
    /// of one that takes a channel over): copies of events published just before may still
    /// be on their way. The measured skew between sockets is added to it.
    pub gap_lookback: Duration,
    /// How long a socket replaced by a rollover keeps receiving before it is closed:
    /// events published before the new channel was subscribed may still be on their way to
    /// it (the service has delivered the same event seconds apart on two sockets).
    pub overlap: Duration,
    /// First reconnect/retry delay.
    pub backoff_base: Duration,
    /// Longest reconnect/retry delay.
    pub backoff_max: Duration,
    /// Timeout of each REST call.
    pub request_timeout: Duration,
    /// Timeout of each WebSocket connect (TCP, TLS and upgrade).
    pub connect_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            watchdog: Duration::from_secs(66),
            rollover_margin: Duration::from_secs(300),
            closing_grace: Duration::from_secs(30),
            gap_lookback: Duration::from_secs(1),
            overlap: Duration::from_secs(15),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Where the service is.
    pub endpoints: Endpoints,
    /// Who we are.
    pub credentials: Credentials,
    /// Topics to subscribe (combined topics allowed).
    pub topics: Vec<String>,
    /// Queue names whose conversation topics to subscribe (resolved over REST).
    pub queues: Vec<String>,
    /// User emails whose conversation topics to subscribe (resolved over REST).
    pub users: Vec<String>,
    /// Subscribe every queue's conversations, re-listing queues every `refresh_every`.
    pub all_queues: bool,
    /// Subscribe every user's conversations, re-listing users every `refresh_every`.
    pub all_users: bool,
    /// How often tracked queues and users are listed again.
    pub refresh_every: Duration,
    /// Channels holding each shard of topics (each with its own socket).
    pub redundancy: usize,
    /// Lifecycle durations.
    pub timings: Timings,
    /// How long an event id is remembered for de-duplication.
    pub dedupe_window: Duration,
    /// Most event ids remembered.
    pub dedupe_max_ids: usize,
    /// Extra PEM root certificates to trust (corporate proxies, the simulator's `--tls`).
    pub ca_file: Option<PathBuf>,
    /// The HTTP proxy for REST and WebSockets (by default from the environment, as curl).
    pub proxy: crate::proxy::ProxySetting,
    /// Resolver overrides for REST and WebSockets.
    pub resolve: Vec<Resolve>,
    /// Largest WebSocket message accepted; a larger one ends the socket (and is reported).
    pub max_frame_bytes: usize,
    /// Label written into every record's `org` field.
    pub org: String,
    /// Topics per channel (the service's cap is 1,000).
    pub topics_per_channel: usize,
    /// In a cluster, the share of the OAuth client's channels this process may use
    /// (granted by the cluster); by default all of them.
    pub channel_share: Option<crate::supervisor::budget::SharedChannels>,
}

impl ClientConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(endpoints: Endpoints, credentials: Credentials, topics: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            credentials,
            topics,
            queues: Vec::new(),
            users: Vec::new(),
            all_queues: false,
            all_users: false,
            refresh_every: Duration::from_secs(300),
            redundancy: DEFAULT_REDUNDANCY,
            timings: Timings::default(),
            dedupe_window: Duration::from_secs(600),
            dedupe_max_ids: 200_000,
            ca_file: None,
            proxy: crate::proxy::ProxySetting::Environment,
            resolve: Vec::new(),
            max_frame_bytes: 16 * 1024 * 1024,
            org: "default".to_owned(),
            topics_per_channel: holdline_proto::topic::MAX_TOPICS_PER_CHANNEL,
            channel_share: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_overrides_parse_as_curl_writes_them() {
        let r = Resolve::parse("API.example.test:443:127.0.0.1").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("api.example.test", 443));
        let v6 = Resolve::parse("h:8443:[::1]").unwrap();
        assert_eq!(v6.addr, "::1".parse::<std::net::IpAddr>().unwrap());
        for bad in [
            "h:443",
            "h:port:127.0.0.1",
            ":443:127.0.0.1",
            "h:443:nowhere",
        ] {
            assert!(Resolve::parse(bad).is_err(), "{bad}");
        }
        let found = Resolve::find(&[r], "api.EXAMPLE.test", 443).unwrap();
        assert_eq!(found, "127.0.0.1:443".parse().unwrap());
    }

    #[test]
    fn secrets_never_show() {
        let creds = Credentials {
            client_id: "id".into(),
            client_secret: Secret::new("hunter2"),
        };
        let config = ClientConfig::new(
            Endpoints::Custom {
                api_base: "http://a/".into(),
                login_base: "http://b".into(),
            },
            creds,
            vec![],
        );
        let shown = format!("{config:?} {}", config.credentials.client_secret);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(config.endpoints.api_base(), "http://a");
    }
}
