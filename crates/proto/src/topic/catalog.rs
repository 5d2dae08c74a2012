//! The topic families holdline and the simulator know (reference §4.1): each family's name
//! templates, what its events describe, and the permissions the simulator's model asks for.

use std::sync::LazyLock;

/// A group of topics that share a shape of event body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `v2.users.{id}.conversations` (and per-media variants): conversation snapshots.
    UserConversations,
    /// `v2.routing.queues.{id}.conversations` (and per-media variants).
    QueueConversations,
    /// `v2.routing.queues.{id}.users`: queue membership changes.
    QueueMembers,
    /// `v2.users.{id}.presence`.
    Presence,
    /// `v2.users.{id}.routingStatus`.
    RoutingStatus,
    /// `v2.users.{id}.activity`: presence, routing status and queues in one body.
    Activity,
    /// `v2.users.{id}.conversationsummary`.
    ConversationSummary,
    /// `v2.users.{id}.station`.
    Station,
    /// `v2.detail.events.conversation.{id}.*`: flat detail events.
    DetailEvents,
    /// `v2.detail.events.agent.{id}.state`.
    AgentState,
    /// `v2.analytics.queues.{id}.observations`.
    QueueObservations,
    /// `v2.analytics.queues.{id}.activity`.
    QueueActivity,
    /// `v2.analytics.users.{id}.aggregates`.
    UserAggregates,
    /// `v2.analytics.conversation.{id}.metrics`.
    ConversationMetrics,
    /// `v2.conversations.{id}.transcription`.
    Transcription,
    /// `v2.conversations.{id}.agentchecklist`.
    AgentChecklist,
    /// `v2.system.*`: notices about the socket or channel itself.
    System,
    /// `channel.metadata`: heartbeats and pongs.
    ChannelMetadata,
}

impl Family {
    /// A short stable name, used in logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Family::UserConversations => "user.conversations",
            Family::QueueConversations => "queue.conversations",
            Family::QueueMembers => "queue.members",
            Family::Presence => "presence",
            Family::RoutingStatus => "routingStatus",
            Family::Activity => "activity",
            Family::ConversationSummary => "conversationsummary",
            Family::Station => "station",
            Family::DetailEvents => "detail.events",
            Family::AgentState => "agent.state",
            Family::QueueObservations => "queue.observations",
            Family::QueueActivity => "queue.activity",
            Family::UserAggregates => "user.aggregates",
            Family::ConversationMetrics => "conversation.metrics",
            Family::Transcription => "transcription",
            Family::AgentChecklist => "agentchecklist",
            Family::System => "system",
            Family::ChannelMetadata => "channel.metadata",
        }
    }
}

/// One segment of a topic template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg {
    /// Must equal this text.
    Lit(&'static str),
    /// A UUID: user, queue or conversation id.
    Id,
    /// Any non-empty token (channel ids are opaque).
    Opaque,
}

/// One topic name pattern and what the simulator knows about it.
#[derive(Debug, Clone)]
pub struct Template {
    /// The pattern, e.g. `v2.users.{id}.presence`.
    pub pattern: String,
    /// The family it belongs to.
    pub family: Family,
    /// What events on it describe.
    pub description: &'static str,
    /// Permissions the simulator requires to subscribe (its model, not the service's list).
    pub permissions: &'static [&'static str],
    pub(crate) segs: Vec<Seg>,
    /// True for the first (base) template of its family, used to keep suggestions short.
    pub(crate) primary: bool,
}

const MEDIA: [&str; 9] = [
    "calls",
    "callbacks",
    "chats",
    "emails",
    "messages",
    "cobrowseSessions",
    "screenshares",
    "socialexpressions",
    "videos",
];

const DETAIL_EVENTS: [&str; 16] = [
    "acd.start",
    "acd.end",
    "acw",
    "attributes",
    "contact",
    "customer.start",
    "customer.end",
    "flow.start",
    "flow.end",
    "flow.outcome",
    "outbound",
    "user.start",
    "user.end",
    "voicemail.start",
    "voicemail.end",
    "wrapup",
];

const CONVERSATION_VIEW: &[&str] = &["conversation:communication:view"];

struct Base {
    pattern: &'static str,
    family: Family,
    description: &'static str,
    permissions: &'static [&'static str],
    suffixes: &'static [&'static str],
}

const BASES: &[Base] = &[
    Base {
        pattern: "v2.users.{id}.conversations",
        family: Family::UserConversations,
        description: "Conversations of one user (full snapshots)",
        permissions: CONVERSATION_VIEW,
        suffixes: &MEDIA,
    },
    Base {
        pattern: "v2.routing.queues.{id}.conversations",
        family: Family::QueueConversations,
        description: "Conversations routed through one queue (full snapshots)",
        permissions: &["routing:queue:view", "conversation:communication:view"],
        suffixes: &MEDIA,
    },
    Base {
        pattern: "v2.routing.queues.{id}.users",
        family: Family::QueueMembers,
        description: "Members joining or leaving one queue",
        permissions: &["routing:queueMember:view"],
        suffixes: &[],
    },
    Base {
        pattern: "v2.users.{id}.presence",
        family: Family::Presence,
        description: "Presence of one user",
        permissions: &[],
        suffixes: &[],
    },
    Base {
        pattern: "v2.users.{id}.routingStatus",
        family: Family::RoutingStatus,
        description: "ACD routing status of one user",
        permissions: &[],
        suffixes: &[],
    },
    Base {
        pattern: "v2.users.{id}.activity",
        family: Family::Activity,
        description: "Presence, routing status and active queues of one user",
        permissions: &["routing:agent:view"],
        suffixes: &[],
    },
    Base {
        pattern: "v2.users.{id}.conversationsummary",
        family: Family::ConversationSummary,
        description: "Counts of one user's conversations by media type",
        permissions: &[],
        suffixes: &[],
    },
    Base {
        pattern: "v2.users.{id}.station",
        family: Family::Station,
        description: "Station associations of one user",
        permissions: &[],
        suffixes: &[],
    },
    Base {
        pattern: "v2.detail.events.conversation.{id}",
        family: Family::DetailEvents,
        description: "Flat detail events of one conversation",
        permissions: &["analytics:conversationDetail:view"],
        suffixes: &DETAIL_EVENTS,
    },
    Base {
        pattern: "v2.detail.events.agent.{id}.state",
        family: Family::AgentState,
        description: "Agent state detail events of one user",
        permissions: &["analytics:agentState:view"],
        suffixes: &[],
    },
    Base {
        pattern: "v2.analytics.queues.{id}.observations",
        family: Family::QueueObservations,
        description: "Real-time observation metrics of one queue",
        permissions: &["analytics:queueObservation:view"],
        suffixes: &[],
    },
    Base {
        pattern: "v2.analytics.queues.{id}.activity",
        family: Family::QueueActivity,
        description: "Queue activity (observations with entity details) of one queue",
        permissions: &["analytics:queueObservation:view"],
        suffixes: &[],
    },
    Base {
        pattern: "v2.analytics.users.{id}.aggregates",
        family: Family::UserAggregates,
        description: "Aggregate metrics of one user",
        permissions: &["analytics:userAggregate:view"],
        suffixes: &[],
    },
    Base {
        pattern: "v2.analytics.conversation.{id}.metrics",
        family: Family::ConversationMetrics,
        description: "Metrics of one conversation",
        permissions: &["analytics:conversationAggregate:view"],
        suffixes: &[],
    },
    Base {
        pattern: "v2.conversations.{id}.transcription",
        family: Family::Transcription,
        description: "Live transcription of one conversation",
        permissions: &["conversation:transcription:view"],
        suffixes: &[],
    },
    Base {
        pattern: "v2.conversations.{id}.agentchecklist",
        family: Family::AgentChecklist,
        description: "Agent checklist of one conversation",
        permissions: CONVERSATION_VIEW,
        suffixes: &[],
    },
    Base {
        pattern: "channel.metadata",
        family: Family::ChannelMetadata,
        description: "Heartbeats and pongs of the channel",
        permissions: &[],
        suffixes: &[],
    },
    Base {
        pattern: "v2.system.socket_closing",
        family: Family::System,
        description: "The socket will be closed for maintenance",
        permissions: &[],
        suffixes: &[],
    },
    Base {
        pattern: "v2.system.no_longer_subscribed.{opaque}",
        family: Family::System,
        description: "The channel lost its subscriptions",
        permissions: &[],
        suffixes: &[],
    },
    Base {
        pattern: "v2.system.token_revoked.{opaque}",
        family: Family::System,
        description: "The token behind the channel was revoked",
        permissions: &[],
        suffixes: &[],
    },
];

fn segments(pattern: &'static str) -> Vec<Seg> {
    pattern
        .split('.')
        .map(|s| match s {
            "{id}" => Seg::Id,
            "{opaque}" => Seg::Opaque,
            lit => Seg::Lit(lit),
        })
        .collect()
}

fn build() -> Vec<Template> {
    let mut out = Vec::new();
    for base in BASES {
        let make = |pattern: String, segs: Vec<Seg>, primary: bool| Template {
            pattern,
            family: base.family,
            description: base.description,
            permissions: base.permissions,
            segs,
            primary,
        };
        // Detail events have no bare form; every other family's first template is bare.
        if base.family != Family::DetailEvents {
            out.push(make(base.pattern.to_owned(), segments(base.pattern), true));
        }
        for (i, &suffix) in base.suffixes.iter().enumerate() {
            let mut segs = segments(base.pattern);
            segs.extend(suffix.split('.').map(Seg::Lit));
            let primary = base.family == Family::DetailEvents && i == 0;
            out.push(make(format!("{}.{}", base.pattern, suffix), segs, primary));
        }
    }
    out
}

/// Every topic template, built once.
pub(crate) static TEMPLATES: LazyLock<Vec<Template>> = LazyLock::new(build);

/// Every topic template the catalogue knows, e.g. for `availabletopics`.
pub fn templates() -> &'static [Template] {
    &TEMPLATES
}
