//! One channel's life: the sans-io state machine (`machine`), when to roll over
//! (`rollover`), and the task that runs the machine (`task`).

pub mod machine;
pub mod rollover;
pub mod task;
