//! The supervisor: shards topics into channels (`plan`), keeps the OAuth client's
//! channel budget, runs the redundant slots of every shard and watches every task.

pub(crate) mod client;
pub mod plan;
