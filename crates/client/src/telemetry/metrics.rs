//! The engine's metrics, registered with a `prometheus-client` registry as a collector
//! that reads [`Stats`] at each scrape, and the readiness rule. The spool and each sink
//! register their own; the binary serves the registry (OpenMetrics text).
//!
//! Nothing here can carry a secret: labels are topic families, causes, REST operation
//! names, status codes, shard and slot numbers and channel ids.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use holdline_proto::exposition::escape;

use crate::CHANNEL_BUDGET;
use crate::telemetry::stats::{Cause, FAMILIES, Stats};

/// Why the client is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// No shard exists yet (still starting).
    Starting,
    /// These shards have no socket receiving.
    ShardsDown(Vec<usize>),
    /// This many slots died (an internal error) and are not receiving again yet.
    SlotsFailed(usize),
}

/// Ready when at least one shard exists, every shard has a covering socket and no slot is
/// being restarted after dying.
pub fn readiness(stats: &Stats) -> Result<usize, NotReady> {
    let failed = stats
        .slots_failed
        .load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        return Err(NotReady::SlotsFailed(failed as usize));
    }
    let shards = stats.shard_count();
    if shards == 0 {
        return Err(NotReady::Starting);
    }
    let down = stats.shards_down();
    if down.is_empty() {
        Ok(shards)
    } else {
        Err(NotReady::ShardsDown(down))
    }
}

/// Adds the engine's series to `registry`, read from `stats` at every scrape.
pub fn register(stats: Arc<Stats>, registry: &mut Registry) {
    registry.register_collector(Box::new(Engine(stats)));
}

/// The engine's series alone, as the binary serves them (for tests and tools).
pub fn render(stats: &Arc<Stats>) -> String {
    let mut registry = Registry::default();
    register(stats.clone(), &mut registry);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Engine(Arc<Stats>);

impl Collector for Engine {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let orgs = [(None, &*self.0)];
        encode(&mut Out {
            encoder,
            orgs: &orgs,
        })
    }
}

/// The engines of many orgs, each series labelled with its `org`: orgs come and go
/// while the registry serves them.
#[derive(Debug, Clone, Default)]
pub struct Orgs(Arc<std::sync::RwLock<Vec<OrgEngine>>>);

/// An org's name and its engine's counters.
pub type OrgEngine = (Arc<str>, Arc<Stats>);

impl Orgs {
    /// Adds `org`'s engine (replacing one of that name).
    pub fn add(&self, org: &str, stats: Arc<Stats>) {
        let mut orgs = self.0.write().unwrap_or_else(|p| p.into_inner());
        orgs.retain(|(name, _)| &**name != org);
        orgs.push((Arc::from(org), stats));
    }

    /// Removes `org`'s engine if it is still `stats` (not one added since in its place).
    pub fn remove_engine(&self, org: &str, stats: &Arc<Stats>) {
        let mut orgs = self.0.write().unwrap_or_else(|p| p.into_inner());
        orgs.retain(|(name, s)| &**name != org || !Arc::ptr_eq(s, stats));
    }

    /// Each org's engine, in the order they were added.
    pub fn list(&self) -> Vec<OrgEngine> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Adds every org's series to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }
}

impl Collector for Orgs {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let list = self.list();
        let orgs: Vec<(Option<&str>, &Stats)> =
            list.iter().map(|(n, s)| (Some(&**n), &**s)).collect();
        encode(&mut Out {
            encoder,
            orgs: &orgs,
        })
    }
}

/// A sample's value: counts stay integers in the text, times are fractions.
#[derive(Clone, Copy)]
enum V {
    U(u64),
    I(i64),
    F(f64),
}

impl From<u64> for V {
    fn from(v: u64) -> V {
        V::U(v)
    }
}

impl From<i64> for V {
    fn from(v: i64) -> V {
        V::I(v)
    }
}

impl From<f64> for V {
    fn from(v: f64) -> V {
        V::F(v)
    }
}

fn put(m: MetricEncoder<'_>, counter: bool, v: V) -> fmt::Result {
    match (counter, v) {
        (true, V::U(v)) => ConstCounter::new(v).encode(m),
        (true, V::I(v)) => ConstCounter::new(v.max(0) as u64).encode(m),
        (true, V::F(v)) => ConstCounter::new(v).encode(m),
        (false, V::U(v)) => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m),
        (false, V::I(v)) => ConstGauge::new(v).encode(m),
        (false, V::F(v)) => ConstGauge::new(v).encode(m),
    }
}

/// The encoder and the engines it reads: one unlabelled, or one per org with an `org`
/// label.
struct Out<'a, 's> {
    encoder: DescriptorEncoder<'a>,
    orgs: &'s [(Option<&'s str>, &'s Stats)],
}

/// One family's samples for one engine.
struct Family<'a, 'b> {
    m: &'a mut MetricEncoder<'b>,
    counter: bool,
    org: Option<&'a str>,
}

impl Family<'_, '_> {
    fn sample(&mut self, labels: &[(&str, &str)], v: impl Into<V>) -> fmt::Result {
        let labels: Vec<(&str, Cow<'_, str>)> = self
            .org
            .map(|org| ("org", escape(org)))
            .into_iter()
            .chain(labels.iter().map(|(k, v)| (*k, escape(v))))
            .collect();
        put(self.m.encode_family(&labels)?, self.counter, v.into())
    }
}

impl Out<'_, '_> {
    /// A family's descriptor: counters are named without `_total` (the encoder appends
    /// it); whether it counts.
    fn descriptor<'s>(
        &'s mut self,
        name: &'s str,
        kind: &str,
        help: &'s str,
    ) -> Result<(MetricEncoder<'s>, bool), fmt::Error> {
        let counter = kind == "counter";
        let (name, ty) = match counter {
            true => (
                name.strip_suffix("_total").unwrap_or(name),
                MetricType::Counter,
            ),
            false => (name, MetricType::Gauge),
        };
        let help = help.strip_suffix('.').unwrap_or(help);
        Ok((
            self.encoder.encode_descriptor(name, help, None, ty)?,
            counter,
        ))
    }

    /// A family of labelled samples, `samples` called once per engine.
    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl Fn(&mut Family<'_, '_>, &Stats) -> fmt::Result,
    ) -> fmt::Result {
        let orgs = self.orgs;
        let (mut m, counter) = self.descriptor(name, kind, help)?;
        for (org, stats) in orgs {
            samples(
                &mut Family {
                    m: &mut m,
                    counter,
                    org: *org,
                },
                stats,
            )?;
        }
        Ok(())
    }

    /// A family of one sample per engine.
    fn one<T: Into<V>>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        v: impl Fn(&Stats) -> T,
    ) -> fmt::Result {
        match self.orgs {
            // One engine without a label: the sample is the family's alone.
            [(None, stats)] => {
                let stats = *stats;
                let (m, counter) = self.descriptor(name, kind, help)?;
                put(m, counter, v(stats).into())
            }
            _ => self.family(name, kind, help, |f, stats| f.sample(&[], v(stats))),
        }
    }
}

fn counter(c: &std::sync::atomic::AtomicU64) -> u64 {
    Stats::get(c)
}

fn gauge(g: &std::sync::atomic::AtomicI64) -> i64 {
    g.load(std::sync::atomic::Ordering::Relaxed)
}

/// Every engine series.
fn encode(o: &mut Out<'_, '_>) -> fmt::Result {
    let family_label = |i: usize| FAMILIES.get(i).map_or("other", |f| f.name());

    o.family(
        "holdline_events_received_total",
        "counter",
        "Notification frames received on any socket, before de-duplication, by topic family.",
        |f, stats| {
            for (i, c) in stats.frames_by_family.iter().enumerate() {
                f.sample(&[("family", family_label(i))], counter(c))?;
            }
            Ok(())
        },
    )?;
    o.family(
        "holdline_events_emitted_total",
        "counter",
        "Events written out once each, by topic family.",
        |f, stats| {
            for (i, c) in stats.emitted_by_family.iter().enumerate() {
                f.sample(&[("family", family_label(i))], counter(c))?;
            }
            Ok(())
        },
    )?;
    o.one(
        "holdline_duplicates_dropped_total",
        "counter",
        "Events dropped because another socket delivered them first.",
        |stats| counter(&stats.duplicates),
    )?;
    o.one(
        "holdline_near_duplicates_total",
        "counter",
        "Duplicates whose bytes differed from the first copy: the service serialises one \
         event differently per channel (the id is of the value, so they are still caught).",
        |stats| counter(&stats.near_duplicates),
    )?;
    o.one(
        "holdline_arrival_skew_seconds",
        "gauge",
        "Largest delay between two sockets' copies of one event in the last 10 minutes.",
        |stats| Stats::get(&stats.arrival_skew_micros) as f64 / 1e6,
    )?;
    o.one(
        "holdline_gap_lookback_seconds",
        "gauge",
        "Time trimmed from the end of every socket's coverage: the --gap-lookback floor \
         plus the arrival skew.",
        |stats| Stats::get(&stats.lookback_micros) as f64 / 1e6,
    )?;
    o.one(
        "holdline_dedupe_window_seconds",
        "gauge",
        "How long event ids are remembered for de-duplication (at least twice the look-back).",
        |stats| Stats::get(&stats.dedupe_window_micros) as f64 / 1e6,
    )?;
    o.one(
        "holdline_gaps_total",
        "counter",
        "Gap records: windows in which a shard's events could not have been received.",
        |stats| counter(&stats.gaps),
    )?;
    o.one(
        "holdline_gap_seconds_total",
        "counter",
        "Total width of the reported gaps.",
        |stats| Stats::get(&stats.gap_micros) as f64 / 1e6,
    )?;
    o.family(
        "holdline_reconnects_total",
        "counter",
        "Sockets connected again after a live one was lost, by cause.",
        |f, stats| {
            for (cause, c) in Cause::ALL.iter().zip(&stats.reconnects_by_cause) {
                f.sample(&[("cause", cause.label())], counter(c))?;
            }
            Ok(())
        },
    )?;
    o.family(
        "holdline_socket_ends_total",
        "counter",
        "Sockets that ended: planned (replaced at a rollover or a hand-over) or not.",
        |f, stats| {
            for (kind, c) in [
                ("planned", &stats.socket_ends_planned),
                ("unplanned", &stats.socket_ends_unplanned),
            ] {
                f.sample(&[("kind", kind)], counter(c))?;
            }
            Ok(())
        },
    )?;
    o.one(
        "holdline_socket_closing_total",
        "counter",
        "Maintenance notices (v2.system.socket_closing) handled with a second socket.",
        |stats| counter(&stats.socket_closings),
    )?;
    o.one(
        "holdline_rollovers_total",
        "counter",
        "Channels replaced before they or their token expired.",
        |stats| counter(&stats.rollovers),
    )?;
    o.one(
        "holdline_heartbeats_total",
        "counter",
        "Server heartbeats received.",
        |stats| counter(&stats.heartbeats),
    )?;
    o.one(
        "holdline_pongs_total",
        "counter",
        "Pongs received.",
        |stats| counter(&stats.pongs),
    )?;
    let mut m = o.encoder.encode_descriptor(
        "holdline_ping_rtt_seconds",
        "Time from a ping to its pong",
        None,
        MetricType::Histogram,
    )?;
    for (org, stats) in o.orgs {
        let (buckets, sum) = stats.ping_rtt.snapshot();
        // The snapshot is cumulative; the encoder adds the buckets up itself.
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = buckets
            .iter()
            .map(|&(le, total)| {
                let n = total - below;
                below = total;
                (if le.is_infinite() { f64::MAX } else { le }, n)
            })
            .collect();
        match org {
            Some(org) => m
                .encode_family(&[("org", escape(org))])?
                .encode_histogram::<NoLabelSet>(sum, below, &buckets, None)?,
            None => m.encode_histogram::<NoLabelSet>(sum, below, &buckets, None)?,
        }
    }
    o.one(
        "holdline_tokens_fetched_total",
        "counter",
        "OAuth tokens fetched (the first and every renewal).",
        |stats| counter(&stats.tokens_fetched),
    )?;
    o.family(
        "holdline_rest_requests_total",
        "counter",
        "Platform API calls by operation and HTTP status (0: no answer).",
        |f, stats| {
            for ((what, status), n) in stats.rest_snapshot() {
                f.sample(
                    &[("operation", what), ("status", &status.to_string())],
                    n as f64,
                )?;
            }
            Ok(())
        },
    )?;
    o.one(
        "holdline_rate_limited_total",
        "counter",
        "429 answers waited out.",
        |stats| counter(&stats.rate_limited),
    )?;
    o.one(
        "holdline_rate_limited_seconds_total",
        "counter",
        "Time spent waiting out 429 answers.",
        |stats| Stats::get(&stats.rate_limited_micros) as f64 / 1e6,
    )?;
    o.one(
        "holdline_channels_held",
        "gauge",
        "Notification channels the service counts against the OAuth client (in use, being created, replaced but not yet expired, an earlier run's).", |stats| gauge(&stats.channels_held),)?;
    o.one(
        "holdline_channels_created_total",
        "counter",
        "Notification channels created.",
        |stats| counter(&stats.channels_created),
    )?;
    o.one(
        "holdline_task_panics_total",
        "counter",
        "Engine tasks that died on an internal error (each ended its coverage and was restarted).",
        |stats| counter(&stats.task_panics),
    )?;
    o.one(
        "holdline_slots_failed",
        "gauge",
        "Slots whose task died and whose replacement is not receiving yet (readiness is 503 meanwhile).", |stats| gauge(&stats.slots_failed),)?;
    o.one(
        "holdline_channel_budget",
        "gauge",
        "Channels one OAuth client may hold; the service evicts beyond it.",
        |_| CHANNEL_BUDGET as u64,
    )?;
    o.one(
        "holdline_sockets_live",
        "gauge",
        "Sockets receiving now.",
        |stats| gauge(&stats.sockets_live),
    )?;
    o.one(
        "holdline_shards",
        "gauge",
        "Shards of topics being held.",
        |stats| stats.shard_count() as u64,
    )?;
    o.one(
        "holdline_shards_down",
        "gauge",
        "Shards with no socket receiving: events on them are being missed.",
        |stats| stats.shards_down().len() as u64,
    )?;
    o.one(
        "holdline_malformed_frames_total",
        "counter",
        "Frames that were not valid notification JSON (skipped).",
        |stats| counter(&stats.malformed),
    )?;
    o.one(
        "holdline_oversized_frames_total",
        "counter",
        "Messages over the size limit (the socket is abandoned and replaced).",
        |stats| counter(&stats.oversized),
    )?;
    o.one(
        "holdline_unknown_frames_total",
        "counter",
        "Frames of a shape holdline does not know (skipped).",
        |stats| counter(&stats.unknown),
    )?;
    let now = SystemTime::now();
    o.family(
        "holdline_socket_heartbeat_age_seconds",
        "gauge",
        "Time since each receiving socket's last heartbeat (or since it went live).",
        |f, stats| {
            for s in stats.socket_states() {
                let age = now
                    .duration_since(s.last_heartbeat)
                    .unwrap_or_default()
                    .as_secs_f64();
                let (shard, slot) = (s.shard.to_string(), s.slot.to_string());
                f.sample(
                    &[("shard", &shard), ("slot", &slot), ("channel", &s.channel)],
                    age,
                )?;
            }
            Ok(())
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::stats::SocketState;

    /// Every sample line: `name{labels} value` with a parsable value.
    fn samples(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').unwrap();
                let v = if value == "+Inf" {
                    f64::INFINITY
                } else {
                    value.parse().unwrap_or_else(|_| panic!("bad value in {l}"))
                };
                (name.to_owned(), v)
            })
            .collect()
    }

    #[test]
    fn many_orgs_share_each_family_with_an_org_label() {
        let (a, b) = (Arc::new(Stats::default()), Arc::new(Stats::default()));
        Stats::bump(&a.gaps);
        b.reconnects_by_cause[0].fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        b.ping_rtt.observe(std::time::Duration::from_millis(3));
        let orgs = Orgs::default();
        orgs.add("acme", a.clone());
        orgs.add("globex", b);
        let mut registry = Registry::default();
        orgs.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let all = samples(&text);
        let get = |name: &str| all.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(
            get(r#"holdline_gaps_total{org="acme"}"#),
            Some(1.0),
            "{text}"
        );
        assert_eq!(get(r#"holdline_gaps_total{org="globex"}"#), Some(0.0));
        let cause = Cause::ALL[0].label();
        assert_eq!(
            get(&format!(
                r#"holdline_reconnects_total{{org="globex",cause="{cause}"}}"#
            )),
            Some(3.0)
        );
        assert_eq!(
            get(r#"holdline_ping_rtt_seconds_bucket{le="0.005",org="globex"}"#).or(get(
                r#"holdline_ping_rtt_seconds_bucket{org="globex",le="0.005"}"#
            )),
            Some(1.0),
            "{text}"
        );
        assert!(
            all.iter().all(|(n, _)| n.contains("org=\"")),
            "every series is an org's: {text}"
        );
        assert_eq!(
            text.matches("# TYPE holdline_gaps counter").count(),
            1,
            "one family, declared once"
        );
        orgs.remove_engine("acme", &Arc::new(Stats::default()));
        assert!(
            orgs.list().iter().any(|(n, _)| &**n == "acme"),
            "another engine of that name is not removed"
        );
        orgs.remove_engine("acme", &a);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("acme") && text.contains("globex"), "{text}");
    }

    #[test]
    fn counters_appear_with_their_labels_and_values() {
        let stats = Arc::new(Stats::default());
        stats.reconnect(Cause::Drop);
        stats.reconnect(Cause::Drop);
        stats.gap(std::time::Duration::from_millis(1500));
        stats.rest_call("create channel", 200);
        stats.rest_call("create channel", 429);
        stats.ping_rtt.observe(std::time::Duration::from_millis(3));
        Stats::bump(&stats.frames_by_family[3]);
        stats.slot_started(0);
        stats.socket_live(
            7,
            SocketState {
                shard: 0,
                slot: 1,
                channel: "streaming-0-abc".into(),
                last_heartbeat: SystemTime::now(),
            },
        );
        let text = render(&stats);
        let all = samples(&text);
        let get = |name: &str| {
            all.iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .1
        };
        assert_eq!(get(r#"holdline_reconnects_total{cause="drop"}"#), 2.0);
        assert_eq!(get(r#"holdline_reconnects_total{cause="stall"}"#), 0.0);
        assert_eq!(get("holdline_gaps_total"), 1.0);
        assert_eq!(get("holdline_gap_seconds_total"), 1.5);
        assert_eq!(
            get(r#"holdline_rest_requests_total{operation="create channel",status="429"}"#),
            1.0
        );
        assert_eq!(
            get(r#"holdline_events_received_total{family="presence"}"#),
            1.0
        );
        assert_eq!(get(r#"holdline_ping_rtt_seconds_bucket{le="0.005"}"#), 1.0);
        assert_eq!(get(r#"holdline_ping_rtt_seconds_bucket{le="+Inf"}"#), 1.0);
        assert_eq!(get("holdline_shards_down"), 1.0);
        assert_eq!(get("holdline_channel_budget"), 20.0);
        assert!(
            text.contains(r#"holdline_socket_heartbeat_age_seconds{shard="0",slot="1",channel="streaming-0-abc"}"#),
            "{text}"
        );
        // Every series is declared before its samples (a counter's TYPE line names it
        // without `_total`).
        for (name, _) in &all {
            let base = name.split('{').next().unwrap();
            let declared = ["", "_total", "_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| {
                    base.strip_suffix(suffix)
                        .is_some_and(|b| text.contains(&format!("# TYPE {b} ")))
                });
            assert!(declared, "{base} has no TYPE line");
        }
    }

    #[test]
    fn ready_only_when_every_shard_has_a_covering_slot() {
        let stats = Stats::default();
        assert_eq!(readiness(&stats), Err(NotReady::Starting));
        stats.slot_started(0);
        stats.slot_started(1);
        stats.slot_covering(0, true);
        assert_eq!(readiness(&stats), Err(NotReady::ShardsDown(vec![1])));
        stats.slot_covering(1, true);
        assert_eq!(readiness(&stats), Ok(2));
    }

    #[test]
    fn label_values_are_escaped() {
        let stats = Arc::new(Stats::default());
        stats.socket_live(
            1,
            SocketState {
                shard: 0,
                slot: 0,
                channel: r#"a"b\c"#.into(),
                last_heartbeat: SystemTime::now(),
            },
        );
        let text = render(&stats);
        assert!(text.contains(r#"channel="a\"b\\c""#), "{text}");
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }
}
