//! Event bodies shaped like the service's (reference §4.2): conversation snapshots with
//! customer, acd and agent participants, presence, routing status, activity, detail
//! events and queue observations. Field names follow the SDK models; values are made up.

use serde_json::{Value, json};

/// One participant's call leg, as it appears in a snapshot.
#[derive(Debug, Clone)]
pub struct Leg {
    /// Participant id.
    pub participant_id: String,
    /// Call (communication) id.
    pub call_id: String,
    /// `customer`, `acd` or `agent`.
    pub purpose: &'static str,
    /// Call state: `alerting`, `connected`, `disconnected`, ...
    pub state: &'static str,
    /// When the leg connected.
    pub connected_time: Option<String>,
    /// When the leg ended.
    pub end_time: Option<String>,
    /// The agent's user id and name, for agent legs.
    pub user: Option<(String, String)>,
    /// How it ended.
    pub disconnect_type: Option<&'static str>,
}

/// A conversation snapshot (`v2.routing.queues.{id}.conversations`,
/// `v2.users.{id}.conversations`).
pub fn conversation(id: &str, queue_id: &str, customer_ani: &str, legs: &[Leg]) -> Value {
    let participants: Vec<Value> = legs
        .iter()
        .map(|leg| {
            let mut call = json!({
                "id": leg.call_id,
                "state": leg.state,
                "initialState": if leg.purpose == "agent" { "alerting" } else { "offering" },
                "direction": "inbound",
                "held": false,
                "muted": false,
                "confined": false,
                "recording": false,
                "recordingState": "none",
                "provider": "Edge",
                "self": {"addressNormalized": if leg.purpose == "customer" { customer_ani } else { "tel:+4681234567" }},
            });
            if let Some(t) = &leg.connected_time {
                call["connectedTime"] = json!(t);
            }
            if let Some(t) = &leg.end_time {
                call["disconnectedTime"] = json!(t);
            }
            if let Some(d) = leg.disconnect_type {
                call["disconnectType"] = json!(d);
            }
            let mut p = json!({
                "id": leg.participant_id,
                "purpose": leg.purpose,
                "queueId": queue_id,
                "wrapupRequired": leg.purpose == "agent",
                "attributes": {},
                "calls": [call],
            });
            if leg.purpose == "customer" {
                p["address"] = json!(customer_ani);
                p["name"] = json!("Mobile Number, Sweden");
            }
            if let Some((user_id, name)) = &leg.user {
                p["userId"] = json!(user_id);
                p["name"] = json!(name);
                p["alertingTimeoutMs"] = json!(30000);
            }
            if leg.purpose == "acd" {
                p["conversationRoutingData"] =
                    json!({"queue": {"id": queue_id}, "priority": 0, "skills": [], "scoredAgents": []});
            }
            if let Some(t) = &leg.connected_time {
                p["connectedTime"] = json!(t);
            }
            if let Some(t) = &leg.end_time {
                p["endTime"] = json!(t);
            }
            p
        })
        .collect();
    json!({
        "id": id,
        "maxParticipants": 3,
        "recordingState": "none",
        "participants": participants,
        "divisions": [{"division": {"id": crate::org::DIVISION_ID}, "entities": [{"id": queue_id}]}],
    })
}

/// `v2.users.{id}.presence`.
pub fn presence(system_presence: &str, presence_id: &str, at: &str) -> Value {
    json!({
        "source": "PURECLOUD",
        "presenceDefinition": {"id": presence_id, "systemPresence": system_presence},
        "primary": true,
        "message": "",
        "modifiedDate": at,
    })
}

/// `v2.users.{id}.routingStatus`.
pub fn routing_status(user_id: &str, status: &str, at: &str) -> Value {
    json!({"id": user_id, "routingStatus": {"status": status, "startTime": at}})
}

/// `v2.users.{id}.activity`.
pub fn activity(
    user_id: &str,
    status: &str,
    system_presence: &str,
    presence_id: &str,
    queue_ids: &[&str],
    at: &str,
) -> Value {
    json!({
        "id": user_id,
        "routingStatus": {"status": status, "startTime": at},
        "presence": {
            "presenceDefinition": {"id": presence_id, "systemPresence": system_presence},
            "modifiedDate": at,
        },
        "outOfOffice": {"active": false, "modifiedDate": "2024-01-02T08:00:00.000Z"},
        "activeQueueIds": queue_ids,
        "dateActiveQueuesChanged": "2024-01-02T08:00:00.000Z",
    })
}

/// `v2.detail.events.conversation.{id}.{kind}`: a flat detail event, `eventTime` in ms.
#[allow(clippy::too_many_arguments)]
pub fn detail(
    event_time_ms: i64,
    conversation_id: &str,
    participant_id: &str,
    session_id: &str,
    queue_id: &str,
    user_id: Option<&str>,
    ani: &str,
) -> Value {
    let mut body = json!({
        "eventTime": event_time_ms,
        "conversationId": conversation_id,
        "participantId": participant_id,
        "sessionId": session_id,
        "mediaType": "VOICE",
        "provider": "Edge",
        "direction": "INBOUND",
        "ani": ani,
        "dnis": "tel:+4681234567",
        "queueId": queue_id,
        "divisionId": crate::org::DIVISION_ID,
    });
    if let Some(user_id) = user_id {
        body["userId"] = json!(user_id);
    }
    body
}

/// `v2.analytics.queues.{id}.observations`.
pub fn observations(queue_id: &str, waiting: usize, interacting: usize, at: &str) -> Value {
    json!({
        "group": {"queueId": queue_id, "mediaType": "voice"},
        "data": [{
            "interval": format!("{at}/{at}"),
            "metrics": [
                {"metric": "oWaiting", "stats": {"count": waiting}},
                {"metric": "oInteracting", "stats": {"count": interacting}},
            ],
        }],
    })
}

/// Presence definition ids (the real ones are org-wide constants per system presence).
pub fn presence_id(system_presence: &str) -> &'static str {
    match system_presence {
        "AVAILABLE" => "6a3af858-942f-489d-9700-5f9bcdcdae9b",
        "ON_QUEUE" => "e08eaf1b-ee47-4fa9-a231-1200e284798f",
        "BREAK" => "a5ba9ab0-e3a0-4bc4-a3c1-a2bbf6a1e1c2",
        "MEAL" => "3fd96123-badb-4f69-bc03-1b1ccc6d8014",
        "BUSY" => "31fe3bac-dea6-44b7-bed7-47f91660a1a0",
        _ => "ccf3c10a-aa2c-4845-8e8d-f59fa48c58e5",
    }
}
