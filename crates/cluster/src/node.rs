//! Joining a cluster: one NATS connection, the nodes bucket, and the membership task.

use std::time::Duration;

use tokio::sync::watch;

use crate::lease::{Bucket, LeaseError};
use crate::members::{self, View};

/// The bucket of the nodes' leases.
pub const NODES_BUCKET: &str = "holdline_nodes";

/// Holders of each piece of work while at least two nodes live.
pub const HOLDERS: usize = 2;

/// This node, in the cluster until it leaves.
pub struct Joined {
    /// The node's id.
    pub id: String,
    /// What it knows of the cluster, updated on every change.
    pub view: watch::Receiver<View>,
    /// Where holders report what they covered, and gaps are settled.
    pub coverage: crate::ledger::Coverage,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// `urls` without any `user:password@` in them, for logs and errors.
pub fn shown(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            match (u.find("://"), u.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}[redacted]@{}", &u[..scheme + 3], &u[at + 1..])
                }
                (None, Some(at)) => format!("[redacted]@{}", &u[at + 1..]),
                _ => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects to the NATS servers `urls` (comma-separated `nats://host:port`) and joins
/// as node `id`, with leases of `lease`.
pub async fn join(urls: &str, id: &str, lease: Duration) -> Result<Joined, LeaseError> {
    let servers: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| LeaseError::Nats(format!("cluster URL {:?}: {e}", shown(urls))))?;
    let client = async_nats::ConnectOptions::new()
        .name(format!("holdline node {id}"))
        .connection_timeout(lease)
        .connect(servers)
        .await
        .map_err(|e| LeaseError::Nats(format!("cannot connect to {}: {e}", shown(urls))))?;
    let js = async_nats::jetstream::new(client);
    let bucket = tokio::time::timeout(lease * 3, Bucket::open(&js, NODES_BUCKET, lease, 1))
        .await
        .map_err(|_| {
            LeaseError::Nats(format!(
                "{} did not answer within {:?}",
                shown(urls),
                lease * 3
            ))
        })??;
    let coverage = tokio::time::timeout(lease * 3, crate::ledger::Coverage::open(&js, 1))
        .await
        .map_err(|_| {
            LeaseError::Nats(format!(
                "{} did not answer within {:?}",
                shown(urls),
                lease * 3
            ))
        })??;
    let (view_tx, view) = watch::channel(View {
        members: Vec::new(),
        holding: false,
        reason: Some("joining".to_owned()),
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(members::run(bucket, id.to_owned(), view_tx, stopped));
    Ok(Joined {
        id: id.to_owned(),
        view,
        coverage,
        stop,
        task,
    })
}

impl Joined {
    /// Leaves the cluster: the node's lease is released, so the others take over at once.
    pub async fn leave(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_urls_are_not_shown() {
        assert_eq!(
            super::shown("nats://bob:hunter2@a:4222, nats://b:4222"),
            "nats://[redacted]@a:4222,nats://b:4222"
        );
        assert_eq!(super::shown("tok@host:4222"), "[redacted]@host:4222");
    }
}
