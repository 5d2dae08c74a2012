//! The live probe: connect to a fresh channel's `connectUri`, time the heartbeats and
//! pings on a schedule while holding the socket, name a socket that goes silent
//! (half-open), and explain any close by its notice, code and reason: eviction, revoked
//! token, expiry, maintenance, a second socket on the channel, an idle timeout, or a drop
//! on the way.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use holdline_client::Resolve;
use holdline_client::proxy::ProxyRules;
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
    pongs: usize,
    /// The ping waiting for its pong, sent then.
    ping_out: Option<Instant>,
    last_rx: Option<Instant>,
    /// The socket went silent: how long after connecting, and how it showed.
    stall: Option<(Duration, String)>,
    notice: Option<Notice>,
    end: Option<End>,
}

/// How often the probe pings while it holds: a few times per hold, at most every 10 s
/// (holdline listen's default is 30 s; the probe wants to see a stall sooner).
fn ping_period(hold: Duration) -> Duration {
    (hold / 8).clamp(Duration::from_millis(250), Duration::from_secs(10))
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
    proxy: &ProxyRules,
    resolve: &[Resolve],
) -> Vec<Check> {
    let started = Instant::now();
    let connect = dial(connect_uri, tls, proxy, resolve);
    let mut ws = match tokio::time::timeout(Duration::from_secs(15), connect).await {
        Ok(Ok(ws)) => ws,
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
    let mut seen = Seen::default();
    let deadline = connected + hold;
    let every = ping_period(hold);
    let mut next_ping = connected;
    loop {
        if Instant::now() >= next_ping {
            if let Some(sent) = seen.ping_out {
                // The last ping is still unanswered a whole period later.
                let silent = seen.last_rx.unwrap_or(connected).elapsed();
                let waited = sent.elapsed().as_secs_f64();
                let how = if silent < every {
                    format!(
                        "the ping sent {waited:.1} s ago is unanswered though the service's frames still arrive: what you send does not reach it"
                    )
                } else {
                    format!(
                        "no pong to the ping sent {waited:.1} s ago and no frame at all for {:.1} s",
                        silent.as_secs_f64()
                    )
                };
                seen.stall = Some((connected.elapsed(), how));
                break;
            }
            let _ = ws.send(Message::text(ClientFrame::Ping.to_json())).await;
            seen.ping_out = Some(Instant::now());
            next_ping = Instant::now() + every;
        }
        let msg = match timeout_at(next_ping.min(deadline), ws.next()).await {
            Err(_) if Instant::now() >= deadline => break,
            Err(_) => continue,
            Ok(msg) => msg,
        };
        if matches!(msg, Some(Ok(_))) {
            seen.last_rx = Some(Instant::now());
        }
        match msg {
            Some(Ok(Message::Text(text))) => note(&mut seen, text.as_str(), connected),
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

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The probe's socket, through the proxy when one is in force for its host.
async fn dial(
    uri: &str,
    tls: Arc<rustls::ClientConfig>,
    proxy: &ProxyRules,
    resolve: &[Resolve],
) -> Result<Ws, String> {
    let connector = Some(Connector::Rustls(tls));
    let parsed: reqwest::Url = uri.parse().map_err(|e| format!("{e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let port = match (parsed.port(), parsed.scheme()) {
        (Some(p), _) => p,
        (None, "ws") => 80,
        (None, _) => 443,
    };
    let tcp = match proxy.for_url(parsed.scheme(), host) {
        Some(p) => p
            .tunnel(host, port, Duration::from_secs(15))
            .await
            .map_err(|e| e.to_string())?,
        None => match Resolve::find(resolve, host.trim_matches(['[', ']']), port) {
            Some(addr) => tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect to {addr} (by --resolve): {e}"))?,
            None => {
                return connect_async_tls_with_config(uri, None, true, connector)
                    .await
                    .map(|(ws, _)| ws)
                    .map_err(|e| e.to_string());
            }
        },
    };
    tokio_tungstenite::client_async_tls_with_config(uri, tcp, None, connector)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

fn note(seen: &mut Seen, text: &str, connected: Instant) {
    match ServerFrame::parse(text) {
        Ok(ServerFrame::Heartbeat) => {
            seen.first_heartbeat.get_or_insert(connected.elapsed());
            seen.heartbeats.push(Instant::now());
        }
        Ok(ServerFrame::Pong) => {
            if let Some(sent) = seen.ping_out.take() {
                seen.pong.get_or_insert(sent.elapsed());
                seen.pongs += 1;
            }
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
        Some(rtt) => Check::pass("probe: ping", format!(r#"{{"message":"ping"}} answered with a pong in {} ms ({} of the pings sent)"#, rtt.as_millis(), seen.pongs)),
        None if seen.end.is_some() => Check::info("probe: ping", "the socket closed before the pong"),
        None => Check::fail(
            "probe: ping",
            "no pong to {\"message\":\"ping\"}: the socket is not passing frames",
            "check for a proxy that buffers or drops WebSocket frames between you and the streaming host",
        ),
    });
    if let Some((after, how)) = &seen.stall {
        checks.push(Check::fail(
            "probe: stall",
            format!(
                "the socket went silent {:.1} s into the hold: {how}. It is half-open: the connection looks open, but nothing passes (a NAT, proxy or load balancer dropped it without telling either end, or the network broke)",
                after.as_secs_f64()
            ),
            "check idle timeouts of proxies, NAT and load balancers on the way; a client must ping and give up on a socket whose pong does not come (holdline listen does, and reconnects)",
        ));
    }
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
    if seen.stall.is_some() {
        return checks;
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
        None => match close_kind(code, &reason) {
            CloseKind::Idle => Check::fail(
                "probe: close",
                format!(
                    "{closed}: the socket was closed as idle, by the service or by a proxy or load balancer on the way (the service itself sends a heartbeat about every 30 s)"
                ),
                "send {\"message\":\"ping\"} about every 30 s (holdline listen does); if closes continue, check the idle timeouts of proxies and load balancers",
            ),
            CloseKind::GoingAway => Check::warn(
                "probe: close",
                format!(
                    "{closed}: the service is going away (maintenance or a drain) without a socket_closing notice first"
                ),
                "reconnect to the same connectUri at once; holdline listen does, and reports any window it missed as a gap",
            ),
            CloseKind::Refused(what) => Check::fail(
                "probe: close",
                format!("{closed}: {what}"),
                "see what your client sends; a client should send only {\"message\":\"ping\"} and subscribe messages",
            ),
            CloseKind::ServerError => Check::warn(
                "probe: close",
                format!("{closed}: the service had an internal error"),
                "reconnect with backoff; if it persists, check the Genesys Cloud status page",
            ),
            CloseKind::Normal => second_socket_or_gone(api, channel, &closed).await,
        },
    };
    checks.push(check);
    checks
}

/// What a close without a notice before it says by its code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CloseKind {
    /// 1000 (or no code): a normal close, which the service uses when a second socket
    /// takes the channel.
    Normal,
    /// "idle timeout" (seen with 1001).
    Idle,
    /// 1001 otherwise.
    GoingAway,
    /// 1003, 1007, 1008, 1009: the service refused what was sent.
    Refused(&'static str),
    /// 1011.
    ServerError,
}

fn close_kind(code: u16, reason: &str) -> CloseKind {
    if reason.to_ascii_lowercase().contains("idle") {
        return CloseKind::Idle;
    }
    match code {
        1001 => CloseKind::GoingAway,
        1003 => CloseKind::Refused("the service refused a frame of a kind it does not accept"),
        1007 => CloseKind::Refused("the service refused a frame that was not valid UTF-8"),
        1008 => CloseKind::Refused("the service refused a message against its policy"),
        1009 => CloseKind::Refused("the service refused a message that was too big"),
        1011 => CloseKind::ServerError,
        _ => CloseKind::Normal,
    }
}

/// A plain close with the channel alive means a second socket took it; with the channel
/// gone, it was evicted or expired without notice.
async fn second_socket_or_gone(api: &Api, channel: &str, closed: &str) -> Check {
    match api.channel_exists(channel).await {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_told_apart_by_code_and_reason() {
        assert_eq!(close_kind(1001, "idle timeout"), CloseKind::Idle);
        assert_eq!(close_kind(1001, ""), CloseKind::GoingAway);
        assert_eq!(
            close_kind(1000, "another socket connected"),
            CloseKind::Normal
        );
        assert_eq!(close_kind(1005, ""), CloseKind::Normal);
        assert_eq!(close_kind(1011, "oops"), CloseKind::ServerError);
        assert!(matches!(close_kind(1009, ""), CloseKind::Refused(_)));
    }

    #[test]
    fn the_probe_pings_a_few_times_per_hold() {
        assert_eq!(ping_period(Duration::from_secs(8)), Duration::from_secs(1));
        assert_eq!(
            ping_period(Duration::from_secs(300)),
            Duration::from_secs(10)
        );
        assert_eq!(
            ping_period(Duration::from_millis(100)),
            Duration::from_millis(250)
        );
    }
}
