use super::*;
use proptest::prelude::*;

const USER: &str = "6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11";
const QUEUE: &str = "0e185c02-aca1-4a72-82ea-2e78684e2c89";

#[test]
fn the_required_families_are_known() {
    let cases = [
        (
            format!("v2.users.{USER}.conversations"),
            Family::UserConversations,
        ),
        (
            format!("v2.users.{USER}.conversations.calls"),
            Family::UserConversations,
        ),
        (
            format!("v2.routing.queues.{QUEUE}.conversations"),
            Family::QueueConversations,
        ),
        (
            format!("v2.routing.queues.{QUEUE}.conversations.emails"),
            Family::QueueConversations,
        ),
        (format!("v2.users.{USER}.presence"), Family::Presence),
        (
            format!("v2.users.{USER}.routingStatus"),
            Family::RoutingStatus,
        ),
        (format!("v2.users.{USER}.activity"), Family::Activity),
        (
            format!("v2.detail.events.conversation.{USER}.user.start"),
            Family::DetailEvents,
        ),
        (
            format!("v2.detail.events.conversation.{USER}.acw"),
            Family::DetailEvents,
        ),
        (
            format!("v2.analytics.queues.{QUEUE}.observations"),
            Family::QueueObservations,
        ),
        ("v2.system.socket_closing".to_owned(), Family::System),
        ("channel.metadata".to_owned(), Family::ChannelMetadata),
    ];
    for (name, family) in cases {
        let m = classify(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.family(), family, "{name}");
    }
}

#[test]
fn entity_id_is_the_first_id_in_the_name() {
    let name = format!("v2.routing.queues.{QUEUE}.conversations");
    assert_eq!(classify(&name).unwrap().entity_id, Some(QUEUE));
    assert_eq!(classify("channel.metadata").unwrap().entity_id, None);
}

#[test]
fn bare_conversation_topic_suggests_where_conversation_events_are() {
    let err = classify(&format!("v2.conversations.{USER}")).unwrap_err();
    let TopicError::Unknown { suggestions, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        suggestions
            .iter()
            .any(|s| s == "v2.users.{userId}.conversations")
    );
    assert!(
        suggestions
            .iter()
            .any(|s| s == "v2.routing.queues.{queueId}.conversations")
    );
    assert!(err.to_string().contains("did you mean"));
}

#[test]
fn near_misses_get_the_nearest_real_topic() {
    let err = classify(&format!("v2.users.{USER}.presense")).unwrap_err();
    let TopicError::Unknown { suggestions, .. } = err else {
        panic!()
    };
    assert_eq!(
        suggestions.first().map(String::as_str),
        Some(&*format!("v2.users.{USER}.presence"))
    );

    let err = classify("genesyscloud:conversation:status").unwrap_err();
    assert!(matches!(err, TopicError::InvalidCharacter { ch: ':', .. }));
}

#[test]
fn wrong_case_names_the_right_spelling() {
    let err = classify(&format!("v2.users.{USER}.routingstatus")).unwrap_err();
    assert_eq!(
        err,
        TopicError::WrongCase {
            topic: format!("v2.users.{USER}.routingstatus"),
            expected: format!("v2.users.{USER}.routingStatus"),
        }
    );
}

#[test]
fn names_instead_of_ids_are_explained() {
    let err = classify("v2.routing.queues.Support.conversations").unwrap_err();
    assert_eq!(
        err,
        TopicError::BadId {
            topic: "v2.routing.queues.Support.conversations".into(),
            segment: "Support".into()
        }
    );
}

#[test]
fn combined_topics_expand_to_each_part() {
    let combined = format!("v2.users.{USER}?presence&routingStatus&station");
    assert_eq!(
        expand(&combined).unwrap(),
        vec![
            format!("v2.users.{USER}.presence"),
            format!("v2.users.{USER}.routingStatus"),
            format!("v2.users.{USER}.station"),
        ]
    );
    assert_eq!(
        expand(&format!("v2.users.{USER}.presence")).unwrap().len(),
        1
    );
}

#[test]
fn combined_topics_are_checked() {
    assert!(matches!(
        expand(&format!("v2.users.{USER}?presence&&station")),
        Err(TopicError::BadCombined(_))
    ));
    assert!(matches!(
        expand(&format!("v2.users.{USER}?presence&bogus")),
        Err(TopicError::Unknown { .. })
    ));
    let long = format!("v2.users.{USER}?{}", vec!["presence"; 25].join("&"));
    assert_eq!(
        expand(&long),
        Err(TopicError::CombinedTooLong { len: long.len() })
    );
}

#[test]
fn uuid_shape_is_strict() {
    assert!(is_uuid(USER));
    assert!(is_uuid(&USER.to_uppercase()));
    assert!(!is_uuid(&USER[1..]));
    assert!(!is_uuid(&USER.replace('-', "x")));
}

proptest! {
    #[test]
    fn classify_and_expand_never_panic(name in "\\PC{0,120}") {
        let _ = classify(&name);
        let _ = expand(&name);
    }

    #[test]
    fn every_template_accepts_a_filled_in_name(idx in 0usize..1000, id in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}") {
        let template = &templates()[idx % templates().len()];
        let name = template.pattern.replace("{id}", &id).replace("{opaque}", "streaming-0-abc");
        let m = classify(&name).unwrap();
        prop_assert_eq!(m.family(), template.family);
    }
}

#[test]
fn the_services_other_topics_are_known_by_name() {
    assert!(templates().len() > 140, "{} templates", templates().len());
    let id = "6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11";
    for name in [
        format!("v2.outbound.campaigns.{id}.progress"),
        format!("v2.telephony.providers.edges.trunks.{id}.metrics"),
        format!("v2.workforcemanagement.managementunits.{id}.adherence"),
        "v2.audits.entitytype.User.entityid.abc".to_owned(),
        "v2.outbound.settings".to_owned(),
    ] {
        let m = classify(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.family(), Family::Other, "{name}");
    }
    assert_eq!(
        classify(&format!("v2.users.{id}.presence"))
            .unwrap()
            .family(),
        Family::Presence,
        "the modelled families come first"
    );
    assert!(classify("v2.outbound.campaignz.x").is_err());
}

#[test]
fn the_entity_is_the_uuid_segment_of_a_topic() {
    let id = "0b2c1f5e-3a4d-4e6f-8a9b-1c2d3e4f5a6b";
    assert_eq!(entity(&format!("v2.routing.queues.{id}.conversations")), id);
    assert_eq!(entity(&format!("v2.users.{id}?presence&routingStatus")), id);
    assert_eq!(entity("channel.metadata"), "channel.metadata");
}
