//! One WebSocket to one `connectUri`: the task that owns the socket. It reads frames,
//! forwards notifications to the stream, runs the liveness rule (app pings, pong
//! deadline, watchdog), and reports to its slot what only the socket can see: the first
//! frame (the socket is receiving), `socket_closing`, channel-gone notices, and how it
//! ended (close code and reason, dead, error). Malformed or oversized frames are counted
//! and logged; they never end the process.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::FutureExt;
use holdline_proto::{ClientFrame, FrameError, ServerFrame};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Duration, Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::socket::liveness::{Dead, Liveness, LivenessConfig, Verdict};
use crate::socket::spent::Spent;
use crate::socket::wire::{self, Incoming, Socket, WireError};
use crate::stream::event::Notification;
use crate::telemetry::stats::{Cause, SocketState, Stats, family_index};

/// Most topics whose family a socket remembers (a channel holds at most 1,000).
const FAMILY_CACHE: usize = 4096;

/// How long a retired socket may take to finish its close handshake.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// What a session tells its slot.
#[derive(Debug)]
pub enum Report {
    /// The upgrade completed.
    Connected {
        /// Session number.
        session: u64,
        /// When.
        at: Instant,
    },
    /// The first frame arrived: the server has attached the socket.
    Live {
        /// Session number.
        session: u64,
        /// When.
        at: SystemTime,
    },
    /// `v2.system.socket_closing`.
    SocketClosing {
        /// Session number.
        session: u64,
    },
    /// The channel is dead (`no_longer_subscribed`, `token_revoked`, `{"result":"404"}`).
    ChannelGone {
        /// Session number.
        session: u64,
        /// What the service said.
        why: String,
        /// The kind of loss, for the reconnect counters.
        cause: Cause,
        /// When the notice arrived (the socket's own clock).
        at: SystemTime,
    },
    /// The socket ended.
    Ended {
        /// Session number.
        session: u64,
        /// The last frame received, if any.
        last_frame: Option<SystemTime>,
        /// How it ended.
        why: Ended,
        /// When it ended.
        at: Instant,
    },
}

/// How a socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The connect failed; `status` is the HTTP status of a refused upgrade.
    ConnectFailed {
        /// What went wrong.
        detail: String,
        /// Upgrade status (401 means the channel is gone).
        status: Option<u16>,
    },
    /// Closed with a close frame.
    Closed {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Closed without a close frame (reset, EOF).
    Dropped(String),
    /// Declared dead by the liveness rule.
    Dead(Dead),
    /// Retired by the slot and closed politely; `clean` when the server answered the
    /// close (so everything it sent before arrived), false when the handshake failed or
    /// timed out (the socket may have been dead already).
    Retired {
        /// The close handshake completed.
        clean: bool,
    },
}

impl Ended {
    /// The kind of loss, for the reconnect counters.
    pub fn cause(&self) -> Cause {
        match self {
            Ended::ConnectFailed { .. } => Cause::ConnectFailed,
            Ended::Closed { .. } => Cause::Close,
            Ended::Dropped(_) | Ended::Retired { .. } => Cause::Drop,
            Ended::Dead(_) => Cause::Stall,
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::ConnectFailed { detail, .. } => write!(f, "connect failed: {detail}"),
            Ended::Closed { code, reason } if reason.is_empty() => {
                write!(f, "closed by the server ({code})")
            }
            Ended::Closed { code, reason } => write!(f, "closed by the server ({code} {reason})"),
            Ended::Dropped(detail) => write!(f, "socket dropped: {detail}"),
            Ended::Dead(dead) => write!(f, "socket dead: {dead}"),
            Ended::Retired { clean: true } => f.write_str("closed by holdline"),
            Ended::Retired { clean: false } => {
                f.write_str("closed by holdline (the close handshake did not finish)")
            }
        }
    }
}

/// What a session needs.
#[derive(Clone)]
pub struct SessionConfig {
    /// Liveness periods.
    pub liveness: LivenessConfig,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Largest message accepted.
    pub max_frame_bytes: usize,
    /// TLS for `wss://`.
    pub tls: Arc<rustls::ClientConfig>,
    /// The proxies in force.
    pub proxy: Arc<crate::proxy::ProxyRules>,
    /// Resolver overrides.
    pub resolve: Arc<[crate::config::Resolve]>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// The shard and slot the sessions serve (for per-socket metrics).
    pub shard: usize,
    pub slot: usize,
}

/// The last frame a socket received, readable by its owners even if the socket's task
/// dies without reporting (unix microseconds; 0 before the first frame).
#[derive(Debug, Default)]
pub struct SocketClock(AtomicU64);

impl SocketClock {
    fn saw(&self, at: SystemTime) {
        let micros = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.0.store(micros, Ordering::Relaxed);
    }

    /// When the socket's last frame arrived, if any did.
    pub fn last_frame(&self) -> Option<SystemTime> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(UNIX_EPOCH + Duration::from_micros(micros)),
        }
    }
}

/// The slot's handle on a running session.
pub struct SessionHandle {
    /// Its last frame.
    pub clock: Arc<SocketClock>,
    retire: Option<oneshot::Sender<&'static str>>,
    task: AbortHandle,
}

impl SessionHandle {
    /// The id of the session's task in its `JoinSet`.
    pub fn task_id(&self) -> tokio::task::Id {
        self.task.id()
    }

    /// Asks the session to close with 1000 and `reason` (it keeps delivering until the
    /// close completes).
    pub fn retire(&mut self, reason: &'static str) {
        if let Some(tx) = self.retire.take() {
            let _ = tx.send(reason);
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if self.retire.is_some() {
            self.task.abort();
        }
    }
}

/// Where a session's notifications go: one batch per message.
pub type Batches = mpsc::Sender<Vec<Notification>>;

/// Starts a session on `connect_uri` as a task of `tasks` (whose owner sees it end: the
/// task's output is its session number).
pub fn spawn(
    cfg: SessionConfig,
    id: u64,
    connect_uri: Arc<str>,
    channel: Arc<str>,
    reports: mpsc::UnboundedSender<Report>,
    out: Batches,
    tasks: &mut JoinSet<u64>,
) -> SessionHandle {
    let (retire_tx, retire_rx) = oneshot::channel();
    let clock = Arc::new(SocketClock::default());
    let shared = clock.clone();
    let task = tasks.spawn(async move {
        let mut session = Session {
            cfg,
            id,
            channel,
            reports,
            out,
            clock: shared,
            covered_until: None,
            last_frame: None,
            live: false,
            ping_sent: None,
            families: HashMap::default(),
            arrival: None,
            batch: Vec::new(),
            spent: Spent::default(),
        };
        let why = session.run(&connect_uri, retire_rx).await;
        if session.live && session.cfg.stats.socket_gone(id) {
            session
                .cfg
                .stats
                .sockets_live
                .fetch_sub(1, Ordering::Relaxed);
        }
        let at = Instant::now();
        let last_frame = session.covered_until.unwrap_or(session.last_frame);
        let _ = session.reports.send(Report::Ended {
            session: id,
            last_frame,
            why,
            at,
        });
        id
    });
    SessionHandle {
        clock,
        retire: Some(retire_tx),
        task,
    }
}

struct Session {
    cfg: SessionConfig,
    id: u64,
    channel: Arc<str>,
    reports: mpsc::UnboundedSender<Report>,
    out: Batches,
    clock: Arc<SocketClock>,
    last_frame: Option<SystemTime>,
    /// Once retired: the last frame before the retirement, where its coverage ends.
    covered_until: Option<Option<SystemTime>>,
    live: bool,
    /// When the unanswered ping went out (for the round-trip histogram).
    ping_sent: Option<Instant>,
    /// Topic → family counter slot, so a topic is classified once per socket.
    families: HashMap<Box<str>, usize, TopicHash>,
    /// The socket read the latest frames came in, and when it was taken: every frame of
    /// one read arrived at the same moment, so the clocks are read once per read (and
    /// again after each hand-over, which may have waited).
    arrival: Option<(u64, Instant, SystemTime)>,
    /// Notifications read and not yet handed to the stream.
    batch: Vec<Notification>,
    /// The read buffers behind frames still on their way out.
    spent: Spent,
}

/// Most notifications handed to the stream in one message.
pub(crate) const BATCH_MAX: usize = 64;
/// Most frames read in one go before looking at timers and the retire signal again.
const DRAIN_MAX: usize = 256;

impl Session {
    async fn run(&mut self, uri: &str, mut retire: oneshot::Receiver<&'static str>) -> Ended {
        let connect = wire::connect(
            uri,
            self.cfg.tls.clone(),
            &self.cfg.proxy,
            &self.cfg.resolve,
            self.cfg.max_frame_bytes,
        );
        let mut ws = match timeout(self.cfg.connect_timeout, connect).await {
            Err(_) => {
                let detail = format!("no connection within {:?}", self.cfg.connect_timeout);
                return Ended::ConnectFailed {
                    detail,
                    status: None,
                };
            }
            Ok(Err(e)) => return connect_failed(e),
            Ok(Ok(ws)) => ws,
        };
        let _ = self.reports.send(Report::Connected {
            session: self.id,
            at: Instant::now(),
        });

        let mut liveness = Liveness::new(self.cfg.liveness, Instant::now());
        let mut retired_at: Option<Instant> = None;
        loop {
            let retire_deadline = retired_at.map(|at| at + RETIRE_GRACE);
            tokio::select! {
                biased;
                // The slot retires this socket (rollover): close politely, keep reading
                // until the server's close so nothing in flight is lost.
                reason = &mut retire, if retired_at.is_none() => {
                    retired_at = Some(Instant::now());
                    // What arrives from now on is still delivered, but no longer proves
                    // anything: it may be a backlog the server sends before dropping the
                    // rest once our close reaches it.
                    self.covered_until = Some(self.last_frame);
                    let reason = reason.unwrap_or("client stopped");
                    if ws.close(CloseCode::Normal, reason).await.is_err() {
                        return Ended::Retired { clean: false };
                    }
                }
                // A retired socket whose close handshake never finished.
                _ = sleep_until(retire_deadline.unwrap_or_else(Instant::now)), if retire_deadline.is_some() => {
                    return Ended::Retired { clean: false };
                }
                // The next message, before the liveness check; StreamExt::next is cancel-safe.
                // Everything already buffered is read in one go and its notifications
                // handed over as one batch: one queue message and at most one wake-up of
                // the consumer per burst, not per event.
                msg = ws.recv() => {
                    let mut msg = msg;
                    let mut read = 0;
                    let ended = loop {
                        if let Some(end) = self.message(&mut ws, msg, &mut liveness, retired_at.is_some()).await {
                            break Some(end);
                        }
                        read += 1;
                        if read >= DRAIN_MAX {
                            break None;
                        }
                        match ws.recv().now_or_never() {
                            Some(next) => msg = next,
                            None => break None,
                        }
                    };
                    if !self.hand_over().await {
                        return Ended::Dropped("the event stream was closed".into());
                    }
                    if let Some(end) = ended {
                        return end;
                    }
                }
                // Liveness: a ping is due, a pong is overdue, or the socket went silent. After the
                // socket's frames: frames that queued while the consumer was slow prove life.
                _ = sleep_until(liveness.next_deadline()), if retired_at.is_none() => {
                    match liveness.on_tick(Instant::now()) {
                        Verdict::Alive => {}
                        Verdict::SendPing => {
                            if let Err(e) = ws.send_text(&ClientFrame::Ping.to_json()).await {
                                return Ended::Dropped(format!("ping failed: {e}"));
                            }
                            self.ping_sent.get_or_insert_with(Instant::now);
                        }
                        Verdict::Dead(dead) => return Ended::Dead(dead),
                    }
                }
            }
        }
    }

    /// Handles one message from the socket; `Some` when the socket is done.
    async fn message(
        &mut self,
        ws: &mut Socket,
        msg: Result<Incoming, WireError>,
        liveness: &mut Liveness,
        retired: bool,
    ) -> Option<Ended> {
        let (now, at) = self.arrival(ws.reads());
        match msg {
            Ok(Incoming::Text(text)) => {
                liveness.on_frame(now);
                let (bytes, (text, frame)) = match text.parse() {
                    Ok(parsed) => parsed,
                    Err(e) => return Some(self.error(e, retired)),
                };
                if !self.text(bytes, text, frame, at).await {
                    return Some(Ended::Dropped("the event stream was closed".into()));
                }
            }
            Ok(Incoming::Close(code, reason)) => {
                // The server ends the connection once its close is answered; it may
                // already have, and its close frame is what counts either way. A close
                // the server began came after everything it sent, so a live socket
                // covered until now; one answering ours proves nothing of the time since
                // the last frame (a server may drop what it had not sent when our close
                // arrived), so coverage stays at that frame.
                if self.live && !retired {
                    self.last_frame = Some(at);
                    self.clock.saw(at);
                }
                let _ = ws.answer_close(code).await;
                return Some(if retired {
                    Ended::Retired { clean: true }
                } else {
                    Ended::Closed { code, reason }
                });
            }
            Ok(Incoming::Ping(payload)) => {
                liveness.on_frame(now);
                self.seen(at);
                if let Err(e) = ws.pong(payload).await {
                    return Some(self.error(e.into(), retired));
                }
            }
            Ok(Incoming::Binary | Incoming::Pong) => {
                // Binary and pong frames prove the socket alive too.
                liveness.on_frame(now);
                self.seen(at);
            }
            Err(e) => return Some(self.error(e, retired)),
        }
        None
    }

    /// Hands the notifications read so far to the stream; false when its consumer is gone.
    async fn hand_over(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_MAX));
        let sent = self.out.send(batch).await.is_ok();
        // A slow consumer may have held the send: frames handled after it are stamped
        // afresh, as proof of life for the liveness check too.
        self.arrival = None;
        sent
    }

    /// Handles a text frame and what it parsed to; false when the stream's consumer is gone.
    async fn text(
        &mut self,
        bytes: &Bytes,
        text: &str,
        frame: Result<ServerFrame<'_>, FrameError>,
        received_at: SystemTime,
    ) -> bool {
        self.seen(received_at);
        self.spent.saw(bytes);
        // Events read before a notice reach the stream before anything the notice causes.
        if !matches!(frame, Ok(ServerFrame::Notification(_))) && !self.hand_over().await {
            return false;
        }
        let stats = &self.cfg.stats;
        match frame {
            Ok(ServerFrame::Notification(n)) => {
                Stats::bump(&stats.frames);
                let family = match self.families.get(&*n.topic) {
                    Some(f) => *f,
                    None => {
                        let f = family_index(&n.topic);
                        if self.families.len() < FAMILY_CACHE {
                            self.families.insert(n.topic.as_ref().into(), f);
                        }
                        f
                    }
                };
                Stats::bump(&stats.frames_by_family[family]);
                let mut event =
                    Notification::new(bytes, text, &n, received_at, self.channel.clone());
                event.family = family;
                self.batch.push(event);
                if self.batch.len() >= BATCH_MAX {
                    return self.hand_over().await;
                }
                return true;
            }
            Ok(ServerFrame::Heartbeat) => {
                stats.heartbeat(self.id);
                tracing::debug!(event = "heartbeat", channel = %self.channel, "heartbeat");
            }
            Ok(ServerFrame::Pong) => {
                Stats::bump(&stats.pongs);
                let rtt = self.ping_sent.take().map(|sent| sent.elapsed());
                if let Some(rtt) = rtt {
                    stats.ping_rtt.observe(rtt);
                }
                let rtt_ms = rtt.map(|d| d.as_secs_f64() * 1000.0);
                tracing::debug!(event = "pong", channel = %self.channel, rtt_ms, "pong");
            }
            Ok(ServerFrame::SocketClosing(_)) => {
                crate::telemetry::notable::socket_closing(stats, &self.channel);
                let _ = self
                    .reports
                    .send(Report::SocketClosing { session: self.id });
            }
            Ok(ServerFrame::NoLongerSubscribed(n)) => {
                let d = n.details();
                let why = format!(
                    "no_longer_subscribed ({})",
                    d.reason.or(d.message).unwrap_or_default()
                );
                let _ = self.reports.send(Report::ChannelGone {
                    session: self.id,
                    why,
                    cause: Cause::Evicted,
                    at: received_at,
                });
            }
            Ok(ServerFrame::TokenRevoked(_)) => {
                let why = "token_revoked: the token behind the channel was revoked".to_owned();
                let _ = self.reports.send(Report::ChannelGone {
                    session: self.id,
                    why,
                    cause: Cause::Revoked,
                    at: received_at,
                });
            }
            Ok(ServerFrame::ChannelGone { message }) => {
                let why = format!("channel gone ({})", message.unwrap_or_default());
                let _ = self.reports.send(Report::ChannelGone {
                    session: self.id,
                    why,
                    cause: Cause::ChannelGone,
                    at: received_at,
                });
            }
            Ok(ServerFrame::OtherSystem(n)) => {
                tracing::info!(channel = %self.channel, topic = %n.topic, "system notice");
            }
            Ok(ServerFrame::SubscribeReply(r)) => {
                tracing::debug!(channel = %self.channel, ok = r.is_ok(), "subscribe reply");
            }
            Ok(ServerFrame::Unknown) => {
                crate::telemetry::notable::unknown_frame(stats, &self.channel)
            }
            Err(e) => {
                crate::telemetry::notable::malformed_frame(stats, &self.channel, text.len(), &e)
            }
        }
        true
    }

    /// When the frames of the socket's latest read arrived (monotonic, and wall clock).
    fn arrival(&mut self, reads: u64) -> (Instant, SystemTime) {
        match self.arrival {
            Some((read, now, at)) if read == reads => (now, at),
            _ => {
                let (now, at) = (Instant::now(), SystemTime::now());
                self.arrival = Some((reads, now, at));
                (now, at)
            }
        }
    }

    /// Notes that a frame arrived at `now`; the first one makes the socket live.
    fn seen(&mut self, now: SystemTime) {
        self.last_frame = Some(now);
        self.clock.saw(now);
        if !self.live {
            self.live = true;
            self.cfg.stats.sockets_live.fetch_add(1, Ordering::Relaxed);
            self.cfg.stats.socket_live(
                self.id,
                SocketState {
                    shard: self.cfg.shard,
                    slot: self.cfg.slot,
                    channel: self.channel.to_string(),
                    last_heartbeat: now,
                },
            );
            let _ = self.reports.send(Report::Live {
                session: self.id,
                at: now,
            });
        }
    }

    fn error(&mut self, e: WireError, retired: bool) -> Ended {
        if let WireError::TooLong { .. } = &e {
            crate::telemetry::notable::oversized_message(
                &self.cfg.stats,
                &self.channel,
                &e,
                self.cfg.max_frame_bytes,
            );
        }
        if retired {
            return Ended::Retired { clean: false };
        }
        Ended::Dropped(e.to_string())
    }
}

/// Hashes topic names for the family cache with one-shot xxh3: std's SipHash cost more
/// per event than the lookup it serves. The cache is bounded, so even topics made to
/// collide could only slow lookups within it.
#[derive(Debug, Default, Clone, Copy)]
struct TopicHash;

impl BuildHasher for TopicHash {
    type Hasher = TopicHasher;
    fn build_hasher(&self) -> TopicHasher {
        TopicHasher(0)
    }
}

struct TopicHasher(u64);

impl Hasher for TopicHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, byte: u8) {
        // A str's hash ends with one 0xff byte.
        self.0 ^= u64::from(byte);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn connect_failed(e: WsError) -> Ended {
    let status = match &e {
        WsError::Http(resp) => Some(resp.status().as_u16()),
        _ => None,
    };
    Ended::ConnectFailed {
        detail: e.to_string(),
        status,
    }
}
