//! A cluster node's share of the promise: each run of an org's client reports what its
//! sockets covered, and the first holder of each org writes the gaps no holder covered
//! (a node's own gaps are not the cluster's when the other holder was receiving).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdline_cluster::cover::{Report, ShardReport, shard_key};
use holdline_cluster::ledger::{Coverage, Known};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, watch};

use super::orgs::Item;

/// How often a holder reports its coverage, and the gap-finder looks.
pub(super) const EVERY: Duration = Duration::from_secs(1);

/// An outage no holder has come back from is reported in stretches of this length.
const OPEN_HOLE: Duration = Duration::from_secs(60);

/// A mark is stored only this long after it was reached, so a gap found just before has
/// reached the stream (a gap-finder that takes over finds it again, with the same id,
/// inside the stream's duplicate window).
const MARK_DELAY: Duration = Duration::from_secs(30);

/// What an org's holder needs to report to the cluster.
#[derive(Clone)]
pub(super) struct Reporting {
    pub node: String,
    pub coverage: Coverage,
    /// The slots of the OAuth clients' channels.
    pub channels: holdline_cluster::Bucket,
    /// The channels the holders made.
    pub made: holdline_cluster::slots::Made,
    /// How often a holder lists its OAuth client's channels.
    pub channel_audit: Duration,
}

/// A client run's share of its OAuth client's channels, as the cluster's slots grant it.
struct Granted(Arc<holdline_client::ChannelShare>);

impl holdline_cluster::slots::Share for Granted {
    fn wanted(&self) -> usize {
        self.0.wanted()
    }

    fn grant(&self, n: usize) {
        self.0.grant(n);
    }

    fn using(&self) -> usize {
        self.0.using()
    }

    fn made(&self) -> Vec<u64> {
        self.0.made()
    }

    fn listing(&self) -> Option<(u64, Vec<u64>)> {
        self.0.listing()
    }
}

/// Holds channel slots for one run of an org's client; dropped, it lets them go.
pub(super) struct Slots {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Slots {
    /// Gives every slot back (waiting briefly for NATS).
    pub async fn release(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

impl Reporting {
    /// A name for one run of an org's client on this node, unlike any other's.
    fn run_id(&self) -> String {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "{}-{}-{n}",
            self.node,
            holdline_cluster::members::process_nonce()
        )
    }

    /// A reporter for one run of `org`'s client.
    pub fn reporter(&self, org: &str) -> holdline_cluster::ledger::Reporter {
        self.coverage.reporter(org, &self.run_id())
    }

    /// Gives `config` a share of its OAuth client's channels, held as slots in the
    /// cluster for as long as the returned [`Slots`] live.
    pub fn share_channels(&self, org: &str, config: &mut holdline_client::ClientConfig) -> Slots {
        let share = holdline_client::ChannelShare::new();
        share.audit_every(self.channel_audit);
        config.channel_share = Some(holdline_client::SharedChannels(share.clone()));
        let client = holdline_cluster::slots::client_key(
            &config.endpoints.login_base(),
            &config.credentials.client_id,
        );
        let owner = format!("{org} {}", self.run_id());
        let bucket = self.channels.clone();
        let made = self.made.clone();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let granted = Granted(share);
            holdline_cluster::slots::hold(
                bucket,
                made,
                client,
                owner,
                holdline_client::CHANNEL_BUDGET,
                &granted,
                || granted.0.want_changed(),
                stopped,
            )
            .await;
        });
        Slots { stop, task }
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn time(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

/// What `stream` has covered, as a report of `node`, with each shard's topics; when
/// `ended`, no shard goes on (the client stopped), and `why` says why.
pub(super) fn report(
    node: &str,
    stream: &holdline_client::EventStream,
    ended: Option<&str>,
) -> (Report, holdline_cluster::ledger::ShardTopics) {
    let mut shards = Vec::new();
    let mut topics = Vec::new();
    for cover in stream.coverage() {
        if cover.topics.is_empty() {
            continue;
        }
        let key = shard_key(&cover.topics);
        let (open, reason) = match ended {
            Some(why) if cover.open => (false, why.to_owned()),
            _ => (cover.open, cover.reason),
        };
        shards.push(ShardReport {
            key: key.clone(),
            runs: cover
                .runs
                .iter()
                .map(|(a, b)| (micros(*a), micros(*b)))
                .collect(),
            open,
            reason,
        });
        topics.push((key, cover.topics));
    }
    let report = Report {
        node: node.to_owned(),
        shards,
    };
    (report, topics)
}

/// The gaps of the cluster this node wrote (as the first holder of their org), by org.
#[derive(Clone, Default)]
pub(super) struct GapMetrics {
    gaps: Family<Vec<(&'static str, String)>, Counter>,
    seconds: Family<Vec<(&'static str, String)>, Counter<f64, std::sync::atomic::AtomicU64>>,
}

impl GapMetrics {
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "holdline_cluster_gaps",
            "Gaps of the cluster this node wrote, by org: windows no holder of the org covered \
             (a node's own gaps that another holder covered are not counted)",
            self.gaps.clone(),
        );
        registry.register(
            "holdline_cluster_gap_seconds",
            "Total width of the cluster's gaps this node wrote, by org",
            self.seconds.clone(),
        );
    }

    fn count(&self, org: &str, seconds: f64) {
        let labels = vec![("org", org.to_owned())];
        self.gaps.get_or_create(&labels).inc();
        self.seconds.get_or_create(&labels).inc_by(seconds);
    }
}

/// The gap-finder of a node: finds the gaps of the orgs it is the first holder of.
pub(super) struct GapFinder {
    pub known: Known,
    pub coverage: Coverage,
    pub id: String,
    pub view: watch::Receiver<holdline_cluster::View>,
    pub orgs: watch::Receiver<Vec<Arc<str>>>,
    pub lease: Duration,
    pub out: mpsc::Sender<Item>,
    pub metrics: GapMetrics,
    pub stop: watch::Receiver<bool>,
}

impl GapFinder {
    /// Runs until told to stop (or the writer is gone).
    pub async fn run(self) {
        let GapFinder {
            known,
            coverage,
            id,
            view,
            orgs,
            lease,
            out,
            metrics,
            mut stop,
        } = self;
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Marks reached in the last and in this MARK_DELAY, by (org, shard).
        let mut older: HashMap<(Arc<str>, String), u64> = HashMap::new();
        let mut newer: HashMap<(Arc<str>, String), u64> = HashMap::new();
        let mut since_stored = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let view = view.borrow().clone();
            if !view.holding {
                continue;
            }
            // A hole counts once it ended a lease time ago: reports on their way can fill it.
            let settled = micros(SystemTime::now()).saturating_sub(micros(UNIX_EPOCH + lease));
            let orgs = orgs.borrow().clone();
            for org in orgs {
                let first =
                    holdline_cluster::holders(&org, &view.members, holdline_cluster::HOLDERS)
                        .first()
                        .is_some_and(|h| *h == id);
                if !first {
                    continue;
                }
                let (found, moved) = known.gaps(&org, lease, settled, OPEN_HOLE);
                for f in found {
                    let gap = holdline_client::Gap {
                        topics: f.topics.clone(),
                        from: time(f.hole.from),
                        to: time(f.hole.to),
                        reason: f.hole.reason.clone(),
                    };
                    let seconds = gap
                        .to
                        .duration_since(gap.from)
                        .unwrap_or_default()
                        .as_secs_f64();
                    tracing::error!(event = "gap", org = %org, topics = gap.topics.len(), seconds, reason = %gap.reason, "gap: no holder of the org could have received the events in this window");
                    if out
                        .send(Item::ClusterGap(org.clone(), gap, f.id()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    metrics.count(&org, seconds);
                }
                for (shard, mark) in moved {
                    newer.insert((org.clone(), shard), mark);
                }
            }
            if since_stored.elapsed() >= MARK_DELAY {
                let due = std::mem::replace(&mut older, std::mem::take(&mut newer));
                since_stored = tokio::time::Instant::now();
                let coverage = coverage.clone();
                tokio::spawn(async move {
                    for ((org, shard), mark) in due {
                        if let Err(e) = coverage.settle(&org, &shard, mark).await {
                            tracing::debug!(org = %org, error = %e, "gap mark not stored; found again after a take-over");
                        }
                    }
                });
            }
        }
    }
}
