//! Whether a socket is alive, as one small rule over explicit instants (sans-io):
//! any inbound frame proves life; a `{"message":"ping"}` goes out every ping period; the
//! socket is dead when the last ping is unanswered after the pong timeout, or when nothing
//! at all arrived for the watchdog period (about 2.2 server heartbeats).

use std::time::Duration;

use tokio::time::Instant;

/// Liveness periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// How often to send `{"message":"ping"}`.
    pub ping_every: Duration,
    /// How long a ping may stay unanswered.
    pub pong_timeout: Duration,
    /// How long the socket may stay silent.
    pub watchdog: Duration,
}

/// Why a socket was declared dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dead {
    /// A ping got no answer in time.
    PongTimeout(Duration),
    /// Nothing arrived for this long.
    Silent(Duration),
}

impl std::fmt::Display for Dead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dead::PongTimeout(d) => write!(f, "no pong within {d:?}"),
            Dead::Silent(d) => write!(f, "no frame for {d:?}"),
        }
    }
}

/// What the socket loop should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Alive,
    /// Send a ping.
    SendPing,
    /// Give up on the socket.
    Dead(Dead),
}

/// The liveness state of one socket.
#[derive(Debug, Clone)]
pub struct Liveness {
    cfg: LivenessConfig,
    last_rx: Instant,
    ping_out: Option<Instant>,
    next_ping: Instant,
}

impl Liveness {
    /// A socket that just connected: a ping is due at once (its pong proves the server
    /// has attached the socket).
    pub fn new(cfg: LivenessConfig, now: Instant) -> Self {
        Liveness {
            cfg,
            last_rx: now,
            ping_out: None,
            next_ping: now,
        }
    }

    /// A frame arrived.
    pub fn on_frame(&mut self, now: Instant) {
        self.last_rx = now;
        self.ping_out = None;
    }

    /// Time passed; returns what to do.
    pub fn on_tick(&mut self, now: Instant) -> Verdict {
        if let Some(sent) = self.ping_out {
            let waited = now.saturating_duration_since(sent);
            if waited >= self.cfg.pong_timeout {
                return Verdict::Dead(Dead::PongTimeout(waited));
            }
        }
        let silent = now.saturating_duration_since(self.last_rx);
        if silent >= self.cfg.watchdog {
            return Verdict::Dead(Dead::Silent(silent));
        }
        if now >= self.next_ping {
            self.next_ping = now + self.cfg.ping_every;
            self.ping_out.get_or_insert(now);
            return Verdict::SendPing;
        }
        Verdict::Alive
    }

    /// The next instant at which [`Liveness::on_tick`] may have something to say.
    pub fn next_deadline(&self) -> Instant {
        let mut at = self.next_ping.min(self.last_rx + self.cfg.watchdog);
        if let Some(sent) = self.ping_out {
            at = at.min(sent + self.cfg.pong_timeout);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LivenessConfig {
        LivenessConfig {
            ping_every: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(10),
            watchdog: Duration::from_secs(66),
        }
    }

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_new_socket_pings_at_once_then_every_period() {
        let t0 = Instant::now();
        let mut l = Liveness::new(cfg(), t0);
        assert_eq!(l.on_tick(t0), Verdict::SendPing);
        l.on_frame(at(t0, 1));
        assert_eq!(l.on_tick(at(t0, 29)), Verdict::Alive);
        assert_eq!(l.next_deadline(), at(t0, 30));
        assert_eq!(l.on_tick(at(t0, 30)), Verdict::SendPing);
    }

    #[test]
    fn pong_timeout_marks_socket_dead() {
        let t0 = Instant::now();
        let mut l = Liveness::new(cfg(), t0);
        assert_eq!(l.on_tick(t0), Verdict::SendPing);
        assert_eq!(l.next_deadline(), at(t0, 10));
        assert_eq!(
            l.on_tick(at(t0, 10)),
            Verdict::Dead(Dead::PongTimeout(Duration::from_secs(10)))
        );
    }

    #[test]
    fn any_frame_answers_the_ping() {
        let t0 = Instant::now();
        let mut l = Liveness::new(cfg(), t0);
        l.on_tick(t0);
        l.on_frame(at(t0, 5));
        assert_eq!(l.on_tick(at(t0, 12)), Verdict::Alive);
    }

    #[test]
    fn silence_past_the_watchdog_marks_socket_dead() {
        let t0 = Instant::now();
        let quiet = LivenessConfig {
            pong_timeout: Duration::from_secs(100),
            ..cfg()
        };
        let mut l = Liveness::new(quiet, t0);
        l.on_tick(t0);
        l.on_frame(t0);
        assert_eq!(l.on_tick(at(t0, 30)), Verdict::SendPing);
        assert_eq!(
            l.on_tick(at(t0, 60)),
            Verdict::SendPing,
            "outstanding ping kept, not reset"
        );
        assert_eq!(
            l.on_tick(at(t0, 66)),
            Verdict::Dead(Dead::Silent(Duration::from_secs(66)))
        );
    }

    #[test]
    fn an_unanswered_ping_is_not_restarted_by_the_next_one() {
        let t0 = Instant::now();
        let fast = LivenessConfig {
            ping_every: Duration::from_secs(3),
            ..cfg()
        };
        let mut l = Liveness::new(fast, t0);
        l.on_tick(t0);
        assert_eq!(l.on_tick(at(t0, 3)), Verdict::SendPing);
        assert_eq!(l.on_tick(at(t0, 6)), Verdict::SendPing);
        assert_eq!(
            l.on_tick(at(t0, 10)),
            Verdict::Dead(Dead::PongTimeout(Duration::from_secs(10)))
        );
    }
}
