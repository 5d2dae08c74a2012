//! The channel machine driven with explicit instants: no sockets, no REST, no clock.

use super::*;
use crate::rest::api::Rejected;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn timings() -> Timings {
    Timings {
        ping_interval: MS(100),
        pong_timeout: MS(300),
        watchdog: MS(600),
        rollover_margin: Duration::from_secs(2),
        closing_grace: MS(200),
        gap_lookback: MS(500),
        overlap: Duration::from_secs(1),
        backoff_base: MS(50),
        backoff_max: MS(400),
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
    }
}

/// A machine and a clock that only moves when told.
struct Rig {
    m: Machine,
    now: Instant,
    wall: SystemTime,
    stats: Arc<Stats>,
}

/// What one step produced, sorted by kind.
#[derive(Debug, Default)]
struct Step {
    connects: Vec<(u64, Arc<str>)>,
    retires: Vec<u64>,
    rest: Vec<(u64, RestCall)>,
    coverage: Vec<Coverage>,
    states: Vec<StateKind>,
    budget: Vec<BudgetNote>,
    rejected: Vec<String>,
    fatal: Option<ClientError>,
}

impl Step {
    fn creates(&self) -> Vec<u64> {
        self.rest
            .iter()
            .filter(|(_, c)| matches!(c, RestCall::Create { .. }))
            .map(|(op, _)| *op)
            .collect()
    }

    fn subscribes(&self) -> Vec<(u64, Arc<str>)> {
        self.rest
            .iter()
            .filter_map(|(op, c)| match c {
                RestCall::Subscribe { channel, .. } => Some((*op, channel.clone())),
                _ => None,
            })
            .collect()
    }

    fn checks(&self) -> Vec<u64> {
        self.rest
            .iter()
            .filter(|(_, c)| matches!(c, RestCall::Check { .. }))
            .map(|(op, _)| *op)
            .collect()
    }

    /// (session, last frame) of every ended coverage.
    fn ended(&self) -> Vec<(u64, Option<SystemTime>)> {
        self.coverage
            .iter()
            .filter_map(|c| match c {
                Coverage::Ended { session, until, .. } => Some((*session, *until)),
                _ => None,
            })
            .collect()
    }

    /// Sessions whose coverage ended at their last frame, without the look-back.
    fn ended_exact(&self) -> Vec<u64> {
        self.coverage
            .iter()
            .filter_map(|c| match c {
                Coverage::Ended {
                    session,
                    lookback: false,
                    ..
                } => Some(*session),
                _ => None,
            })
            .collect()
    }

    /// (session, since) of every started coverage.
    fn live(&self) -> Vec<(u64, SystemTime)> {
        self.coverage
            .iter()
            .filter_map(|c| match c {
                Coverage::Live { session, since } => Some((*session, *since)),
                _ => None,
            })
            .collect()
    }
}

fn channel(id: &str, life: Duration) -> NewChannel {
    NewChannel {
        id: id.into(),
        uri: format!("ws://sim/channels/{id}").into(),
        channel_left: Some(life),
        token_left: life,
    }
}

fn subscribed() -> RestDone {
    RestDone::Subscribed(Ok(Subscribed {
        permitted: vec!["t".into()],
        rejected: vec![],
    }))
}

fn unavailable() -> ApiError {
    ApiError::Unavailable {
        what: "test",
        detail: "503".into(),
    }
}

impl Rig {
    fn new() -> Rig {
        let stats = Arc::new(Stats::default());
        let cfg = SlotConfig {
            timings: timings(),
            shard: 0,
            slot: 0,
            start_delay: Duration::ZERO,
            stagger: 0.0,
            client_id: "client".into(),
        };
        let now = Instant::now();
        let topics: Arc<[String]> = vec!["v2.users.x.presence".to_owned()].into();
        let m = Machine::new(cfg, stats.clone(), Arc::new(AtomicU64::new(1)), topics, now);
        Rig {
            m,
            now,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            stats,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.wall += d;
    }

    fn step(&mut self) -> Step {
        let mut step = Step::default();
        for a in self.m.take_actions() {
            match a {
                Action::Connect {
                    session, channel, ..
                } => step.connects.push((session, channel)),
                Action::Retire { session, .. } => step.retires.push(session),
                Action::Rest { op, call } => step.rest.push((op, call)),
                Action::Coverage(c) => step.coverage.push(c),
                Action::State(s) => step.states.push(s.kind),
                Action::Budget(b) => step.budget.push(b),
                Action::Fatal(e) => step.fatal = Some(e),
                Action::Rejected(r) => step.rejected.extend(r.into_iter().map(|r| r.topic)),
            }
        }
        step
    }

    fn tick(&mut self) -> Step {
        self.m.on_tick(self.now);
        self.step()
    }

    fn rest(&mut self, op: u64, done: RestDone) -> Step {
        self.m.on_rest(op, done, self.now);
        self.step()
    }

    fn report(&mut self, r: Report) -> Step {
        self.m.on_report(r, self.now);
        self.step()
    }

    fn connected(&mut self, session: u64) -> Step {
        self.report(Report::Connected {
            session,
            at: self.now,
        })
    }

    fn first_frame(&mut self, session: u64) -> Step {
        self.report(Report::Live {
            session,
            at: self.wall,
        })
    }

    fn ended(&mut self, session: u64, last_frame: SystemTime, why: Ended) -> Step {
        self.report(Report::Ended {
            session,
            last_frame: Some(last_frame),
            why,
            at: self.now,
        })
    }

    /// `socket_closing` on `s` while REST does not answer the rollover it starts: half the
    /// grace later, the fallback second socket on the same channel; returns its session.
    fn closing_falls_back(&mut self, s: u64) -> u64 {
        let step = self.report(Report::SocketClosing { session: s });
        assert!(step.connects.is_empty(), "a fresh channel first");
        self.advance(timings().closing_grace / 2);
        let step = self.tick();
        assert_eq!(step.connects.len(), 1, "then a socket on the same channel");
        step.connects[0].0
    }

    /// Lets the first channel, `id`, be created; returns the op of its subscribe.
    fn created(&mut self, id: &str) -> u64 {
        let create = self.tick().creates()[0];
        let step = self.rest(
            create,
            RestDone::Created(Ok(channel(id, Duration::from_secs(60)))),
        );
        step.subscribes()[0].0
    }

    /// Creates, subscribes and connects channel `id` living `life`; returns the session.
    fn open(&mut self, id: &str, life: Duration) -> u64 {
        let step = self.tick();
        let create = step.creates()[0];
        let step = self.rest(create, RestDone::Created(Ok(channel(id, life))));
        let (sub, chan) = step.subscribes()[0].clone();
        assert_eq!(&*chan, id);
        let step = self.rest(sub, subscribed());
        let session = step.connects[0].0;
        self.connected(session);
        let step = self.first_frame(session);
        assert_eq!(step.live(), [(session, self.wall)]);
        session
    }
}

fn dropped() -> Ended {
    Ended::Dropped("reset".into())
}

fn closed(code: u16, reason: &str) -> Ended {
    Ended::Closed {
        code,
        reason: reason.into(),
    }
}

#[test]
fn a_dropped_socket_redials_its_channel_at_once_without_waiting_for_rest() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    r.advance(MS(300));
    let last = r.wall;
    r.advance(MS(50));
    let step = r.ended(s1, last, dropped());
    assert_eq!(
        step.ended(),
        [(s1, Some(last))],
        "a dead socket gets the look-back"
    );
    let step = r.tick();
    assert_eq!(step.connects.len(), 1, "the same connectUri, at once");
    assert_eq!(&*step.connects[0].1, "c1");
    assert!(step.checks().is_empty() && step.creates().is_empty());
    assert_eq!(
        step.subscribes().len(),
        1,
        "subscriptions restored beside the socket"
    );
    let s2 = step.connects[0].0;
    r.advance(MS(20));
    r.connected(s2);
    let step = r.first_frame(s2);
    assert_eq!(
        step.live(),
        [(s2, r.wall + timings().gap_lookback)],
        "it takes the channel over from a socket the service may still count as attached"
    );
}

#[test]
fn a_server_close_of_the_socket_in_use_gets_the_lookback() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    r.advance(MS(300));
    let step = r.ended(s1, r.wall, closed(1001, "idle timeout"));
    assert_eq!(step.ended(), [(s1, Some(r.wall))]);
}

#[test]
fn an_orderly_close_after_the_rollover_moved_on_still_gets_the_lookback() {
    let mut r = Rig::new();
    let life = Duration::from_secs(20);
    let s1 = r.open("c1", life);
    r.advance(r.m.next_wake().unwrap() - r.now);
    let create = r.tick().creates()[0];
    let sub = r
        .rest(create, RestDone::Created(Ok(channel("c2", life))))
        .subscribes()[0]
        .0;
    let s2 = r.rest(sub, subscribed()).connects[0].0;
    r.connected(s2);
    r.first_frame(s2);
    r.advance(MS(100));
    let step = r.ended(s1, r.wall, closed(1000, "channel expired"));
    assert_eq!(
        step.ended(),
        [(s1, Some(r.wall))],
        "late copies of what only it had may still have been on their way"
    );
    assert!(
        step.states.is_empty(),
        "nothing went down: {:?}",
        step.states
    );
}

#[test]
fn a_refused_upgrade_checks_the_channel_and_a_gone_one_is_replaced() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    r.ended(s1, r.wall, dropped());
    let s2 = r.tick().connects[0].0;
    let refused = Ended::ConnectFailed {
        detail: "401".into(),
        status: Some(401),
    };
    r.report(Report::Ended {
        session: s2,
        last_frame: None,
        why: refused,
        at: r.now,
    });
    r.advance(MS(500));
    let step = r.tick();
    let check = step.checks()[0];
    assert!(
        step.connects.is_empty(),
        "not dialled again before the check"
    );
    let step = r.rest(check, RestDone::Checked(Ok(false)));
    assert_eq!(
        step.budget,
        [BudgetNote::Gone {
            channel: "c1".into()
        }]
    );
    assert_eq!(step.creates().len(), 1, "a new channel");
}

#[test]
fn socket_closing_moves_to_a_fresh_channel_and_the_warned_socket_overlaps_it() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    let step = r.report(Report::SocketClosing { session: s1 });
    assert!(
        step.connects.is_empty(),
        "no second socket on the warned channel"
    );
    let create = step.creates()[0];
    let sub = r
        .rest(
            create,
            RestDone::Created(Ok(channel("c2", Duration::from_secs(3600)))),
        )
        .subscribes()[0]
        .0;
    let step = r.rest(sub, subscribed());
    assert_eq!(&*step.connects[0].1, "c2");
    let s2 = step.connects[0].0;
    r.connected(s2);
    let step = r.first_frame(s2);
    assert_eq!(step.live(), [(s2, r.wall)]);
    assert!(step.retires.is_empty(), "the warned socket keeps receiving");
    // The server closes the warned socket at the end of its grace: nothing was lost.
    r.advance(MS(100));
    let step = r.ended(s1, r.wall, closed(1001, "socket closed for maintenance"));
    assert_eq!(step.ended(), [(s1, Some(r.wall))]);
    r.advance(timings().closing_grace);
    assert!(
        r.tick().connects.is_empty(),
        "no fallback once the fresh one receives"
    );
}

#[test]
fn socket_closing_falls_back_to_its_own_channel_when_rest_is_down_and_trusts_no_hand_over() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    let s2 = r.closing_falls_back(s1);
    r.advance(MS(20));
    r.connected(s2);
    let handover = r.wall;
    let step = r.first_frame(s2);
    assert_eq!(
        step.retires,
        [s1],
        "the old socket is let go once the new one receives"
    );
    assert_eq!(
        step.live(),
        [(s2, handover + timings().gap_lookback)],
        "what the service published just after the hand-over may be lost"
    );
    r.advance(MS(5));
    let step = r.ended(
        s1,
        handover - MS(3),
        closed(1000, "another socket connected"),
    );
    assert_eq!(
        step.ended(),
        [(s1, Some(handover - MS(3)))],
        "what was in flight to the old socket may be lost"
    );
}

#[test]
fn a_kick_before_the_replacements_first_frame_is_settled_when_it_arrives() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    let s2 = r.closing_falls_back(s1);
    r.advance(MS(30));
    let kicked_at = r.wall;
    let step = r.ended(s1, kicked_at, closed(1000, "another socket connected"));
    assert!(
        step.ended().is_empty(),
        "deferred until the replacement says more"
    );
    r.advance(MS(10));
    r.connected(s2);
    r.advance(MS(10));
    let step = r.first_frame(s2);
    assert_eq!(step.ended(), [(s1, Some(kicked_at))]);
    assert_eq!(
        step.live(),
        [(s2, r.wall + timings().gap_lookback)],
        "the new socket covers from a look-back after its first frame"
    );
}

#[test]
fn a_close_long_before_the_replacement_attached_is_a_real_hole() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    let s2 = r.closing_falls_back(s1);
    let closed_at = r.wall;
    r.ended(s1, closed_at, closed(1000, "bye"));
    r.advance(KICK_WINDOW + MS(50));
    let step = r.connected(s2);
    assert_eq!(
        step.ended(),
        [(s1, Some(closed_at))],
        "released as the server's close of the socket in use"
    );
}

#[test]
fn a_rollover_overlaps_the_old_socket_and_counts_the_old_channel_until_it_expires() {
    let mut r = Rig::new();
    let life = Duration::from_secs(20);
    let s1 = r.open("c1", life);
    let expires = r.now + life;
    let due = r.m.next_wake().expect("a rollover is due");
    assert_eq!(due, r.now + life - timings().rollover_margin);
    r.advance(due - r.now);
    let step = r.tick();
    let create = step.creates()[0];
    let step = r.rest(create, RestDone::Created(Ok(channel("c2", life))));
    let sub = step.subscribes()[0].0;
    let step = r.rest(sub, subscribed());
    let s2 = step.connects[0].0;
    assert_eq!(r.m.role(s2), Some(Role::Rollover));
    r.connected(s2);
    let step = r.first_frame(s2);
    assert!(
        step.budget.is_empty(),
        "a channel with a socket still on it is not yet evictable"
    );
    assert!(step.retires.is_empty(), "the old socket keeps receiving");
    assert_eq!(
        r.m.role(s1),
        Some(Role::Overlapping(r.now + timings().overlap))
    );
    r.advance(timings().overlap);
    let step = r.tick();
    assert_eq!(step.retires, [s1]);
    let step = r.ended(s1, r.wall, Ended::Retired { clean: true });
    assert_eq!(step.ended(), [(s1, Some(r.wall))], "at its last frame");
    assert_eq!(
        step.ended_exact(),
        [s1],
        "closed in order after the full overlap: to its last frame exactly"
    );
    assert_eq!(
        step.budget,
        [BudgetNote::Retired {
            channel: "c1".into(),
            until: expires
        }],
        "unconnected now, it counts until it expires"
    );
}

#[test]
fn a_rollover_blocked_by_a_rest_outage_is_retried_and_the_socket_is_untouched() {
    let mut r = Rig::new();
    let life = Duration::from_secs(20);
    let s1 = r.open("c1", life);
    r.advance(r.m.next_wake().unwrap() - r.now);
    let create = r.tick().creates()[0];
    let failed = CreateFailed::Rest(ClientError::Api(unavailable()));
    let step = r.rest(create, RestDone::Created(Err(failed)));
    assert!(step.retires.is_empty() && step.ended().is_empty());
    assert_eq!(r.m.role(s1), Some(Role::Current));
    r.advance(r.m.next_wake().unwrap() - r.now);
    assert_eq!(r.tick().creates().len(), 1, "tried again");
}

#[test]
fn the_channel_gone_during_a_rollover_takes_the_new_channel() {
    let mut r = Rig::new();
    let life = Duration::from_secs(20);
    let s1 = r.open("c1", life);
    r.advance(r.m.next_wake().unwrap() - r.now);
    let create = r.tick().creates()[0];
    // Before the new channel exists, the old one is evicted.
    let step = r.report(Report::ChannelGone {
        session: s1,
        why: "no_longer_subscribed".into(),
        cause: Cause::Evicted,
        at: r.wall,
    });
    assert_eq!(
        step.ended(),
        [(s1, Some(r.wall))],
        "coverage ends at the notice"
    );
    assert!(
        step.creates().is_empty(),
        "the rollover's channel is already coming"
    );
    let step = r.rest(create, RestDone::Created(Ok(channel("c2", life))));
    let sub = step.subscribes()[0].0;
    let step = r.rest(sub, subscribed());
    let (s2, chan) = step.connects[0].clone();
    assert_eq!(&*chan, "c2");
    assert_eq!(r.m.role(s2), Some(Role::Current), "nothing left to overlap");
}

#[test]
fn a_full_budget_makes_the_slot_wait_not_create() {
    let mut r = Rig::new();
    let create = r.tick().creates()[0];
    let retry_at = r.now + MS(500);
    let step = r.rest(
        create,
        RestDone::Created(Err(CreateFailed::Budget { retry_at })),
    );
    assert!(step.rest.is_empty());
    assert_eq!(r.m.next_wake(), Some(retry_at));
    r.advance(MS(500));
    assert_eq!(r.tick().creates().len(), 1);
}

#[test]
fn a_subscribe_that_fails_reuses_its_channel_instead_of_creating_another() {
    let mut r = Rig::new();
    let sub = r.created("c1");
    r.rest(
        sub,
        RestDone::Subscribed(Err(ClientError::Api(unavailable()))),
    );
    r.advance(r.m.next_wake().unwrap() - r.now);
    let step = r.tick();
    assert!(step.creates().is_empty());
    assert_eq!(&*step.subscribes()[0].1, "c1");
}

#[test]
fn rejected_combined_topics_are_sent_as_their_parts() {
    let mut r = Rig::new();
    r.m.set_topics(
        vec!["v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11?presence&routingStatus".to_owned()]
            .into(),
    );
    let sub = r.created("c1");
    let step = r.rest(
        sub,
        RestDone::Subscribed(Ok(Subscribed {
            permitted: vec![],
            rejected: vec![Rejected {
                topic: "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11?presence&routingStatus"
                    .into(),
                missing_permissions: vec!["routing:status:view".into()],
                reason: None,
            }],
        })),
    );
    let (_, call) = &step.rest[0];
    assert_eq!(
        *call,
        RestCall::Subscribe {
            channel: "c1".into(),
            topics: vec![
                "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.presence".into(),
                "v2.users.6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11.routingStatus".into(),
            ],
        }
    );
}

#[test]
fn nothing_subscribable_is_fatal_and_names_the_client() {
    let mut r = Rig::new();
    let sub = r.created("c1");
    let step = r.rest(
        sub,
        RestDone::Subscribed(Ok(Subscribed {
            permitted: vec![],
            rejected: vec![Rejected {
                topic: "v2.users.x.presence".into(),
                missing_permissions: vec!["presence:view".into()],
                reason: None,
            }],
        })),
    );
    match step.fatal {
        Some(ClientError::Permission(m)) => assert!(m.contains("\"client\""), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dead_replacement_before_the_kick_leaves_the_current_socket_alone() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    let s2 = r.closing_falls_back(s1);
    let step = r.report(Report::Ended {
        session: s2,
        last_frame: None,
        why: Ended::ConnectFailed {
            detail: "refused".into(),
            status: None,
        },
        at: r.now,
    });
    assert!(step.ended().is_empty() && step.connects.is_empty());
    assert_eq!(r.m.role(s1), Some(Role::Current));
    assert!(r.m.is_covering());
}

#[test]
fn shutdown_retires_every_socket_and_reports_no_coverage_change() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    r.m.shutdown();
    let step = r.step();
    assert_eq!(step.retires, [s1]);
    let step = r.ended(s1, r.wall, Ended::Retired { clean: true });
    assert!(step.coverage.is_empty(), "stopping is not a loss");
    assert!(r.m.is_stopped());
    assert_eq!(Stats::get(&r.stats.reconnects), 0);
}

#[test]
fn a_socket_that_never_received_is_retried_with_backoff() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    r.ended(s1, r.wall, dropped());
    let s2 = r.tick().connects[0].0;
    r.report(Report::Ended {
        session: s2,
        last_frame: None,
        why: Ended::ConnectFailed {
            detail: "timed out".into(),
            status: None,
        },
        at: r.now,
    });
    assert!(r.tick().connects.is_empty(), "not in a hot loop");
    let wake = r.m.next_wake().unwrap();
    assert!(wake > r.now && wake <= r.now + timings().backoff_max);
}

#[test]
fn a_rollover_that_fails_after_the_old_channel_expired_still_brings_the_new_one_into_use() {
    let mut r = Rig::new();
    let life = Duration::from_secs(20);
    let s1 = r.open("c1", life);
    r.advance(r.m.next_wake().unwrap() - r.now);
    let create = r.tick().creates()[0];
    // REST is slow; meanwhile the old channel expires and the server closes its socket.
    r.advance(Duration::from_secs(3));
    let step = r.ended(s1, r.wall, closed(1000, "channel expired"));
    assert!(
        step.creates().is_empty(),
        "the rollover's channel is on its way"
    );
    assert!(r.tick().creates().is_empty(), "still on its way");
    let sub = r
        .rest(create, RestDone::Created(Ok(channel("c2", life))))
        .subscribes()[0]
        .0;
    r.rest(
        sub,
        RestDone::Subscribed(Err(ClientError::Api(unavailable()))),
    );
    let wake = r.m.next_wake().expect("something to try again");
    r.advance(wake - r.now);
    let step = r.tick();
    let (sub, chan) = step.subscribes()[0].clone();
    assert_eq!(&*chan, "c2");
    let step = r.rest(sub, subscribed());
    assert_eq!(&*step.connects[0].1, "c2");
    assert_eq!(r.m.role(step.connects[0].0), Some(Role::Current));
}

#[test]
fn closes_after_socket_closing_during_a_rollover_are_each_reported() {
    let mut r = Rig::new();
    let life = Duration::from_secs(20);
    let a = r.open("c1", life);
    // A rollover's socket is connecting when c1 announces maintenance.
    r.advance(r.m.next_wake().unwrap() - r.now);
    let create = r.tick().creates()[0];
    let sub = r
        .rest(create, RestDone::Created(Ok(channel("c2", life))))
        .subscribes()[0]
        .0;
    let n = r.rest(sub, subscribed()).connects[0].0;
    let step = r.report(Report::SocketClosing { session: a });
    assert!(
        step.creates().is_empty(),
        "the rollover under way answers it"
    );
    let a_closed = r.wall;
    let step = r.ended(a, a_closed, closed(1000, "another socket connected"));
    assert_eq!(step.ended(), [(a, Some(a_closed))], "not held back");
    r.connected(n);
    r.first_frame(n);
    assert_eq!(r.m.role(n), Some(Role::Current));
    // The new channel announces maintenance too, and its socket is closed at once.
    let step = r.report(Report::SocketClosing { session: n });
    assert_eq!(step.creates().len(), 1, "a fresh channel again");
    r.advance(MS(5));
    let step = r.ended(n, r.wall, closed(1000, "another socket connected"));
    assert_eq!(step.ended(), [(n, Some(r.wall))]);
}

#[test]
fn a_refused_replacement_does_not_stop_the_rollover_of_a_live_channel() {
    let mut r = Rig::new();
    let life = Duration::from_secs(20);
    let a = r.open("c1", life);
    let create = r.report(Report::SocketClosing { session: a }).creates()[0];
    r.advance(timings().closing_grace / 2);
    let rep = r.tick().connects[0].0;
    r.report(Report::Ended {
        session: rep,
        last_frame: None,
        why: Ended::ConnectFailed {
            detail: "401".into(),
            status: Some(401),
        },
        at: r.now,
    });
    let step = r.rest(create, RestDone::Created(Ok(channel("c2", life))));
    assert_eq!(step.subscribes().len(), 1, "the rollover goes ahead");
}

#[test]
fn added_topics_are_named_in_coverage_only_once_the_service_has_them() {
    let mut r = Rig::new();
    r.open("c1", Duration::from_secs(3600));
    let more: Arc<[String]> = vec![
        "v2.users.x.presence".to_owned(),
        "v2.users.y.presence".to_owned(),
    ]
    .into();
    r.m.set_topics(more.clone());
    let step = r.step();
    assert!(
        step.coverage.is_empty(),
        "not before the subscribe succeeded"
    );
    let sub = step.subscribes()[0].0;
    let step = r.rest(
        sub,
        RestDone::Subscribed(Err(ClientError::Api(unavailable()))),
    );
    assert!(step.coverage.is_empty(), "nor after it failed");
    r.advance(r.m.next_wake().unwrap() - r.now);
    let sub = r.tick().subscribes()[0].0;
    let step = r.rest(sub, subscribed());
    assert!(
        matches!(&step.coverage[..], [Coverage::Topics(t)] if t.len() == 2),
        "{:?}",
        step.coverage
    );
}

#[test]
fn a_slot_waiting_for_a_place_keeps_its_place_in_the_queue() {
    let mut r = Rig::new();
    let first = r.tick().rest;
    let (op, RestCall::Create { needed_by, .. }) = first[0].clone() else {
        panic!("{first:?}")
    };
    r.rest(
        op,
        RestDone::Created(Err(CreateFailed::Budget {
            retry_at: r.now + MS(100),
        })),
    );
    r.advance(MS(100));
    let again = r.tick().rest;
    assert!(
        matches!(&again[..], [(_, RestCall::Create { needed_by: n, .. })] if *n == needed_by),
        "{again:?}"
    );
}

#[test]
fn a_planned_hand_over_counts_as_planned_and_a_drop_does_not() {
    let mut r = Rig::new();
    let s1 = r.open("c1", Duration::from_secs(3600));
    let s2 = r.closing_falls_back(s1);
    r.connected(s2);
    r.first_frame(s2);
    r.ended(s1, r.wall, closed(1000, "another socket connected"));
    let stats = r.stats.clone();
    let ends = || {
        (
            Stats::get(&stats.socket_ends_planned),
            Stats::get(&stats.socket_ends_unplanned),
        )
    };
    assert_eq!(ends(), (1, 0), "logged at INFO");
    r.ended(s2, r.wall, dropped());
    assert_eq!(ends(), (1, 1), "logged at WARN");
}

#[test]
fn a_redial_after_a_socket_that_never_received_still_takes_the_channel_over() {
    let mut r = Rig::new();
    let create = r.tick().creates()[0];
    let step = r.rest(
        create,
        RestDone::Created(Ok(channel("c1", Duration::from_secs(3600)))),
    );
    let sub = step.subscribes()[0].0;
    let s1 = r.rest(sub, subscribed()).connects[0].0;
    // Upgraded, so the service may count it as attached, then gone before a frame.
    r.connected(s1);
    r.report(Report::Ended {
        session: s1,
        last_frame: None,
        why: dropped(),
        at: r.now,
    });
    r.advance(timings().backoff_max);
    let step = r.tick();
    let s2 = step.connects[0].0;
    assert_eq!(&*step.connects[0].1, "c1");
    r.connected(s2);
    let step = r.first_frame(s2);
    assert_eq!(step.live(), [(s2, r.wall + timings().gap_lookback)]);
}
