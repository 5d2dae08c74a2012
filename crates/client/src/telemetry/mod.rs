//! The engine's own telemetry: counters (`stats`), their Prometheus rendering and
//! readiness (`metrics`), and the named events that log and count in one place
//! (`notable`).

pub mod metrics;
pub mod notable;
pub mod stats;
