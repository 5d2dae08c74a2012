//! Joining a cluster: one NATS connection, the nodes bucket, and the membership task.

use std::time::Duration;

use tokio::sync::watch;

use crate::lease::{Bucket, LeaseError};
use crate::members::{self, View};

/// The bucket of the nodes' leases.
pub const NODES_BUCKET: &str = "holdline_nodes";

/// The bucket of channel slots: an OAuth client's channels, shared by the holders of its
/// org.
pub const CHANNELS_BUCKET: &str = "holdline_channels";

/// The bucket of the deliverers' leases (`holdline deliver --cluster`).
pub const DELIVER_BUCKET: &str = "holdline_deliver";

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
    /// Slots of the OAuth clients' channels, leased by the holders that use them.
    pub channels: Bucket,
    /// The channels the holders made, that the service still counts.
    pub made: crate::slots::Made,
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

/// Where the cluster's NATS is and how to log in:
/// `nats://host:4222,host2:4222?creds=/path&tls=true&replicas=3`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// The servers as given (without the options).
    pub servers: String,
    /// From the environment variable `token_env` names.
    pub token: Option<String>,
    pub user: Option<String>,
    /// From the environment variable `password_env` names.
    pub password: Option<String>,
    /// A `.creds` file (JWT and nkey seed).
    pub creds: Option<std::path::PathBuf>,
    /// Require TLS.
    pub tls: bool,
    /// A CA certificate (PEM) to trust for the servers' TLS.
    pub ca_file: Option<std::path::PathBuf>,
    /// Copies of the cluster's buckets, when holdline creates them.
    pub replicas: usize,
}

impl std::fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterUrl")
            .field("servers", &shown(&self.servers))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("creds", &self.creds)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("replicas", &self.replicas)
            .finish()
    }
}

const OPTIONS: &str = "token_env, user, password_env, creds, tls, ca_file and replicas";

impl ClusterUrl {
    /// Reads `nats://host:port[,host:port…][?option=value&…]`.
    pub fn parse(text: &str) -> Result<ClusterUrl, String> {
        let (servers, query) = text.split_once('?').unwrap_or((text, ""));
        if servers.trim().is_empty() {
            return Err(format!(
                "cluster URL {:?} names no server: nats://host:4222",
                shown(text)
            ));
        }
        let env = |name: &str, v: &str| {
            std::env::var(v)
                .map_err(|_| format!("cluster {name}={v}: set the environment variable {v}"))
        };
        let mut url = ClusterUrl {
            servers: servers.to_owned(),
            token: None,
            user: None,
            password: None,
            creds: None,
            tls: false,
            ca_file: None,
            replicas: 1,
        };
        url.addrs()?;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "token_env" => url.token = Some(env(k, v)?),
                "user" => url.user = Some(v.to_owned()),
                "password_env" => url.password = Some(env(k, v)?),
                "creds" => url.creds = Some(v.into()),
                "ca_file" => url.ca_file = Some(v.into()),
                "tls" => {
                    url.tls = v
                        .parse()
                        .map_err(|_| format!("cluster tls={v} must be true or false"))?
                }
                "replicas" => url.replicas = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=5).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "cluster replicas={v} must be 1 to 5 (JetStream keeps at most 5 copies)"
                        )
                    })?,
                other => {
                    return Err(format!(
                        "unknown cluster option {other:?}; the options are {OPTIONS}"
                    ));
                }
            }
        }
        if url.user.is_some() != url.password.is_some() {
            return Err("cluster user=NAME and password_env=VARIABLE go together".into());
        }
        Ok(url)
    }

    fn addrs(&self) -> Result<Vec<async_nats::ServerAddr>, String> {
        self.servers
            .split(',')
            .map(|u| {
                let u = u.trim();
                let full = match u.contains("://") {
                    true => u.to_owned(),
                    false => format!("nats://{u}"),
                };
                full.parse().map_err(|e| {
                    format!("cluster server {:?}: {e}; write nats://host:4222", shown(u))
                })
            })
            .collect()
    }

    /// A JetStream context on a new connection named for `id`, each request answered
    /// within `timeout`.
    pub async fn jetstream(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<async_nats::jetstream::Context, LeaseError> {
        let client = self.connect(id, timeout).await?;
        Ok(async_nats::jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(client))
    }

    async fn connect(&self, id: &str, timeout: Duration) -> Result<async_nats::Client, LeaseError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("holdline node {id}"))
            .connection_timeout(timeout)
            .require_tls(self.tls);
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(path) = &self.ca_file {
            options = options.add_root_certificates(path.clone());
        }
        if let Some(path) = &self.creds {
            options = options.credentials_file(path).await.map_err(|e| {
                LeaseError::Nats(format!(
                    "cannot read the cluster creds {}: {e}",
                    path.display()
                ))
            })?;
        }
        let servers = self.addrs().map_err(LeaseError::Nats)?;
        options.connect(servers).await.map_err(|e| {
            LeaseError::Nats(format!("cannot connect to {}: {e}", shown(&self.servers)))
        })
    }
}

/// `what`, unless NATS (at `urls`) takes the connection but does not answer in `time`.
pub async fn within<T>(
    time: Duration,
    urls: &str,
    what: impl std::future::Future<Output = Result<T, LeaseError>>,
) -> Result<T, LeaseError> {
    tokio::time::timeout(time, what)
        .await
        .map_err(|_| LeaseError::Nats(format!("{} did not answer within {time:?}", shown(urls))))?
}

/// Connects to the cluster's NATS and joins as node `id`, with leases of `lease`.
pub async fn join(url: &ClusterUrl, id: &str, lease: Duration) -> Result<Joined, LeaseError> {
    let urls = url.servers.as_str();
    let client = url.connect(id, lease).await?;
    let js = async_nats::jetstream::new(client);
    let answers = |what| within(lease * 3, urls, what);
    let bucket = answers(Bucket::open(&js, NODES_BUCKET, lease, url.replicas)).await?;
    let channels = answers(Bucket::open(&js, CHANNELS_BUCKET, lease, url.replicas)).await?;
    let made = within(lease * 3, urls, crate::slots::Made::open(&js, url.replicas)).await?;
    let coverage = within(
        lease * 3,
        urls,
        crate::ledger::Coverage::open(&js, url.replicas),
    )
    .await?;
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
        channels,
        made,
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
    use super::ClusterUrl;

    #[test]
    fn cluster_urls_take_options_and_keep_secrets_out_of_debug() {
        // SAFETY: no other test reads this variable.
        unsafe { std::env::set_var("HOLDLINE_TEST_CLUSTER_TOKEN", "s3cr3t-token") };
        let u = ClusterUrl::parse(
            "nats://a:4222,b:4222?token_env=HOLDLINE_TEST_CLUSTER_TOKEN&tls=true&replicas=3",
        )
        .unwrap();
        assert_eq!(u.servers, "nats://a:4222,b:4222");
        assert_eq!(u.token.as_deref(), Some("s3cr3t-token"));
        assert!(u.tls);
        assert_eq!(u.replicas, 3);
        assert!(!format!("{u:?}").contains("s3cr3t"));
        assert_eq!(ClusterUrl::parse("a:4222").unwrap().replicas, 1);
        for (bad, says) in [
            ("nats://a:4222?replicas=9", "1 to 5"),
            ("nats://a:4222?colour=blue", "the options are"),
            ("nats://a:4222?user=bob", "go together"),
            (
                "nats://a:4222?token_env=HOLDLINE_TEST_UNSET_VARIABLE",
                "set the environment variable",
            ),
            ("", "names no server"),
        ] {
            let err = ClusterUrl::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn credentials_in_urls_are_not_shown() {
        assert_eq!(
            super::shown("nats://bob:hunter2@a:4222, nats://b:4222"),
            "nats://[redacted]@a:4222,nats://b:4222"
        );
        assert_eq!(super::shown("tok@host:4222"), "[redacted]@host:4222");
    }
}
