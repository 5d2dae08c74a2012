//! Gaps of a cluster (sans-io). Every holder of an org reports, shard by shard, the
//! stretches of time its own sockets covered (each node's engine already knows them: a
//! socket covers from when it started receiving to a look-back before its last frame).
//! A stretch no holder covered is a gap of the cluster: no machine could have received
//! the events published then. A node's own gaps, covered by another holder, are not.
//!
//! A stretch is only called a gap once it is certain: some holder covered again after
//! it, and every holder that might still be covering it has either said where its
//! coverage stopped or gone silent (its reports unchanged for longer than the lease: it
//! died, or it was cut off, and its coverage ends where its last report put it).

use serde::{Deserialize, Serialize};

/// What one run of an org's client on one node has covered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node.
    pub node: String,
    /// Each shard, by its key.
    pub shards: Vec<ShardReport>,
}

/// What one holder covered of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReport {
    /// The shard's topics, as [`shard_key`] names them.
    pub key: String,
    /// Covered stretches, in microseconds since the Unix epoch, oldest first.
    pub runs: Vec<(u64, u64)>,
    /// Whether the holder covers the shard now (its last run goes on).
    pub open: bool,
    /// Why its coverage stopped, when it is not open.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The key of a shard of `topics`: the same on every node that holds the same topics,
/// whatever their order (the shard part of a gap's id).
pub fn shard_key(topics: &[String]) -> String {
    holdline_proto::record::shard_key(topics)
}

/// One holder's report of a shard, as the gap-finder heard it.
#[derive(Debug, Clone, Copy)]
pub struct Heard<'a> {
    /// The holder's node.
    pub node: &'a str,
    pub shard: &'a ShardReport,
    /// Whether the holder's report changed recently (within the lease time); a holder
    /// silent for longer is taken to have stopped where its last report ends.
    pub fresh: bool,
}

/// A stretch of time that no holder of a shard covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    /// Microseconds since the Unix epoch.
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

/// The holes of one shard after `mark` (everything before it is settled) that are
/// certain now, and the new mark. Without a mark, coverage starts with the first run
/// any holder reported that covered anything (what came before is the cluster's start,
/// not a gap). A hole is
/// only called one when it ended before `settled` (microseconds since the epoch), so
/// that reports on their way (a holder's, delayed by NATS) can still fill it. A hole
/// that has not ended (no holder covers the shard again, and none may yet report that
/// it does) is called one up to `settled` once it is `open_after` long, and again for
/// each later stretch of that length, so that an outage without end is still reported.
pub fn holes(
    heard: &[Heard<'_>],
    mark: Option<u64>,
    settled: u64,
    open_after: u64,
) -> (Vec<Hole>, Option<u64>) {
    // A run no longer than the look-back proved nothing (its socket may have missed what
    // was published just before it ended): it neither covers nor starts coverage.
    let runs = || {
        heard
            .iter()
            .flat_map(|h| h.shard.runs.iter().copied())
            .filter(|(a, b)| b > a)
    };
    let Some(mut w) = mark.or_else(|| runs().map(|(a, _)| a).min()) else {
        return (Vec::new(), None);
    };
    let mut found = Vec::new();
    loop {
        // Covered at w: on to the end of the run reaching furthest.
        if let Some(b) = runs()
            .filter(|(a, b)| *a <= w && *b > w)
            .map(|(_, b)| b)
            .max()
        {
            w = b;
            continue;
        }
        // A holder still covering, whose report ends before w, may yet report
        // coverage past it.
        let may_extend = heard
            .iter()
            .any(|h| h.fresh && h.shard.open && h.shard.runs.last().is_none_or(|(_, b)| *b <= w));
        if may_extend {
            break;
        }
        let Some(next) = runs().map(|(a, _)| a).filter(|a| *a > w).min() else {
            // Stretches on fixed boundaries from the mark, so a gap-finder that takes
            // over from a stored mark cuts the same ones (with the same ids).
            while settled.saturating_sub(w) >= open_after {
                let to = w + open_after;
                found.push(Hole {
                    from: w,
                    to,
                    reason: format!("{}; no holder covers it yet", why(heard, w)),
                });
                w = to;
            }
            break;
        };
        if next > settled {
            break;
        }
        found.push(Hole {
            from: w,
            to: next,
            reason: why(heard, w),
        });
        w = next;
    }
    (found, Some(w))
}

/// Why coverage stopped at `w`: the holder whose run ended there (or last before it).
fn why(heard: &[Heard<'_>], w: u64) -> String {
    let ended = heard
        .iter()
        .filter_map(|h| {
            let (i, end) = h
                .shard
                .runs
                .iter()
                .enumerate()
                .filter(|(_, (_, b))| *b <= w)
                .map(|(i, (_, b))| (i, *b))
                .max_by_key(|(_, b)| *b)?;
            Some((end, h, i + 1 == h.shard.runs.len()))
        })
        .max_by_key(|(end, ..)| *end);
    let cause = match ended {
        Some((_, h, true)) if h.shard.open => format!(
            "node {} stopped reporting (its process died, or it was cut off from NATS)",
            h.node
        ),
        Some((_, h, true)) if !h.shard.reason.is_empty() => {
            format!("node {}: {}", h.node, h.shard.reason)
        }
        Some((_, h, _)) => format!("node {}'s sockets were down", h.node),
        None => "no holder had covered the shard yet".to_owned(),
    };
    format!("no holder of the org was receiving: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open hole is never reported in part.
    const NEVER: u64 = u64::MAX;

    fn shard(runs: &[(u64, u64)], open: bool, reason: &str) -> ShardReport {
        ShardReport {
            key: "k".to_owned(),
            runs: runs.to_vec(),
            open,
            reason: reason.to_owned(),
        }
    }

    /// `node`'s report of `shard`, changed recently.
    fn report_of<'a>(node: &'a str, shard: &'a ShardReport) -> Heard<'a> {
        Heard {
            node,
            shard,
            fresh: true,
        }
    }

    fn span(h: &[Hole]) -> Vec<(u64, u64)> {
        h.iter().map(|h| (h.from, h.to)).collect()
    }

    #[test]
    fn one_holders_gap_covered_by_the_other_is_no_gap() {
        let a = shard(&[(10, 20), (30, 50)], true, "");
        let b = shard(&[(12, 50)], true, "");
        let heard = [report_of("a", &a), report_of("b", &b)];
        let (found, mark) = holes(&heard, None, u64::MAX, NEVER);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(mark, Some(50));
    }

    #[test]
    fn a_time_no_holder_covered_is_a_gap_once_someone_covers_again() {
        let a = shard(&[(10, 20)], false, "dropped");
        let b = shard(&[(10, 22)], false, "evicted");
        let c = shard(&[(40, 60)], true, "");
        let mut heard = vec![report_of("a", &a), report_of("b", &b)];
        let (found, mark) = holes(&heard, None, u64::MAX, NEVER);
        assert!(
            found.is_empty(),
            "nobody covers again yet: the hole stays open"
        );
        assert_eq!(mark, Some(22));
        heard.push(report_of("c", &c));
        let (found, same) = holes(&heard, mark, 39, NEVER);
        assert!(
            found.is_empty(),
            "not settled yet: a late report may still fill it"
        );
        assert_eq!(same, mark);
        let (found, mark) = holes(&heard, mark, 45, NEVER);
        assert_eq!(
            span(&found),
            [(22, 40)],
            "c still covers, but not before it started"
        );
        assert_eq!(
            found[0].reason,
            "no holder of the org was receiving: node b: evicted"
        );
        assert_eq!(mark, Some(60));
    }

    #[test]
    fn a_holder_that_still_covers_is_waited_for() {
        // a's last report is old but it is still covering: its next may close the hole.
        let a = shard(&[(10, 20)], true, "");
        let b = shard(&[(30, 40)], false, "dropped");
        let mut heard = vec![report_of("a", &a), report_of("b", &b)];
        assert!(holes(&heard, None, u64::MAX, NEVER).0.is_empty());
        // Silent past the lease: a died where its report ends.
        heard[0].fresh = false;
        let (found, _) = holes(&heard, None, u64::MAX, NEVER);
        assert_eq!(span(&found), [(20, 30)]);
        assert!(
            found[0].reason.contains("node a stopped reporting"),
            "{}",
            found[0].reason
        );
    }

    #[test]
    fn the_mark_settles_the_past() {
        let a = shard(&[(10, 20), (30, 40)], false, "dropped");
        let heard = [report_of("a", &a)];
        let (found, mark) = holes(&heard, None, u64::MAX, NEVER);
        assert_eq!(span(&found), [(20, 30)]);
        assert!(
            found[0].reason.contains("sockets were down"),
            "{}",
            found[0].reason
        );
        let (again, same) = holes(&heard, mark, u64::MAX, NEVER);
        assert!(again.is_empty(), "reported once");
        assert_eq!(same, mark);
    }

    #[test]
    fn a_run_that_covered_nothing_starts_nothing() {
        // a started and stopped within its look-back; b came later.
        let a = shard(&[(10, 10)], false, "stopped");
        let b = shard(&[(12, 30)], true, "");
        let heard = [report_of("a", &a), report_of("b", &b)];
        let (found, mark) = holes(&heard, None, u64::MAX, NEVER);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(mark, Some(30));
    }

    #[test]
    fn an_outage_without_end_is_reported_in_stretches() {
        let a = shard(&[(10, 20)], false, "the OAuth client was refused");
        let b = shard(&[(10, 22)], false, "the OAuth client was refused");
        let heard = [report_of("a", &a), report_of("b", &b)];
        // Not yet as long as a stretch.
        let (found, mark) = holes(&heard, None, 35, 20);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(mark, Some(22));
        let (found, mark) = holes(&heard, mark, 50, 20);
        assert_eq!(span(&found), [(22, 42)]);
        assert!(found[0].reason.contains("refused"), "{}", found[0].reason);
        assert!(
            found[0].reason.contains("covers it yet"),
            "{}",
            found[0].reason
        );
        assert_eq!(mark, Some(42));
        let (found, mark) = holes(&heard, mark, 60, 20);
        assert!(found.is_empty(), "{found:?}");
        // Late, two stretches at once, on the same boundaries.
        let (found, mark) = holes(&heard, mark, 85, 20);
        assert_eq!(span(&found), [(42, 62), (62, 82)]);
        assert_eq!(mark, Some(82));
        // A holder that covers now, whose report has not caught up, may yet fill it.
        let c = shard(&[(5, 8)], true, "");
        let waiting = [heard[0], report_of("c", &c)];
        assert!(holes(&waiting, mark, 200, 20).0.is_empty());
    }

    #[test]
    fn shard_keys_ignore_order() {
        let a = ["x".to_owned(), "y".to_owned()];
        let b = ["y".to_owned(), "x".to_owned()];
        assert_eq!(shard_key(&a), shard_key(&b));
        assert_ne!(shard_key(&a), shard_key(&a[..1]));
    }
}
