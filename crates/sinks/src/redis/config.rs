//! The Redis sink's settings, read from its URL.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::duration_option;

/// Redis sink settings.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub host: String,
    pub port: u16,
    pub stream: String,
    pub db: i64,
    /// `MAXLEN ~` per XADD (Redis trims whole nodes, so the stream stays near this length).
    pub maxlen: Option<u64>,
    pub user: Option<String>,
    /// From the environment variable named by `password_env`.
    pub password: Option<String>,
    /// Connect, read and write timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("stream", &self.stream)
            .field("db", &self.db)
            .field("maxlen", &self.maxlen)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

const FORM: &str = "redis://host:6379/stream-name";

impl RedisConfig {
    pub(crate) fn from_parts(rest: &str, params: &[(String, String)]) -> Result<Self, String> {
        let (authority, stream) = rest
            .split_once('/')
            .filter(|(_, s)| !s.is_empty() && !s.contains('/'))
            .ok_or_else(|| format!("redis sink needs a stream name: {FORM}"))?;
        let (host, port) = crate::host_port(authority, 6379, FORM)?;
        let mut config = RedisConfig {
            host,
            port,
            stream: stream.to_owned(),
            db: 0,
            maxlen: Some(1_000_000),
            user: None,
            password: None,
            timeout: Duration::from_secs(10),
        };
        for (k, v) in params {
            match k.as_str() {
                "maxlen" => {
                    let n: u64 = v.parse().map_err(|_| {
                        format!("redis maxlen={v} must be a number of entries (0 for no cap)")
                    })?;
                    config.maxlen = (n > 0).then_some(n);
                }
                "db" => {
                    config.db = v
                        .parse()
                        .map_err(|_| format!("redis db={v} must be a database number"))?;
                }
                "user" => config.user = Some(v.clone()),
                "password_env" => {
                    config.password = Some(std::env::var(v).map_err(|_| {
                        format!("redis password_env={v}: set the environment variable {v} to the password")
                    })?);
                }
                "timeout" => config.timeout = duration_option(k, v)?,
                other => {
                    return Err(format!(
                        "unknown redis sink option {other:?}; the options are maxlen, db, user, password_env and timeout"
                    ));
                }
            }
        }
        Ok(config)
    }

    pub(super) fn connection_info(&self) -> Result<ConnectionInfo, redis::RedisError> {
        let mut settings = RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.user {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        Ok(ConnectionAddr::Tcp(self.host.clone(), self.port)
            .into_connection_info()?
            .set_redis_settings(settings))
    }
}
