//! The event generator: a small contact centre. Customers call queues; calls wait, alert
//! an idle agent on the queue, connect, end and go to wrap-up; agents change presence and
//! routing status; queues report observations. Each step of the model yields the events
//! the service would publish for it, on the topics their entities belong to. The model is
//! driven by a seeded RNG, so the same seed gives the same story.

mod bodies;
mod describe;

use std::collections::VecDeque;
use std::sync::Arc;

use bodies::Leg;
pub(crate) use bodies::{
    conversation as conversation_body, presence as presence_body, presence_id,
};
pub use describe::describe;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::{Duration, Instant};

use crate::org::Org;
use crate::rng::Rng;
use crate::state::history::History;
use crate::state::{Core, format_ms};

struct Agent {
    presence: &'static str,
    routing: &'static str,
    busy: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Alerting,
    Connected,
    AfterCall,
}

struct Conversation {
    id: String,
    queue: usize,
    ani: String,
    customer: Leg,
    acd: Leg,
    agent: Option<(usize, Leg)>,
    stage: Stage,
}

/// A leg in `state` for a firehose snapshot.
pub(crate) fn bodies_leg(rng: &mut Rng, purpose: &'static str, at: &str) -> Leg {
    let mut leg = Leg {
        participant_id: rng.uuid(),
        call_id: rng.uuid(),
        purpose,
        state: "connected",
        connected_time: Some(at.to_owned()),
        end_time: None,
        user: None,
        disconnect_type: None,
    };
    if purpose == "agent" {
        leg.user = Some((rng.uuid(), "Agent Smith".to_owned()));
    }
    leg
}

/// The contact-centre model.
pub struct Model {
    org: Org,
    rng: Rng,
    agents: Vec<Agent>,
    conversations: Vec<Conversation>,
    pending: VecDeque<(String, String)>,
    /// Conversations started so far: the first go to each queue in turn, so every queue
    /// has traffic within the first seconds.
    started: usize,
    /// Where what happens is recorded for the analytics endpoints, if anywhere.
    history: Option<Arc<std::sync::Mutex<History>>>,
    /// The time of the step being taken.
    now: OffsetDateTime,
    /// Whether the agents' first presence and routing status are recorded.
    recorded: bool,
}

impl Model {
    /// A model of `org`, seeded.
    pub fn new(org: Org, seed: u64) -> Model {
        let mut rng = Rng::new(seed);
        let agents = org
            .agents
            .iter()
            .map(|_| {
                let on_queue = rng.chance(0.75);
                Agent {
                    presence: if on_queue { "ON_QUEUE" } else { "AVAILABLE" },
                    routing: if on_queue { "IDLE" } else { "OFF_QUEUE" },
                    busy: false,
                }
            })
            .collect();
        Model {
            org,
            rng,
            agents,
            conversations: Vec::new(),
            pending: VecDeque::new(),
            started: 0,
            history: None,
            now: OffsetDateTime::UNIX_EPOCH,
            recorded: false,
        }
    }

    /// Records what happens from now on into `history`.
    pub fn recording(mut self, history: Arc<std::sync::Mutex<History>>) -> Model {
        self.history = Some(history);
        self
    }

    fn record(&self, f: impl FnOnce(&mut History)) {
        if let Some(h) = &self.history {
            f(&mut h.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// The next event to publish: `(topic, body)`.
    pub fn next_event(&mut self, now: OffsetDateTime) -> (String, String) {
        while self.pending.is_empty() {
            self.step(now);
        }
        self.pending.pop_front().unwrap_or_default()
    }

    fn emit(&mut self, topic: String, body: Value) {
        self.pending.push_back((topic, body.to_string()));
    }

    fn step(&mut self, now: OffsetDateTime) {
        self.now = now;
        if !self.recorded {
            self.recorded = true;
            self.record(|h| {
                for (a, member) in self.agents.iter().zip(&self.org.agents) {
                    h.presence(&member.id, now, a.presence);
                    h.routing(&member.id, now, a.routing);
                }
            });
        }
        let at = format_ms(now);
        let roll = self.rng.below(100);
        let capacity = self.agents.len().max(2);
        if self.org.queues.is_empty() {
            if !self.agents.is_empty() {
                self.presence_change(&at);
            }
            return;
        }
        if roll < 35 && self.conversations.len() < capacity
            || self.conversations.is_empty() && roll < 85
        {
            self.new_conversation(now, &at);
        } else if roll < 85 {
            let idx = self.rng.below(self.conversations.len());
            self.advance(idx, now, &at);
        } else if roll < 95 && !self.agents.is_empty() {
            self.presence_change(&at);
        } else {
            let q = self.rng.below(self.org.queues.len());
            self.observe(q, &at);
        }
    }

    fn leg(&mut self, purpose: &'static str, state: &'static str, at: &str) -> Leg {
        Leg {
            participant_id: self.rng.uuid(),
            call_id: self.rng.uuid(),
            purpose,
            state,
            connected_time: (state == "connected").then(|| at.to_owned()),
            end_time: None,
            user: None,
            disconnect_type: None,
        }
    }

    fn new_conversation(&mut self, now: OffsetDateTime, at: &str) {
        let queues = self.org.queues.len();
        let queue = if self.started < queues {
            self.started
        } else {
            self.rng.below(queues)
        };
        self.started += 1;
        let ani = format!("tel:+4670{:07}", self.rng.below(10_000_000));
        let conv = Conversation {
            id: self.rng.uuid(),
            queue,
            ani,
            customer: self.leg("customer", "connected", at),
            acd: self.leg("acd", "connected", at),
            agent: None,
            stage: Stage::Waiting,
        };
        self.record(|h| {
            h.started(
                &conv.id,
                now,
                &self.org.queues[queue].id,
                &conv.ani,
                (&conv.customer.participant_id, &conv.customer.call_id),
                (&conv.acd.participant_id, &conv.acd.call_id),
            )
        });
        self.conversations.push(conv);
        let idx = self.conversations.len() - 1;
        self.snapshots(idx);
        self.details(idx, &["customer.start", "acd.start"], now);
    }

    fn advance(&mut self, idx: usize, now: OffsetDateTime, at: &str) {
        match self.conversations[idx].stage {
            Stage::Waiting => {
                let queue = self.conversations[idx].queue;
                let Some(agent) = self.idle_agent(queue) else {
                    self.observe(queue, at);
                    return;
                };
                let mut leg = self.leg("agent", "alerting", at);
                let a = &self.org.agents[agent];
                leg.user = Some((a.id.clone(), a.name.clone()));
                let id = &self.conversations[idx].id;
                self.record(|h| h.alerting(id, now, (&leg.participant_id, &leg.call_id), &a.id));
                self.agents[agent].busy = true;
                self.conversations[idx].agent = Some((agent, leg));
                self.conversations[idx].stage = Stage::Alerting;
                self.snapshots(idx);
                self.set_routing(agent, "INTERACTING", at);
                self.details(idx, &["user.start"], now);
            }
            Stage::Alerting => {
                let conv = &mut self.conversations[idx];
                if let Some((_, leg)) = conv.agent.as_mut() {
                    leg.state = "connected";
                    leg.connected_time = Some(at.to_owned());
                }
                conv.acd.state = "disconnected";
                conv.acd.end_time = Some(at.to_owned());
                conv.acd.disconnect_type = Some("transfer");
                conv.stage = Stage::Connected;
                let id = conv.id.clone();
                self.record(|h| h.connected(&id, now));
                self.snapshots(idx);
                self.details(idx, &["acd.end"], now);
            }
            Stage::Connected => {
                let conv = &mut self.conversations[idx];
                for leg in
                    std::iter::once(&mut conv.customer).chain(conv.agent.as_mut().map(|(_, l)| l))
                {
                    leg.state = "disconnected";
                    leg.end_time = Some(at.to_owned());
                    leg.disconnect_type = Some("peer");
                }
                conv.customer.disconnect_type = Some("endpoint");
                conv.stage = Stage::AfterCall;
                let id = conv.id.clone();
                self.record(|h| h.hung_up(&id, now));
                self.snapshots(idx);
                self.details(idx, &["customer.end", "user.end"], now);
            }
            Stage::AfterCall => {
                self.details(idx, &["acw", "wrapup"], now);
                let conv = self.conversations.swap_remove(idx);
                self.record(|h| h.ended(&conv.id, now));
                if let Some((agent, _)) = conv.agent {
                    self.agents[agent].busy = false;
                    let status = if self.agents[agent].presence == "ON_QUEUE" {
                        "IDLE"
                    } else {
                        "OFF_QUEUE"
                    };
                    self.set_routing(agent, status, at);
                }
            }
        }
    }

    fn idle_agent(&mut self, queue: usize) -> Option<usize> {
        let idle: Vec<usize> = (0..self.agents.len())
            .filter(|&i| {
                let a = &self.agents[i];
                !a.busy && a.routing == "IDLE" && self.org.agents[i].queues.contains(&queue)
            })
            .collect();
        (!idle.is_empty()).then(|| *self.rng.pick(&idle))
    }

    fn snapshots(&mut self, idx: usize) {
        let conv = &self.conversations[idx];
        let queue_id = self.org.queues[conv.queue].id.clone();
        let mut legs = vec![conv.customer.clone(), conv.acd.clone()];
        let agent = conv.agent.as_ref().map(|(a, leg)| {
            legs.push(leg.clone());
            *a
        });
        let body = bodies::conversation(&conv.id, &queue_id, &conv.ani, &legs);
        self.record(|h| h.snapshot(&conv.id, &body.to_string()));
        if let Some(agent) = agent {
            let topic = format!("v2.users.{}.conversations", self.org.agents[agent].id);
            self.emit(topic, body.clone());
        }
        self.emit(format!("v2.routing.queues.{queue_id}.conversations"), body);
    }

    fn details(&mut self, idx: usize, kinds: &[&str], now: OffsetDateTime) {
        let conv = &self.conversations[idx];
        let ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        let queue_id = self.org.queues[conv.queue].id.clone();
        let user = conv
            .agent
            .as_ref()
            .map(|(a, _)| self.org.agents[*a].id.clone());
        let mut out = Vec::new();
        for kind in kinds {
            let leg = if kind.starts_with("customer") || kind.starts_with("acd") {
                if kind.starts_with("acd") {
                    &conv.acd
                } else {
                    &conv.customer
                }
            } else {
                conv.agent.as_ref().map_or(&conv.customer, |(_, l)| l)
            };
            let user = user.as_deref().filter(|_| leg.purpose == "agent");
            let body = bodies::detail(
                ms,
                &conv.id,
                &leg.participant_id,
                &leg.call_id,
                &queue_id,
                user,
                &conv.ani,
            );
            out.push((
                format!("v2.detail.events.conversation.{}.{kind}", conv.id),
                body,
            ));
        }
        for (topic, body) in out {
            self.emit(topic, body);
        }
    }

    fn set_routing(&mut self, agent: usize, status: &'static str, at: &str) {
        self.agents[agent].routing = status;
        let id = self.org.agents[agent].id.clone();
        let now = self.now;
        self.record(|h| h.routing(&id, now, status));
        self.emit(
            format!("v2.users.{id}.routingStatus"),
            bodies::routing_status(&id, status, at),
        );
        self.emit_activity(agent, at);
    }

    fn emit_activity(&mut self, agent: usize, at: &str) {
        let a = &self.agents[agent];
        let member = &self.org.agents[agent];
        let queues: Vec<&str> = member
            .queues
            .iter()
            .map(|q| self.org.queues[*q].id.as_str())
            .collect();
        let body = bodies::activity(
            &member.id,
            a.routing,
            a.presence,
            presence_id(a.presence),
            &queues,
            at,
        );
        let topic = format!("v2.users.{}.activity", member.id);
        self.emit(topic, body);
    }

    fn presence_change(&mut self, at: &str) {
        let free: Vec<usize> = (0..self.agents.len())
            .filter(|&i| !self.agents[i].busy)
            .collect();
        if free.is_empty() {
            return;
        }
        let agent = *self.rng.pick(&free);
        let presence = if self.agents[agent].presence == "ON_QUEUE" {
            *self.rng.pick(&["AVAILABLE", "BREAK", "MEAL"])
        } else if self.rng.chance(0.7) {
            "ON_QUEUE"
        } else {
            *self.rng.pick(&["AVAILABLE", "BREAK", "BUSY"])
        };
        self.agents[agent].presence = presence;
        let id = self.org.agents[agent].id.clone();
        let now = self.now;
        self.record(|h| h.presence(&id, now, presence));
        self.emit(
            format!("v2.users.{id}.presence"),
            bodies::presence(presence, presence_id(presence), at),
        );
        let routing = if presence == "ON_QUEUE" {
            "IDLE"
        } else {
            "OFF_QUEUE"
        };
        if self.agents[agent].routing != routing {
            self.set_routing(agent, routing, at);
        } else {
            self.emit_activity(agent, at);
        }
    }

    fn observe(&mut self, queue: usize, at: &str) {
        let waiting = self
            .conversations
            .iter()
            .filter(|c| c.queue == queue && c.stage == Stage::Waiting)
            .count();
        let interacting = self
            .conversations
            .iter()
            .filter(|c| c.queue == queue)
            .count()
            - waiting;
        let id = self.org.queues[queue].id.clone();
        let body = bodies::observations(&id, waiting, interacting, at);
        self.emit(format!("v2.analytics.queues.{id}.observations"), body);
    }
}

/// Publishes the model's events at `rate` per second until the task is dropped.
pub async fn run(core: Arc<Core>) {
    let rate = core.config.rate;
    if rate <= 0.0 || !rate.is_finite() {
        return;
    }
    let mut model = Model::new(core.org.clone(), core.config.seed).recording(core.history.clone());
    let start = Instant::now();
    let tick = Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: u64 = 0;
    loop {
        interval.tick().await;
        // Publish however many events are due so the rate holds above the timer's resolution.
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while published < due {
            let (topic, body) = model.next_event(core.config.now());
            core.publish(&topic, &body);
            published += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdline_proto::topic::{Family, classify};

    #[test]
    fn every_queue_of_the_default_org_has_a_conversation_within_the_first_events() {
        let config = crate::SimConfig::default();
        let org = Org::generate(config.seed, config.queues, config.agents);
        let mut model = Model::new(org.clone(), config.seed);
        let now = OffsetDateTime::now_utc();
        let first: Vec<String> = (0..25).map(|_| model.next_event(now).0).collect();
        for q in &org.queues {
            let topic = format!("v2.routing.queues.{}.conversations", q.id);
            assert!(
                first.contains(&topic),
                "{} has no event among the first 25",
                q.name
            );
        }
    }

    #[test]
    fn same_seed_same_topics() {
        let org = Org::generate(3, 3, 8);
        let now = OffsetDateTime::now_utc();
        let mut a = Model::new(org.clone(), 5);
        let mut b = Model::new(org, 5);
        let ta: Vec<String> = (0..200).map(|_| a.next_event(now).0).collect();
        let tb: Vec<String> = (0..200).map(|_| b.next_event(now).0).collect();
        assert_eq!(ta, tb);
    }

    #[test]
    fn a_busy_day_covers_every_lifecycle_step_with_valid_topics() {
        let org = Org::generate(1, 4, 12);
        let mut model = Model::new(org, 1);
        let now = OffsetDateTime::now_utc();
        let mut families = std::collections::BTreeSet::new();
        let mut states = std::collections::BTreeSet::new();
        for _ in 0..3000 {
            let (topic, body) = model.next_event(now);
            let m = classify(&topic).unwrap_or_else(|e| panic!("{topic}: {e}"));
            families.insert(m.family());
            let body: Value = serde_json::from_str(&body).unwrap();
            if m.family() == Family::UserConversations {
                let agent = body["participants"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["purpose"] == "agent");
                states.insert(
                    agent.unwrap()["calls"][0]["state"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        for family in [
            Family::QueueConversations,
            Family::UserConversations,
            Family::Presence,
            Family::RoutingStatus,
            Family::Activity,
            Family::DetailEvents,
            Family::QueueObservations,
        ] {
            assert!(families.contains(&family), "{family:?} never published");
        }
        for state in ["alerting", "connected", "disconnected"] {
            assert!(states.contains(state), "no agent leg was ever {state}");
        }
    }
}
