//! `holdline demo`: starts the embedded simulator on a free loopback port and shows its
//! contact centre, one line per event.

use std::time::Duration;

use clap::Args;
use holdline_sim::generator::describe;
use holdline_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;

use super::{duration, interrupted};

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
    let config = SimConfig {
        rate: args.rate,
        seed: args.seed,
        ..SimConfig::default()
    };
    let sim = Simulator::start(listener, config)?;
    let core = sim.core().clone();
    eprintln!(
        "holdline demo: simulated Genesys Cloud at {} with {} queues and {} agents",
        sim.url(),
        core.org.queues.len(),
        core.org.agents.len()
    );
    let mut published = core.watch_published();
    let deadline = tokio::time::sleep(args.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            // --duration elapsed.
            _ = &mut deadline => break,
            // Ctrl-C or SIGTERM.
            _ = interrupted() => break,
            // One line per event; a lagging receiver skips ahead.
            msg = published.recv() => match msg {
                Ok(p) => {
                    let at = p.entry.published_at.time();
                    println!(
                        "{:02}:{:02}:{:02}.{:03}  {}",
                        at.hour(), at.minute(), at.second(), at.millisecond(),
                        describe(&core.org, &p.entry.topic, &p.body)
                    );
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    sim.stop().await?;
    Ok(())
}
