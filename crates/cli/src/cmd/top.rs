//! `holdline top`: a live view of a running `holdline listen` from its `/metrics` and
//! `/readyz`: readiness, events per second by family, sockets with their heartbeat
//! ages, reconnects by cause and gaps. Refreshes in place on a terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::time::Instant;

use super::{duration, interrupted};

/// `holdline top` flags.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The metrics endpoint of a running `holdline listen --metrics-addr`.
    #[arg(default_value = "http://127.0.0.1:9464")]
    url: String,
    /// Time between refreshes.
    #[arg(long, value_parser = duration, default_value = "1s")]
    interval: Duration,
    /// Print one view and exit (for scripts).
    #[arg(long)]
    once: bool,
    /// With many orgs, show this org in full instead of one line per org.
    #[arg(long)]
    org: Option<String>,
}

/// One scrape: series name with labels → value.
#[derive(Debug, Default, Clone)]
pub struct Scrape {
    series: BTreeMap<String, f64>,
}

impl Scrape {
    /// Parses the Prometheus text format (samples only; comments skipped).
    pub fn parse(text: &str) -> Scrape {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().ok()?,
                };
                Some((name.to_owned(), value))
            })
            .collect();
        Scrape { series }
    }

    fn get(&self, name: &str) -> f64 {
        self.series.get(name).copied().unwrap_or(0.0)
    }

    /// Samples of `metric` with their labels.
    fn labelled(&self, metric: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let prefix = format!("{metric}{{");
        self.series
            .iter()
            .filter_map(|(k, v)| Some((labels(k.strip_prefix(&prefix)?.strip_suffix('}')?), *v)))
            .collect()
    }

    fn sum(&self, metric: &str) -> f64 {
        self.labelled(metric).iter().map(|(_, v)| v).sum()
    }

    /// The org names on the series (none for a `listen` of one org).
    pub fn orgs(&self) -> Vec<String> {
        let mut orgs: Vec<String> = self
            .labelled("holdline_shards")
            .into_iter()
            .filter_map(|(l, _)| l.get("org").cloned())
            .collect();
        orgs.sort();
        orgs.dedup();
        orgs
    }

    /// The series of one org, without their `org` label: the view of a one-org `listen`.
    pub fn of_org(&self, org: &str) -> Scrape {
        let label = format!("org=\"{org}\"");
        let series = self
            .series
            .iter()
            .filter_map(|(k, v)| {
                let (name, rest) = k.split_once('{')?;
                let inner = rest.strip_suffix('}')?;
                let mut parts: Vec<&str> = split_labels(inner).collect();
                let at = parts.iter().position(|l| *l == label)?;
                parts.remove(at);
                let kept = parts;
                let key = match kept.is_empty() {
                    true => name.to_owned(),
                    false => format!("{name}{{{}}}", kept.join(",")),
                };
                Some((key, *v))
            })
            .collect();
        Scrape { series }
    }
}

/// The `key="value"` parts of a label set (commas inside quoted values kept).
fn split_labels(inner: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        parts.push(&inner[start..]);
    }
    parts.into_iter()
}

/// `a="x",b="y"` → map (values are never escaped in holdline's own labels except quotes).
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// Renders one view; rates are per second since `before` (none on the first view).
pub fn render(url: &str, now: &Scrape, before: Option<(&Scrape, Duration)>, ready: &str) -> String {
    let mut o = String::new();
    let rate = |name: &str, value: f64| -> Option<f64> {
        let (prev, dt) = before?;
        Some((value - prev.get(name)).max(0.0) / dt.as_secs_f64().max(1e-3))
    };
    let _ = writeln!(o, "holdline top: {url}   {ready}");
    let emitted = now.sum("holdline_events_emitted_total");
    let received = now.sum("holdline_events_received_total");
    let dups = now.get("holdline_duplicates_dropped_total");
    match before {
        Some((prev, dt)) => {
            let per = |a: f64, b: f64| (a - b).max(0.0) / dt.as_secs_f64().max(1e-3);
            let _ = writeln!(
                o,
                "events/s   emitted {:.1}   received {:.1}   duplicates dropped {:.1}",
                per(emitted, prev.sum("holdline_events_emitted_total")),
                per(received, prev.sum("holdline_events_received_total")),
                per(dups, prev.get("holdline_duplicates_dropped_total")),
            );
        }
        None => {
            let _ = writeln!(
                o,
                "events     emitted {emitted:.0}   received {received:.0}   duplicates dropped {dups:.0}"
            );
        }
    }
    let causes: Vec<String> = now
        .labelled("holdline_reconnects_total")
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(l, v)| format!("{} {v:.0}", l.get("cause").map_or("?", String::as_str)))
        .collect();
    let _ = writeln!(
        o,
        "sockets live {:.0}   shards {:.0} ({:.0} down)   channels {:.0}/{:.0}   rollovers {:.0}   socket_closing {:.0}",
        now.get("holdline_sockets_live"),
        now.get("holdline_shards"),
        now.get("holdline_shards_down"),
        now.get("holdline_channels_held"),
        now.get("holdline_channel_budget"),
        now.get("holdline_rollovers_total"),
        now.get("holdline_socket_closing_total"),
    );
    let _ = writeln!(
        o,
        "reconnects {:.0}{}   gaps {:.0} ({:.1} s missed)   malformed {:.0}   oversized {:.0}",
        now.sum("holdline_reconnects_total"),
        if causes.is_empty() {
            String::new()
        } else {
            format!(" ({})", causes.join(", "))
        },
        now.get("holdline_gaps_total"),
        now.get("holdline_gap_seconds_total"),
        now.get("holdline_malformed_frames_total"),
        now.get("holdline_oversized_frames_total"),
    );
    let pongs = now.get("holdline_ping_rtt_seconds_count");
    if pongs > 0.0 {
        let _ = writeln!(
            o,
            "ping round trip: mean {:.1} ms over {pongs:.0} pongs",
            now.get("holdline_ping_rtt_seconds_sum") / pongs * 1000.0
        );
    }
    let mut families: Vec<(String, f64, Option<f64>)> = now
        .labelled("holdline_events_emitted_total")
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(l, v)| {
            let family = l.get("family").cloned().unwrap_or_default();
            let key = format!("holdline_events_emitted_total{{family=\"{family}\"}}");
            let r = rate(&key, v);
            (family, v, r)
        })
        .collect();
    families.sort_by(|a, b| b.1.total_cmp(&a.1));
    if !families.is_empty() {
        let _ = writeln!(o, "\nby family           events   events/s");
        for (family, total, r) in families {
            let r = r.map_or("-".into(), |r| format!("{r:.1}"));
            let _ = writeln!(o, "  {family:<17} {total:>8.0} {r:>10}");
        }
    }
    let mut sockets = now.labelled("holdline_socket_heartbeat_age_seconds");
    sockets.sort_by(|a, b| a.0.cmp(&b.0));
    let _ = writeln!(
        o,
        "\nshard slot channel                                      heartbeat age"
    );
    if sockets.is_empty() {
        let _ = writeln!(o, "  (no socket receiving)");
    }
    for (l, age) in sockets {
        let get = |k: &str| l.get(k).map_or("?", String::as_str);
        let _ = writeln!(
            o,
            "{:>5} {:>4} {:<44} {age:>8.1} s",
            get("shard"),
            get("slot"),
            get("channel")
        );
    }
    o
}

/// Renders the view of a `listen` of many orgs: one line per org.
pub fn render_orgs(
    url: &str,
    now: &Scrape,
    before: Option<(&Scrape, Duration)>,
    ready: &serde_json::Value,
) -> String {
    let mut o = String::new();
    let orgs = now.orgs();
    let state = |org: &str| -> (bool, String) {
        let entry = &ready["orgs"][org];
        let reason = entry["reason"].as_str().unwrap_or("").to_owned();
        (entry["ready"] == true, reason)
    };
    let listed = ready["orgs"].as_object();
    let unstarted: Vec<(&String, &serde_json::Value)> = listed
        .into_iter()
        .flatten()
        .filter(|(k, _)| !orgs.contains(k))
        .collect();
    let ready_count = orgs.iter().filter(|org| state(org).0).count();
    let _ = writeln!(
        o,
        "holdline top: {url}   {} orgs, {ready_count} ready   (--org NAME for one org in full)",
        orgs.len() + unstarted.len()
    );
    let _ = writeln!(
        o,
        "\n{:<24} {:>9} {:>9} {:>7} {:>6} {:>8} {:>10} {:>5}  state",
        "org", "events", "events/s", "sockets", "down", "channels", "reconnects", "gaps"
    );
    const EMITTED: &str = "holdline_events_emitted_total";
    for org in &orgs {
        let one = now.of_org(org);
        let emitted = one.sum(EMITTED);
        let rate = before.map_or("-".to_owned(), |(prev, dt)| {
            let was = prev.of_org(org).sum(EMITTED);
            format!(
                "{:.1}",
                (emitted - was).max(0.0) / dt.as_secs_f64().max(1e-3)
            )
        });
        let (is_ready, reason) = state(org);
        let shown = match is_ready {
            true => "ready".to_owned(),
            false => format!("NOT READY: {reason}"),
        };
        let _ = writeln!(
            o,
            "{org:<24} {emitted:>9.0} {rate:>9} {:>7.0} {:>6.0} {:>8} {:>10.0} {:>5.0}  {shown}",
            one.get("holdline_sockets_live"),
            one.get("holdline_shards_down"),
            format!(
                "{:.0}/{:.0}",
                one.get("holdline_channels_held"),
                one.get("holdline_channel_budget")
            ),
            one.sum("holdline_reconnects_total"),
            one.get("holdline_gaps_total"),
        );
    }
    // Orgs that never started have no series yet; /readyz still names them.
    {
        for (org, entry) in unstarted {
            let reason = entry["reason"].as_str().unwrap_or("");
            let _ = writeln!(
                o,
                "{org:<24} {:>9} {:>9} {:>7} {:>6} {:>8} {:>10} {:>5}  NOT READY: {reason}",
                "-", "-", "-", "-", "-", "-", "-"
            );
        }
    }
    o
}

/// What `/readyz` said: a line for the one-org view, and the body for the many-org view.
struct Ready {
    line: String,
    body: serde_json::Value,
}

impl Ready {
    /// The line of one org of a many-org `listen`.
    fn of_org(&self, org: &str) -> String {
        let entry = &self.body["orgs"][org];
        match entry["ready"].as_bool() {
            Some(true) => "ready".to_owned(),
            Some(false) => format!(
                "NOT READY: {}",
                entry["reason"].as_str().unwrap_or("no reason given")
            ),
            None => format!("no org {org:?} in /readyz"),
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<(Scrape, Ready)> {
    let base = url.trim_end_matches('/').trim_end_matches("/metrics");
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| {
            format!(
                "cannot read {base}/metrics; is `holdline listen --metrics-addr` running there?"
            )
        })?
        .text()
        .await?;
    let ready = match http.get(format!("{base}/readyz")).send().await {
        Ok(r) => {
            let ok = r.status().is_success();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let line = match ok {
                true => "ready".to_owned(),
                false => format!(
                    "NOT READY: {}",
                    body["reason"].as_str().unwrap_or("an org is not ready")
                ),
            };
            Ready { line, body }
        }
        Err(e) => Ready {
            line: format!("readiness unknown ({e})"),
            body: serde_json::Value::Null,
        },
    };
    Ok((Scrape::parse(&text), ready))
}

/// Runs the view until interrupted (or once).
pub async fn run(args: TopArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let terminal = std::io::stdout().is_terminal();
    let mut before: Option<(Scrape, Instant)> = None;
    let mut signal = std::pin::pin!(interrupted());
    loop {
        let (scrape, ready) = fetch(&http, &args.url).await?;
        let at = Instant::now();
        let prev = before.as_ref().map(|(s, t)| (s, at - *t));
        let view = match &args.org {
            Some(org) => {
                let known = scrape.orgs().contains(org) || ready.body["orgs"].get(org).is_some();
                if !known && before.is_none() {
                    anyhow::bail!(
                        "{} serves no org {org:?}; orgs there: {}",
                        args.url,
                        scrape.orgs().join(", ")
                    );
                }
                let one = |s: &Scrape| s.of_org(org);
                let prev = prev.map(|(s, dt)| (one(s), dt));
                let title = format!("{} (org {org})", args.url);
                render(
                    &title,
                    &one(&scrape),
                    prev.as_ref().map(|(s, dt)| (s, *dt)),
                    &ready.of_org(org),
                )
            }
            None if ready.body["orgs"].is_object() || !scrape.orgs().is_empty() => {
                render_orgs(&args.url, &scrape, prev, &ready.body)
            }
            None => render(&args.url, &scrape, prev, &ready.line),
        };
        let mut out = std::io::stdout().lock();
        if terminal && !args.once {
            // Clear the screen and draw from the top.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        writeln!(out, "{view}")?;
        out.flush()?;
        drop(out);
        if args.once {
            return Ok(());
        }
        before = Some((scrape, at));
        tokio::select! {
            _ = &mut signal => return Ok(()),
            _ = tokio::time::sleep(args.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP holdline_events_emitted_total x
# TYPE holdline_events_emitted_total counter
holdline_events_emitted_total{family="presence"} 10
holdline_events_emitted_total{family="queue.conversations"} 30
holdline_events_emitted_total{family="other"} 0
holdline_reconnects_total{cause="drop"} 2
holdline_reconnects_total{cause="stall"} 0
holdline_gaps_total 1
holdline_gap_seconds_total 0.75
holdline_sockets_live 2
holdline_channel_budget 20
holdline_socket_heartbeat_age_seconds{shard="0",slot="1",channel="streaming-0-a\"b"} 3.5
"#;

    const ORGS: &str = r#"holdline_events_emitted_total{org="acme",family="presence"} 10
holdline_events_emitted_total{org="globex",family="presence"} 4
holdline_shards{org="acme"} 1
holdline_shards{org="globex"} 1
holdline_sockets_live{org="acme"} 2
holdline_sockets_live{org="globex"} 1
holdline_ping_rtt_seconds_bucket{le="0.005",org="acme"} 3
holdline_socket_heartbeat_age_seconds{org="acme",shard="0",slot="1",channel="c,1"} 2.5
holdline_spool_bytes 100
"#;

    #[test]
    fn one_org_is_cut_out_of_many() {
        let s = Scrape::parse(ORGS);
        assert_eq!(s.orgs(), ["acme", "globex"]);
        let acme = s.of_org("acme");
        assert_eq!(acme.get("holdline_sockets_live"), 2.0);
        assert_eq!(
            acme.get(r#"holdline_events_emitted_total{family="presence"}"#),
            10.0
        );
        assert_eq!(
            acme.get(r#"holdline_ping_rtt_seconds_bucket{le="0.005"}"#),
            3.0
        );
        assert_eq!(
            acme.labelled("holdline_socket_heartbeat_age_seconds")[0].0["channel"],
            "c,1"
        );
        assert_eq!(acme.get("holdline_spool_bytes"), 0.0, "not an org's series");
        let ready = serde_json::json!({"ready": false, "orgs": {
            "acme": {"ready": true},
            "globex": {"ready": false, "reason": "not receiving: the secret is wrong"},
            "initech": {"ready": false, "reason": "starting"},
        }});
        let view = render_orgs("http://x", &s, None, &ready);
        assert!(view.contains("3 orgs, 1 ready"), "{view}");
        let line = |org: &str| {
            view.lines()
                .find(|l| l.starts_with(org))
                .unwrap()
                .to_owned()
        };
        assert!(line("acme").ends_with("ready"), "{view}");
        assert!(line("globex").contains("the secret is wrong"), "{view}");
        assert!(
            line("initech").contains("starting"),
            "an org with no series yet: {view}"
        );
        let later = Scrape::parse(&ORGS.replace("presence\"} 10", "presence\"} 30"));
        let view = render_orgs(
            "http://x",
            &later,
            Some((&s, Duration::from_secs(2))),
            &ready,
        );
        assert!(line_of(&view, "acme").contains(" 10.0 "), "{view}");
        assert!(line_of(&view, "globex").contains(" 0.0 "), "{view}");
    }

    fn line_of(view: &str, org: &str) -> String {
        view.lines()
            .find(|l| l.starts_with(org))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn samples_and_labels_parse() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.get("holdline_gaps_total"), 1.0);
        assert_eq!(s.sum("holdline_events_emitted_total"), 40.0);
        let sockets = s.labelled("holdline_socket_heartbeat_age_seconds");
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets[0].0["channel"], "streaming-0-a\"b");
        assert_eq!(sockets[0].0["slot"], "1");
    }

    #[test]
    fn the_view_shows_totals_then_rates() {
        let first = Scrape::parse(TEXT);
        let view = render("http://x", &first, None, "ready");
        assert!(view.contains("emitted 40"), "{view}");
        assert!(view.contains("reconnects 2 (drop 2)"), "{view}");
        assert!(view.contains("gaps 1 (0.8 s missed)"), "{view}");
        assert!(view.contains("streaming-0-a\"b"), "{view}");
        let later =
            Scrape::parse(&TEXT.replace("family=\"presence\"} 10", "family=\"presence\"} 30"));
        let view = render(
            "http://x",
            &later,
            Some((&first, Duration::from_secs(2))),
            "ready",
        );
        assert!(view.contains("emitted 10.0"), "{view}");
        assert!(
            view.lines()
                .any(|l| l.contains("presence") && l.trim_end().ends_with("10.0")),
            "{view}"
        );
    }
}
