//! Checks that need no network: the region or host, the WebSocket URL a client dials, the
//! keep-alive it sends, topic names, and how a fixed drop time lines up with keep-alive
//! and heartbeat periods (reference §1.3, §3, §5).

use std::time::Duration;

use holdline_proto::{ClientFrame, Region};

use super::check::Check;

/// The server heartbeat period the service uses today (about 30 s).
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The region or host a user gave.
pub fn region(given: &str) -> Check {
    match Region::parse(given) {
        Ok(r) => Check::pass(
            "region",
            format!(
                "{} — REST api.{d}, tokens login.{d}, sockets streaming.{d}",
                r.key,
                d = r.domain
            ),
        ),
        Err(e) => {
            let fix = match &e {
                holdline_proto::RegionError::Unknown { suggestions, .. }
                    if !suggestions.is_empty() =>
                {
                    format!(
                        "use --region {} (the region your org lives in: Admin > Organization Settings)",
                        suggestions[0].key
                    )
                }
                _ => {
                    "set --region to your org's region, e.g. eu-west-1 or mypurecloud.ie".to_owned()
                }
            };
            Check::fail("region", e.to_string(), fix)
        }
    }
}

/// Splits `scheme://host[:port]/path?query` without a URL crate.
fn parts(url: &str) -> Option<(&str, &str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path_query) = rest
        .find('/')
        .map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next().unwrap_or(host);
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    Some((scheme, host, path, query))
}

/// The WebSocket URL a user's client dials.
pub fn websocket_url(url: &str) -> Check {
    const NAME: &str = "websocket url";
    let dial = "create a channel with POST https://api.<domain>/api/v2/notifications/channels and dial its connectUri exactly as returned";
    let Some((scheme, host, path, query)) = parts(url.trim()) else {
        return Check::fail(NAME, format!("{url:?} is not a URL"), dial);
    };
    let host = host.to_ascii_lowercase();
    if scheme != "wss" && scheme != "ws" {
        return Check::fail(
            NAME,
            format!("{url} is not a WebSocket URL (wss://…)"),
            dial,
        );
    }
    if query
        .split('&')
        .any(|p| p.starts_with("access_token=") || p.starts_with("token="))
    {
        return Check::fail(
            NAME,
            "the notification socket takes no token: the channel id in the connectUri is the credential (tokens go only on REST calls)",
            dial,
        );
    }
    let local = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    let domain = host.split_once('.').map_or(host.as_str(), |(_, d)| d);
    if host.starts_with("api.") || host.starts_with("login.") {
        let region = Region::parse(&host)
            .map(|r| format!(" (region {})", r.key))
            .unwrap_or_default();
        let dial = format!(
            "create a channel with POST https://api.{domain}/api/v2/notifications/channels and dial its connectUri exactly as returned"
        );
        return Check::fail(
            NAME,
            format!(
                "no WebSocket is served on {host}{region}; {path} is not a notification endpoint. The only notification \
                 socket is the connectUri returned by POST /api/v2/notifications/channels (today wss://streaming.{domain}/channels/<id>). \
                 A made-up URL is refused at the handshake, so a socket that opens and then drops at a fixed time points at \
                 the client's keep-alive rather than the URL"
            ),
            dial,
        );
    }
    if !local && Region::parse(&host).is_err() && !host.contains("carrier-pigeon") {
        let suggestion = Region::parse(&host)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Check::fail(
            NAME,
            format!("{host} is not a Genesys Cloud host: {suggestion}"),
            dial,
        );
    }
    if host.contains("carrier-pigeon") {
        return Check::warn(
            NAME,
            "an old connectUri form (carrier-pigeon hosts); socket hosts change, so a hard-coded URL breaks",
            "never store or build the URL: use the connectUri of a channel created now",
        );
    }
    if path.starts_with("/channels/") && path.len() > "/channels/".len() {
        return Check::pass(
            NAME,
            "has the shape of a connectUri; make sure it is the one returned for a channel you created (channels live 24 h and die with their token) and that no other process dials it (one socket per channel)",
        );
    }
    Check::fail(
        NAME,
        format!("{path:?} is not a channel path (/channels/<channel id>)"),
        dial,
    )
}

/// The keep-alive message a user's client sends.
pub fn keepalive(text: &str) -> Check {
    const NAME: &str = "keepalive";
    match ClientFrame::parse(text.trim()) {
        Ok(ClientFrame::Ping) => Check::pass(
            NAME,
            r#"{"message":"ping"} is the documented health check; the service answers {"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#,
        ),
        _ => Check::fail(
            NAME,
            format!(
                "{} is not a message the service knows, so it never answers it. Only {{\"message\":\"ping\"}} gets a reply (a \
                 channel.metadata pong). The server sends its own heartbeat, {{\"topicName\":\"channel.metadata\",\"eventBody\":{{\"message\":\"WebSocket Heartbeat\"}}}}, \
                 about every 30 s. A client that waits for a reply to its keep-alive times out",
                text.trim()
            ),
            "send {\"message\":\"ping\"} if you want a health check, treat every inbound frame (heartbeats included) as proof of life, and give up on a socket only after about 65 s of silence",
        ),
    }
}

/// How a fixed drop time lines up with the client's keep-alive period and the heartbeat.
pub fn drop_timing(drops_after: Duration, keepalive_every: Option<Duration>) -> Check {
    const NAME: &str = "drop timing";
    let close = |a: Duration, b: Duration| {
        a.as_secs_f64() > 0.0
            && (a.as_secs_f64() - b.as_secs_f64()).abs() <= 0.1 * b.as_secs_f64().max(1.0)
    };
    let after = humantime::format_duration(drops_after);
    if let Some(every) = keepalive_every {
        for n in 2..=3u32 {
            if close(drops_after, every * n) {
                return Check::fail(
                    NAME,
                    format!(
                        "the drop at {after} is exactly {n} keep-alive periods of {}: the signature of a client-side watchdog \
                         that waits for replies to keep-alives the service never answers",
                        humantime::format_duration(every)
                    ),
                    "drive the watchdog from any inbound frame (server heartbeats arrive about every 30 s), not from replies to your keep-alive",
                );
            }
        }
    }
    if close(drops_after, HEARTBEAT) {
        return Check::fail(
            NAME,
            format!(
                "the drop at {after} matches the first server heartbeat (about 30 s after connecting): a client that treats a \
                 channel.metadata frame, or any frame it does not expect, as an error closes then"
            ),
            "accept channel.metadata frames (heartbeats and pongs) and ignore frames you do not know",
        );
    }
    if drops_after >= Duration::from_secs(23 * 3600) {
        return Check::warn(
            NAME,
            format!("a drop after {after} is the 24 h channel lifetime (or the token's)"),
            "roll over to a new channel (and token) before 24 h; holdline listen does this without a gap",
        );
    }
    Check::info(
        NAME,
        format!(
            "a drop after {after} matches no fixed period of the service; run the online probe to see the close"
        ),
    )
}

/// Topic names.
pub fn topics(names: &[String]) -> Vec<Check> {
    names
        .iter()
        .map(|name| match holdline_proto::topic::expand(name) {
            Ok(parts) if parts.len() > 1 => Check::pass(
                "topic",
                format!("{name} (combined: {} topics)", parts.len()),
            ),
            Ok(_) => Check::pass("topic", name.clone()),
            Err(e) => Check::fail(
                "topic",
                e.to_string(),
                "use a topic from GET /api/v2/notifications/availabletopics with real ids",
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;

    #[test]
    fn made_up_hosts_and_endpoints_are_named() {
        assert_eq!(region("api.eu.mypurecloud.com").status, Status::Fail);
        assert!(
            region("api.eu.mypurecloud.com")
                .fix
                .unwrap()
                .contains("eu-west-1")
        );
        assert_eq!(region("mypurecloud.ie").status, Status::Pass);
        let c = websocket_url("wss://api.mypurecloud.com/v2/analytics/events");
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("connectUri") && c.fix.unwrap().contains("connectUri"));
        let c =
            websocket_url("wss://api.mypurecloud.com/api/v2/notifications/stream?access_token=x");
        assert!(c.detail.contains("takes no token"), "{}", c.detail);
        assert_eq!(
            websocket_url("wss://streaming.mypurecloud.ie/channels/streaming-0-abc").status,
            Status::Pass
        );
        assert_eq!(
            websocket_url("wss://api.us.genesyscloud.com/x").status,
            Status::Fail
        );
        assert_eq!(
            websocket_url("wss://carrier-pigeon.us-east-1.mypurecloud.com/v1/channels/x").status,
            Status::Warn
        );
        assert_eq!(
            websocket_url("https://streaming.mypurecloud.ie/channels/x").status,
            Status::Fail
        );
    }

    #[test]
    fn only_the_documented_ping_is_a_keepalive() {
        assert_eq!(keepalive(r#"{"message":"ping"}"#).status, Status::Pass);
        let c = keepalive(r#"{"type": "keepalive"}"#);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("WebSocket Heartbeat") && c.detail.contains("30 s"));
    }

    #[test]
    fn drop_times_are_matched_to_their_cause() {
        let s = Duration::from_secs;
        assert!(
            drop_timing(s(30), Some(s(15)))
                .detail
                .contains("2 keep-alive periods")
        );
        assert!(
            drop_timing(s(36), Some(s(12)))
                .detail
                .contains("3 keep-alive periods")
        );
        assert!(
            drop_timing(s(30), None)
                .detail
                .contains("first server heartbeat")
        );
        assert_eq!(drop_timing(s(86_400), None).status, Status::Warn);
        assert_eq!(drop_timing(s(47), None).status, Status::Info);
    }

    #[test]
    fn bad_topics_get_suggestions() {
        let checks = topics(&["v2.conversations.0e185c02-aca1-4a72-82ea-2e78684e2c89".to_owned()]);
        assert_eq!(checks[0].status, Status::Fail);
        assert!(checks[0].detail.contains("v2.users.{userId}.conversations"));
    }
}
