//! The live probe: connect to a fresh channel's `connectUri`, time the first heartbeat and
//! a ping's pong, hold the socket, and explain any close: eviction, revoked token, expiry,
//! maintenance, a second socket on the channel, or a drop on the way.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use holdline_client::rest::api::Api;
use holdline_proto::{ClientFrame, ServerFrame};
use tokio::time::{Instant, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{Connector, connect_async_tls_with_config};

use super::check::Check;

/// What the service said before the socket closed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Notice {
    Evicted,
    TokenRevoked,
    Gone(String),
    Maintenance,
}

/// Everything seen while holding the socket.
#[derive(Debug, Default)]
struct Seen {
    first_heartbeat: Option<Duration>,
    heartbeats: Vec<Instant>,
    pong: Option<Duration>,
    notice: Option<Notice>,
    end: Option<End>,
}

#[derive(Debug)]
enum End {
    Closed(u16, String),
    Dropped(String),
}

/// Probes `connect_uri` for `hold`.
pub async fn run(
    api: &Api,
    channel: &str,
    connect_uri: &str,
    hold: Duration,
    tls: Arc<rustls::ClientConfig>,
) -> Vec<Check> {
    let started = Instant::now();
    let connect =
        connect_async_tls_with_config(connect_uri, None, true, Some(Connector::Rustls(tls)));
    let mut ws = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => {
            return vec![Check::fail(
                "probe: connect",
                format!("the connectUri refused the WebSocket: {e}"),
                "a channel's socket only opens for a live channel; check that nothing deleted or replaced it",
            )];
        }
        Err(_) => {
            return vec![Check::fail(
                "probe: connect",
                "no WebSocket connection within 15 s",
                "allow outbound wss (443) to the streaming host through proxies and firewalls",
            )];
        }
    };
    let mut checks = vec![Check::pass(
        "probe: connect",
        format!("socket open in {} ms", started.elapsed().as_millis()),
    )];
    let connected = Instant::now();
    let ping_sent = Instant::now();
    let _ = ws.send(Message::text(ClientFrame::Ping.to_json())).await;
    let mut seen = Seen::default();
    let deadline = connected + hold;
    loop {
        let msg = match timeout_at(deadline, ws.next()).await {
            Err(_) => break,
            Ok(msg) => msg,
        };
        match msg {
            Some(Ok(Message::Text(text))) => note(&mut seen, text.as_str(), connected, ping_sent),
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                seen.end = Some(End::Closed(code, reason));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                if seen.end.is_none() {
                    seen.end = Some(End::Dropped(e.to_string()));
                }
                break;
            }
            None => {
                if seen.end.is_none() {
                    seen.end = Some(End::Dropped(
                        "connection closed without a close frame".into(),
                    ));
                }
                break;
            }
        }
    }
    if seen.end.is_none() {
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "doctor done".into(),
            }))
            .await;
    }
    checks.extend(timing_checks(&seen, hold));
    checks.extend(end_checks(api, channel, &seen, hold).await);
    checks
}

fn note(seen: &mut Seen, text: &str, connected: Instant, ping_sent: Instant) {
    match ServerFrame::parse(text) {
        Ok(ServerFrame::Heartbeat) => {
            seen.first_heartbeat.get_or_insert(connected.elapsed());
            seen.heartbeats.push(Instant::now());
        }
        Ok(ServerFrame::Pong) => {
            seen.pong.get_or_insert(ping_sent.elapsed());
        }
        Ok(ServerFrame::NoLongerSubscribed(_)) => seen.notice = Some(Notice::Evicted),
        Ok(ServerFrame::TokenRevoked(_)) => seen.notice = Some(Notice::TokenRevoked),
        Ok(ServerFrame::ChannelGone { message }) => {
            seen.notice = Some(Notice::Gone(message.unwrap_or_default().into_owned()));
        }
        Ok(ServerFrame::SocketClosing(_)) => seen.notice = Some(Notice::Maintenance),
        _ => {}
    }
}

fn timing_checks(seen: &Seen, hold: Duration) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(match seen.pong {
        Some(rtt) => Check::pass("probe: ping", format!(r#"{{"message":"ping"}} answered with a pong in {} ms"#, rtt.as_millis())),
        None if seen.end.is_some() => Check::info("probe: ping", "the socket closed before the pong"),
        None => Check::fail(
            "probe: ping",
            "no pong to {\"message\":\"ping\"}: the socket is not passing frames",
            "check for a proxy that buffers or drops WebSocket frames between you and the streaming host",
        ),
    });
    let periods: Vec<Duration> = seen.heartbeats.windows(2).map(|w| w[1] - w[0]).collect();
    checks.push(match (seen.first_heartbeat, periods.is_empty()) {
        (Some(first), true) => Check::pass("probe: heartbeat", format!("first server heartbeat after {:.1} s", first.as_secs_f64())),
        (Some(first), false) => {
            let mean = periods.iter().sum::<Duration>() / periods.len() as u32;
            Check::pass(
                "probe: heartbeat",
                format!("first server heartbeat after {:.1} s, then every {:.1} s ({} seen)", first.as_secs_f64(), mean.as_secs_f64(), seen.heartbeats.len()),
            )
        }
        (None, _) if seen.end.is_some() => Check::info("probe: heartbeat", "the socket closed before the first heartbeat"),
        (None, _) if hold < Duration::from_secs(35) => Check::info(
            "probe: heartbeat",
            format!("no heartbeat within {}; the service sends one about every 30 s (hold longer with --hold 75s)", humantime::format_duration(hold)),
        ),
        (None, _) => Check::fail(
            "probe: heartbeat",
            format!("no server heartbeat in {}", humantime::format_duration(hold)),
            "something between you and the service swallows frames: check TLS-inspecting proxies",
        ),
    });
    checks
}

async fn end_checks(api: &Api, channel: &str, seen: &Seen, hold: Duration) -> Vec<Check> {
    let mut checks = Vec::new();
    if seen.notice == Some(Notice::Maintenance) {
        checks.push(Check::warn(
            "probe: maintenance",
            "v2.system.socket_closing arrived: the service will close this socket within about a minute (maintenance or load balancing). This is normal; clients must expect it",
            "on socket_closing open a new socket to the same connectUri before the old one closes (holdline listen does, without a gap)",
        ));
    }
    let Some(end) = &seen.end else {
        checks.push(Check::pass(
            "probe: hold",
            format!(
                "socket held for {} without a close",
                humantime::format_duration(hold)
            ),
        ));
        return checks;
    };
    let (code, reason) = match end {
        End::Closed(code, reason) => (*code, reason.clone()),
        End::Dropped(detail) => {
            checks.push(Check::fail(
                "probe: close",
                format!("the connection was dropped without a close frame ({detail}): a proxy, firewall, load balancer or NAT idle timeout, or a network fault"),
                "check what sits between you and the streaming host; holdline listen reconnects and reports the window as a gap",
            ));
            return checks;
        }
    };
    let closed = format!(
        "closed with {code}{}",
        if reason.is_empty() {
            String::new()
        } else {
            format!(" {reason:?}")
        }
    );
    let check = match &seen.notice {
        Some(Notice::Evicted) => Check::fail(
            "probe: close",
            format!(
                "{closed} after no_longer_subscribed: the channel was evicted. An OAuth client may hold 20 channels; creating a 21st removes the least recently used, so a program that creates a channel per (re)connect evicts its own live channels"
            ),
            "create channels once and reuse them; count them with GET /api/v2/notifications/channels?includechannels=oauthclient",
        ),
        Some(Notice::TokenRevoked) => Check::fail(
            "probe: close",
            format!(
                "{closed} after token_revoked: the token that created the channel was revoked, and its channels died with it"
            ),
            "get a new token and create a new channel (holdline listen does this by itself)",
        ),
        Some(Notice::Gone(message)) => Check::fail(
            "probe: close",
            format!(
                "{closed} after the service said the channel is gone ({message}): it expired (24 h, or with its token) or was removed"
            ),
            "roll channels over before 24 h and before their token expires",
        ),
        Some(Notice::Maintenance) => Check::warn(
            "probe: close",
            format!("{closed} after socket_closing: a maintenance close"),
            "open a new socket to the same connectUri when socket_closing arrives",
        ),
        None => match api.channel_exists(channel).await {
            Ok(true) => Check::fail(
                "probe: close",
                format!(
                    "{closed} while the channel still exists: another socket connected to the same channel (a channel takes one socket; the newest wins)"
                ),
                "make sure only one process dials each connectUri: no second instance, health check or reconnect loop on the same channel",
            ),
            Ok(false) => Check::fail(
                "probe: close",
                format!(
                    "{closed} and the channel no longer exists: it was evicted or expired without notice"
                ),
                "keep fewer than 20 channels per OAuth client and roll them over before they expire",
            ),
            Err(e) => Check::fail(
                "probe: close",
                format!("{closed}; the channel could not be checked: {e}"),
                "run the doctor again",
            ),
        },
    };
    checks.push(check);
    checks
}
