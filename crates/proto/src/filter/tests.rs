use super::*;

const QUEUE: &str = "v2.routing.queues.0b2c1f5e-3a4d-4e6f-8a9b-000000000001.conversations";
const USER: &str = "v2.users.0b2c1f5e-3a4d-4e6f-8a9b-000000000002.presence";

fn filter(clauses: &[&str]) -> Filter {
    Filter::parse(clauses).unwrap().expect("a filter")
}

#[test]
fn no_clauses_is_no_filter() {
    assert_eq!(Filter::parse::<&str>(&[]).unwrap(), None);
}

#[test]
fn a_star_stands_for_exactly_one_part() {
    let f = filter(&["topic=v2.routing.queues.*.conversations"]);
    assert!(f.event(QUEUE, b"{}"));
    assert!(!f.event(USER, b"{}"));
    assert!(!f.event("v2.routing.queues.conversations", b"{}"));
    assert!(!f.event(&format!("{QUEUE}.extra"), b"{}"));
}

#[test]
fn alternatives_in_a_clause_and_clauses_together() {
    let f = filter(&["topic=v2.routing.queues.*.conversations,v2.users.*.presence"]);
    assert!(f.event(QUEUE, b"{}") && f.event(USER, b"{}"));
    let f = filter(&["topic=v2.*.*.*", "topic=*.users.*.presence"]);
    assert!(f.event(USER, b"{}"));
    assert!(!f.event(QUEUE, b"{}"), "the second clause fails");
}

#[test]
fn body_conditions_walk_the_pointer() {
    let body = br#"{"participants":[{"purpose":"customer"},{"purpose":"agent","wrapup":null}],"a/b":{"~":1}}"#;
    let keep = |clauses: &[&str]| filter(clauses).event(QUEUE, body);
    assert!(keep(&["has=/participants"]));
    assert!(!keep(&["has=/nothing"]));
    assert!(keep(&["missing=/nothing"]));
    assert!(
        keep(&["missing=/participants/1/wrapup"]),
        "null counts as missing"
    );
    assert!(keep(&["/participants/1/purpose=agent"]));
    assert!(keep(&["/participants/1/purpose=\"agent\""]));
    assert!(!keep(&["/participants/0/purpose=agent"]));
    assert!(keep(&["/participants/0/purpose!=agent"]));
    assert!(keep(&["/participants/5/purpose!=agent"]), "absent differs");
    assert!(keep(&["/a~1b/~0=1"]), "escaped tokens");
    assert!(!keep(&["/a~1b/~0=\"1\""]), "JSON values compare by type");
    assert!(!keep(&["has=/participants/x"]), "not an array index");
    assert!(!keep(&["has=/participants/01"]), "no leading zero");
    assert!(!keep(&["has=/participants/+1"]), "no sign");
    assert!(keep(&["/a~1b/~0=1.0"]), "numbers compare by value");
}

#[test]
fn bodies_that_are_not_json_never_pass_a_body_condition() {
    let f = filter(&["missing=/x"]);
    assert!(f.event(QUEUE, b"{}"));
    assert!(f.event(QUEUE, b"[1,2]"));
    assert!(!filter(&["has=/x"]).event(QUEUE, b"{\"x\":"));
    assert!(!filter(&["missing=/x"]).event(QUEUE, b"{\"y\":"));
    assert!(!filter(&["/x!=1"]).event(QUEUE, b"not json"));
    assert!(!filter(&["has=/x"]).event(QUEUE, &[0xff, 0xfe]));
}

#[test]
fn kinds() {
    let f = filter(&["kind=gap,rejected"]);
    assert!(!f.event(QUEUE, b"{}"));
    assert!(f.gap(&[QUEUE]));
    assert!(f.rejected(QUEUE));
    let none = filter(&["kind=event", "kind=gap"]);
    assert!(!none.event(QUEUE, b"{}") && !none.gap(&[QUEUE]));
}

#[test]
fn a_gap_passes_whenever_it_could_hide_a_kept_event() {
    let f = filter(&[
        "topic=v2.routing.queues.*.conversations",
        "has=/participants",
    ]);
    assert!(f.gap(&[USER, QUEUE]), "one of its topics is kept");
    assert!(!f.gap(&[USER]), "none of its topics is kept");
    assert!(f.gap::<&str>(&[]), "a gap of every topic");
    assert!(filter(&["has=/participants"]).gap(&[USER]));
}

#[test]
fn bad_clauses_say_what_is_wrong() {
    let err = |c: &str| Filter::parse(&[c]).unwrap_err();
    assert!(matches!(err("kind=events"), FilterError::Kind { kind, .. } if kind == "events"));
    assert!(matches!(
        err("has=participants"),
        FilterError::Pointer { .. }
    ));
    assert!(matches!(err("topic=v2..x"), FilterError::Pattern { .. }));
    assert!(matches!(err("colour=red"), FilterError::Form(_)));
    assert!(matches!(err("/participants"), FilterError::Form(_)));
    let shown = err("kind=events").to_string();
    assert!(
        shown.contains("event, gap, rejected, backfill and backfill_done"),
        "{shown}"
    );
}

proptest::proptest! {
    #[test]
    fn no_clause_or_body_panics(clause in "\\PC{0,40}", body in "\\PC{0,80}") {
        if let Ok(Some(f)) = Filter::parse(&[clause]) {
            let _ = f.event(QUEUE, body.as_bytes());
            let _ = f.gap(&[QUEUE]);
            let _ = f.rejected(QUEUE);
        }
    }
}

#[test]
fn back_fill_records_are_kept_by_kind_and_topic() {
    let f = filter(&["kind=event,backfill"]);
    assert!(f.backfill(QUEUE) && !f.backfill_done());
    let f = filter(&["kind=backfill_done"]);
    assert!(!f.backfill(QUEUE) && f.backfill_done() && !f.event(QUEUE, b"{}"));
    let f = filter(&["topic=v2.users.*.presence"]);
    assert!(f.backfill(USER) && !f.backfill(QUEUE) && f.backfill_done());
    let f = filter(&["kind=event", "kind=gap"]);
    assert!(
        !f.backfill(QUEUE) && !f.backfill_done(),
        "nothing kept is nothing"
    );
    assert!(Filter::parse(&["kind=backfills"]).is_err());
}
