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
    /// Every other topic the service offers (outbound, telephony, workforce management,
    /// architect, ...): known by name, without a model of its body.
    Other,
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
            Family::Other => "other",
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

/// The service's other topics (from the official SDKs' topic lists), each with what it
/// carries. Their parameters are taken as opaque: not all of them are UUIDs.
const OTHERS: &[(&str, &str)] = &[
    (
        "v2.analytics.conversations.details.jobs.availability",
        "When conversation detail data is available to detail jobs",
    ),
    (
        "v2.analytics.users.details.jobs.availability",
        "When user detail data is available to detail jobs",
    ),
    (
        "v2.analytics.flow.{id}.aggregates",
        "Aggregate metrics of one flow",
    ),
    (
        "v2.analytics.flowoutcome.{id}.aggregates",
        "Aggregate metrics of one flow outcome",
    ),
    (
        "v2.analytics.wrapup.{id}.aggregates",
        "Aggregate metrics of one wrap-up code",
    ),
    (
        "v2.architect.dependencytracking.build",
        "Architect dependency tracking builds",
    ),
    (
        "v2.architect.flows.{id}.generation.{id}",
        "Publishing of one Architect flow",
    ),
    ("v2.architect.prompts.{id}", "One Architect prompt"),
    (
        "v2.architect.prompts.{id}.resources.{id}",
        "One resource of an Architect prompt",
    ),
    (
        "v2.architect.systemprompts.{id}.resources.{id}",
        "One resource of a system prompt",
    ),
    (
        "v2.audits.entitytype.{id}.entityid.{id}",
        "Audit records of one entity",
    ),
    (
        "v2.businessunits.{id}.workforcemanagement.intraday",
        "Intraday data of one business unit",
    ),
    (
        "v2.contentmanagement.documents.{id}",
        "One content management document",
    ),
    (
        "v2.contentmanagement.workspaces.{id}.documents",
        "Documents of one content management workspace",
    ),
    ("v2.flows.{id}", "One Architect flow"),
    ("v2.flows.outcomes.{id}", "One flow outcome"),
    (
        "v2.groups.{id}.greetings",
        "Voicemail greetings of one group",
    ),
    (
        "v2.managementunits.{id}.workforcemanagement.intraday",
        "Intraday data of one management unit",
    ),
    (
        "v2.outbound.attemptlimits.{id}",
        "One outbound attempt limits configuration",
    ),
    (
        "v2.outbound.callabletimesets.{id}",
        "One outbound callable time set",
    ),
    (
        "v2.outbound.campaignrules.{id}",
        "One outbound campaign rule",
    ),
    (
        "v2.outbound.campaigns.{id}",
        "One outbound campaign's configuration",
    ),
    (
        "v2.outbound.campaigns.{id}.progress",
        "Progress of one outbound campaign",
    ),
    (
        "v2.outbound.campaigns.{id}.stats",
        "Statistics of one outbound campaign",
    ),
    (
        "v2.outbound.contactlistfilters.{id}",
        "One outbound contact list filter",
    ),
    ("v2.outbound.contactlists.{id}", "One outbound contact list"),
    (
        "v2.outbound.contactlists.{id}.importstatus",
        "Import status of one contact list",
    ),
    ("v2.outbound.dnclists.{id}", "One do-not-contact list"),
    (
        "v2.outbound.dnclists.{id}.importstatus",
        "Import status of one do-not-contact list",
    ),
    (
        "v2.outbound.messagingcampaigns.{id}",
        "One outbound messaging campaign",
    ),
    (
        "v2.outbound.messagingcampaigns.{id}.progress",
        "Progress of one messaging campaign",
    ),
    ("v2.outbound.responsesets.{id}", "One outbound response set"),
    ("v2.outbound.rulesets.{id}", "One outbound rule set"),
    (
        "v2.outbound.schedules.campaigns.{id}",
        "The schedule of one outbound campaign",
    ),
    (
        "v2.outbound.schedules.sequences.{id}",
        "The schedule of one campaign sequence",
    ),
    (
        "v2.outbound.sequences.{id}",
        "One outbound campaign sequence",
    ),
    ("v2.outbound.settings", "The org's outbound settings"),
    (
        "v2.outbound.wrapupcodemappings.{id}",
        "One outbound wrap-up code mapping",
    ),
    ("v2.quality.evaluations", "Quality evaluations"),
    (
        "v2.speechandtextanalytics.programs.publishjobs.{id}",
        "Publishing of speech and text analytics programs",
    ),
    (
        "v2.speechandtextanalytics.topics.publishjobs.{id}",
        "Publishing of speech and text analytics topics",
    ),
    ("v2.telephony.providers.edges.{id}", "One edge"),
    (
        "v2.telephony.providers.edges.{id}.logicalinterfaces",
        "Logical interfaces of one edge",
    ),
    (
        "v2.telephony.providers.edges.{id}.metrics",
        "Metrics of one edge",
    ),
    (
        "v2.telephony.providers.edges.{id}.softwareupdate",
        "Software updates of one edge",
    ),
    ("v2.telephony.providers.edges.phones.{id}", "One phone"),
    ("v2.telephony.providers.edges.trunks.{id}", "One trunk"),
    (
        "v2.telephony.providers.edges.trunks.{id}.metrics",
        "Metrics of one trunk",
    ),
    (
        "v2.users.{id}.alerting.heartbeat.alerts",
        "Heartbeat alerts of one user",
    ),
    (
        "v2.users.{id}.alerting.heartbeat.rules",
        "Heartbeat alert rules of one user",
    ),
    (
        "v2.users.{id}.alerting.interactionstats.alerts",
        "Interaction statistics alerts of one user",
    ),
    (
        "v2.users.{id}.alerting.interactionstats.rules",
        "Interaction statistics alert rules of one user",
    ),
    (
        "v2.users.{id}.analytics.reporting.exports",
        "Report exports of one user",
    ),
    (
        "v2.users.{id}.badges.chats",
        "Unread chat badges of one user",
    ),
    (
        "v2.users.{id}.callforwarding",
        "Call forwarding of one user",
    ),
    (
        "v2.users.{id}.conversations.{id}.recordings",
        "Recordings of one conversation of one user",
    ),
    (
        "v2.users.{id}.conversations.{id}.recordings.{id}",
        "One recording of a conversation, once transcoded",
    ),
    ("v2.users.{id}.fax.documents", "Fax documents of one user"),
    ("v2.users.{id}.geolocation", "Geolocation of one user"),
    ("v2.users.{id}.greetings", "Voicemail greetings of one user"),
    (
        "v2.users.{id}.outbound.contactlists.{id}.export",
        "A contact list export of one user, ready",
    ),
    (
        "v2.users.{id}.outbound.dnclists.{id}.export",
        "A do-not-contact list export of one user, ready",
    ),
    (
        "v2.users.{id}.outofoffice",
        "Out-of-office state of one user",
    ),
    (
        "v2.users.{id}.recordings",
        "Recording archive and restore of one user",
    ),
    ("v2.users.{id}.tokens", "Access tokens of one user"),
    (
        "v2.users.{id}.userrecordings",
        "Ad-hoc recordings of one user",
    ),
    (
        "v2.users.{id}.voicemail.messages",
        "Voicemail messages of one user",
    ),
    (
        "v2.users.{id}.wem.coaching.appointment",
        "Coaching appointments of one user",
    ),
    (
        "v2.users.{id}.wem.learning.assignment",
        "Learning assignments of one user",
    ),
    (
        "v2.users.{id}.workforcemanagement.adherence",
        "Schedule adherence of one user",
    ),
    (
        "v2.users.{id}.workforcemanagement.historicaladherencequery",
        "Historical adherence queries of one user, done",
    ),
    (
        "v2.users.{id}.workforcemanagement.notifications",
        "Workforce management notifications of one user",
    ),
    (
        "v2.users.{id}.workforcemanagement.schedules",
        "Schedules of one user",
    ),
    (
        "v2.users.{id}.workforcemanagement.timeoffrequests",
        "Time-off requests of one user",
    ),
    (
        "v2.webdeployments.configurations.{id}",
        "One web messaging configuration",
    ),
    (
        "v2.webdeployments.deployments.{id}",
        "One web messaging deployment",
    ),
    (
        "v2.wem.learning.assignments.modules.{id}",
        "Learning assignment rule runs of one module",
    ),
    (
        "v2.workforcemanagement.agents",
        "Agents moved between management units",
    ),
    (
        "v2.workforcemanagement.businessunits.{id}.schedules",
        "Schedules of one business unit",
    ),
    (
        "v2.workforcemanagement.businessunits.{id}.scheduling.runs",
        "Scheduling runs of one business unit",
    ),
    (
        "v2.workforcemanagement.businessunits.{id}.shorttermforecasts",
        "Short-term forecasts of one business unit",
    ),
    (
        "v2.workforcemanagement.businessunits.{id}.shorttermforecasts.copy",
        "Short-term forecast copies of one business unit",
    ),
    (
        "v2.workforcemanagement.businessunits.{id}.shorttermforecasts.generate",
        "Short-term forecast generation of one business unit",
    ),
    (
        "v2.workforcemanagement.businessunits.{id}.shorttermforecasts.import",
        "Short-term forecast imports of one business unit",
    ),
    (
        "v2.workforcemanagement.historicaldata.deletejob",
        "Deletion of uploaded historical data",
    ),
    (
        "v2.workforcemanagement.historicaldata.status",
        "Uploads of historical data",
    ),
    (
        "v2.workforcemanagement.managementunits.{id}",
        "One management unit, moved",
    ),
    (
        "v2.workforcemanagement.managementunits.{id}.adherence",
        "Schedule adherence in one management unit",
    ),
    (
        "v2.workforcemanagement.managementunits.{id}.agents.sync",
        "Agent details of one management unit, updated",
    ),
    (
        "v2.workforcemanagement.managementunits.{id}.schedules",
        "Schedules of one management unit",
    ),
    (
        "v2.workforcemanagement.managementunits.{id}.shifttrades.state.bulk",
        "Bulk shift trade state changes in one management unit",
    ),
    (
        "v2.workforcemanagement.teams.{id}.adherence",
        "Schedule adherence of one team",
    ),
    (
        "v2.workforcemanagement.users.{id}.schedules.query",
        "Schedule queries of one user, done",
    ),
    (
        "v2.workforcemanagement.users.{id}.schedules.search",
        "Schedule searches of one user, done",
    ),
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
    for &(pattern, description) in OTHERS {
        let segs = pattern
            .split('.')
            .map(|s| match s {
                "{id}" => Seg::Opaque,
                lit => Seg::Lit(lit),
            })
            .collect();
        out.push(Template {
            pattern: pattern.to_owned(),
            family: Family::Other,
            description,
            permissions: &[],
            segs,
            primary: true,
        });
    }
    out
}

/// Every topic template, built once.
pub(crate) static TEMPLATES: LazyLock<Vec<Template>> = LazyLock::new(build);

/// Every topic template the catalogue knows, e.g. for `availabletopics`.
pub fn templates() -> &'static [Template] {
    &TEMPLATES
}
