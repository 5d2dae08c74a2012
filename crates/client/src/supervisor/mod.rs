//! The supervisor: shards topics into channels (`plan`), keeps the OAuth client's
//! channel budget as the service counts it (`budget`), runs the redundant slots of every
//! shard and sees every task end (`slots`); `client` is the public face over it.

pub mod budget;
pub(crate) mod client;
pub mod plan;
pub(crate) mod slots;
