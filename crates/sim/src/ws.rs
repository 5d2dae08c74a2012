//! One simulated notification socket: heartbeats, ping/pong, subscribe over the socket,
//! event delivery with injected delays, and the socket faults (close, reset, stall,
//! socket_closing). One task per socket owns the WebSocket; the shared state reaches it
//! through a bounded data queue and an unbounded control queue.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use holdline_proto::frame::{ClientFrame, ClientFrameError};
use holdline_proto::{ServerFrame, SubscribeReply};
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant, sleep_until};

use crate::config::{HeartbeatMode, Pings};
use crate::net::ConnInfo;
use crate::state::Core;
use crate::state::channels::{Control, Mode, Outbound, SocketLink};
use crate::state::refusal::Refusal;

/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;

/// How a socket ended.
enum End {
    /// Closed with a close frame (by either side) or the peer went away.
    Closed,
    /// Must end with a TCP reset.
    Reset,
}

struct Socket {
    ws: WebSocket,
    core: Arc<Core>,
    channel: String,
    conn: u64,
    next_heartbeat: Instant,
    delayed: VecDeque<Outbound>,
    /// Late copies (`unknowns.late_share`), each held on its own, soonest due first.
    late: VecDeque<Outbound>,
    closing: Option<(Instant, u16)>,
}

/// Runs a socket connected to `channel` until it ends.
pub async fn serve(core: Arc<Core>, channel: String, ws: WebSocket, info: ConnInfo) {
    let conn = core.next_conn();
    let (data_tx, mut data) = mpsc::channel(core.config.socket_queue_frames.max(1));
    let (ctl_tx, mut ctl) = mpsc::unbounded_channel();
    let now = Instant::now();
    let link = SocketLink {
        conn,
        data: data_tx,
        ctl: ctl_tx,
        since: now,
        peer: info.peer,
        due: None,
    };
    let mut socket = Socket {
        ws,
        next_heartbeat: now + core.config.heartbeat,
        core: core.clone(),
        channel: channel.clone(),
        conn,
        delayed: VecDeque::new(),
        late: VecDeque::new(),
        closing: None,
    };
    if !core.attach(&channel, link) {
        let gone = ServerFrame::ChannelGone {
            message: Some("channel not found".into()),
        };
        let _ = socket.send(gone.to_json().into()).await;
        socket.close(1000, "channel not found").await;
        return;
    }
    tracing::debug!(%channel, conn, peer = %info.peer, "socket connected");
    let end = socket.run(&mut data, &mut ctl).await;
    core.detach(&channel, conn);
    tracing::debug!(%channel, conn, "socket ended");
    if matches!(end, End::Reset) {
        info.reset_on_drop();
    }
}

/// How long a closing server waits for the client's close frame.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Socket {
    async fn run(
        &mut self,
        data: &mut mpsc::Receiver<Outbound>,
        ctl: &mut mpsc::UnboundedReceiver<Control>,
    ) -> End {
        loop {
            let due = |q: &VecDeque<Outbound>| {
                q.front().map(|o| o.not_before.unwrap_or_else(Instant::now))
            };
            let (in_order, late) = (due(&self.delayed), due(&self.late));
            let late_first = match (in_order, late) {
                (Some(a), Some(b)) => b < a,
                (None, Some(_)) => true,
                _ => false,
            };
            let delayed_due = if late_first { late } else { in_order };
            tokio::select! {
                biased;
                // Control first: a close or reset must not wait behind queued events.
                Some(order) = ctl.recv() => {
                    if let Some(end) = self.control(order, data, ctl).await {
                        return end;
                    }
                }
                // The grace after socket_closing ran out: the server closes the socket.
                _ = sleep_until(self.closing.map_or_else(Instant::now, |c| c.0)), if self.closing.is_some() => {
                    let code = self.closing.map_or(1001, |c| c.1);
                    self.flush(data).await;
                    self.close(code, "socket closed for maintenance").await;
                    return End::Closed;
                }
                // A delayed frame is due.
                _ = sleep_until(delayed_due.unwrap_or_else(Instant::now)), if delayed_due.is_some() => {
                    let queue = if late_first { &mut self.late } else { &mut self.delayed };
                    if let Some(out) = queue.pop_front()
                        && self.send(out.frame).await.is_err() { return End::Closed; }
                }
                // The heartbeat is due.
                _ = sleep_until(self.next_heartbeat) => {
                    self.next_heartbeat = Instant::now() + self.core.config.heartbeat;
                    if self.send(ServerFrame::Heartbeat.to_json().into()).await.is_err() {
                        return End::Closed;
                    }
                }
                // A client message (pings above all) before more events: a server reads its
                // sockets independently of what it is writing, so a busy socket still
                // answers pings. WebSocket::recv is cancel-safe (it is StreamExt::next).
                msg = self.ws.recv() => match msg {
                    Some(Ok(msg)) => if let Some(end) = self.client_message(msg).await { return end; },
                    Some(Err(e)) => {
                        tracing::debug!(channel = %self.channel, error = %e, "socket read failed");
                        if e.to_string().contains("too long") || e.to_string().contains("Space limit") {
                            self.close(1009, "message too big").await;
                        }
                        return End::Closed;
                    }
                    None => return End::Closed,
                },
                // An event (or injected frame) to deliver; mpsc::recv is cancel-safe.
                Some(out) = data.recv() => {
                    if self.deliver(out, data).await.is_err() {
                        return End::Closed;
                    }
                }
            }
        }
    }

    async fn control(
        &mut self,
        order: Control,
        data: &mut mpsc::Receiver<Outbound>,
        ctl: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Option<End> {
        match order {
            Control::Close {
                notice,
                code,
                reason,
            } => {
                // Events handed to this socket before the close was decided still go out
                // first, as they would on a TCP stream the server closes in order.
                self.flush(data).await;
                if let Some(notice) = notice {
                    let _ = self.send(notice).await;
                }
                self.close(code, &reason).await;
                Some(End::Closed)
            }
            Control::Kick { code, reason } => {
                while data.try_recv().is_ok() {}
                self.delayed.clear();
                self.late.clear();
                self.close(code, &reason).await;
                Some(End::Closed)
            }
            Control::Reset => Some(End::Reset),
            Control::Stall(how_long) => self.stall(how_long, data, ctl).await,
            Control::Closing {
                notice,
                grace,
                code,
            } => {
                if self.send(notice).await.is_err() {
                    return Some(End::Closed);
                }
                self.closing = Some((Instant::now() + grace, code));
                None
            }
        }
    }

    /// Writes `first` and whatever else is already queued (up to [`WRITE_BATCH`] frames)
    /// with one flush, so a busy socket costs one write per batch, not per frame. Frames
    /// held back by a delay fault keep their order behind the earlier held ones.
    async fn deliver(
        &mut self,
        first: Outbound,
        data: &mut mpsc::Receiver<Outbound>,
    ) -> Result<(), axum::Error> {
        let mut next = Some(first);
        let mut written = 0;
        while let Some(out) = next.take() {
            let held = out.not_before.is_some_and(|t| t > Instant::now());
            if out.late && held {
                self.hold_late(out);
            } else if held || !self.delayed.is_empty() {
                self.delayed.push_back(out);
            } else {
                self.note_sent();
                self.ws.feed(Message::Text(out.frame)).await?;
                written += 1;
            }
            if written < WRITE_BATCH {
                next = data.try_recv().ok();
            }
        }
        if written > 0 {
            self.ws.flush().await?;
        }
        Ok(())
    }

    /// Holds a late copy until it is due, behind every late copy due no later.
    fn hold_late(&mut self, out: Outbound) {
        let due = out.not_before.unwrap_or_else(Instant::now);
        let at = self
            .late
            .iter()
            .rposition(|o| o.not_before.unwrap_or(due) <= due)
            .map_or(0, |i| i + 1);
        self.late.insert(at, out);
    }

    /// Sends every frame already queued or held back by a delay.
    async fn flush(&mut self, data: &mut mpsc::Receiver<Outbound>) {
        while let Ok(out) = data.try_recv() {
            self.delayed.push_back(out);
        }
        let late = std::mem::take(&mut self.late);
        while let Some(out) = self.delayed.pop_front() {
            if self.send(out.frame).await.is_err() {
                return;
            }
        }
        for out in late {
            if self.send(out.frame).await.is_err() {
                return;
            }
        }
    }

    /// A half-open connection: nothing is sent or read; events handed to the socket are
    /// lost, as they would be on a dead TCP path.
    async fn stall(
        &mut self,
        how_long: Duration,
        data: &mut mpsc::Receiver<Outbound>,
        ctl: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Option<End> {
        let until = Instant::now() + how_long;
        loop {
            tokio::select! {
                biased;
                // While stalled a close cannot reach the peer; end quietly (or reset).
                Some(order) = ctl.recv() => match order {
                    Control::Reset => return Some(End::Reset),
                    Control::Close { .. } | Control::Kick { .. } => return Some(End::Closed),
                    Control::Stall(_) | Control::Closing { .. } => {}
                },
                // Events keep arriving and vanish.
                Some(_) = data.recv() => {}
                _ = sleep_until(until) => break,
            }
        }
        self.next_heartbeat = Instant::now() + self.core.config.heartbeat;
        None
    }

    async fn client_message(&mut self, msg: Message) -> Option<End> {
        let max = self.core.config.max_client_message_bytes;
        match msg {
            Message::Text(text) if text.len() > max => {
                self.close(1009, "message too big").await;
                Some(End::Closed)
            }
            Message::Binary(bytes) if bytes.len() > max => {
                self.close(1009, "message too big").await;
                Some(End::Closed)
            }
            Message::Text(text) => {
                let reply = self.answer(text.as_str());
                match reply {
                    Some(reply) => self.send(reply).await.err().map(|_| End::Closed),
                    None => None,
                }
            }
            // tungstenite queued the pong; flush so it leaves now.
            Message::Ping(_) => self.ws.flush().await.err().map(|_| End::Closed),
            // tungstenite queued the close reply; flush so the client's close completes.
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| f.code);
                self.core.client_closed(&self.channel, code);
                let _ = self.ws.flush().await;
                Some(End::Closed)
            }
            Message::Binary(_) | Message::Pong(_) => None,
        }
    }

    /// The reply to a client text message, if it gets one.
    fn answer(&self, text: &str) -> Option<Utf8Bytes> {
        let frame = match ClientFrame::parse(text) {
            Ok(frame) => frame,
            Err(ClientFrameError::MissingTopics { correlation_id }) => {
                let msg = ClientFrameError::MissingTopics {
                    correlation_id: None,
                }
                .to_string();
                return Some(error_reply(correlation_id.as_deref(), "400", &msg));
            }
            Err(_) if self.core.config.answer_unknown_messages => {
                return Some(error_reply(None, "400", "Unrecognized message"));
            }
            // The service ignores text it does not understand.
            Err(_) => return None,
        };
        let (topics, correlation_id, mode, status) = match frame {
            ClientFrame::Ping
                if self.core.config.unknowns.pings == Pings::Strict
                    && !is_documented_ping(text) =>
            {
                return self
                    .core
                    .config
                    .answer_unknown_messages
                    .then(|| error_reply(None, "400", "Unrecognized message"));
            }
            ClientFrame::Ping => return Some(ServerFrame::Pong.to_json().into()),
            ClientFrame::Subscribe {
                topics,
                correlation_id,
            } => (topics, correlation_id, Mode::Add, "subscribed"),
            ClientFrame::Unsubscribe {
                topics,
                correlation_id,
            } => (topics, correlation_id, Mode::Remove, "unsubscribed"),
        };
        let names: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let reply = match self.core.ws_subscribe(&self.channel, &names, mode) {
            Ok(()) => SubscribeReply {
                correlation_id,
                topics,
                result: Some("200".into()),
                status: Some(status.into()),
                message: None,
            },
            Err(refusal) => {
                let (code, message) = refusal_parts(&refusal);
                return Some(error_reply(correlation_id.as_deref(), &code, &message));
            }
        };
        Some(ServerFrame::SubscribeReply(reply).to_json().into())
    }

    async fn send(&mut self, frame: Utf8Bytes) -> Result<(), axum::Error> {
        self.note_sent();
        self.ws.send(Message::Text(frame)).await
    }

    /// In idle-only heartbeat mode, any frame sent pushes the next heartbeat back.
    fn note_sent(&mut self) {
        if self.core.config.heartbeat_mode == HeartbeatMode::IdleOnly {
            self.next_heartbeat = Instant::now() + self.core.config.heartbeat;
        }
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
        let _ = self.ws.flush().await;
        // Nothing more is sent to it: events published from now on are not its.
        self.core.detach(&self.channel, self.conn);
        // Wait briefly for the client's answering close (RFC 6455, 7.1.1), so the TCP
        // connection ends in order: dropping it at once can meet a frame the client is
        // sending with a reset, and a reset discards what the client had not read yet.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(msg)) = self.ws.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Exactly `{"message":"ping"}` (whitespace aside): the only ping the service documents.
fn is_documented_ping(text: &str) -> bool {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
        .is_ok_and(|m| m.len() == 1 && m.get("message").and_then(|v| v.as_str()) == Some("ping"))
}

fn refusal_parts(refusal: &Refusal) -> (String, String) {
    let (status, body, _) = refusal.to_parts();
    (status.to_string(), body.message)
}

fn error_reply(correlation_id: Option<&str>, result: &str, message: &str) -> Utf8Bytes {
    ServerFrame::SubscribeReply(SubscribeReply {
        correlation_id: correlation_id.map(Into::into),
        topics: Vec::new(),
        result: Some(result.into()),
        status: Some("error".into()),
        message: Some(message.into()),
    })
    .to_json()
    .into()
}
