//! The Redis Streams sink: each record is one `XADD` to a stream, with the event id, the
//! record kind and the record itself as fields, capped with `MAXLEN ~`. A batch is sent
//! as one pipeline and counts as delivered once Redis answered every `XADD` with an
//! entry id. A repeat after a crash carries the same `id` field, so a consumer can skip it.
//!
//! `redis://host:6379/holdline-events?maxlen=1000000&db=0&password_env=NAME&user=NAME&timeout=10s`
//!
//! Entry fields: `id` (the event id, or `<kind>-<hash>` for a gap or rejected topic), `kind`
//! (`event`, `gap` or `rejected`),
//! `record` (the JSON line without its newline).

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::{BlockingSink, SinkError, duration_option};

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
        if authority.contains('@') {
            return Err(
                "put no credentials in a redis sink URL; use user=NAME&password_env=VARIABLE"
                    .into(),
            );
        }
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

    fn connection_info(&self) -> Result<ConnectionInfo, redis::RedisError> {
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

/// The Redis Streams sink; connects at first use and again after any error.
pub struct RedisSink {
    config: RedisConfig,
    name: String,
    conn: Option<redis::Connection>,
}

impl RedisSink {
    pub fn new(config: RedisConfig) -> RedisSink {
        RedisSink {
            name: format!("redis:{}:{}/{}", config.host, config.port, config.stream),
            config,
            conn: None,
        }
    }

    fn fail(&self, detail: impl std::fmt::Display) -> SinkError {
        SinkError::Failed {
            sink: self.name.clone(),
            detail: detail.to_string(),
        }
    }

    fn connect(&self) -> Result<redis::Connection, SinkError> {
        let info = self.config.connection_info().map_err(|e| self.fail(e))?;
        let client = redis::Client::open(info).map_err(|e| self.fail(e))?;
        let conn = client
            .get_connection_with_timeout(self.config.timeout)
            .map_err(|e| self.fail(format!("cannot connect: {e}")))?;
        conn.set_read_timeout(Some(self.config.timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.config.timeout)))
            .map_err(|e| self.fail(e))?;
        Ok(conn)
    }
}

impl BlockingSink for RedisSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver(&mut self, records: &[&[u8]]) -> Result<(), SinkError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let mut pipe = redis::pipe();
        for rec in records {
            let routed = crate::Routed::of(rec);
            let cmd = pipe.cmd("XADD").arg(&self.config.stream);
            if let Some(n) = self.config.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            cmd.arg("*")
                .arg("id")
                .arg(&routed.id)
                .arg("kind")
                .arg(routed.kind())
                .arg("record")
                .arg(rec.strip_suffix(b"\n").unwrap_or(rec));
        }
        // Sent and read by hand: the client's own pipeline reading waits out the read
        // timeout once per command when the server stops answering; this gives up at the
        // first failure, so a silent server costs one timeout per batch.
        let conn = self.conn.as_mut().expect("connected above");
        let outcome = conn
            .send_packed_command(&pipe.get_packed_pipeline())
            .map_err(|e| e.to_string())
            .and_then(|()| {
                (0..records.len()).try_for_each(|_| match conn.recv_response() {
                    Ok(redis::Value::ServerError(e)) => Err(format!("redis refused XADD: {e}")),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                })
            });
        outcome.map_err(|e| {
            self.conn = None;
            self.fail(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_the_password_stays_out_of_debug() {
        // SAFETY: no other test reads this variable.
        unsafe { std::env::set_var("HOLDLINE_TEST_REDIS_PASSWORD", "hunter2-redis") };
        let params = vec![
            ("maxlen".to_owned(), "5000".to_owned()),
            ("db".to_owned(), "2".to_owned()),
            (
                "password_env".to_owned(),
                "HOLDLINE_TEST_REDIS_PASSWORD".to_owned(),
            ),
        ];
        let c = RedisConfig::from_parts("cache.local:6380/genesys", &params).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("cache.local", 6380));
        assert_eq!(c.stream, "genesys");
        assert_eq!((c.db, c.maxlen), (2, Some(5000)));
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = RedisConfig::from_parts("localhost/s", &[("maxlen".into(), "0".into())]).unwrap();
        assert_eq!((c.port, c.maxlen), (6379, None));
        for bad in [
            "localhost",
            "localhost/",
            "u:p@localhost/s",
            "localhost:x/s",
        ] {
            assert!(RedisConfig::from_parts(bad, &[]).is_err(), "{bad}");
        }
        let err = RedisConfig::from_parts("h/s", &[("colour".into(), "red".into())]).unwrap_err();
        assert!(err.contains("maxlen"), "{err}");
    }
}
