//! `holdline doctor`: says why a connection drops and what to change, from facts.
//!
//! Offline it checks what a user's own client does (the region or host, the WebSocket URL
//! it dials, the keep-alive it sends, how a fixed drop time lines up with the service's
//! periods, topic names, a config file). Online (a region or `--api-base`) it checks the
//! login host, the token, the client's channel budget and topic permissions, then holds a
//! probe socket and explains any close. Exit code 1 when something is wrong.

mod check;
mod offline;
mod online;
mod probe;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use holdline_client::{Credentials, Endpoints};
use holdline_proto::Region;

use crate::cmd::service::ServiceArgs;
use crate::cmd::{Exit, duration};
use check::{Check, Report};

/// `holdline doctor` flags.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// A `holdline listen` TOML config to check and take settings from.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The WebSocket URL your own client dials.
    #[arg(long)]
    url: Option<String>,
    /// The keep-alive message your client sends, e.g. '{"type":"keepalive"}'.
    #[arg(long)]
    keepalive: Option<String>,
    /// How often your client sends it.
    #[arg(long, value_parser = duration)]
    keepalive_every: Option<Duration>,
    /// When your connection drops (after connecting), if always at the same time.
    #[arg(long, value_parser = duration)]
    drops_after: Option<Duration>,
    /// Topics to check (names offline, permissions online); repeatable.
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// How long to hold the probe socket (75s sees two heartbeats).
    #[arg(long, value_parser = duration, default_value = "75s")]
    hold: Duration,
    /// Only the offline checks.
    #[arg(long)]
    offline: bool,
    /// Probe even when the client already holds 20 channels (evicts one of them).
    #[arg(long)]
    force_probe: bool,
    /// The report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the doctor; prints the report; exit code 1 when something is wrong.
pub async fn run(mut args: DoctorArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    if let Some(path) = args.config.clone() {
        // The file as `listen` reads it, with every check that needs no credentials.
        let listen = crate::cmd::listen::ListenArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        match listen
            .resolved()
            .and_then(|file| file.check().map(|()| file))
        {
            Ok(file) => {
                report.push(Check::pass(
                    "config",
                    format!("{} is valid", path.display()),
                ));
                args.service = std::mem::take(&mut args.service).or(file.service);
                args.topics.extend(file.topics);
            }
            Err(e) => report.push(Check::fail(
                "config",
                format!("{e:#}"),
                "fix the file (holdline listen --help lists the settings)",
            )),
        }
    }
    if args.service.api_base.is_none()
        && let Some(region) = &args.service.region
    {
        report.push(offline::region(region));
    }
    if let Some(url) = &args.url {
        report.push(offline::websocket_url(url));
    }
    if let Some(text) = &args.keepalive {
        report.push(offline::keepalive(text));
    }
    if let Some(after) = args.drops_after {
        report.push(offline::drop_timing(after, args.keepalive_every));
    }
    for check in offline::topics(&args.topics) {
        report.push(check);
    }
    match online_config(&args) {
        Ok(Some(online)) => online::run(online, &mut report).await,
        Ok(None) => {}
        Err((why, to_run)) => report.push(Check::skipped("online checks", why, to_run)),
    }
    if report.checks.is_empty() {
        report.push(Check::skipped(
            "offline checks",
            "nothing to check",
            "give what your client does (--url, --keepalive, --drops-after, --topic, --config) or a region",
        ));
    }
    let report = report.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    if !report.ok {
        Err(Exit(1).into())
    } else if report.incomplete {
        Err(Exit(crate::exit::INCOMPLETE).into())
    } else {
        Ok(())
    }
}

/// The online checks' settings, `Ok(None)` with `--offline`, or why they were skipped and
/// what they need.
fn online_config(args: &DoctorArgs) -> Result<Option<online::Online>, (String, String)> {
    if args.offline {
        return Ok(None);
    }
    let endpoints = match (&args.service.api_base, &args.service.region) {
        (Some(api), _) => Endpoints::Custom {
            api_base: api.clone(),
            login_base: args
                .service
                .login_base
                .clone()
                .unwrap_or_else(|| api.replacen("://api.", "://login.", 1)),
        },
        (None, Some(region)) => match Region::parse(region) {
            Ok(r) => Endpoints::Region(r),
            Err(_) => {
                return Err((
                    "the region is not valid (see above)".into(),
                    "fix the region".into(),
                ));
            }
        },
        (None, None) => {
            return Err((
                "no region: the login host, token, channel budget and a live socket were not checked".into(),
                "set GENESYSCLOUD_REGION (or --api-base); --offline runs only the offline checks".into(),
            ));
        }
    };
    let (Some(id), Some(secret)) = (&args.service.client_id, &args.service.client_secret) else {
        return Err((
            "no OAuth client: the token, channel budget, topic permissions and a live socket were not checked".into(),
            "set GENESYSCLOUD_OAUTHCLIENT_ID and GENESYSCLOUD_OAUTHCLIENT_SECRET".into(),
        ));
    };
    let tls = holdline_client::tls::client_config(args.service.ca_file.as_deref())
        .map_err(|e| (e.to_string(), "fix --ca-file".to_owned()))?;
    Ok(Some(online::Online {
        endpoints,
        credentials: Credentials {
            client_id: id.clone(),
            client_secret: secret.clone(),
        },
        tls,
        proxy: args
            .service
            .proxy()
            .map_err(|e| (e.0, "fix --proxy or the proxy variables".to_owned()))?,
        resolve: args.service.resolve.clone(),
        topics: args.topics.clone(),
        hold: args.hold,
        force_probe: args.force_probe,
    }))
}
