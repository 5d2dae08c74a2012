//! `holdline`: stream Genesys Cloud notifications without silent loss, diagnose dropping
//! connections, and simulate the service locally.

mod cmd;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keep a Genesys Cloud notification stream alive and lose nothing silently.
#[derive(Debug, Parser)]
#[command(name = "holdline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the simulated Genesys Cloud Notification Service (OAuth, REST, WebSockets,
    /// faults, ledger) on a local port.
    Sim(cmd::sim::SimArgs),
    /// Start the embedded simulator and watch its contact centre, in one command.
    Demo(cmd::demo::DemoArgs),
}

/// Exit codes (documented in the README).
pub mod exit {
    /// Bad configuration or usage.
    pub const USAGE: u8 = 2;
    /// Anything else that went wrong.
    pub const OTHER: u8 = 1;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdline: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sim(args) => cmd::sim::run(args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("holdline: {err:#}");
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}
