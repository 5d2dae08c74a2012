//! The counters in the Prometheus text exposition format (version 0.0.4), and the
//! readiness rule. Written by hand: a few dozen series need no registry crate.
//!
//! Nothing here can carry a secret: labels are topic families, causes, REST operation
//! names, status codes, shard and slot numbers and channel ids.

use std::fmt::Write;
use std::time::SystemTime;

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

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A per-sink series: name, type, help, and how to read it.
type SinkSeries = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::telemetry::stats::SinkHealth) -> u64,
);

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn counter(c: &std::sync::atomic::AtomicU64) -> f64 {
    Stats::get(c) as f64
}

fn gauge(g: &std::sync::atomic::AtomicI64) -> f64 {
    g.load(std::sync::atomic::Ordering::Relaxed) as f64
}

/// Every series, as `/metrics` serves them.
pub fn render(stats: &Stats) -> String {
    let mut o = Out(String::with_capacity(8 * 1024));
    let family_label = |i: usize| FAMILIES.get(i).map_or("other", |f| f.name());

    o.family(
        "holdline_events_received_total",
        "counter",
        "Notification frames received on any socket, before de-duplication, by topic family.",
    );
    for (i, c) in stats.frames_by_family.iter().enumerate() {
        o.sample(
            "holdline_events_received_total",
            &[("family", family_label(i))],
            counter(c),
        );
    }
    o.family(
        "holdline_events_emitted_total",
        "counter",
        "Events written out once each, by topic family.",
    );
    for (i, c) in stats.emitted_by_family.iter().enumerate() {
        o.sample(
            "holdline_events_emitted_total",
            &[("family", family_label(i))],
            counter(c),
        );
    }
    o.one(
        "holdline_duplicates_dropped_total",
        "counter",
        "Events dropped because another socket delivered them first.",
        counter(&stats.duplicates),
    );
    o.one(
        "holdline_near_duplicates_total",
        "counter",
        "Duplicates whose bytes differed from the first copy: the service serialises one \
         event differently per channel (the id is of the value, so they are still caught).",
        counter(&stats.near_duplicates),
    );
    o.one(
        "holdline_arrival_skew_seconds",
        "gauge",
        "Largest delay between two sockets' copies of one event in the last 10 minutes.",
        Stats::get(&stats.arrival_skew_micros) as f64 / 1e6,
    );
    o.one(
        "holdline_gap_lookback_seconds",
        "gauge",
        "Time trimmed from the end of every socket's coverage: the --gap-lookback floor \
         plus the arrival skew.",
        Stats::get(&stats.lookback_micros) as f64 / 1e6,
    );
    o.one(
        "holdline_dedupe_window_seconds",
        "gauge",
        "How long event ids are remembered for de-duplication (at least twice the look-back).",
        Stats::get(&stats.dedupe_window_micros) as f64 / 1e6,
    );
    o.one(
        "holdline_gaps_total",
        "counter",
        "Gap records: windows in which a shard's events could not have been received.",
        counter(&stats.gaps),
    );
    o.one(
        "holdline_gap_seconds_total",
        "counter",
        "Total width of the reported gaps.",
        Stats::get(&stats.gap_micros) as f64 / 1e6,
    );
    o.family(
        "holdline_reconnects_total",
        "counter",
        "Sockets connected again after a live one was lost, by cause.",
    );
    for (cause, c) in Cause::ALL.iter().zip(&stats.reconnects_by_cause) {
        o.sample(
            "holdline_reconnects_total",
            &[("cause", cause.label())],
            counter(c),
        );
    }
    o.family(
        "holdline_socket_ends_total",
        "counter",
        "Sockets that ended: planned (replaced at a rollover or a hand-over) or not.",
    );
    for (kind, c) in [
        ("planned", &stats.socket_ends_planned),
        ("unplanned", &stats.socket_ends_unplanned),
    ] {
        o.sample("holdline_socket_ends_total", &[("kind", kind)], counter(c));
    }
    o.one(
        "holdline_socket_closing_total",
        "counter",
        "Maintenance notices (v2.system.socket_closing) handled with a second socket.",
        counter(&stats.socket_closings),
    );
    o.one(
        "holdline_rollovers_total",
        "counter",
        "Channels replaced before they or their token expired.",
        counter(&stats.rollovers),
    );
    o.one(
        "holdline_heartbeats_total",
        "counter",
        "Server heartbeats received.",
        counter(&stats.heartbeats),
    );
    o.one(
        "holdline_pongs_total",
        "counter",
        "Pongs received.",
        counter(&stats.pongs),
    );
    let (buckets, sum) = stats.ping_rtt.snapshot();
    o.family(
        "holdline_ping_rtt_seconds",
        "histogram",
        "Time from a ping to its pong.",
    );
    for (le, n) in &buckets {
        o.sample(
            "holdline_ping_rtt_seconds_bucket",
            &[("le", &number(*le))],
            *n as f64,
        );
    }
    o.sample("holdline_ping_rtt_seconds_sum", &[], sum);
    o.sample(
        "holdline_ping_rtt_seconds_count",
        &[],
        buckets.last().map_or(0.0, |b| b.1 as f64),
    );
    o.one(
        "holdline_tokens_fetched_total",
        "counter",
        "OAuth tokens fetched (the first and every renewal).",
        counter(&stats.tokens_fetched),
    );
    o.family(
        "holdline_rest_requests_total",
        "counter",
        "Platform API calls by operation and HTTP status (0: no answer).",
    );
    for ((what, status), n) in stats.rest_snapshot() {
        o.sample(
            "holdline_rest_requests_total",
            &[("operation", what), ("status", &status.to_string())],
            n as f64,
        );
    }
    o.one(
        "holdline_rate_limited_total",
        "counter",
        "429 answers waited out.",
        counter(&stats.rate_limited),
    );
    o.one(
        "holdline_rate_limited_seconds_total",
        "counter",
        "Time spent waiting out 429 answers.",
        Stats::get(&stats.rate_limited_micros) as f64 / 1e6,
    );
    o.one(
        "holdline_channels_held",
        "gauge",
        "Notification channels the service counts against the OAuth client (in use, being created, replaced but not yet expired, an earlier run's).",
        gauge(&stats.channels_held),
    );
    o.one(
        "holdline_channels_created_total",
        "counter",
        "Notification channels created.",
        counter(&stats.channels_created),
    );
    o.one(
        "holdline_task_panics_total",
        "counter",
        "Engine tasks that died on an internal error (each ended its coverage and was restarted).",
        counter(&stats.task_panics),
    );
    o.one(
        "holdline_slots_failed",
        "gauge",
        "Slots whose task died and whose replacement is not receiving yet (readiness is 503 meanwhile).",
        gauge(&stats.slots_failed),
    );
    o.one(
        "holdline_channel_budget",
        "gauge",
        "Channels one OAuth client may hold; the service evicts beyond it.",
        CHANNEL_BUDGET as f64,
    );
    o.one(
        "holdline_sockets_live",
        "gauge",
        "Sockets receiving now.",
        gauge(&stats.sockets_live),
    );
    o.one(
        "holdline_shards",
        "gauge",
        "Shards of topics being held.",
        stats.shard_count() as f64,
    );
    o.one(
        "holdline_shards_down",
        "gauge",
        "Shards with no socket receiving: events on them are being missed.",
        stats.shards_down().len() as f64,
    );
    o.one(
        "holdline_spool_depth",
        "gauge",
        "Records in the spool not yet delivered to the slowest sink (with --spool).",
        gauge(&stats.spool_depth),
    );
    let sinks = stats.sinks_snapshot();
    let per_sink: [SinkSeries; 4] = [
        (
            "holdline_sink_delivered_total",
            "counter",
            "Records the sink confirmed.",
            |h| h.delivered,
        ),
        (
            "holdline_sink_failures_total",
            "counter",
            "Deliveries the sink did not confirm (retried with backoff).",
            |h| h.failures,
        ),
        (
            "holdline_sink_dead_lettered_total",
            "counter",
            "Records written to the sink's dead-letter file after its attempts.",
            |h| h.dead_lettered,
        ),
        (
            "holdline_sink_pending",
            "gauge",
            "Records in the spool the sink has not confirmed yet.",
            |h| h.pending,
        ),
    ];
    for (name, kind, help, value) in per_sink {
        o.family(name, kind, help);
        for (sink, health) in &sinks {
            o.sample(name, &[("sink", sink)], value(health) as f64);
        }
    }
    o.one(
        "holdline_spool_bytes",
        "gauge",
        "Bytes of records held in the spool.",
        gauge(&stats.spool_bytes),
    );
    o.one(
        "holdline_spool_dropped_total",
        "counter",
        "Records dropped from a full spool after back-pressure (each reported in a gap).",
        counter(&stats.spool_dropped),
    );
    o.one(
        "holdline_malformed_frames_total",
        "counter",
        "Frames that were not valid notification JSON (skipped).",
        counter(&stats.malformed),
    );
    o.one(
        "holdline_oversized_frames_total",
        "counter",
        "Messages over the size limit (the socket is abandoned and replaced).",
        counter(&stats.oversized),
    );
    o.one(
        "holdline_unknown_frames_total",
        "counter",
        "Frames of a shape holdline does not know (skipped).",
        counter(&stats.unknown),
    );
    let now = SystemTime::now();
    o.family(
        "holdline_socket_heartbeat_age_seconds",
        "gauge",
        "Time since each receiving socket's last heartbeat (or since it went live).",
    );
    for s in stats.socket_states() {
        let age = now
            .duration_since(s.last_heartbeat)
            .unwrap_or_default()
            .as_secs_f64();
        o.sample(
            "holdline_socket_heartbeat_age_seconds",
            &[
                ("shard", &s.shard.to_string()),
                ("slot", &s.slot.to_string()),
                ("channel", &s.channel),
            ],
            age,
        );
    }
    o.0
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
    fn counters_appear_with_their_labels_and_values() {
        let stats = Stats::default();
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
        stats.sink_delivered("redis:h:6379/s", 100, 5);
        stats.sink_failed("redis:h:6379/s", 40);
        stats.sink_dead_lettered("webhook:https://h/x", 7, 0);
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
        assert_eq!(
            get(r#"holdline_sink_delivered_total{sink="redis:h:6379/s"}"#),
            100.0
        );
        assert_eq!(
            get(r#"holdline_sink_failures_total{sink="redis:h:6379/s"}"#),
            1.0
        );
        assert_eq!(get(r#"holdline_sink_pending{sink="redis:h:6379/s"}"#), 40.0);
        assert_eq!(
            get(r#"holdline_sink_dead_lettered_total{sink="webhook:https://h/x"}"#),
            7.0
        );
        assert_eq!(get("holdline_channel_budget"), 20.0);
        assert!(
            text.contains(r#"holdline_socket_heartbeat_age_seconds{shard="0",slot="1",channel="streaming-0-abc"}"#),
            "{text}"
        );
        // Every series is declared before its samples.
        for (name, _) in &all {
            let base = name.split('{').next().unwrap();
            let declared = ["", "_bucket", "_sum", "_count"].iter().any(|suffix| {
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

    /// The alert rules and the dashboard in docs/ only use series that exist.
    #[test]
    fn the_docs_alerts_and_dashboard_name_real_series() {
        let stats = Stats::default();
        stats.rest_call("create channel", 200);
        let text = render(&stats);
        let known = |name: &str| {
            ["", "_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| text.contains(&format!("# TYPE {base} ")))
            })
        };
        for (file, doc) in [
            ("alerts.yml", include_str!("../../../../docs/alerts.yml")),
            (
                "grafana-dashboard.json",
                include_str!("../../../../docs/grafana-dashboard.json"),
            ),
        ] {
            let mut names = 0;
            for (i, _) in doc.match_indices("holdline_") {
                let name: String = doc[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                names += 1;
                assert!(
                    known(&name),
                    "{file} uses {name}, which /metrics does not serve"
                );
            }
            assert!(names >= 8, "{file} names only {names} series");
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/grafana-dashboard.json")).unwrap();
        assert!(dashboard["panels"].as_array().unwrap().len() >= 8);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
    }
}
