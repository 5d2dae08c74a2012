//! Leases in a JetStream key-value bucket. A lease is an entry the holder created and
//! keeps renewing by compare-and-set (`update` with the revision it last wrote); the
//! bucket's `max_age` removes an entry that is not renewed, so a holder that dies or is
//! cut off loses its leases by itself. The revision a holder last wrote fences what it
//! does under the lease: a renewal from anyone else changes it.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

/// What went wrong with a bucket or a lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease is someone else's now (it aged out and was taken, or the key was written).
    #[error("lease {key} was lost: {detail}")]
    Lost { key: String, detail: String },
    /// The bucket exists with another lease time than this node's.
    #[error(
        "bucket {bucket} keeps entries {found:?}, this node expects {wanted:?}: give every node the same lease time, or delete the bucket (nats kv del {bucket})"
    )]
    Mismatch {
        bucket: String,
        found: Duration,
        wanted: Duration,
    },
    /// A key holdline cannot use (NATS keys are letters, digits, `-`, `_`, `.`, `/`, `=`).
    #[error("{0:?} cannot be a key of the bucket")]
    BadKey(String),
    /// The server is older than the key-value features the leases use.
    #[error("nats-server {0} is too old for holdline's cluster: it needs 2.10 or later")]
    OldServer(String),
    /// NATS did not answer, or answered with an error.
    #[error("NATS: {0}")]
    Nats(String),
}

fn nats(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Nats(e.to_string())
}

/// Opens the key-value bucket `name`, creating it when it does not exist: file storage,
/// one entry per key, each removed `max_age` after its last write, `replicas` copies (an
/// existing bucket keeps its own settings).
pub(crate) async fn open_kv(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, LeaseError> {
    match js.get_key_value(name).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: name.to_owned(),
                description: description.to_owned(),
                history: 1,
                max_age,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(nats),
    }
}

/// Writes to a bucket's keys, as [`Bucket::watch`] sees them.
pub type Writes =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<(String, bool), LeaseError>> + Send>>;

/// A bucket of leases that each last `ttl` unless renewed.
#[derive(Clone)]
pub struct Bucket {
    kv: kv::Store,
    name: String,
    ttl: Duration,
}

impl Bucket {
    /// Opens the bucket `name`, creating it (file storage, one entry per key, entries
    /// removed `ttl` after their last write, `replicas` copies) when it does not exist.
    pub async fn open(
        js: &jetstream::Context,
        name: &str,
        ttl: Duration,
        replicas: usize,
    ) -> Result<Bucket, LeaseError> {
        let version = js.client().server_info().version;
        // Empty until the first connection's INFO arrives: the bucket calls then tell.
        if !version.is_empty() && !at_least_2_10(&version) {
            return Err(LeaseError::OldServer(version));
        }
        let kv = open_kv(js, name, "holdline leases", ttl, replicas).await?;
        let mut bucket = Bucket {
            kv,
            name: name.to_owned(),
            ttl,
        };
        let found = bucket.kv.status().await.map_err(nats)?.max_age();
        if found != ttl {
            return Err(LeaseError::Mismatch {
                bucket: name.to_owned(),
                found,
                wanted: ttl,
            });
        }
        bucket.ttl = found;
        Ok(bucket)
    }

    /// How long a lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease `key` for `owner` if no one holds it (or `owner` itself held it,
    /// before a restart); None while someone else does.
    pub async fn acquire(&self, key: &str, owner: &str) -> Result<Option<Lease>, LeaseError> {
        check_key(key)?;
        let asked = Instant::now();
        let value = Bytes::from(owner.to_owned());
        match self.kv.create(key, value.clone()).await {
            Ok(revision) => return Ok(Some(self.lease(key, owner, revision, asked))),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(nats(e)),
        }
        // Held: by this owner before (take it over), or by another.
        let Some(entry) = self.kv.entry(key).await.map_err(nats)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put || entry.value != owner.as_bytes() {
            return Ok(None);
        }
        match self.kv.update(key, value, entry.revision).await {
            Ok(revision) => Ok(Some(self.lease(key, owner, revision, asked))),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(nats(e)),
        }
    }

    fn lease(&self, key: &str, owner: &str, revision: u64, renewed: Instant) -> Lease {
        Lease {
            kv: self.kv.clone(),
            key: key.to_owned(),
            owner: Bytes::from(owner.to_owned()),
            revision,
            renewed,
            ttl: self.ttl,
        }
    }

    /// Who holds `key` now.
    pub async fn holder(&self, key: &str) -> Result<Option<String>, LeaseError> {
        check_key(key)?;
        let entry = self.kv.entry(key).await.map_err(nats)?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Every lease held now whose key starts with `prefix`: key and holder, by key.
    pub async fn held(&self, prefix: &str) -> Result<Vec<(String, String)>, LeaseError> {
        use futures_util::TryStreamExt;
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(keys) => keys.try_collect().await.map_err(nats)?,
            Err(e) => return Err(nats(e)),
        };
        let mut out = Vec::new();
        for key in keys.into_iter().filter(|k| k.starts_with(prefix)) {
            if let Some(holder) = self.holder(&key).await? {
                out.push((key, holder));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every write to a key starting with `prefix` from now on (a renewal, a new lease, a
    /// release): each entry's key and whether it is a put.
    pub async fn watch(&self, prefix: &str) -> Result<Writes, LeaseError> {
        use futures_util::StreamExt;
        let watch = self.kv.watch(format!("{prefix}>")).await.map_err(nats)?;
        Ok(Box::pin(watch.map(|e| {
            e.map(|e| (e.key, e.operation == kv::Operation::Put))
                .map_err(nats)
        })))
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Whether a server version (`2.10.4`, `v2.9.10`) is 2.10 or later.
fn at_least_2_10(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

fn check_key(key: &str) -> Result<(), LeaseError> {
    let ok = !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '='));
    match ok {
        true => Ok(()),
        false => Err(LeaseError::BadKey(key.to_owned())),
    }
}

/// A lease this node holds.
pub struct Lease {
    kv: kv::Store,
    key: String,
    owner: Bytes,
    revision: u64,
    /// When the last renewal was sent: the lease lasts `ttl` from then at the most.
    renewed: Instant,
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("revision", &self.revision)
            .finish()
    }
}

impl Lease {
    /// Renews the lease: compare-and-set on the revision last written. `Lost` when anyone
    /// wrote the key since, or it aged out.
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        let asked = Instant::now();
        match self
            .kv
            .update(&self.key, self.owner.clone(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                self.renewed = asked;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(LeaseError::Lost {
                key: self.key.clone(),
                detail: "the key was written by another holder, or aged out".to_owned(),
            }),
            Err(e) => Err(nats(e)),
        }
    }

    /// The revision last written: a fencing token that any other holder's write changes.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Until when the lease surely holds, by this node's clock: `ttl` after the last
    /// renewal was sent. Past it, the holder must act as if it had lost the lease, even
    /// if it cannot reach NATS to learn so.
    pub fn valid_until(&self) -> Instant {
        self.renewed + self.ttl
    }

    /// Gives the lease up at once (only if it is still this holder's).
    pub async fn release(self) -> Result<(), LeaseError> {
        self.kv
            .delete_expect_revision(&self.key, Some(self.revision))
            .await
            .map_err(nats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions_compare() {
        assert!(at_least_2_10("2.10.0"));
        assert!(at_least_2_10("v2.15.1"));
        assert!(at_least_2_10("3.0.0-beta"));
        assert!(!at_least_2_10("2.9.10"));
        assert!(!at_least_2_10("garbage"));
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("org.acme.0").is_ok());
        assert!(check_key("node.a-b_c").is_ok());
        for bad in ["", ".x", "x.", "a b", "a*", "a>"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
