//! REST bodies of the OAuth and notifications APIs (reference §1, §2), shared by the
//! client (which reads them) and the simulator (which writes them). Field names follow the
//! service's JSON; unknown fields are ignored on read so new service fields never break us.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `POST /oauth/token` success body. `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenReply {
    /// The bearer token.
    pub access_token: String,
    /// `bearer`.
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

impl fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReply")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// `POST /oauth/token` error body (RFC 6749 style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    /// `invalid_client`, `unsupported_grant_type`, `invalid_request`, ...
    pub error: String,
    /// Human-readable text (the service's own field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Human-readable text (the RFC's field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

/// A notification channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// The WebSocket URL. Opaque: always dial exactly this.
    pub connect_uri: String,
    /// The channel id. Opaque: never parse it.
    pub id: String,
    /// ISO-8601 UTC expiry, e.g. `2026-11-28T12:41:54.707Z`.
    pub expires: String,
}

/// Whether a subscription was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicState {
    /// Subscribed.
    Permitted,
    /// Not subscribed; see `rejectionReason` and `missingPermissions`.
    Rejected,
    /// A state this version does not know.
    #[serde(other)]
    Unknown,
}

/// One subscribed (or rejected) topic of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTopic {
    /// The topic name.
    pub id: String,
    /// Permitted or Rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TopicState>,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    /// Permissions the client lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_permissions: Vec<String>,
    /// Link to the topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

/// A topic in a subscribe request body: `[{"id": "..."}]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRef {
    /// The topic name.
    pub id: String,
}

/// The service's error body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Human-readable text.
    #[serde(default)]
    pub message: String,
    /// Machine code, e.g. `bad.request`, `too.many.requests.retry.after`.
    #[serde(default)]
    pub code: String,
    /// HTTP status.
    #[serde(default)]
    pub status: u16,
    /// Correlation id of the failed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// The entity the error is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// Its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_name: Option<String>,
    /// `message` with `{placeholders}` for `message_params`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_with_params: Option<String>,
    /// The values of those placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_params: Option<serde_json::Map<String, serde_json::Value>>,
    /// The limit that was exceeded, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<serde_json::Value>,
    /// Further details (always present, maybe empty).
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
    /// Nested errors (always present, maybe empty).
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
}

impl ErrorBody {
    /// An error body with empty details.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            message: message.into(),
            code: code.to_owned(),
            status,
            ..Default::default()
        }
    }
}

/// A page of entities: `{"entities": [...], "pageSize": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityListing<T> {
    /// The entities on this page.
    pub entities: Vec<T>,
    /// Page size asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// 1-based page number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_number: Option<u32>,
    /// Entities on all pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Number of pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_count: Option<u32>,
    /// Link to the next page, absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_uri: Option<String>,
    /// Link to this page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

impl<T> EntityListing<T> {
    /// An unpaged listing.
    pub fn of(entities: Vec<T>) -> Self {
        EntityListing {
            entities,
            page_size: None,
            page_number: None,
            total: None,
            page_count: None,
            next_uri: None,
            self_uri: None,
        }
    }
}

/// A reference to another entity: `{"id": ..., "name": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityRef {
    /// The entity id.
    pub id: String,
    /// Its name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A routing queue (`GET /api/v2/routing/queues`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    /// Queue id.
    pub id: String,
    /// Queue name.
    pub name: String,
    /// Its division.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<EntityRef>,
    /// Number of members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u32>,
    /// Link to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

/// A user (`GET /api/v2/users`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// User id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `active`, `inactive` or `deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Its division.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub division: Option<EntityRef>,
    /// Link to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_uri: Option<String>,
}

/// One entry of `GET /api/v2/notifications/availabletopics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableTopic {
    /// The topic template, e.g. `v2.users.{id}.presence`.
    pub id: String,
    /// What it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Permissions needed to subscribe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_permissions: Vec<String>,
    /// The permissions in detail (`expand=permissionDetails`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permission_details: Vec<serde_json::Value>,
    /// `Public` or `Preview`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<String>,
    /// `All`, `Websocket`, `EventBridge`, `ProcessAutomation`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<String>,
    /// The JSON schema of the event body (`expand=schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// The names of the template's parameters, e.g. `["id"]` (`expand=topicParameters`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topic_parameters: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_debug_hides_the_token() {
        let reply = TokenReply {
            access_token: "very-secret".into(),
            token_type: "bearer".into(),
            expires_in: 86400,
        };
        let shown = format!("{reply:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("86400"));
    }

    #[test]
    fn documented_channel_sample_parses() {
        let text = r#"{"connectUri":"wss://streaming.mypurecloud.com/channels/streaming-0-fmtdmf8cdis7jh14udg5p89t6z","id":"streaming-0-fmtdmf8cdis7jh14udg5p89t6z","expires":"2020-08-12T12:41:54.707Z"}"#;
        let channel: Channel = serde_json::from_str(text).unwrap();
        assert_eq!(channel.id, "streaming-0-fmtdmf8cdis7jh14udg5p89t6z");
        assert_eq!(serde_json::to_string(&channel).unwrap(), text);
    }

    #[test]
    fn rejected_topic_keeps_missing_permissions() {
        let text = r#"{"entities":[{"id":"v2.users.x.conversations","state":"Rejected","rejectionReason":"no","missingPermissions":["conversation:communication:view"]},{"id":"y","state":"Sideways"}]}"#;
        let listing: EntityListing<ChannelTopic> = serde_json::from_str(text).unwrap();
        assert_eq!(listing.entities[0].state, Some(TopicState::Rejected));
        assert_eq!(
            listing.entities[0].missing_permissions,
            ["conversation:communication:view"]
        );
        assert_eq!(listing.entities[1].state, Some(TopicState::Unknown));
    }

    #[test]
    fn the_429_body_parses() {
        let text = r#"{"message":"Rate limit exceeded the maximum. Retry the request in [42] seconds","code":"too.many.requests.retry.after","status":429,"contextId":"c","details":[],"errors":[]}"#;
        let body: ErrorBody = serde_json::from_str(text).unwrap();
        assert_eq!(body.status, 429);
        assert_eq!(body.code, "too.many.requests.retry.after");
    }

    #[test]
    fn token_errors_parse_with_either_description() {
        let text = r#"{"error":"invalid_client","description":"client not found","error_description":"client not found"}"#;
        let err: OAuthError = serde_json::from_str(text).unwrap();
        assert_eq!(err.error, "invalid_client");
        let err: OAuthError = serde_json::from_str(
            r#"{"error":"invalid_client","description":"authentication failed"}"#,
        )
        .unwrap();
        assert_eq!(err.description.as_deref(), Some("authentication failed"));
    }
}
