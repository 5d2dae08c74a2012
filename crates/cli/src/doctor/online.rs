//! Checks against the service (a region, or `--api-base` such as the simulator): the
//! login host's DNS/TCP/TLS, the token, the OAuth client's channel budget, the topics'
//! permissions, and the live probe. The probe channel's subscriptions are removed at the end.

use std::sync::Arc;
use std::time::Duration;

use holdline_client::proxy::{ProxyError, ProxyRules};
use holdline_client::rest::api::{Api, ApiError};
use holdline_client::rest::auth::{AuthError, ClientProblem, TokenSource};
use holdline_client::{CHANNEL_BUDGET, Credentials, Endpoints, Resolve, Timings};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::check::{Check, Report};

/// What the online checks need.
pub struct Online {
    /// Where the service is.
    pub endpoints: Endpoints,
    /// The OAuth client.
    pub credentials: Credentials,
    /// Extra PEM roots.
    pub tls: Arc<rustls::ClientConfig>,
    /// The proxies in force.
    pub proxy: ProxyRules,
    /// Resolver overrides.
    pub resolve: Vec<Resolve>,
    /// Topics to try.
    pub topics: Vec<String>,
    /// How long to hold the probe socket.
    pub hold: Duration,
    /// Probe even when the client is at its channel budget (evicts one of its channels).
    pub force_probe: bool,
}

/// Runs the online checks into `report`.
pub async fn run(o: Online, report: &mut Report) {
    let login = o.endpoints.login_base();
    let reachable = reach(&login, o.tls.clone(), &o.proxy, &o.resolve).await;
    let ok = reachable.status != super::check::Status::Fail;
    report.push(reachable);
    if !ok {
        return;
    }
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured((*o.tls).clone())
        .proxy(o.proxy.for_reqwest());
    for r in &o.resolve {
        builder = builder.resolve(&r.host, std::net::SocketAddr::new(r.addr, r.port));
    }
    let http = match builder.build() {
        Ok(http) => http,
        Err(e) => return report.push(Check::fail("http", e.to_string(), "report this as a bug")),
    };
    let timings = Timings {
        request_timeout: Duration::from_secs(15),
        ..Timings::default()
    };
    let auth = TokenSource::new(http.clone(), &o.endpoints, o.credentials.clone(), timings);
    let started = Instant::now();
    match auth.token().await {
        Ok(token) => report.push(Check::pass(
            "token",
            format!(
                "client-credentials token for {} in {} ms, valid for {}",
                o.credentials.client_id,
                started.elapsed().as_millis(),
                humantime::format_duration(Duration::from_secs(
                    (token.expires - token.issued).as_secs()
                ))
            ),
        )),
        Err(e) => return report.push(token_failure(&e, &o.endpoints)),
    }
    let api = Api::new(http, o.endpoints.api_base(), auth, timings);
    let held = match api.list_channels(true).await {
        Ok(list) => list.len(),
        Err(e) => return report.push(api_failure("channel budget", &e)),
    };
    let budget = budget(held);
    let full = held >= CHANNEL_BUDGET;
    report.push(budget);
    if full && !o.force_probe {
        report.push(Check::skipped(
            "probe",
            "creating a probe channel would evict one of this client's 20 channels",
            "free a channel, or --force-probe to run it anyway",
        ));
        return;
    }
    probe(&api, &o, report).await;
}

async fn probe(api: &Api, o: &Online, report: &mut Report) {
    let channel = match api.create_channel().await {
        Ok((channel, _)) => channel,
        Err(e) => return report.push(api_failure("probe channel", &e)),
    };
    report.push(Check::info(
        "probe channel",
        format!("{} ({})", channel.id, channel.connect_uri),
    ));
    if !o.topics.is_empty() {
        match api.set_subscriptions(&channel.id, &o.topics).await {
            Ok(result) => {
                for rejected in &result.rejected {
                    report.push(Check::fail(
                        "topic permission",
                        format!("{} was rejected: the OAuth client lacks {}", rejected.topic, rejected.missing_permissions.join(", ")),
                        "add those permissions to a role of the OAuth client (Admin > OAuth > Roles)",
                    ));
                }
                if !result.permitted.is_empty() {
                    report.push(Check::pass(
                        "topic permission",
                        format!("{} topic(s) subscribed", result.permitted.len()),
                    ));
                }
            }
            Err(e) => report.push(api_failure("subscribe", &e)),
        }
    }
    let checks = super::probe::run(
        api,
        &channel.id,
        &channel.connect_uri,
        o.hold,
        o.tls.clone(),
        &o.proxy,
        &o.resolve,
    )
    .await;
    for check in checks {
        report.push(check);
    }
    if let Err(e) = api.clear_subscriptions(&channel.id).await {
        tracing::debug!(error = %e, "could not remove the probe channel's subscriptions");
    }
}

fn budget(held: usize) -> Check {
    let detail = format!("this OAuth client holds {held} of {CHANNEL_BUDGET} channels");
    let why = "creating more evicts the least recently used ones, live ones included: a classic cause of sockets that die";
    if held >= CHANNEL_BUDGET {
        Check::fail(
            "channel budget",
            format!("{detail}: {why}"),
            "stop creating a channel per (re)connect; reuse channels and let old ones expire",
        )
    } else if held + 5 >= CHANNEL_BUDGET {
        Check::warn(
            "channel budget",
            format!("{detail}, close to the limit; {why}"),
            "find what creates them (GET /api/v2/notifications/channels?includechannels=oauthclient) and reuse channels",
        )
    } else {
        Check::pass("channel budget", detail)
    }
}

fn token_failure(e: &AuthError, endpoints: &Endpoints) -> Check {
    let (detail, fix) = match e {
        AuthError::InvalidClient {
            problem: ClientProblem::UnknownClient,
            client_id,
            ..
        } => (
            format!(
                "client {client_id:?} not found at {endpoints}: the client most likely belongs to another region (or the id is mistyped, or the client was deleted)"
            ),
            "set --region to your org's region (Admin > Organization Settings) and check the client id",
        ),
        AuthError::InvalidClient {
            problem: ClientProblem::WrongSecret,
            client_id,
            ..
        } => (
            format!("client {client_id:?} exists but authentication failed: the secret is wrong"),
            "copy the secret again or regenerate it (Admin > OAuth > the client)",
        ),
        AuthError::InvalidClient {
            problem: ClientProblem::Other(text),
            ..
        } => (
            format!("the OAuth client was refused: {text}"),
            "use a client-credentials client of this region",
        ),
        AuthError::Tls { .. } => (
            e.to_string(),
            "pass your proxy's root certificate with --ca-file",
        ),
        AuthError::Refused { .. } => (
            e.to_string(),
            "use the client-credentials grant with HTTP Basic client authentication",
        ),
        AuthError::Unavailable { .. } => (
            e.to_string(),
            "check the network path to the login host and try again",
        ),
    };
    Check::fail("token", detail, fix)
}

fn api_failure(name: &str, e: &ApiError) -> Check {
    let fix = match e {
        ApiError::BadRequest { .. } => {
            "fix the request named above (for a topic: use one from GET /api/v2/notifications/availabletopics)"
        }
        ApiError::Forbidden { .. } => "add the missing permission to the OAuth client's role",
        _ => "check the network path to the API host and try again",
    };
    Check::fail(name, e.to_string(), fix)
}

/// DNS, TCP and (for https) TLS timings to the login host.
async fn reach(
    base: &str,
    tls: Arc<rustls::ClientConfig>,
    proxy: &ProxyRules,
    resolve: &[Resolve],
) -> Check {
    const NAME: &str = "login host";
    let https = base.starts_with("https://");
    let authority = base
        .split_once("://")
        .map_or(base, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (
            h.trim_matches(['[', ']']).to_owned(),
            p.parse().unwrap_or(443),
        ),
        _ => (authority.clone(), if https { 443 } else { 80 }),
    };
    let fix = format!(
        "check DNS, proxy and firewall rules for {host}:{port} (and that the region is right)"
    );
    if let Some(p) = proxy.for_url(if https { "https" } else { "http" }, &host) {
        let t0 = Instant::now();
        let target = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        return match p.tunnel(&target, port, Duration::from_secs(10)).await {
            Ok(tcp) => {
                let detail = format!(
                    "{host}:{port} reachable through the proxy {p}: tunnel in {} ms",
                    t0.elapsed().as_millis()
                );
                tls_over(tcp, &host, https, tls, detail).await
            }
            Err(e) => proxy_hop_failure(&e, &host, port),
        };
    }
    let t0 = Instant::now();
    let overridden = Resolve::find(resolve, &host, port);
    let addrs: Vec<_> = match overridden {
        Some(addr) => vec![addr],
        None => match tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                return Check::fail(NAME, format!("DNS lookup of {host} failed: {e}"), fix);
            }
            Err(_) => return Check::fail(NAME, format!("DNS lookup of {host} timed out"), fix),
        },
    };
    let dns = t0.elapsed();
    let Some(addr) = addrs.first().copied() else {
        return Check::fail(NAME, format!("{host} has no address"), fix);
    };
    let t1 = Instant::now();
    let tcp = match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Check::fail(NAME, format!("TCP connect to {addr} failed: {e}"), fix),
        Err(_) => return Check::fail(NAME, format!("TCP connect to {addr} timed out"), fix),
    };
    let tcp_time = t1.elapsed();
    let dns = match overridden {
        Some(addr) => format!("{addr} by --resolve"),
        None => format!("DNS {} ms", dns.as_millis()),
    };
    let detail = format!("{host} reachable: {dns}, TCP {} ms", tcp_time.as_millis());
    tls_over(tcp, &host, https, tls, detail).await
}

/// Names the hop of a proxied path that failed: you to the proxy, or the proxy to the host.
fn proxy_hop_failure(e: &ProxyError, host: &str, port: u16) -> Check {
    const NAME: &str = "login host";
    let (hop, fix) = match e {
        ProxyError::Unreachable { .. } => (
            "hop 1 of 2 (this machine → the proxy) failed",
            "check the proxy's address (--proxy, HTTPS_PROXY) and that it runs; set --proxy none if this network needs none".to_owned(),
        ),
        ProxyError::AuthRequired { .. } => (
            "hop 1 of 2 (this machine → the proxy) was refused for lack of credentials",
            "put the proxy's credentials in its URL, http://user:password@host:port (or the password in HOLDLINE_PROXY_PASSWORD)".to_owned(),
        ),
        ProxyError::Refused { .. } | ProxyError::Garbled { .. } | ProxyError::Invalid { .. } => (
            "hop 2 of 2 (the proxy → the host) failed",
            format!("ask for {host}:{port} (and the streaming host) to be allowed through the proxy"),
        ),
    };
    Check::fail(NAME, format!("{hop}: {e}"), fix)
}

/// TLS over an open connection when the base is https; the check says how it went.
async fn tls_over(
    tcp: TcpStream,
    host: &str,
    https: bool,
    tls: Arc<rustls::ClientConfig>,
    mut detail: String,
) -> Check {
    const NAME: &str = "login host";
    let host = host.to_owned();
    if https {
        let t2 = Instant::now();
        let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
            Ok(name) => name,
            Err(e) => {
                return Check::fail(
                    NAME,
                    format!("{host} is not a valid TLS name: {e}"),
                    "check the host name",
                );
            }
        };
        match tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
        {
            Ok(_) => detail.push_str(&format!(", TLS {} ms", t2.elapsed().as_millis())),
            Err(e) => {
                return Check::fail(
                    NAME,
                    format!("TLS handshake with {host} failed: {e}"),
                    "if a proxy inspects TLS, pass its root certificate with --ca-file",
                );
            }
        }
    }
    Check::pass(NAME, detail)
}
