//! Sans-io model of the Genesys Cloud Notification Service.
//!
//! Everything here takes bytes or strings and returns values or typed errors: WebSocket
//! frames in both directions ([`frame`]), the event id shared by the simulator's ledger and
//! the client ([`event_id`]), topic names and combined topics ([`topic`]), regions and host
//! normalisation ([`region`]) and the REST bodies ([`rest`]). No sockets, no clocks, no
//! async runtime, so all of it can be unit-tested, property-tested and fuzzed.

pub mod backoff;
pub mod event_id;
pub mod exposition;
pub mod filter;
pub mod frame;
pub mod record;
pub mod region;
pub mod rest;
mod suggest;
pub mod topic;
pub mod value_hash;

pub use event_id::EventId;
pub use frame::{ClientFrame, FrameError, Notification, ServerFrame, SubscribeReply, SystemNotice};
pub use region::{Region, RegionError};
pub use topic::{Family, TopicError};
