//! What the generator did, kept for the REST endpoints that back-fill reads: every
//! conversation (its participants, their segments with queue and user ids, start and
//! end, the last snapshot the topics carried) and every presence and routing-status
//! change of every agent. Queries see it as of a moment (the analytics data's delay):
//! what happened later is not there yet, and what ended later is still open.

use std::collections::HashMap;

use serde_json::{Value, json};
use time::{Date, OffsetDateTime};

use crate::state::format_ms;

/// A stretch of one segment of a participant's session.
#[derive(Debug, Clone)]
struct Segment {
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
    kind: &'static str,
    queue_id: Option<String>,
    disconnect: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Participant {
    id: String,
    purpose: &'static str,
    user_id: Option<String>,
    session_id: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone)]
struct Conversation {
    id: String,
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
    queue_id: String,
    ani: String,
    participants: Vec<Participant>,
    /// The last body the conversation topics carried (what `GET /conversations/{id}`
    /// answers).
    snapshot: String,
}

/// One value of a user's presence or routing status, from `start` until `end`.
#[derive(Debug, Clone)]
struct Span {
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
    value: &'static str,
}

#[derive(Debug, Clone, Default)]
struct UserLog {
    presence: Vec<Span>,
    routing: Vec<Span>,
}

/// A state and when it began, if there is one.
pub type Since = Option<(&'static str, OffsetDateTime)>;

/// Which conversations a details query asks for.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// A segment with one of these queues (any, when empty and `users` is empty).
    pub queues: Vec<String>,
    /// A participant who is one of these users.
    pub users: Vec<String>,
    /// One of these conversations.
    pub conversations: Vec<String>,
}

/// The simulator's record of what happened.
#[derive(Debug)]
pub struct History {
    conversations: Vec<Conversation>,
    by_id: HashMap<String, usize>,
    users: HashMap<String, UserLog>,
    capacity: usize,
}

impl History {
    /// Keeps about `capacity` conversations (the oldest half go when it is reached).
    pub fn new(capacity: usize) -> History {
        History {
            conversations: Vec::new(),
            by_id: HashMap::new(),
            users: HashMap::new(),
            capacity: capacity.max(2),
        }
    }

    fn conv(&mut self, id: &str) -> Option<&mut Conversation> {
        let i = *self.by_id.get(id)?;
        self.conversations.get_mut(i)
    }

    /// A call arrives: the customer and the queue (ACD) take part from `at`.
    pub fn started(
        &mut self,
        id: &str,
        at: OffsetDateTime,
        queue_id: &str,
        ani: &str,
        customer: (&str, &str),
        acd: (&str, &str),
    ) {
        if self.conversations.len() >= self.capacity {
            let keep = self.conversations.split_off(self.capacity / 2);
            self.conversations = keep;
            self.by_id = self
                .conversations
                .iter()
                .enumerate()
                .map(|(i, c)| (c.id.clone(), i))
                .collect();
        }
        let part = |(pid, session): (&str, &str), purpose, kind, queue: Option<&str>| Participant {
            id: pid.to_owned(),
            purpose,
            user_id: None,
            session_id: session.to_owned(),
            segments: vec![Segment {
                start: at,
                end: None,
                kind,
                queue_id: queue.map(str::to_owned),
                disconnect: None,
            }],
        };
        self.by_id.insert(id.to_owned(), self.conversations.len());
        self.conversations.push(Conversation {
            id: id.to_owned(),
            start: at,
            end: None,
            queue_id: queue_id.to_owned(),
            ani: ani.to_owned(),
            participants: vec![
                part(customer, "customer", "interact", None),
                part(acd, "acd", "interact", Some(queue_id)),
            ],
            snapshot: String::new(),
        });
    }

    /// An agent is offered the call (alerting) from `at`.
    pub fn alerting(&mut self, id: &str, at: OffsetDateTime, agent: (&str, &str), user_id: &str) {
        let Some(c) = self.conv(id) else { return };
        let queue = Some(c.queue_id.clone());
        c.participants.push(Participant {
            id: agent.0.to_owned(),
            purpose: "agent",
            user_id: Some(user_id.to_owned()),
            session_id: agent.1.to_owned(),
            segments: vec![Segment {
                start: at,
                end: None,
                kind: "alert",
                queue_id: queue,
                disconnect: None,
            }],
        });
    }

    /// The agent answers: the queue's part ends (transferred to the agent).
    pub fn connected(&mut self, id: &str, at: OffsetDateTime) {
        let Some(c) = self.conv(id) else { return };
        let queue = Some(c.queue_id.clone());
        for p in &mut c.participants {
            match p.purpose {
                "acd" => close(&mut p.segments, at, Some("transfer")),
                "agent" => {
                    close(&mut p.segments, at, None);
                    p.segments.push(Segment {
                        start: at,
                        end: None,
                        kind: "interact",
                        queue_id: queue.clone(),
                        disconnect: None,
                    });
                }
                _ => {}
            }
        }
    }

    /// The call ends: the customer hangs up, the agent goes to wrap-up.
    pub fn hung_up(&mut self, id: &str, at: OffsetDateTime) {
        let Some(c) = self.conv(id) else { return };
        let queue = Some(c.queue_id.clone());
        for p in &mut c.participants {
            match p.purpose {
                "customer" => close(&mut p.segments, at, Some("endpoint")),
                "agent" => {
                    close(&mut p.segments, at, Some("peer"));
                    p.segments.push(Segment {
                        start: at,
                        end: None,
                        kind: "wrapup",
                        queue_id: queue.clone(),
                        disconnect: None,
                    });
                }
                _ => {}
            }
        }
    }

    /// Wrap-up done: the conversation is over.
    pub fn ended(&mut self, id: &str, at: OffsetDateTime) {
        let Some(c) = self.conv(id) else { return };
        for p in &mut c.participants {
            close(&mut p.segments, at, None);
        }
        c.end = Some(at);
    }

    /// The body the conversation's topics carried last.
    pub fn snapshot(&mut self, id: &str, body: &str) {
        if let Some(c) = self.conv(id) {
            c.snapshot = body.to_owned();
        }
    }

    /// `user`'s presence is `value` from `at`.
    pub fn presence(&mut self, user: &str, at: OffsetDateTime, value: &'static str) {
        let log = self.users.entry(user.to_owned()).or_default();
        change(&mut log.presence, at, value);
    }

    /// `user`'s routing status is `value` from `at`.
    pub fn routing(&mut self, user: &str, at: OffsetDateTime, value: &'static str) {
        let log = self.users.entry(user.to_owned()).or_default();
        change(&mut log.routing, at, value);
    }

    /// The conversations of `filter` whose life overlaps `[from, to)` and that started on
    /// a day (UTC) the interval touches, as `POST /analytics/conversations/details/query`
    /// returns them, oldest start first, as of `as_of`.
    pub fn conversations(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        filter: &ConversationFilter,
        as_of: OffsetDateTime,
    ) -> Vec<Value> {
        let (first_day, _) = days(from, to);
        self.select(from, to, filter, as_of, Some(first_day))
    }

    /// The conversations of `filter` whose life overlaps `[from, to)`, whenever they
    /// started (from the start of `from`'s day, with `start_of_day`), as the details jobs
    /// return them, oldest start first, as of `as_of`.
    pub fn overlapping(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        filter: &ConversationFilter,
        as_of: OffsetDateTime,
        start_of_day: bool,
    ) -> Vec<Value> {
        let since = start_of_day.then(|| days(from, to).0);
        self.select(from, to, filter, as_of, since)
    }

    fn select(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        filter: &ConversationFilter,
        as_of: OffsetDateTime,
        since: Option<Date>,
    ) -> Vec<Value> {
        let mut found: Vec<&Conversation> = self
            .conversations
            .iter()
            .filter(|c| c.start <= as_of && c.start < to)
            .filter(|c| since.is_none_or(|day| c.start.date() >= day))
            .filter(|c| seen_end(c.end, as_of).is_none_or(|e| e > from))
            .filter(|c| matches(c, filter, as_of))
            .collect();
        found.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
        found
            .into_iter()
            .map(|c| conversation_json(c, as_of))
            .collect()
    }

    /// The last snapshot of conversation `id` (as the topics carried it), now.
    pub fn live(&self, id: &str) -> Option<&str> {
        let c = &self.conversations[*self.by_id.get(id)?];
        (!c.snapshot.is_empty()).then_some(c.snapshot.as_str())
    }

    /// The presence and routing-status spans of `users` (every user, when empty) that
    /// overlap `[from, to)`, as of `as_of`, as `POST /analytics/users/details/query`
    /// returns them, by user id.
    pub fn user_details(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        users: &[String],
        as_of: OffsetDateTime,
    ) -> Vec<Value> {
        let mut ids: Vec<&String> = self
            .users
            .keys()
            .filter(|u| users.is_empty() || users.contains(u))
            .collect();
        ids.sort();
        let spans = |list: &[Span], key: &str, value_key: &str| -> Vec<Value> {
            list.iter()
                .filter(|s| s.start <= as_of && s.start < to)
                .filter(|s| seen_end(s.end, as_of).is_none_or(|e| e > from))
                .map(|s| {
                    let mut v = json!({ "startTime": format_ms(s.start), value_key: s.value });
                    if let Some(end) = seen_end(s.end, as_of) {
                        v["endTime"] = json!(format_ms(end));
                    }
                    if key == "primaryPresence" {
                        v["organizationPresenceId"] = json!(crate::generator::presence_id(s.value));
                    }
                    v
                })
                .collect()
        };
        ids.into_iter()
            .filter_map(|id| {
                let log = &self.users[id];
                let presence = spans(&log.presence, "primaryPresence", "systemPresence");
                let routing = spans(&log.routing, "routingStatus", "routingStatus");
                if presence.is_empty() && routing.is_empty() {
                    return None;
                }
                let mut v = json!({ "userId": id });
                if !presence.is_empty() {
                    v["primaryPresence"] = Value::Array(presence);
                }
                if !routing.is_empty() {
                    v["routingStatus"] = Value::Array(routing);
                }
                Some(v)
            })
            .collect()
    }

    /// `user`'s presence and routing status now, with the times they began.
    pub fn current(&self, user: &str) -> Option<(Since, Since)> {
        let log = self.users.get(user)?;
        let last = |l: &[Span]| l.last().map(|s| (s.value, s.start));
        Some((last(&log.presence), last(&log.routing)))
    }
}

fn close(segments: &mut [Segment], at: OffsetDateTime, disconnect: Option<&'static str>) {
    if let Some(s) = segments.last_mut().filter(|s| s.end.is_none()) {
        s.end = Some(at);
        s.disconnect = disconnect;
    }
}

fn change(spans: &mut Vec<Span>, at: OffsetDateTime, value: &'static str) {
    if let Some(last) = spans.last_mut().filter(|s| s.end.is_none()) {
        if last.value == value {
            return;
        }
        last.end = Some(at);
    }
    spans.push(Span {
        start: at,
        end: None,
        value,
    });
}

/// An end as a query at `as_of` sees it: one still to come is not there yet.
fn seen_end(end: Option<OffsetDateTime>, as_of: OffsetDateTime) -> Option<OffsetDateTime> {
    end.filter(|e| *e <= as_of)
}

/// The first and last UTC day `[from, to)` touches.
fn days(from: OffsetDateTime, to: OffsetDateTime) -> (Date, Date) {
    let last = (to - time::Duration::nanoseconds(1)).max(from);
    (from.date(), last.date())
}

fn matches(c: &Conversation, f: &ConversationFilter, as_of: OffsetDateTime) -> bool {
    if !f.conversations.is_empty() && !f.conversations.contains(&c.id) {
        return false;
    }
    if f.queues.is_empty() && f.users.is_empty() {
        return true;
    }
    let visible = |s: &&Segment| s.start <= as_of;
    c.participants.iter().any(|p| {
        let by_user = p.user_id.as_ref().is_some_and(|u| f.users.contains(u))
            && p.segments.iter().any(|s| visible(&s));
        let by_queue = p
            .segments
            .iter()
            .filter(visible)
            .any(|s| s.queue_id.as_ref().is_some_and(|q| f.queues.contains(q)));
        by_user || by_queue
    })
}

fn conversation_json(c: &Conversation, as_of: OffsetDateTime) -> Value {
    let participants: Vec<Value> = c
        .participants
        .iter()
        .filter(|p| p.segments.first().is_some_and(|s| s.start <= as_of))
        .map(|p| {
            let segments: Vec<Value> = p
                .segments
                .iter()
                .filter(|s| s.start <= as_of)
                .map(|s| {
                    let mut v = json!({
                        "segmentStart": format_ms(s.start),
                        "segmentType": s.kind,
                    });
                    if let Some(end) = seen_end(s.end, as_of) {
                        v["segmentEnd"] = json!(format_ms(end));
                        if let Some(d) = s.disconnect {
                            v["disconnectType"] = json!(d);
                        }
                    }
                    if let Some(q) = &s.queue_id {
                        v["queueId"] = json!(q);
                    }
                    v
                })
                .collect();
            let mut v = json!({
                "participantId": p.id,
                "purpose": p.purpose,
                "sessions": [{
                    "sessionId": p.session_id,
                    "mediaType": "voice",
                    "direction": "inbound",
                    "ani": c.ani,
                    "segments": segments,
                }],
            });
            if let Some(u) = &p.user_id {
                v["userId"] = json!(u);
            }
            v
        })
        .collect();
    let mut v = json!({
        "conversationId": c.id,
        "conversationStart": format_ms(c.start),
        "originatingDirection": "inbound",
        "divisionIds": [crate::org::DIVISION_ID],
        "participants": participants,
    });
    if let Some(end) = seen_end(c.end, as_of) {
        v["conversationEnd"] = json!(format_ms(end));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn call(h: &mut History, id: &str, start: OffsetDateTime, end: Option<OffsetDateTime>) {
        h.started(id, start, "q1", "tel:+1", ("c", "cs"), ("a", "as"));
        if let Some(end) = end {
            h.hung_up(id, end);
            h.ended(id, end);
        }
    }

    fn ids(found: &[Value]) -> Vec<&str> {
        found
            .iter()
            .map(|c| c["conversationId"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_query_finds_what_overlaps_it_among_conversations_that_started_on_its_days() {
        let mut h = History::new(100);
        let now = datetime!(2026-12-04 01:00 UTC);
        // Started the day before, still going after midnight: the day rule leaves it out
        // of a query of the new day alone.
        call(
            &mut h,
            "late",
            datetime!(2026-12-03 23:50 UTC),
            Some(datetime!(2026-12-04 00:20 UTC)),
        );
        call(
            &mut h,
            "early",
            datetime!(2026-12-04 00:05 UTC),
            Some(datetime!(2026-12-04 00:08 UTC)),
        );
        call(&mut h, "open", datetime!(2026-12-04 00:09 UTC), None);
        call(&mut h, "after", datetime!(2026-12-04 00:40 UTC), None);
        let any = ConversationFilter::default();
        let q = |h: &History, a, b| ids(&h.conversations(a, b, &any, now)).join(",");
        assert_eq!(
            q(
                &h,
                datetime!(2026-12-04 00:10 UTC),
                datetime!(2026-12-04 00:30 UTC)
            ),
            "open"
        );
        // Across midnight, the day before is touched too.
        assert_eq!(
            q(
                &h,
                datetime!(2026-12-03 23:59 UTC),
                datetime!(2026-12-04 00:30 UTC)
            ),
            "late,early,open"
        );
        // The end of a conversation is exclusive of its own instant.
        assert_eq!(
            q(
                &h,
                datetime!(2026-12-04 00:08 UTC),
                datetime!(2026-12-04 00:09 UTC)
            ),
            ""
        );
    }

    #[test]
    fn a_query_sees_the_history_as_of_its_moment() {
        let mut h = History::new(100);
        call(
            &mut h,
            "c1",
            datetime!(2026-12-04 10:00 UTC),
            Some(datetime!(2026-12-04 10:05 UTC)),
        );
        call(&mut h, "c2", datetime!(2026-12-04 10:06 UTC), None);
        let any = ConversationFilter::default();
        let (a, b) = (
            datetime!(2026-12-04 09:00 UTC),
            datetime!(2026-12-04 11:00 UTC),
        );
        let early = h.conversations(a, b, &any, datetime!(2026-12-04 10:03 UTC));
        assert_eq!(ids(&early), ["c1"]);
        assert!(early[0].get("conversationEnd").is_none(), "not ended yet");
        let later = h.conversations(a, b, &any, datetime!(2026-12-04 10:30 UTC));
        assert_eq!(ids(&later), ["c1", "c2"]);
        assert_eq!(later[0]["conversationEnd"], "2026-12-04T10:05:00.000Z");
        let customer = &later[0]["participants"][0]["sessions"][0]["segments"][0];
        assert_eq!(customer["disconnectType"], "endpoint");
    }

    #[test]
    fn filters_pick_by_queue_segment_or_agent() {
        let mut h = History::new(100);
        let t = datetime!(2026-12-04 10:00 UTC);
        call(&mut h, "c1", t, None);
        h.started("c2", t, "q2", "tel:+2", ("c", "cs"), ("a", "as"));
        h.alerting("c2", datetime!(2026-12-04 10:01 UTC), ("p", "ps"), "u7");
        let now = datetime!(2026-12-04 11:00 UTC);
        let (a, b) = (t, now);
        let by = |queues: &[&str], users: &[&str]| {
            let f = ConversationFilter {
                queues: queues.iter().map(|s| s.to_string()).collect(),
                users: users.iter().map(|s| s.to_string()).collect(),
                conversations: Vec::new(),
            };
            ids(&h.conversations(a, b, &f, now)).join(",")
        };
        assert_eq!(by(&["q1"], &[]), "c1");
        assert_eq!(by(&["q2"], &[]), "c2");
        assert_eq!(by(&[], &["u7"]), "c2");
        assert_eq!(by(&[], &["u8"]), "");
    }

    #[test]
    fn user_details_are_the_spans_that_overlap() {
        let mut h = History::new(100);
        h.presence("u1", datetime!(2026-12-04 08:00 UTC), "ON_QUEUE");
        h.routing("u1", datetime!(2026-12-04 08:00 UTC), "IDLE");
        h.routing("u1", datetime!(2026-12-04 09:00 UTC), "INTERACTING");
        h.routing("u1", datetime!(2026-12-04 09:00 UTC), "INTERACTING");
        h.routing("u1", datetime!(2026-12-04 09:10 UTC), "IDLE");
        h.presence("u2", datetime!(2026-12-04 08:00 UTC), "BREAK");
        let now = datetime!(2026-12-04 12:00 UTC);
        let found = h.user_details(
            datetime!(2026-12-04 09:05 UTC),
            datetime!(2026-12-04 09:20 UTC),
            &["u1".to_owned()],
            now,
        );
        assert_eq!(found.len(), 1);
        let routing: Vec<&str> = found[0]["routingStatus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["routingStatus"].as_str().unwrap())
            .collect();
        assert_eq!(routing, ["INTERACTING", "IDLE"], "a repeat is no change");
        assert_eq!(found[0]["primaryPresence"][0]["systemPresence"], "ON_QUEUE");
        assert!(found[0]["primaryPresence"][0].get("endTime").is_none());
        let (presence, status) = h.current("u1").unwrap();
        assert_eq!(presence.unwrap().0, "ON_QUEUE");
        assert_eq!(status.unwrap().0, "IDLE");
    }

    #[test]
    fn the_oldest_half_goes_at_capacity() {
        let mut h = History::new(4);
        let t = datetime!(2026-12-04 10:00 UTC);
        for i in 0..5 {
            call(
                &mut h,
                &format!("c{i}"),
                t + time::Duration::minutes(i),
                None,
            );
        }
        let all = h.conversations(
            t,
            t + time::Duration::hours(1),
            &ConversationFilter::default(),
            t + time::Duration::hours(1),
        );
        assert_eq!(ids(&all), ["c2", "c3", "c4"]);
        assert!(h.live("c0").is_none());
    }
}
