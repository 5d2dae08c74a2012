//! WebSocket frames of the notification socket. Every frame is one UTF-8 text message
//! holding one JSON object. [`server`] is what the service sends (heartbeats, pongs,
//! notifications, system notices, subscribe replies, channel-gone); [`client`] is what a
//! client may send (ping, subscribe, unsubscribe). Both directions parse and encode, so the
//! simulator and the client share one definition of the wire.

mod client;
mod lenient;
mod scan;
mod server;

pub use client::{ClientFrame, ClientFrameError};
pub use server::{
    FrameError, HEARTBEAT_MESSAGE, Notification, PONG_MESSAGE, Parsed, RawJson, ServerFrame,
    SubscribeReply, SystemNotice, SystemNoticeBody, notification_json,
};

/// Appends `text` to `out` as a JSON string literal (quotes and escapes included).
pub(crate) fn push_json_str(out: &mut String, text: &str) {
    // Serialising a &str to JSON cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| String::from("\"\"")));
}
