//! One WebSocket to one `connectUri`: the frame reader (`wire`, `readahead`), the
//! liveness rule (`liveness`) and the task that owns the socket (`session`), which
//! reports what only the socket can see on its own clock.

pub mod liveness;
mod readahead;
pub(crate) mod session;
mod spent;
mod wire;
