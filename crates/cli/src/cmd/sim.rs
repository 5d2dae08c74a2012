//! `holdline sim`: the simulator as a standalone server. Prints
//! `holdline-sim listening on http://127.0.0.1:PORT` as its first line, then one line per
//! published event unless `--quiet`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use holdline_sim::generator::describe;
use holdline_sim::{ClientSpec, SimConfig, Simulator};
use tokio::net::TcpListener;

use super::{UsageError, duration, interrupted};

/// `holdline sim` flags. Flags override the config file.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 7411)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// TOML file with any simulator setting (docs/sim.toml); flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the service's behaviour is unknown: "kind" (every unknown at its kindest
    /// reading) or "realistic" (at its unkindest); see docs/simulator.md. A config file
    /// may name one too (`preset = "realistic"`); its own settings win over the preset.
    #[arg(long, value_parser = ["kind", "realistic"])]
    preset: Option<String>,
    /// Accepted OAuth client as id:secret or id:secret:perm1,perm2 (repeatable; default
    /// holdline-demo:holdline-demo with every permission).
    #[arg(long = "client", value_parser = ClientSpec::parse)]
    clients: Vec<ClientSpec>,
    /// Heartbeat period.
    #[arg(long, value_parser = duration)]
    heartbeat: Option<Duration>,
    /// Channel lifetime (reset by re-subscribing).
    #[arg(long, value_parser = duration)]
    channel_ttl: Option<Duration>,
    /// Access token lifetime.
    #[arg(long, value_parser = duration)]
    token_ttl: Option<Duration>,
    /// Time between socket_closing and the close.
    #[arg(long, value_parser = duration)]
    closing_grace: Option<Duration>,
    /// Events per second from the contact centre (0 = none).
    #[arg(long)]
    rate: Option<f64>,
    /// Seed of the org and the event sequence.
    #[arg(long)]
    seed: Option<u64>,
    /// Queues in the simulated org.
    #[arg(long)]
    queues: Option<usize>,
    /// Agents in the simulated org.
    #[arg(long)]
    agents: Option<usize>,
    /// Orgs to serve on the one port, org-1 … org-N, each with its own queues, agents,
    /// traffic (--rate each), ledger (/sim/ledger?org=org-N) and OAuth client
    /// org-N:secret-N; --client adds clients to org-1.
    #[arg(long)]
    orgs: Option<usize>,
    /// REST calls per token per minute before 429 (0 = unlimited).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Serve HTTPS/WSS with a self-signed certificate generated at start.
    #[arg(long)]
    tls: bool,
    /// Where to write that certificate (PEM) for clients to trust.
    #[arg(long, requires = "tls")]
    tls_cert: Option<PathBuf>,
    /// Answer as login.DOMAIN, api.DOMAIN and streaming.DOMAIN (by Host header and TLS
    /// name), like the real service's hosts; reach them with `listen --resolve`.
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Do not print published events.
    #[arg(long, short)]
    quiet: bool,
}

impl SimArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read simulator config {}", path.display()))?;
                from_toml(&text, self.preset.as_deref()).map_err(|e| {
                    UsageError(format!(
                        "simulator config {} is not valid: {e}",
                        path.display()
                    ))
                })?
            }
            None => {
                let mut config = cli_defaults();
                if let Some(name) = &self.preset {
                    config.unknowns = SimConfig::preset(name).map_err(UsageError)?.unknowns;
                }
                config
            }
        };
        if !self.clients.is_empty() {
            config.clients = self.clients.clone();
        }
        let set = |slot: &mut Duration, value: Option<Duration>| {
            if let Some(v) = value {
                *slot = v;
            }
        };
        set(&mut config.heartbeat, self.heartbeat);
        set(&mut config.channel_ttl, self.channel_ttl);
        set(&mut config.token_ttl, self.token_ttl);
        set(&mut config.closing_grace, self.closing_grace);
        config.rate = self.rate.unwrap_or(config.rate);
        config.seed = self.seed.unwrap_or(config.seed);
        config.queues = self.queues.unwrap_or(config.queues);
        config.agents = self.agents.unwrap_or(config.agents);
        config.orgs = self.orgs.unwrap_or(config.orgs);
        if config.orgs == 0 {
            return Err(UsageError("--orgs must be at least 1".into()).into());
        }
        config.rate_limit_per_minute = self.rate_limit.unwrap_or(config.rate_limit_per_minute);
        config.tls |= self.tls;
        if let Some(domain) = &self.domain {
            config.domain = Some(domain.trim_matches('.').to_ascii_lowercase());
        }
        if !(config.rate >= 0.0 && config.rate.is_finite()) {
            return Err(UsageError(format!(
                "--rate must be 0 or more events per second, not {}",
                config.rate
            ))
            .into());
        }
        if config.heartbeat.is_zero() {
            return Err(UsageError("--heartbeat must be longer than 0".into()).into());
        }
        Ok(config)
    }
}

/// A config file over the defaults of its preset: `--preset` if given, else the file's
/// `preset` key, else `kind`. The file's own settings win over the preset's.
pub fn from_toml(text: &str, preset: Option<&str>) -> Result<SimConfig, String> {
    let mut file: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let named = match file.remove("preset") {
        Some(toml::Value::String(name)) => Some(name),
        Some(other) => return Err(format!("preset must be a name, not {other}")),
        None => None,
    };
    let base = SimConfig::preset(preset.or(named.as_deref()).unwrap_or("kind"))?;
    let mut merged = toml::Table::try_from(&base).map_err(|e| e.to_string())?;
    merge(&mut merged, file);
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())
}

/// Writes `over` into `base`, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => merge(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// What `holdline sim` runs without a config file: the library's defaults, with a gentle
/// stream of traffic so that there is something to see.
fn cli_defaults() -> SimConfig {
    SimConfig {
        rate: 5.0,
        ..SimConfig::default()
    }
}

/// `sim --help` with the default of every setting, taken from [`cli_defaults`].
pub fn help_with_defaults(cmd: clap::Command) -> clap::Command {
    let c = cli_defaults();
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let defaults = [
        ("heartbeat", d(c.heartbeat)),
        ("channel_ttl", d(c.channel_ttl)),
        ("token_ttl", d(c.token_ttl)),
        ("closing_grace", d(c.closing_grace)),
        ("rate", c.rate.to_string()),
        ("seed", c.seed.to_string()),
        ("queues", c.queues.to_string()),
        ("agents", c.agents.to_string()),
        ("rate_limit", c.rate_limit_per_minute.to_string()),
    ];
    let mut cmd = cmd;
    for (id, default) in defaults {
        cmd = cmd.mut_arg(id, |a| {
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            a.help(format!("{help} [default: {default}]"))
        });
    }
    cmd
}

/// Runs the simulator until SIGINT/SIGTERM.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        UsageError(format!(
            "cannot listen on {addr}: {e}; pick another --port (0 picks a free one)"
        ))
    })?;
    let sim = Simulator::start(listener, config)?;
    if let Some(pem) = sim.cert_pem() {
        let port = sim.url().rsplit(':').next().unwrap_or("0").to_owned();
        let path = args
            .tls_cert
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("holdline-sim-{port}.pem")));
        std::fs::write(&path, pem)
            .with_context(|| format!("cannot write the certificate to {}", path.display()))?;
        tracing::info!(cert = %path.display(), "TLS certificate written; trust it with --ca-file");
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "holdline-sim listening on {}", sim.url())
        .and_then(|()| out.flush())
        .context("writing the simulator's address to stdout")?;
    drop(out);
    tracing::info!(
        orgs = sim.cores().len(),
        clients = sim.core().config.clients.len(),
        queues = sim.core().org.queues.len(),
        agents = sim.core().org.agents.len(),
        rate = sim.core().config.rate,
        "simulator ready; token at /oauth/token, API under /api/v2, control under /sim"
    );
    if args.quiet {
        interrupted().await;
    } else {
        // Each org's events, as lines (prefixed by the org when there are several).
        let (lines, mut printed) = tokio::sync::mpsc::channel::<String>(1024);
        let many = sim.cores().len() > 1;
        for core in sim.cores() {
            let (core, lines) = (core.clone(), lines.clone());
            tokio::spawn(async move {
                let mut published = core.watch_published();
                loop {
                    match published.recv().await {
                        Ok(p) => {
                            let at = p.entry.published_at.time();
                            let org = if many {
                                format!("{}  ", core.name)
                            } else {
                                String::new()
                            };
                            let line = format!(
                                "{:02}:{:02}:{:02}.{:03}  {org}{}",
                                at.hour(),
                                at.minute(),
                                at.second(),
                                at.millisecond(),
                                describe(&core.org, &p.entry.topic, &p.body)
                            );
                            if lines.send(line).await.is_err() {
                                break;
                            }
                        }
                        // A lagging receiver just skips ahead.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(org = %core.name, skipped = n, "display fell behind");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
        drop(lines);
        loop {
            tokio::select! {
                // Stop on a signal.
                _ = interrupted() => break,
                line = printed.recv() => {
                    let Some(line) = line else { break };
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        // Whoever read stdout went away (`holdline sim | head`): stop.
                        break;
                    }
                }
            }
        }
    }
    sim.stop().await?;
    Ok(())
}

#[cfg(test)]
mod preset_tests {
    use super::*;
    use holdline_sim::{Pings, Unknowns};

    #[test]
    fn a_file_sits_over_its_preset() {
        let text = "preset = \"realistic\"\nrate = 3.0\n[unknowns]\nlatency = \"2s\"\n";
        let config = from_toml(text, None).unwrap();
        assert_eq!(config.rate, 3.0);
        assert_eq!(config.unknowns.latency, Duration::from_secs(2));
        assert_eq!(
            config.unknowns.pings,
            Pings::Strict,
            "the rest from the preset"
        );
        let kind = from_toml(text, Some("kind")).unwrap();
        assert_eq!(
            kind.unknowns.pings,
            Pings::Lenient,
            "--preset wins over the file's"
        );
        assert_eq!(from_toml("", None).unwrap().unknowns, Unknowns::default());
        assert!(
            from_toml("preset = \"harsh\"", None)
                .unwrap_err()
                .contains("realistic")
        );
        assert!(
            from_toml("[unknowns]\nlatensy = \"1s\"", None)
                .unwrap_err()
                .contains("latensy")
        );
    }
}
