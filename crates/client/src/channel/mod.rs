//! One channel's life: create, subscribe, connect, hand over, roll over, recover.

pub(crate) mod slot;
