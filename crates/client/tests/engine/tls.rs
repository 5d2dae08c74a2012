//! The whole flow over https and wss against the simulator's self-signed certificate.

use std::time::SystemTime;

use holdline_client::rest::auth::AuthError;
use holdline_client::{Client, ClientError, Stats};
use holdline_sim::SimConfig;
use holdline_sim::faults::Fault;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_runs_over_tls_with_the_certificate_trusted() {
    let sim = sim(SimConfig {
        tls: true,
        rate: 150.0,
        ..SimConfig::default()
    })
    .await;
    assert!(sim.url().starts_with("https://127.0.0.1:"), "{}", sim.url());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("sim.pem");
    std::fs::write(&ca, sim.cert_pem().unwrap()).unwrap();
    let topics = org_topics(&sim);
    let mut cfg = config(&sim, topics.clone());
    cfg.ca_file = Some(ca);
    let client = Collector::start(cfg).await;
    let live = client.live_since().await;
    let stats = client.handle.stats().clone();
    client
        .until("events over wss", |_| Stats::get(&stats.emitted) > 30)
        .await;
    // A drop over TLS is recovered like any other.
    sim.core()
        .apply_fault(&Fault::Drop { channel: None })
        .unwrap();
    client
        .until("recovery over wss", |s| !s.gaps.is_empty())
        .await;
    let before = Stats::get(&stats.emitted);
    client
        .until("events after recovery", |_| {
            Stats::get(&stats.emitted) > before + 30
        })
        .await;
    let stopped = SystemTime::now();
    let seen = client.stop().await;
    let verdict = check(&ledger(&sim), &topics, &seen, window(live, stopped));
    assert!(verdict.missing.is_empty(), "{:?}", verdict.missing);
    assert!(verdict.emitted > 10, "{verdict:?}");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_clear_fatal_error() {
    let sim = sim(SimConfig {
        tls: true,
        ..SimConfig::default()
    })
    .await;
    let err = Client::start(config(&sim, org_topics(&sim)))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, ClientError::Auth(AuthError::Tls { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("--ca-file"), "{err}");
}

#[tokio::test]
async fn clients_with_the_same_roots_share_one_tls_configuration() {
    use holdline_client::tls::client_config;
    use std::sync::Arc;
    let a = client_config(None).unwrap();
    assert!(
        Arc::ptr_eq(&a, &client_config(None).unwrap()),
        "one root store for every client of the process"
    );
    let one = sim(SimConfig {
        tls: true,
        ..SimConfig::default()
    })
    .await;
    let two = sim(SimConfig {
        tls: true,
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, one.cert_pem().unwrap()).unwrap();
    let with_ca = client_config(Some(&path)).unwrap();
    assert!(!Arc::ptr_eq(&a, &with_ca), "a CA file gives its own");
    assert!(Arc::ptr_eq(&with_ca, &client_config(Some(&path)).unwrap()));
    // The file changed: built again.
    std::fs::write(&path, two.cert_pem().unwrap()).unwrap();
    let changed = client_config(Some(&path)).unwrap();
    assert!(!Arc::ptr_eq(&with_ca, &changed));
    std::fs::write(&path, "not a certificate").unwrap();
    assert!(client_config(Some(&path)).is_err());
}
