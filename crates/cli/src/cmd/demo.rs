//! `holdline demo`: the embedded simulator on a free loopback port, and holdline
//! listening to all its queues and agents through the real client engine, printed one
//! human line per event. On a terminal a status line shows sockets, events/s, heartbeat
//! age and gaps.

use std::io::{IsTerminal, Write};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use holdline_client::{Client, ClientConfig, Credentials, Endpoints, Event, Secret, Stats};
use holdline_sim::generator::describe;
use holdline_sim::{ClientSpec, SimConfig, Simulator};
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep_until};

use super::{clock, duration, interrupted};

/// `holdline demo` flags.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Stop after this long (runs until Ctrl-C when omitted).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// Events per second from the simulated contact centre.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Seed of the simulated org and its events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let sim_config = SimConfig {
        rate: args.rate,
        seed: args.seed,
        heartbeat: Duration::from_secs(10),
        ..SimConfig::default()
    };
    let sim = Simulator::start(listener, sim_config)?;
    let org = sim.core().org.clone();
    let mut topics: Vec<String> = org
        .queues
        .iter()
        .map(|q| format!("v2.routing.queues.{}.conversations", q.id))
        .collect();
    topics.extend(
        org.agents
            .iter()
            .map(|a| format!("v2.users.{}?presence&routingStatus", a.id)),
    );
    let demo = ClientSpec::demo();
    let credentials = Credentials {
        client_id: demo.id,
        client_secret: Secret::new(demo.secret),
    };
    let endpoints = Endpoints::Custom {
        api_base: sim.url().to_owned(),
        login_base: sim.url().to_owned(),
    };
    let mut config = ClientConfig::new(endpoints, credentials, topics);
    config.redundancy = 2;
    eprintln!(
        "holdline demo: simulated Genesys Cloud at {} ({} queues, {} agents); listening to {} topics",
        sim.url(),
        org.queues.len(),
        org.agents.len(),
        config.topics.len()
    );
    let (handle, mut stream) = Client::start(config).await?;
    let status = std::io::stderr().is_terminal();
    crate::logging::STATUS_LINE.store(status, std::sync::atomic::Ordering::Relaxed);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_count = 0;
    let mut signal = pin!(interrupted());
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            // Ctrl-C or SIGTERM: close the sockets, drain, stop.
            _ = &mut signal, if !stopping => { stopping = true; handle.shutdown(); }
            // --duration reached.
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && !stopping => {
                stopping = true;
                handle.shutdown();
            }
            // Once a second, the status line (terminals only).
            _ = ticker.tick(), if status => {
                let emitted = Stats::get(&handle.stats().emitted);
                eprint!("\r\x1b[2K{}", status_line(handle.stats(), emitted - last_count));
                last_count = emitted;
            }
            // The next event from the client engine.
            item = stream.next() => match item {
                None => break Ok(()),
                Some(Ok(Event::Notification(n))) => {
                    if status { eprint!("\r\x1b[2K"); }
                    let line = format!("{}  {}", clock(n.received_at), describe(&org, n.topic(), n.body()));
                    if !print_line(&line) && !stopping {
                        // Whoever read stdout went away (`holdline demo | head`): stop.
                        stopping = true;
                        handle.shutdown();
                    }
                }
                Some(Ok(Event::Gap(g))) => {
                    let line = format!("{}  GAP {} topics {}–{}: {}", clock(g.to), g.topics.len(), clock(g.from), clock(g.to), g.reason);
                    if !print_line(&line) && !stopping {
                        stopping = true;
                        handle.shutdown();
                    }
                }
                Some(Ok(Event::State(s))) => tracing::info!(kind = ?s.kind, "{}", s.detail),
                Some(Ok(Event::Rejected(r))) => {
                    let line = format!("REJECTED {} (missing {})", r.topic, r.missing_permissions.join(", "));
                    if !print_line(&line) && !stopping {
                        stopping = true;
                        handle.shutdown();
                    }
                }
                Some(Err(e)) => break Err(e.into()),
            }
        }
    };
    crate::logging::STATUS_LINE.store(false, std::sync::atomic::Ordering::Relaxed);
    if status {
        eprintln!();
    }
    sim.stop().await?;
    result
}

/// Writes a line to stdout; false once nobody reads it any more.
fn print_line(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

fn status_line(stats: &Stats, per_sec: u64) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let hb = stats.last_heartbeat_ms.load(Ordering::Relaxed);
    let age = if hb == 0 {
        "none yet".to_owned()
    } else {
        format!("{}s ago", now_ms.saturating_sub(hb) / 1000)
    };
    format!(
        "sockets up {} · {per_sec} events/s · heartbeat {age} · gaps {} · duplicates dropped {}",
        stats.sockets_live.load(Ordering::Relaxed),
        Stats::get(&stats.gaps),
        Stats::get(&stats.duplicates)
    )
}
