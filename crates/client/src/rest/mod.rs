//! The REST side: tokens (client-credentials, renewed before expiry and on 401), the
//! notifications and org calls with the one shared backoff, and topic look-ups by name.
//! Nothing here is awaited inside a control loop: the channel task runs these calls as
//! futures in flight beside its socket reports.

pub mod api;
pub mod auth;
pub use holdline_proto::backoff;
pub mod resolve;
