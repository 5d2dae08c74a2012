//! Every notable happening in one place: each function logs one named event (the `event`
//! field, stable for filtering JSON logs) at the level the logging rule gives it, and
//! moves the counters `/metrics` serves. Call sites say what happened; this module says
//! how it is reported.
//!
//! The rule: ERROR when events were (or may have been) lost or an operator must act; WARN
//! when holdline is working around something; INFO for the life of channels and sockets;
//! DEBUG for detail.

use std::time::Duration;

use crate::stream::event::Gap;
use crate::telemetry::stats::{Cause, Stats};

/// A window in which a shard's events could not have been received.
pub fn gap(stats: &Stats, gap: &Gap) {
    let width = gap.to.duration_since(gap.from).unwrap_or_default();
    stats.gap(width);
    let seconds = to_the_millisecond(width);
    tracing::error!(
        event = "gap",
        topics = gap.topics.len(),
        seconds,
        reason = %gap.reason,
        "gap: events in this window could not be received"
    );
}

/// Seconds to the millisecond: what matters in a gap's width; more digits only look like
/// noise in the log.
fn to_the_millisecond(width: Duration) -> f64 {
    (width.as_secs_f64() * 1000.0).round() / 1000.0
}

/// A slot is receiving again after losing its socket.
pub fn reconnected(stats: &Stats, cause: Cause, shard: usize, slot: usize) {
    stats.reconnect(cause);
    tracing::info!(
        event = "reconnected",
        cause = cause.label(),
        shard,
        slot,
        "receiving again"
    );
}

/// A socket ended other than by holdline's own choice.
pub fn socket_ended(stats: &Stats, channel: &str, why: &dyn std::fmt::Display) {
    Stats::bump(&stats.socket_ends_unplanned);
    tracing::warn!(event = "socket_ended", channel, %why, "socket ended");
}

/// A socket ended as holdline planned: replaced at a rollover or a maintenance hand-over.
pub fn socket_replaced(stats: &Stats, channel: &str, why: &dyn std::fmt::Display) {
    Stats::bump(&stats.socket_ends_planned);
    tracing::info!(event = "socket_replaced", channel, %why, "socket closed as planned");
}

/// The service took a channel away (eviction, revoked token, gone).
pub fn channel_lost(channel: Option<&str>, cause: Cause, why: &str) {
    tracing::warn!(
        event = "channel_lost",
        channel = channel.unwrap_or("-"),
        cause = cause.label(),
        %why,
        "channel lost; replacing it"
    );
}

/// A maintenance notice arrived; a second socket takes over (the slot tells the story at
/// INFO as a state change).
pub fn socket_closing(stats: &Stats, channel: &str) {
    Stats::bump(&stats.socket_closings);
    tracing::debug!(event = "socket_closing", channel, "maintenance announced");
}

/// A channel was replaced before it or its token expired.
pub fn rollover(stats: &Stats, shard: usize, slot: usize) {
    Stats::bump(&stats.rollovers);
    tracing::debug!(
        event = "rollover",
        shard,
        slot,
        "rolled over to a fresh channel"
    );
}

/// A frame that was not notification JSON; skipped.
pub fn malformed_frame(stats: &Stats, channel: &str, bytes: usize, error: &dyn std::fmt::Display) {
    Stats::bump(&stats.malformed);
    tracing::warn!(event = "malformed_frame", channel, bytes, %error, "malformed frame skipped");
}

/// A message over the size limit: it is lost and its socket abandoned.
pub fn oversized_message(
    stats: &Stats,
    channel: &str,
    detail: &dyn std::fmt::Display,
    limit: usize,
) {
    Stats::bump(&stats.oversized);
    tracing::error!(
        event = "oversized_message",
        channel,
        %detail,
        limit,
        "message over the size limit; socket abandoned"
    );
}

/// A frame of a shape holdline does not know; skipped.
pub fn unknown_frame(stats: &Stats, channel: &str) {
    Stats::bump(&stats.unknown);
    tracing::debug!(
        event = "unknown_frame",
        channel,
        "frame of unknown shape skipped"
    );
}

/// A REST call answered 429; waiting as told.
pub fn rate_limited(stats: Option<&Stats>, what: &str, wait: Duration) {
    if let Some(stats) = stats {
        stats.rate_limited(wait);
    }
    tracing::warn!(
        event = "rate_limited",
        what,
        wait_s = wait.as_secs_f64(),
        "rate limited (429); waiting as told"
    );
}

/// A REST call failed in a way worth retrying.
pub fn rest_retry(what: &str, status: u16, detail: &str, wait: Duration) {
    tracing::warn!(
        event = "rest_retry",
        what,
        status,
        detail,
        retry_in_ms = wait.as_millis() as u64,
        "REST call failed; retrying"
    );
}

/// A token was fetched (the first or a renewal).
pub fn token_fetched(stats: Option<&Stats>) {
    if let Some(stats) = stats {
        Stats::bump(&stats.tokens_fetched);
    }
    tracing::debug!(event = "token_fetched", "token fetched");
}

/// A token request failed in a way worth retrying.
pub fn token_retry(url: &str, attempt: u32, detail: &str) {
    tracing::warn!(
        event = "token_retry",
        url,
        attempt,
        detail,
        "token request failed; retrying"
    );
}

/// A task of the engine panicked: a bug. Its sockets' coverage has ended (so the time it
/// was down becomes a gap) and it is restarted.
pub fn task_panicked(what: &str, panic: &str) {
    tracing::error!(
        event = "task_panicked",
        task = what,
        panic,
        "internal error: a task panicked; its coverage ended and it is being restarted (please report this)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gaps_width_is_logged_to_the_millisecond() {
        let width = Duration::from_nanos(1_944_114_631);
        assert_eq!(to_the_millisecond(width).to_string(), "1.944");
        assert_eq!(
            to_the_millisecond(Duration::from_millis(500)).to_string(),
            "0.5"
        );
    }
}
