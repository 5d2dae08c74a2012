//! holdline's own counters, read from its `/metrics`: how a run whose records go to
//! /dev/null is timed and checked. Nothing reads those records, so they cannot be matched
//! to the ledger one by one as the piped runs are; the counters say how many distinct
//! events holdline handed to its writer and whether it reported a gap.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use crate::harness::Watched;
use crate::verify::Verdict;

/// How often the counters are read while a run is under way: often enough that the end
/// of a ~0.3 s run is seen within 1 %, rarely enough that serving them costs holdline
/// next to nothing.
const POLL: Duration = Duration::from_millis(2);

/// The counters of one `holdline listen --metrics-addr`.
pub struct Counters {
    url: String,
    http: reqwest::Client,
}

/// The totals a run is judged by.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Distinct events handed to the writer (`holdline_events_emitted_total`).
    pub emitted: u64,
    /// `holdline_gaps_total`.
    pub gaps: u64,
    /// Frames it could not use (`holdline_malformed_frames_total`).
    pub malformed: u64,
}

impl Totals {
    /// Sums each counter over its labels in Prometheus text.
    pub fn parse(text: &str) -> Totals {
        let mut totals = Totals::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let slot = match name {
                "holdline_events_emitted_total" => &mut totals.emitted,
                "holdline_gaps_total" => &mut totals.gaps,
                "holdline_malformed_frames_total" => &mut totals.malformed,
                _ => continue,
            };
            let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            *slot += value.unwrap_or(0.0) as u64;
        }
        totals
    }

    /// The run's verdict against `expected` firehose events.
    pub fn verdict(&self, expected: usize) -> Verdict {
        let emitted = self.emitted as usize;
        Verdict {
            expected,
            received: emitted.min(expected),
            // Beyond the firehose's distinct events, anything more was one too many.
            duplicates: emitted.saturating_sub(expected),
            missing: expected.saturating_sub(emitted),
            mismatched: self.malformed as usize,
            gaps: self.gaps as usize,
            other: 0,
        }
    }
}

impl Counters {
    /// Waits for the metrics address `client` logs at start-up.
    pub async fn find(client: &mut Watched, within: Duration) -> Result<Counters> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(url) = client.metrics_url() {
                return Ok(Counters {
                    url,
                    http: reqwest::Client::new(),
                });
            }
            client.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} logged no metrics address within {within:?}; its stderr ends:\n{}",
                    client.name,
                    client.stderr_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn read(&self) -> Result<Totals> {
        let text = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("reading {}", self.url))?
            .text()
            .await?;
        Ok(Totals::parse(&text))
    }

    /// Reads the counters every [`POLL`] until `events` were emitted; returns when that
    /// was seen and the totals then.
    pub async fn wait_emitted(
        &self,
        events: usize,
        client: &mut Watched,
        within: Duration,
    ) -> Result<(Instant, Totals)> {
        let deadline = Instant::now() + within;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let totals = self.read().await?;
            if totals.emitted as usize >= events {
                return Ok((Instant::now(), totals));
            }
            client.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "{} emitted {} of {events} events within {within:?}; its stderr ends:\n{}",
                    client.name,
                    totals.emitted,
                    client.stderr_tail()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_their_labels() {
        let text = "\
# HELP holdline_events_emitted_total Events written.
# TYPE holdline_events_emitted_total counter
holdline_events_emitted_total 1200
holdline_events_emitted_total{family=\"conversations\"} 700
holdline_events_emitted_total{family=\"presence\"} 500
holdline_events_received_total 2400
holdline_gaps_total 1
holdline_gap_seconds_total 2.5
holdline_malformed_frames_total 0
";
        let t = Totals::parse(text);
        assert_eq!(
            t,
            Totals {
                emitted: 2400,
                gaps: 1,
                malformed: 0
            }
        );
    }

    #[test]
    fn only_every_event_once_without_a_gap_counts() {
        let all = Totals {
            emitted: 100,
            ..Totals::default()
        };
        assert!(all.verdict(100).complete());
        let short = Totals {
            emitted: 99,
            ..Totals::default()
        };
        assert_eq!(short.verdict(100).missing, 1);
        assert!(!short.verdict(100).complete());
        let gap = Totals {
            emitted: 100,
            gaps: 1,
            ..Totals::default()
        };
        assert!(!gap.verdict(100).complete());
        let extra = Totals {
            emitted: 101,
            ..Totals::default()
        };
        assert!(!extra.verdict(100).complete());
        let malformed = Totals {
            emitted: 100,
            malformed: 1,
            ..Totals::default()
        };
        assert!(!malformed.verdict(100).complete());
    }
}
