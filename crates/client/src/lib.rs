//! holdline-client: keeps a Genesys Cloud notification stream alive and loses nothing
//! silently.
//!
//! [`Client::start`] authenticates, creates channels, subscribes topics and holds the
//! WebSockets through heartbeats, maintenance closes, channel and token expiry, evictions
//! and network faults. The [`EventStream`] yields every event once (de-duplicated by id
//! across sockets) and a [`Gap`] record for every window in which a shard of topics could
//! not have been received.
//!
//! One folder per concept: `rest` (tokens and REST calls), `socket` (one WebSocket and
//! its liveness), `channel` (one channel's life), `supervisor` (shards, the channel
//! budget, the tasks), `stream` (coverage and gaps, de-duplication, the records) and
//! `telemetry` (counters, metrics, named events).

pub mod backfill;
mod channel;
pub mod config;
mod error;
pub mod proxy;
pub mod rest;
mod socket;
pub mod stream;
mod supervisor;
pub mod telemetry;
pub mod tls;

pub use config::{
    ClientConfig, Credentials, DEFAULT_REDUNDANCY, Endpoints, Resolve, Secret, Timings,
};
pub use error::ClientError;
pub use stream::EventStream;
pub use stream::coverage::ShardCover;
pub use stream::event::{Event, Gap, Notification, Rejection, StateChange, StateKind};
pub use supervisor::budget::{ChannelShare, DEFAULT_AUDIT, SharedChannels};
pub use supervisor::client::{
    CHANNEL_BUDGET, Client, ClientHandle, ROLLOVER_SPARES, channels_needed, validate_topics,
};
pub use supervisor::plan::single_topics;
pub use telemetry::stats::Stats;
