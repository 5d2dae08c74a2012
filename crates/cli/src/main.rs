//! `holdline`: stream Genesys Cloud notifications without silent loss, diagnose dropping
//! connections, and simulate the service locally.

mod cmd;
mod doctor;
mod logging;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keep a Genesys Cloud notification stream alive and lose nothing silently.
#[derive(Debug, Parser)]
#[command(name = "holdline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text or as JSON objects (one per line); filter with RUST_LOG.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the simulated Genesys Cloud Notification Service (OAuth, REST, WebSockets,
    /// faults, ledger) on a local port.
    Sim(Box<cmd::sim::SimArgs>),
    /// Stream events as JSON lines on stdout, through every fault, with gap records.
    Listen(Box<cmd::listen::ListenArgs>),
    /// Say why a connection drops and what to change (offline checks, then a live probe).
    Doctor(Box<doctor::DoctorArgs>),
    /// Start the embedded simulator and stream its contact centre through holdline.
    Demo(cmd::demo::DemoArgs),
    /// Watch a running `holdline listen --metrics-addr`: sockets, heartbeat ages,
    /// events per second by family, reconnects and gaps.
    Top(cmd::top::TopArgs),
    /// The topic names of your org's queues and users, and the topics the service offers.
    Topics(Box<cmd::topics::TopicsArgs>),
    /// Deliver a cluster's stream to sinks (file, webhook, Redis, Kafka), one deliverer
    /// writing at a time under a fenced lease.
    Deliver(Box<cmd::deliver::DeliverArgs>),
}

/// Parses the command line; `--help` shows each setting's default from where it lives.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::command()
        .mut_subcommand("listen", cmd::listen::help_with_defaults)
        .mut_subcommand("sim", cmd::sim::help_with_defaults);
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Exit codes (documented in the README).
pub mod exit {
    /// Anything else that went wrong.
    pub const OTHER: u8 = 1;
    /// Bad configuration or usage.
    pub const USAGE: u8 = 2;
    /// The OAuth client was refused (wrong id, secret or region).
    pub const AUTH: u8 = 3;
    /// The OAuth client lacks a permission.
    pub const PERMISSION: u8 = 4;
    /// `doctor`: nothing wrong in what was checked, but checks that matter did not run.
    pub const INCOMPLETE: u8 = 5;
}

fn main() -> ExitCode {
    let cli = parse();
    let verbose = matches!(&cli.command, Command::Listen(a) if a.verbose);
    logging::init(verbose, cli.log_format);
    tune_malloc();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // `listen` writes records on the main thread; its sockets get the other cores, so the
    // two stages never fight over one (on 2 cores this measured 4-7 % more events/s, and
    // the socket tasks stop migrating between workers). TOKIO_WORKER_THREADS overrides.
    if matches!(cli.command, Command::Listen(_))
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none()
    {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        builder.worker_threads(cores.saturating_sub(1).max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("holdline: cannot start the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sim(args) => cmd::sim::run(*args).await,
            Command::Listen(args) => cmd::listen::run(*args).await,
            Command::Doctor(args) => doctor::run(*args).await,
            Command::Demo(args) => cmd::demo::run(args).await,
            Command::Top(args) => cmd::top::run(args).await,
            Command::Topics(args) => cmd::topics::run(*args).await,
            Command::Deliver(args) => cmd::deliver::run(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if err.downcast_ref::<cmd::Exit>().is_none() {
                eprintln!("holdline: {err:#}");
            }
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}

/// Lets glibc keep freed memory instead of handing it back to the kernel after every
/// burst. A socket's read buffer is replaced every ~128 KiB of frames (the old one lives on
/// in events still queued) and freed on the writer thread; with glibc's defaults the heap
/// was trimmed and faulted in again each time, and zeroing those pages took 5 % of the
/// socket thread. Keeping up to 4 MiB spare measured 6 % more events/s for 0.7 MiB of RSS.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator thresholds, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
