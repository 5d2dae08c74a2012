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
//!
//! Fenced (`holdline deliver --cluster`), a batch is one script that first compares the
//! writer's token with the largest seen, kept in `holdline:fence:<stream>:<lease>`: below it the
//! batch is refused whole, otherwise it is written, each entry with a `fence` field too.

mod config;
#[cfg(test)]
mod tests;

use crate::{BlockingSink, SinkError};

pub use config::*;

/// The Redis Streams sink; connects at first use and again after any error.
pub struct RedisSink {
    config: RedisConfig,
    name: String,
    conn: Option<redis::Connection>,
    fence: Option<crate::Fence>,
}

/// Checks the fence and adds the batch, atomically (a script runs alone).
/// KEYS: stream, fence key. ARGV: token, maxlen (0: none), then id, kind, record per entry.
const FENCED_XADD: &str = r#"
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = tonumber(ARGV[1])
if seen > token then
  return redis.error_reply('HOLDLINE_FENCED token ' .. ARGV[1] .. ' is below ' .. tostring(seen))
end
if seen < token then redis.call('SET', KEYS[2], ARGV[1]) end
for i = 3, #ARGV, 3 do
  if ARGV[2] ~= '0' then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'id', ARGV[i], 'kind', ARGV[i + 1], 'record', ARGV[i + 2], 'fence', ARGV[1])
  else
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'kind', ARGV[i + 1], 'record', ARGV[i + 2], 'fence', ARGV[1])
  end
end
return (#ARGV - 2) / 3
"#;

/// Where a fenced stream keeps the largest token of lease `lease` it has seen (each
/// delivery its own: tokens of two leases do not compare).
pub fn fence_key(stream: &str, lease: &str) -> String {
    format!("holdline:fence:{stream}:{lease}")
}

impl RedisSink {
    pub fn new(config: RedisConfig) -> RedisSink {
        RedisSink {
            name: format!("redis:{}:{}/{}", config.host, config.port, config.stream),
            config,
            conn: None,
            fence: None,
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

    fn fence(&mut self, fence: &crate::Fence) {
        self.fence = Some(fence.clone());
    }

    fn deliver(&mut self, records: &[&[u8]]) -> Result<(), SinkError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        if let Some(fence) = self.fence.clone() {
            return self.deliver_fenced(records, &fence);
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

impl RedisSink {
    /// The batch as one script that refuses it whole below the largest token seen.
    fn deliver_fenced(&mut self, records: &[&[u8]], fence: &crate::Fence) -> Result<(), SinkError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(FENCED_XADD)
            .arg(2)
            .arg(&self.config.stream)
            .arg(fence_key(&self.config.stream, &fence.key))
            .arg(fence.token)
            .arg(self.config.maxlen.unwrap_or(0));
        for rec in records {
            let routed = crate::Routed::of(rec);
            cmd.arg(&routed.id)
                .arg(routed.kind())
                .arg(rec.strip_suffix(b"\n").unwrap_or(rec));
        }
        let conn = self.conn.as_mut().expect("connected by deliver");
        let outcome = conn
            .send_packed_command(&cmd.get_packed_command())
            .and_then(|()| conn.recv_response());
        match outcome {
            Ok(redis::Value::ServerError(e)) if e.to_string().contains("HOLDLINE_FENCED") => {
                Err(SinkError::Fenced {
                    sink: self.name.clone(),
                    detail: format!("redis holds a newer deliverer's token ({e})"),
                })
            }
            Ok(redis::Value::ServerError(e)) => {
                Err(self.fail(format!("redis refused the batch: {e}")))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                self.conn = None;
                Err(self.fail(e))
            }
        }
    }
}
