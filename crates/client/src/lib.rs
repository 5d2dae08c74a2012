//! holdline-client: keeps a Genesys Cloud notification stream alive and loses nothing
//! silently.
//!
//! [`Client::start`] authenticates, creates channels, subscribes topics and holds the
//! WebSockets through heartbeats, maintenance closes, channel and token expiry, evictions
//! and network faults. The [`EventStream`] yields every event once (de-duplicated by id
//! across sockets) and a [`Gap`] record for every window in which a shard of topics could
//! not have been received.
//!
//! Inside: `auth` (tokens), `api` (REST with retries), `session` (one socket, liveness in
//! `liveness`), `slot` (one channel's life), `coverage` (gaps), `dedupe`, `stream`.

pub mod api;
pub mod auth;
pub mod backoff;
mod client;
pub mod config;
mod coverage;
pub mod dedupe;
mod error;
pub mod event;
pub mod liveness;
pub mod metrics;
pub mod notable;
pub mod plan;
mod readahead;
pub mod record;
pub mod resolve;
mod session;
mod slot;
mod spent;
pub mod stats;
mod stream;
pub mod tls;
mod wire;

pub use client::{
    CHANNEL_BUDGET, Client, ClientHandle, ROLLOVER_SPARES, channels_needed, validate_topics,
};
pub use config::{ClientConfig, Credentials, Endpoints, Secret, Timings};
pub use error::ClientError;
pub use event::{Event, Gap, Notification, StateChange, StateKind};
pub use stats::Stats;
pub use stream::EventStream;
