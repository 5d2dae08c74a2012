//! The simulator contract (reference §7), one module per area, every test over real
//! sockets against a simulator bound to 127.0.0.1:0.

mod common;

mod analytics;
mod channels;
mod faults;
mod oauth;
mod org;
mod orgs;
mod rest;
mod subscriptions;
mod traffic;
mod unknowns;
mod websocket;
