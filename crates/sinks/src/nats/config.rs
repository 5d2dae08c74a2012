//! The NATS sink's settings, read from its URL.

use std::path::PathBuf;
use std::time::Duration;

use crate::duration_option;

/// NATS sink settings.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsConfig {
    /// `host:port` (several separated by commas).
    pub servers: String,
    /// The subject, or a template of one: `{org}` and `{family}` as whole tokens are
    /// replaced by each record's org and topic family (`gap`, `rejected` for those).
    pub subject: String,
    /// Create this stream for the subject if it is missing.
    pub stream: Option<String>,
    /// From the environment variable named by `token_env`.
    pub token: Option<String>,
    pub user: Option<String>,
    /// From the environment variable named by `password_env`.
    pub password: Option<String>,
    /// A `.creds` file (JWT and nkey seed).
    pub creds: Option<PathBuf>,
    pub tls: bool,
    /// Connect and acknowledgement timeout.
    pub timeout: Duration,
    /// The duplicate window of a stream this sink creates: repeats of an id within it
    /// are dropped by the server.
    pub duplicate_window: Duration,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("servers", &self.servers)
            .field("subject", &self.subject)
            .field("stream", &self.stream)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("creds", &self.creds)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .field("duplicate_window", &self.duplicate_window)
            .finish()
    }
}

const FORM: &str = "nats://host:4222/subject";

impl NatsConfig {
    /// Whether the subject is filled in per record.
    pub fn templated(&self) -> bool {
        self.subject.contains('{')
    }

    /// The subjects a stream must capture: the template's tokens as wildcards.
    pub fn captured(&self) -> String {
        self.subject
            .split('.')
            .map(|t| match t {
                "{org}" | "{family}" => "*",
                t => t,
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    pub(crate) fn from_parts(rest: &str, params: &[(String, String)]) -> Result<Self, String> {
        let (servers, subject) = rest
            .split_once('/')
            .filter(|(_, s)| !s.is_empty() && !s.contains(['/', ' ', '*', '>']))
            .ok_or_else(|| format!("nats sink needs a subject without wildcards: {FORM}"))?;
        for server in servers.split(',') {
            crate::host_port(server, 4222, FORM)?;
        }
        if let Some(bad) = subject
            .split('.')
            .find(|t| t.contains(['{', '}']) && !matches!(*t, "{org}" | "{family}"))
        {
            return Err(format!(
                "nats subject token {bad:?}: only {{org}} and {{family}} may be filled in, each as a whole token (holdline.{{org}}.{{family}})"
            ));
        }
        let env = |name: &str, v: &str| {
            std::env::var(v)
                .map_err(|_| format!("nats {name}={v}: set the environment variable {v}"))
        };
        let mut config = NatsConfig {
            servers: servers.to_owned(),
            subject: subject.to_owned(),
            stream: None,
            token: None,
            user: None,
            password: None,
            creds: None,
            tls: false,
            timeout: Duration::from_secs(10),
            duplicate_window: Duration::from_secs(120),
        };
        for (k, v) in params {
            match k.as_str() {
                "stream" => config.stream = Some(v.clone()),
                "token_env" => config.token = Some(env(k, v)?),
                "user" => config.user = Some(v.clone()),
                "password_env" => config.password = Some(env(k, v)?),
                "creds" => config.creds = Some(PathBuf::from(v)),
                "tls" => {
                    config.tls = v
                        .parse()
                        .map_err(|_| format!("nats tls={v} must be true or false"))?;
                }
                "timeout" => config.timeout = duration_option(k, v)?,
                "duplicate_window" => config.duplicate_window = duration_option(k, v)?,
                other => {
                    return Err(format!(
                        "unknown nats sink option {other:?}; the options are stream, duplicate_window, token_env, user, password_env, creds, tls and timeout"
                    ));
                }
            }
        }
        if config.user.is_some() != config.password.is_some() {
            return Err("nats user=NAME and password_env=VARIABLE go together".into());
        }
        Ok(config)
    }
}
