//! What every command that talks to the service needs: where it is (a region, or explicit
//! bases) and who we are (a client-credentials OAuth client), from flags or the
//! environment variables Genesys' own tooling reads.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use holdline_client::proxy::{ProxyRules, ProxySetting};
use holdline_client::rest::api::Api;
use holdline_client::rest::auth::TokenSource;
use holdline_client::{Credentials, Endpoints, Resolve, Secret, Timings};
use holdline_proto::Region;

use super::UsageError;
use super::config::ConfigError;

/// Where the service is and who we are: flags of every command that talks to the
/// service, and the same keys in a `listen` config file. Secrets are [`Secret`]s, so
/// `Debug` never shows them.
#[derive(Debug, Clone, Default, Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    /// Region key, domain or URL (eu-west-1, mypurecloud.ie, https://api.mypurecloud.ie).
    #[arg(long, env = "GENESYSCLOUD_REGION")]
    pub region: Option<String>,
    /// OAuth client id (client-credentials grant).
    #[arg(long, env = "GENESYSCLOUD_OAUTHCLIENT_ID")]
    pub client_id: Option<String>,
    /// OAuth client secret (prefer the environment variable).
    #[arg(long, env = "GENESYSCLOUD_OAUTHCLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<Secret>,
    /// REST API base instead of a region (the simulator, a proxy, a private deployment).
    #[arg(long)]
    pub api_base: Option<String>,
    /// Token endpoint base (default: the API base with api. replaced by login.).
    #[arg(long)]
    pub login_base: Option<String>,
    /// Extra PEM root certificates to trust (corporate TLS proxies, the simulator's --tls).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// HTTP proxy for REST and WebSockets, http://[user[:password]@]host:port, or `none`
    /// (default: HTTPS_PROXY, http_proxy, ALL_PROXY and NO_PROXY, as curl reads them).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<Secret>,
    /// Connect to ADDRESS for HOST:PORT instead of what DNS says, as curl's --resolve
    /// (repeatable), e.g. api.example.test:443:127.0.0.1.
    #[arg(long = "resolve", value_name = "HOST:PORT:ADDRESS", value_parser = Resolve::parse)]
    #[serde(default)]
    pub resolve: Vec<Resolve>,
}

/// `--proxy`: a URL, `none` for no proxy at all, or absent for the environment's.
pub fn proxy_setting(flag: Option<&str>) -> ProxySetting {
    match flag.map(str::trim) {
        None | Some("") => ProxySetting::Environment,
        Some("none" | "direct") => ProxySetting::Direct,
        Some(url) => ProxySetting::Url(url.to_owned()),
    }
}

/// The service's endpoints from an API base (and login base), else a region.
pub fn endpoints(
    api_base: Option<String>,
    login_base: Option<String>,
    region: Option<String>,
) -> Result<Endpoints, ConfigError> {
    if let Some(api) = api_base {
        let login = login_base.unwrap_or_else(|| api.replacen("://api.", "://login.", 1));
        for url in [&api, &login] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::NotHttp(url.clone()));
            }
        }
        return Ok(Endpoints::Custom {
            api_base: api,
            login_base: login,
        });
    }
    let region = region.ok_or(ConfigError::NoRegion)?;
    Ok(Endpoints::Region(Region::parse(&region)?))
}

impl ServiceArgs {
    /// The config-file keys these settings take (the field names).
    pub const KEYS: &[&str] = &[
        "region",
        "client_id",
        "client_secret",
        "api_base",
        "login_base",
        "ca_file",
        "proxy",
        "resolve",
    ];

    /// These settings where given, else `file`'s; resolver overrides from both.
    pub fn or(self, file: ServiceArgs) -> ServiceArgs {
        let ServiceArgs {
            region,
            client_id,
            client_secret,
            api_base,
            login_base,
            ca_file,
            proxy,
            mut resolve,
        } = file;
        resolve.extend(self.resolve);
        // Where the service is comes from one source as a whole: a region given here
        // wins over the file's API base, and a file's login base never pairs with an API
        // base given here.
        let here = self.region.is_some() || self.api_base.is_some() || self.login_base.is_some();
        let (region, api_base, login_base) = match here {
            true => (self.region, self.api_base, self.login_base),
            false => (region, api_base, login_base),
        };
        ServiceArgs {
            region,
            client_id: self.client_id.or(client_id),
            client_secret: self.client_secret.or(client_secret),
            api_base,
            login_base,
            ca_file: self.ca_file.or(ca_file),
            proxy: self.proxy.or(proxy),
            resolve,
        }
    }

    /// `--proxy` as a setting.
    pub fn proxy_setting(&self) -> ProxySetting {
        proxy_setting(self.proxy.as_ref().map(Secret::expose))
    }

    /// Where the service is.
    pub fn endpoints(&self) -> Result<Endpoints, ConfigError> {
        endpoints(
            self.api_base.clone(),
            self.login_base.clone(),
            self.region.clone(),
        )
    }

    /// Who we are.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let client_id = self.client_id.clone().ok_or(ConfigError::NoClientId)?;
        let client_secret = self
            .client_secret
            .clone()
            .ok_or(ConfigError::NoClientSecret)?;
        Ok(Credentials {
            client_id,
            client_secret,
        })
    }

    /// The proxies in force.
    pub fn proxy(&self) -> Result<ProxyRules, UsageError> {
        ProxyRules::new(&self.proxy_setting()).map_err(|e| UsageError(e.to_string()))
    }

    /// The REST API as this OAuth client, with a first token fetched (so bad credentials
    /// fail here, with what to fix).
    pub async fn api(&self) -> anyhow::Result<Api> {
        let endpoints = self.endpoints()?;
        let credentials = self.credentials()?;
        let tls = holdline_client::tls::client_config(self.ca_file.as_deref())?;
        let mut builder = reqwest::Client::builder()
            .proxy(self.proxy()?.for_reqwest())
            .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
            .user_agent(concat!("holdline/", env!("CARGO_PKG_VERSION")));
        for r in &self.resolve {
            builder = builder.resolve(&r.host, std::net::SocketAddr::new(r.addr, r.port));
        }
        let http = builder.build()?;
        let timings = Timings::default();
        let auth = TokenSource::new(http.clone(), &endpoints, credentials, timings);
        auth.token()
            .await
            .map_err(holdline_client::ClientError::from)?;
        Ok(Api::new(http, endpoints.api_base(), auth, timings))
    }
}
