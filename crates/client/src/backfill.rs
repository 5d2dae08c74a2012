//! Back-fill: after a gap, what the REST API says about the entities the gap's topics
//! could have carried. A gap's events are gone for good (the service never replays), but
//! the state they would have changed is still there to ask for:
//!
//! - queue and user conversation topics: the conversations of those queues or users whose
//!   life overlaps the gap (the analytics details query, which returns only conversations
//!   that started on a day the interval touches, so the day before the gap is asked for
//!   those still going at its midnight), then, for each still open, the live
//!   conversation;
//! - presence, routing-status and activity topics: each user's presence and routing
//!   spans during the gap, their presence now (50 users a call), and the routing status
//!   now of those whose spans the analytics did not give (one call each).
//!
//! Each answer becomes one `backfill` record per entity and source, and each gap ends with
//! one `backfill_done` record: `complete`, `partial` (some calls refused, named) or
//! `failed`. Calls are paced to a share of the token's budget; the API client's own
//! handling of 429 and `Retry-After` applies on top.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdline_proto::record::{self, BackfillDoneFields, BackfillFields};
use holdline_proto::topic::{self, Family};
use serde_json::{Value, json};

use crate::rest::api::Api;
use crate::rest::api::ApiError;

/// Rows per page of the analytics queries (the largest every deployment takes).
const PAGE: usize = 100;
/// Ids per predicate list of one query, and per bulk presence call.
const IDS_PER_CALL: usize = 50;
/// Pages one query may take: a gap's back-fill stops (as `partial`) at 20,000 rows a
/// query rather than hold more in memory (the service itself stops at 100,000).
const MOST_PAGES: usize = 200;

/// What a back-fill asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub conversations: bool,
    pub users: bool,
}

/// A gap to back-fill.
#[derive(Debug, Clone)]
pub struct GapToFill {
    /// The gap record's id.
    pub id: String,
    pub org: String,
    pub topics: Vec<String>,
    pub from: SystemTime,
    pub to: SystemTime,
}

/// Spaces REST calls to a rate: `per_minute` calls at most.
#[derive(Debug)]
pub struct Pace {
    every: Duration,
    next: tokio::time::Instant,
}

impl Pace {
    pub fn per_minute(calls: f64) -> Pace {
        let calls = if calls.is_finite() && calls > 0.0 {
            calls
        } else {
            1.0
        };
        Pace {
            every: Duration::from_secs_f64(60.0 / calls),
            next: tokio::time::Instant::now(),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep_until(self.next).await;
        self.next = tokio::time::Instant::now().max(self.next) + self.every;
    }
}

/// What the gap's topics are about.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Queue id → the gap's conversation topic of that queue.
    pub queues: BTreeMap<String, String>,
    /// User id → the gap's conversation topic of that user.
    pub conversation_users: BTreeMap<String, String>,
    /// User id → the gap's presence, routing-status or activity topic of that user.
    pub users: BTreeMap<String, String>,
}

impl Wanted {
    /// What `topics` carry that the REST API can tell about.
    pub fn of(topics: &[String], kinds: Kinds) -> Wanted {
        let mut w = Wanted::default();
        for name in topics
            .iter()
            .flat_map(|t| topic::expand(t).unwrap_or_default())
        {
            let Ok(m) = topic::classify(&name) else {
                continue;
            };
            let Some(id) = m.entity_id.map(str::to_owned) else {
                continue;
            };
            match m.family() {
                Family::QueueConversations if kinds.conversations => {
                    w.queues.entry(id).or_insert(name.clone());
                }
                Family::UserConversations if kinds.conversations => {
                    w.conversation_users.entry(id).or_insert(name.clone());
                }
                Family::Presence | Family::RoutingStatus | Family::Activity if kinds.users => {
                    w.users.entry(id).or_insert(name.clone());
                }
                _ => {}
            }
        }
        w
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty() && self.conversation_users.is_empty() && self.users.is_empty()
    }
}

/// How a gap's back-fill went.
#[derive(Debug, Default)]
struct Tally {
    counts: BTreeMap<&'static str, u64>,
    requests: u64,
    /// Permissions refused (403), each named once.
    missing: BTreeSet<String>,
    /// Other calls that failed.
    failures: Vec<String>,
    /// Parts asked for and parts that answered.
    parts: u32,
    answered: u32,
}

impl Tally {
    fn refused(&mut self, what: &str, e: &ApiError) {
        match e {
            ApiError::Forbidden { .. } => {
                self.missing.insert(permission_of(what).to_owned());
            }
            other => self.failures.push(format!("{what}: {other}")),
        }
    }
}

fn permission_of(what: &str) -> &'static str {
    match what {
        "conversation details" => "analytics:conversationDetail:view",
        "user details" => "analytics:userDetail:view",
        "conversation" => "conversation:communication:view",
        _ => "the permission of this call",
    }
}

fn iso(t: SystemTime) -> String {
    let mut out = Vec::new();
    record::write_rfc3339(&mut out, t);
    String::from_utf8(out).unwrap_or_default()
}

/// Midnight (UTC) at the start of `t`'s day.
fn day_start(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs - secs % 86_400)
}

fn millis(t: &str) -> Option<SystemTime> {
    holdline_proto::record::parse_rfc3339(t)
}

/// What a back-fill came to, besides the records it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status its `backfill_done` record says: complete, partial or failed.
    pub status: &'static str,
    /// The permissions the OAuth client was refused.
    pub missing: Vec<String>,
    /// The `backfill` records written, by source.
    pub records: Vec<(&'static str, u64)>,
    /// The REST calls made.
    pub requests: u64,
}

/// Back-fills `gap`: every record (each a line ending in a newline) goes to `emit`, the
/// `backfill_done` record last.
pub async fn fill(
    api: &Api,
    gap: &GapToFill,
    kinds: Kinds,
    pace: &mut Pace,
    emit: &mut (dyn FnMut(Vec<u8>) + Send),
) -> Outcome {
    let wanted = Wanted::of(&gap.topics, kinds);
    let mut run = Run {
        api,
        gap,
        pace,
        tally: Tally::default(),
        emit,
    };
    if !wanted.queues.is_empty() || !wanted.conversation_users.is_empty() {
        run.conversations(&wanted).await;
    }
    if !wanted.users.is_empty() {
        run.users(&wanted).await;
    }
    let Run { tally, emit, .. } = run;
    let status = if tally.parts == 0 || tally.answered == tally.parts {
        "complete"
    } else if tally.answered == 0 {
        "failed"
    } else {
        "partial"
    };
    let mut reasons: Vec<String> = Vec::new();
    if !tally.missing.is_empty() {
        let list: Vec<&str> = tally.missing.iter().map(String::as_str).collect();
        reasons.push(format!(
            "the OAuth client lacks {}: grant it to back-fill these topics",
            list.join(", ")
        ));
    }
    reasons.extend(tally.failures.iter().take(3).cloned());
    if wanted.is_empty() {
        reasons.push("no topic of the gap is one the REST API can tell about".to_owned());
    }
    let reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    let mut counts: Vec<(&str, u64)> = tally.counts.iter().map(|(k, v)| (*k, *v)).collect();
    counts.push(("requests", tally.requests));
    let mut line = Vec::new();
    record::write_backfill_done(
        &mut line,
        &BackfillDoneFields {
            gap: &gap.id,
            org: &gap.org,
            status,
            counts: &counts,
            reason: reason.as_deref(),
        },
    );
    emit(line);
    Outcome {
        status,
        missing: tally.missing.into_iter().collect(),
        records: tally.counts.into_iter().collect(),
        requests: tally.requests,
    }
}

/// One entity's state, as a back-fill record says it.
struct Entry<'a> {
    topic: &'a str,
    source: &'static str,
    entity: &'a str,
    as_of: SystemTime,
    body: &'a Value,
}

/// One back-fill's calls and what they found.
struct Run<'a> {
    api: &'a Api,
    gap: &'a GapToFill,
    pace: &'a mut Pace,
    tally: Tally,
    emit: &'a mut (dyn FnMut(Vec<u8>) + Send),
}

impl Run<'_> {
    fn write(&mut self, e: Entry<'_>) {
        let body = serde_json::to_vec(e.body).unwrap_or_else(|_| b"null".to_vec());
        let mut line = Vec::with_capacity(body.len() + 256);
        record::write_backfill(
            &mut line,
            &BackfillFields {
                gap: &self.gap.id,
                org: &self.gap.org,
                topic: e.topic,
                source: e.source,
                entity: e.entity,
                as_of: e.as_of,
                body: &body,
            },
        );
        *self.tally.counts.entry(e.source).or_default() += 1;
        (self.emit)(line);
    }

    /// Waits for the pace and counts the call about to be made.
    async fn paced(&mut self) {
        self.pace.wait().await;
        self.tally.requests += 1;
    }

    /// One details query, every page; None when a call failed (counted in `tally`).
    async fn every_page(
        &mut self,
        path: &str,
        mut query: Value,
        rows_key: &str,
        what: &'static str,
    ) -> Option<Vec<Value>> {
        let mut rows = Vec::new();
        for number in 1..=MOST_PAGES {
            query["paging"] = json!({ "pageSize": PAGE, "pageNumber": number });
            self.paced().await;
            let page = match self.api.post_value(path, &query, what).await {
                Ok(p) => p,
                Err(e) => {
                    self.tally.refused(what, &e);
                    return None;
                }
            };
            let got = page[rows_key].as_array().cloned().unwrap_or_default();
            let n = got.len();
            rows.extend(got);
            let total = page["totalHits"].as_u64().map(|t| t as usize);
            if n < PAGE || total.is_some_and(|t| rows.len() >= t) {
                return Some(rows);
            }
        }
        self.tally.parts += 1;
        self.tally.failures.push(format!(
            "{what}: more than {} rows; the first {} back-filled",
            MOST_PAGES * PAGE,
            MOST_PAGES * PAGE
        ));
        Some(rows)
    }

    async fn conversations(&mut self, wanted: &Wanted) {
        const PATH: &str = "/api/v2/analytics/conversations/details/query";
        let (from, to) = (
            self.gap.from,
            self.gap.to.max(self.gap.from + Duration::from_millis(1)),
        );
        // The gap's own days, and the last moment of the day before (what started then and
        // still went on at midnight).
        let midnight = day_start(from);
        let intervals = [
            format!("{}/{}", iso(from), iso(to)),
            format!(
                "{}/{}",
                iso(midnight - Duration::from_millis(1)),
                iso(midnight)
            ),
        ];
        let mut lists: Vec<(&str, Vec<&String>)> = Vec::new();
        let queues: Vec<&String> = wanted.queues.keys().collect();
        for chunk in queues.chunks(IDS_PER_CALL) {
            lists.push(("queueId", chunk.to_vec()));
        }
        let users: Vec<&String> = wanted.conversation_users.keys().collect();
        for chunk in users.chunks(IDS_PER_CALL) {
            lists.push(("userId", chunk.to_vec()));
        }
        let as_of = SystemTime::now();
        let mut seen: HashSet<String> = HashSet::new();
        let mut open: Vec<(String, String)> = Vec::new();
        for interval in &intervals {
            for (dimension, ids) in &lists {
                self.tally.parts += 1;
                let query = json!({
                    "interval": interval,
                    "order": "asc",
                    "orderBy": "conversationStart",
                    "segmentFilters": predicates(dimension, ids),
                });
                let Some(rows) = self
                    .every_page(PATH, query, "conversations", "conversation details")
                    .await
                else {
                    continue;
                };
                self.tally.answered += 1;
                for c in rows {
                    let Some(id) = c["conversationId"].as_str().map(str::to_owned) else {
                        continue;
                    };
                    // Only what overlaps the gap itself.
                    let start = c["conversationStart"].as_str().and_then(millis);
                    let end = c["conversationEnd"].as_str().and_then(millis);
                    if start.is_some_and(|s| s >= to) || end.is_some_and(|e| e <= from) {
                        continue;
                    }
                    if !seen.insert(id.clone()) {
                        continue;
                    }
                    let Some(topic) = topic_of(&c, wanted) else {
                        continue;
                    };
                    self.write(Entry {
                        topic: &topic,
                        source: "analytics.conversations",
                        entity: &id,
                        as_of,
                        body: &c,
                    });
                    if end.is_none() {
                        open.push((id, topic));
                    }
                }
            }
        }
        // The ones still going: their state now.
        for (id, topic) in open {
            self.tally.parts += 1;
            self.paced().await;
            let asked = SystemTime::now();
            match self
                .api
                .get_value(&format!("/api/v2/conversations/{id}"), "conversation")
                .await
            {
                Ok(body) => {
                    self.tally.answered += 1;
                    self.write(Entry {
                        topic: &topic,
                        source: "conversations",
                        entity: &id,
                        as_of: asked,
                        body: &body,
                    });
                }
                // Ended (and gone) since the query.
                Err(ApiError::NotFound { .. }) => self.tally.answered += 1,
                Err(e) => self.tally.refused("conversation", &e),
            }
        }
    }

    async fn users(&mut self, wanted: &Wanted) {
        const PATH: &str = "/api/v2/analytics/users/details/query";
        let to = self.gap.to.max(self.gap.from + Duration::from_millis(1));
        let ids: Vec<&String> = wanted.users.keys().collect();
        for chunk in ids.chunks(IDS_PER_CALL) {
            // Their spans during the self.gap.
            self.tally.parts += 1;
            let as_of = SystemTime::now();
            let query = json!({
                "interval": format!("{}/{}", iso(self.gap.from), iso(to)),
                "userFilters": [{
                    "type": "or",
                    "predicates": chunk.iter().map(|id| json!({ "dimension": "userId", "value": id })).collect::<Vec<_>>(),
                }],
            });
            // Users whose routing spans the analytics gave: the span open at the gap's end is
            // their state then, so only the others are asked one by one.
            let mut spanned: HashSet<String> = HashSet::new();
            if let Some(rows) = self
                .every_page(PATH, query, "userDetails", "user details")
                .await
            {
                self.tally.answered += 1;
                for row in rows {
                    let Some(user) = row["userId"].as_str() else {
                        continue;
                    };
                    if row["routingStatus"]
                        .as_array()
                        .is_some_and(|s| !s.is_empty())
                    {
                        spanned.insert(user.to_owned());
                    }
                    if let Some(topic) = wanted.users.get(user) {
                        self.write(Entry {
                            topic,
                            source: "analytics.users",
                            entity: user,
                            as_of,
                            body: &row,
                        });
                    }
                }
            }
            // Their presence now.
            self.tally.parts += 1;
            self.paced().await;
            let asked = SystemTime::now();
            let query: Vec<String> = chunk.iter().map(|id| format!("id={id}")).collect();
            match self
                .api
                .get_value(
                    &format!("/api/v2/users/presences/purecloud/bulk?{}", query.join("&")),
                    "presences",
                )
                .await
            {
                Ok(list) => {
                    self.tally.answered += 1;
                    for p in list.as_array().into_iter().flatten() {
                        let Some(user) = p["userId"].as_str() else {
                            continue;
                        };
                        if let Some(topic) = wanted.users.get(user) {
                            self.write(Entry {
                                topic,
                                source: "presence",
                                entity: user,
                                as_of: asked,
                                body: p,
                            });
                        }
                    }
                }
                Err(e) => self.tally.refused("presences", &e),
            }
            // And the routing status now of those the analytics did not show, one call each.
            for id in chunk.iter().filter(|id| !spanned.contains(id.as_str())) {
                self.tally.parts += 1;
                self.paced().await;
                let asked = SystemTime::now();
                match self
                    .api
                    .get_value(
                        &format!("/api/v2/users/{id}/routingstatus"),
                        "routing status",
                    )
                    .await
                {
                    Ok(body) => {
                        self.tally.answered += 1;
                        let topic = &wanted.users[*id];
                        self.write(Entry {
                            topic,
                            source: "routingstatus",
                            entity: id,
                            as_of: asked,
                            body: &body,
                        });
                    }
                    Err(ApiError::NotFound { .. }) => self.tally.answered += 1,
                    Err(e) => self.tally.refused("routing status", &e),
                }
            }
        }
    }
}
fn predicates(dimension: &str, ids: &[&String]) -> Value {
    json!([{
        "type": "or",
        "predicates": ids.iter().map(|id| json!({ "dimension": dimension, "value": id })).collect::<Vec<_>>(),
    }])
}

/// The gap's topic a conversation belongs to: a queue of its segments, else a user of
/// its participants.
fn topic_of(c: &Value, wanted: &Wanted) -> Option<String> {
    let participants = c["participants"].as_array()?;
    for p in participants {
        for s in p["sessions"].as_array().into_iter().flatten() {
            for seg in s["segments"].as_array().into_iter().flatten() {
                if let Some(t) = seg["queueId"].as_str().and_then(|q| wanted.queues.get(q)) {
                    return Some(t.clone());
                }
            }
        }
    }
    participants.iter().find_map(|p| {
        p["userId"]
            .as_str()
            .and_then(|u| wanted.conversation_users.get(u))
            .cloned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "0b2c1f5e-3a4d-4e6f-8a9b-000000000001";
    const U: &str = "0b2c1f5e-3a4d-4e6f-8a9b-000000000002";

    #[test]
    fn a_gaps_topics_say_what_to_ask_for() {
        let topics = vec![
            format!("v2.routing.queues.{Q}.conversations"),
            format!("v2.users.{U}?presence&routingStatus&conversations"),
            format!("v2.analytics.queues.{Q}.observations"),
        ];
        let all = Wanted::of(
            &topics,
            Kinds {
                conversations: true,
                users: true,
            },
        );
        assert_eq!(all.queues.keys().collect::<Vec<_>>(), [Q]);
        assert_eq!(all.conversation_users.keys().collect::<Vec<_>>(), [U]);
        assert_eq!(all.users[U], format!("v2.users.{U}.presence"));
        let only_users = Wanted::of(
            &topics,
            Kinds {
                conversations: false,
                users: true,
            },
        );
        assert!(only_users.queues.is_empty() && only_users.conversation_users.is_empty());
        assert!(
            Wanted::of(&topics[2..], all_kinds()).is_empty(),
            "observations have no state to ask for"
        );
    }

    fn all_kinds() -> Kinds {
        Kinds {
            conversations: true,
            users: true,
        }
    }

    #[test]
    fn the_day_starts_at_midnight_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3_600);
        assert_eq!(day_start(t), UNIX_EPOCH + Duration::from_secs(86_400 * 3));
        assert_eq!(iso(day_start(t)), "1970-01-04T00:00:00.000000Z");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_to_the_pace() {
        let mut pace = Pace::per_minute(60.0);
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            pace.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
