//! The spool's series, read from the spool at every scrape.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::Spool;

/// Adds `holdline_spool_depth`, `holdline_spool_bytes` and `holdline_spool_dropped_total`
/// for `spool` to `registry`.
pub fn register(spool: Arc<Spool>, registry: &mut Registry) {
    registry.register_collector(Box::new(Series(spool)));
}

#[derive(Debug)]
struct Series(Arc<Spool>);

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

impl Collector for Series {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let spool = &self.0;
        gauge(spool.deepest()).encode(encoder.encode_descriptor(
            "holdline_spool_depth",
            "Records in the spool not yet delivered to the slowest sink (with --spool)",
            None,
            MetricType::Gauge,
        )?)?;
        gauge(spool.held_bytes().unwrap_or(0)).encode(encoder.encode_descriptor(
            "holdline_spool_bytes",
            "Bytes of records held in the spool",
            None,
            MetricType::Gauge,
        )?)?;
        ConstCounter::new(spool.dropped()).encode(encoder.encode_descriptor(
            "holdline_spool_dropped",
            "Records dropped from a full spool after back-pressure (each reported in a gap)",
            None,
            MetricType::Counter,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Durability;

    #[test]
    fn depth_bytes_and_drops_are_read_at_each_scrape() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path(), Durability::Eventual).unwrap());
        spool.register("a").unwrap();
        spool.register("b").unwrap();
        let mut registry = Registry::default();
        register(spool.clone(), &mut registry);
        let scrape = || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out
        };
        spool.append(&[&b"12345"[..], &b"678"[..]]).unwrap();
        spool.ack("a", 2).unwrap();
        let text = scrape();
        assert!(text.contains("holdline_spool_depth 2\n"), "{text}");
        assert!(text.contains("holdline_spool_bytes 8\n"), "{text}");
        spool.drop_oldest(1).unwrap();
        let text = scrape();
        assert!(text.contains("holdline_spool_depth 1\n"), "{text}");
        assert!(text.contains("holdline_spool_dropped_total 1\n"), "{text}");
    }
}
