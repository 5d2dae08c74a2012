//! Which topics go on which channel (sans-io).
//!
//! Topics that share an entity prefix are combined (`v2.users.{id}?presence&routingStatus`,
//! at most 200 characters each), which saves room: the service counts a combined topic as
//! one of a channel's 1,000. Entries are packed into shards of at most `per_shard`. Adding
//! and removing topics at run time touches only the shards that must change: a topic joins
//! its entity's shard when it has one, else the shard with the most room, else a new shard.

use std::collections::{BTreeMap, BTreeSet};

use holdline_proto::topic::{MAX_COMBINED_LEN, expand, is_uuid};

/// Splits a single topic into (entity prefix, suffix) when it can be combined.
fn split(topic: &str) -> Option<(&str, &str)> {
    let (prefix, suffix) = topic.rsplit_once('.')?;
    let last = prefix.rsplit('.').next()?;
    is_uuid(last).then_some((prefix, suffix))
}

/// One shard: topics grouped by entity prefix, plus topics that cannot be combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shard {
    groups: BTreeMap<String, BTreeSet<String>>,
    singles: BTreeSet<String>,
    /// Entries in use, kept up to date on every change.
    count: usize,
}

/// The entries of one entity's group: one topic as itself, several combined.
fn group_entries(prefix: &str, suffixes: &BTreeSet<String>) -> Vec<String> {
    if suffixes.len() == 1 {
        return suffixes.iter().map(|s| format!("{prefix}.{s}")).collect();
    }
    let mut out = Vec::new();
    let mut current = String::new();
    for suffix in suffixes {
        if !current.is_empty() && current.len() + 1 + suffix.len() > MAX_COMBINED_LEN {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current = format!("{prefix}?{suffix}");
        } else {
            current.push('&');
            current.push_str(suffix);
        }
    }
    out.push(current);
    out
}

impl Shard {
    /// The subscription entries: combined topics (split at 200 characters) and singles.
    pub fn entries(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .groups
            .iter()
            .flat_map(|(p, ss)| group_entries(p, ss))
            .collect();
        out.extend(self.singles.iter().cloned());
        out
    }

    /// Entries this shard uses on its channel.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Entries the shard would use with `topic` added.
    fn len_with(&self, topic: &str) -> usize {
        match split(topic) {
            Some((p, s)) => match self.groups.get(p) {
                Some(ss) if ss.contains(s) => self.count,
                Some(ss) => {
                    let mut grown = ss.clone();
                    grown.insert(s.to_owned());
                    self.count - group_entries(p, ss).len() + group_entries(p, &grown).len()
                }
                None => self.count + 1,
            },
            None => self.count + usize::from(!self.singles.contains(topic)),
        }
    }

    /// True when the shard holds nothing.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.singles.is_empty()
    }

    /// Every single topic name in the shard.
    pub fn topics(&self) -> Vec<String> {
        let grouped = self
            .groups
            .iter()
            .flat_map(|(p, ss)| ss.iter().map(move |s| format!("{p}.{s}")));
        grouped.chain(self.singles.iter().cloned()).collect()
    }

    fn holds(&self, topic: &str) -> bool {
        match split(topic) {
            Some((p, s)) => self.groups.get(p).is_some_and(|ss| ss.contains(s)),
            None => self.singles.contains(topic),
        }
    }

    fn insert(&mut self, topic: &str) {
        self.count = self.len_with(topic);
        match split(topic) {
            Some((p, s)) => {
                self.groups
                    .entry(p.to_owned())
                    .or_default()
                    .insert(s.to_owned());
            }
            None => {
                self.singles.insert(topic.to_owned());
            }
        }
    }

    fn remove(&mut self, topic: &str) -> bool {
        match split(topic) {
            Some((p, s)) => {
                let Some(ss) = self.groups.get_mut(p) else {
                    return false;
                };
                let before = group_entries(p, ss).len();
                let removed = ss.remove(s);
                let after = if ss.is_empty() {
                    0
                } else {
                    group_entries(p, ss).len()
                };
                if ss.is_empty() {
                    self.groups.remove(p);
                }
                self.count = self.count - before + after;
                removed
            }
            None => {
                let removed = self.singles.remove(topic);
                self.count -= usize::from(removed);
                removed
            }
        }
    }

    fn has_group(&self, topic: &str) -> bool {
        split(topic).is_some_and(|(p, _)| self.groups.contains_key(p))
    }
}

/// The placement of every topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Shards in order; an emptied shard stays (empty) so indexes remain stable.
    pub shards: Vec<Shard>,
    per_shard: usize,
}

/// Every single topic name of a list that may hold combined topics (invalid names are
/// kept as they are; validation happens before planning).
pub fn single_topics(topics: &[String]) -> Vec<String> {
    topics
        .iter()
        .flat_map(|t| expand(t).unwrap_or_else(|_| vec![t.clone()]))
        .collect()
}

impl Plan {
    /// Packs `topics` into shards of at most `per_shard` entries.
    pub fn build(topics: &[String], per_shard: usize) -> Plan {
        let mut plan = Plan {
            shards: Vec::new(),
            per_shard: per_shard.max(1),
        };
        plan.add(topics);
        plan
    }

    /// Shards that hold something.
    pub fn live_shards(&self) -> usize {
        self.shards.iter().filter(|s| !s.is_empty()).count()
    }

    /// Adds topics; returns the indexes of the shards that changed (new ones included).
    pub fn add(&mut self, topics: &[String]) -> BTreeSet<usize> {
        let mut changed = BTreeSet::new();
        for topic in single_topics(topics) {
            if self.shards.iter().any(|s| s.holds(&topic)) {
                continue;
            }
            let idx = self.place(&topic);
            self.shards[idx].insert(&topic);
            changed.insert(idx);
        }
        changed
    }

    /// Where a new topic goes: its entity's shard if that has room, else the fullest shard
    /// that still has room (so shards fill up rather than spread), else a new shard.
    fn place(&mut self, topic: &str) -> usize {
        let fits = |s: &Shard| s.len_with(topic) <= self.per_shard;
        if let Some(i) = self
            .shards
            .iter()
            .position(|s| s.has_group(topic) && fits(s))
        {
            return i;
        }
        let best = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty() && fits(s))
            .max_by_key(|(_, s)| s.len())
            .map(|(i, _)| i);
        if let Some(i) = best.or_else(|| self.shards.iter().position(Shard::is_empty)) {
            return i;
        }
        self.shards.push(Shard::default());
        self.shards.len() - 1
    }

    /// Removes topics; returns the indexes of the shards that changed.
    pub fn remove(&mut self, topics: &[String]) -> BTreeSet<usize> {
        let mut changed = BTreeSet::new();
        for topic in single_topics(topics) {
            for (i, shard) in self.shards.iter_mut().enumerate() {
                if shard.remove(&topic) {
                    changed.insert(i);
                }
            }
        }
        changed
    }

    /// Every single topic of the plan.
    pub fn topics(&self) -> Vec<String> {
        self.shards.iter().flat_map(Shard::topics).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uuid(n: usize) -> String {
        format!("00000000-0000-4000-8000-{n:012}")
    }

    #[test]
    fn user_topics_are_combined_per_user() {
        let topics: Vec<String> = ["presence", "routingStatus", "activity"]
            .iter()
            .map(|s| format!("v2.users.{}.{s}", uuid(1)))
            .chain([format!("v2.routing.queues.{}.conversations", uuid(2))])
            .collect();
        let plan = Plan::build(&topics, 1000);
        assert_eq!(
            plan.shards[0].entries(),
            vec![
                format!("v2.routing.queues.{}.conversations", uuid(2)),
                format!("v2.users.{}?activity&presence&routingStatus", uuid(1)),
            ]
        );
    }

    #[test]
    fn combined_topics_stay_within_200_characters() {
        let suffixes = [
            "conversations",
            "presence",
            "routingStatus",
            "activity",
            "conversationsummary",
            "station",
        ];
        let topics: Vec<String> = suffixes
            .iter()
            .map(|s| format!("v2.users.{}.{s}", uuid(1)))
            .collect();
        let entries = Plan::build(&topics, 1000).shards[0].entries();
        assert!(
            entries.iter().all(|e| e.len() <= MAX_COMBINED_LEN),
            "{entries:?}"
        );
        assert_eq!(single_topics(&entries).len(), suffixes.len());
    }

    #[test]
    fn shards_hold_at_most_their_cap_and_grow_only_when_full() {
        let topics: Vec<String> = (0..2500)
            .map(|n| format!("v2.routing.queues.{}.conversations", uuid(n)))
            .collect();
        let mut plan = Plan::build(&topics, 1000);
        assert_eq!(
            plan.shards.iter().map(Shard::len).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let changed = plan.add(&[format!("v2.routing.queues.{}.conversations", uuid(9999))]);
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            [2],
            "only the shard with room changes"
        );
        let changed = plan.remove(&[topics[5].clone()]);
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_new_topic_joins_its_entitys_shard() {
        let mut topics: Vec<String> = (0..999)
            .map(|n| format!("v2.routing.queues.{}.conversations", uuid(n)))
            .collect();
        topics.push(format!("v2.users.{}.presence", uuid(5000)));
        let mut plan = Plan::build(&topics, 1000);
        let changed = plan.add(&[format!("v2.users.{}.activity", uuid(5000))]);
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            [0],
            "combined into the existing entry"
        );
        assert_eq!(plan.shards[0].len(), 1000);
    }

    proptest! {
        /// Whatever is added and removed, every topic is held exactly once and no shard
        /// passes its cap.
        #[test]
        fn plan_matches_a_set(ops in prop::collection::vec((any::<bool>(), 0usize..60, 0usize..4), 1..200), cap in 2usize..20) {
            let suffix = ["presence", "activity", "routingStatus", "conversations"];
            let mut plan = Plan::build(&[], cap);
            let mut model = std::collections::BTreeSet::new();
            for (add, entity, s) in ops {
                let topic = format!("v2.users.{}.{}", uuid(entity), suffix[s]);
                if add { plan.add(std::slice::from_ref(&topic)); model.insert(topic); }
                else { plan.remove(std::slice::from_ref(&topic)); model.remove(&topic); }
            }
            let mut held = plan.topics();
            held.sort();
            prop_assert_eq!(held, model.into_iter().collect::<Vec<_>>());
            prop_assert!(plan.shards.iter().all(|s| s.len() <= cap));
            prop_assert!(plan.shards.iter().all(|s| s.len() == s.entries().len()), "cached count is exact");
        }
    }
}
