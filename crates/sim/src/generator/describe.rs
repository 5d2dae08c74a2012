//! One human line per event ("Support · conv 0c3b7a9e · alerting Ada Smith"), for the
//! simulator's live view and `holdline demo`. Names come from the simulated org.

use holdline_proto::topic::{Family, classify};
use serde_json::Value;

use crate::org::Org;

/// Describes an event for humans; unfamiliar events fall back to their topic.
pub fn describe(org: &Org, topic: &str, body: &str) -> String {
    let Ok(m) = classify(topic) else {
        return topic.to_owned();
    };
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return topic.to_owned();
    };
    let entity = m.entity_id.unwrap_or_default();
    let agent = || {
        org.agent(entity)
            .map_or_else(|| short(entity).to_owned(), |a| a.name.clone())
    };
    let queue = |id: &str| {
        org.queue(id)
            .map_or_else(|| short(id).to_owned(), |q| q.name.clone())
    };
    match m.family() {
        Family::QueueConversations | Family::UserConversations => conversation(org, &body, &queue),
        Family::Presence => format!(
            "{} · presence {}",
            agent(),
            body["presenceDefinition"]["systemPresence"]
                .as_str()
                .unwrap_or("?")
        ),
        Family::RoutingStatus => format!(
            "{} · routing {}",
            agent(),
            body["routingStatus"]["status"].as_str().unwrap_or("?")
        ),
        Family::Activity => format!(
            "{} · activity {} / {}",
            agent(),
            body["presence"]["presenceDefinition"]["systemPresence"]
                .as_str()
                .unwrap_or("?"),
            body["routingStatus"]["status"].as_str().unwrap_or("?")
        ),
        Family::DetailEvents => {
            let kind = topic.splitn(6, '.').nth(5).unwrap_or("?");
            format!(
                "{} · conv {} · {kind}",
                queue(body["queueId"].as_str().unwrap_or_default()),
                short(entity)
            )
        }
        Family::QueueObservations => {
            let count = |metric: &str| {
                body["data"][0]["metrics"]
                    .as_array()
                    .and_then(|ms| ms.iter().find(|x| x["metric"] == metric))
                    .and_then(|x| x["stats"]["count"].as_u64())
                    .unwrap_or(0)
            };
            format!(
                "{} · {} waiting, {} interacting",
                queue(entity),
                count("oWaiting"),
                count("oInteracting")
            )
        }
        other => format!("{} · {}", other.name(), short(entity)),
    }
}

fn conversation(org: &Org, body: &Value, queue: &dyn Fn(&str) -> String) -> String {
    let empty = Vec::new();
    let participants = body["participants"].as_array().unwrap_or(&empty);
    let state_of = |purpose: &str| {
        participants
            .iter()
            .find(|p| p["purpose"] == purpose)
            .map(|p| (p, p["calls"][0]["state"].as_str().unwrap_or("?")))
    };
    let queue_name = participants
        .first()
        .and_then(|p| p["queueId"].as_str())
        .map(queue)
        .unwrap_or_default();
    let conv = short(body["id"].as_str().unwrap_or_default());
    let state = match (state_of("customer"), state_of("agent")) {
        (Some((_, "disconnected")), _) => "ended".to_owned(),
        (_, Some((agent, state))) => {
            let id = agent["userId"].as_str().unwrap_or_default();
            let name = org.agent(id).map_or(id, |a| a.name.as_str());
            format!("{state} {name}")
        }
        (Some(_), None) => "waiting".to_owned(),
        (None, _) => "?".to_owned(),
    };
    format!("{queue_name} · conv {conv} · {state}")
}

/// The first 8 characters of an id.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::Model;
    use time::OffsetDateTime;

    #[test]
    fn every_generated_event_gets_a_readable_line() {
        let org = Org::generate(2, 3, 6);
        let mut model = Model::new(org.clone(), 2);
        let now = OffsetDateTime::now_utc();
        let mut saw_agent_state = false;
        for _ in 0..500 {
            let (topic, body) = model.next_event(now);
            let line = describe(&org, &topic, &body);
            assert!(!line.contains('?'), "{topic}: {line}");
            assert_ne!(line, topic);
            saw_agent_state |= org
                .agents
                .iter()
                .any(|a| line.contains(&format!("alerting {}", a.name)));
        }
        assert!(saw_agent_state);
    }
}
