//! HTTP proxies, for REST and WebSockets alike, chosen as curl chooses them: `--proxy URL`
//! for everything, else `https_proxy`/`HTTPS_PROXY` for https and wss, `http_proxy`
//! (lowercase only, as curl) for http and ws, then `ALL_PROXY`/`all_proxy`; `NO_PROXY`/
//! `no_proxy` lists hosts and domains to reach directly (`*` for all). A WebSocket goes
//! through the proxy with `CONNECT host:port`; basic credentials come from the proxy
//! URL's user info (the password may instead be in `HOLDLINE_PROXY_PASSWORD`). The proxy's
//! refusals (407, 403, 502, ...) are errors that name the proxy and what to do.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Secret;

/// Longest proxy response head read before giving up on it.
const MAX_HEAD: usize = 16 * 1024;

/// Which proxy to use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// From the environment, as curl reads it.
    #[default]
    Environment,
    /// This proxy for everything (`NO_PROXY` still applies).
    Url(String),
    /// None at all, whatever the environment says.
    Direct,
}

/// One HTTP proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<Secret>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self})")
    }
}

/// `http://host:port`, with the user but never the password.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(user) => write!(f, "http://{user}@{}:{}", self.host, self.port),
            None => write!(f, "http://{}:{}", self.host, self.port),
        }
    }
}

/// A proxy could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The proxy URL cannot be used.
    #[error("proxy {url:?}: {why}")]
    Invalid {
        /// The URL as given (credentials removed).
        url: String,
        /// What is wrong.
        why: String,
    },
    /// No TCP connection to the proxy.
    #[error(
        "the proxy {proxy} cannot be reached ({detail}); check its address, or unset the proxy if this network needs none"
    )]
    Unreachable {
        /// The proxy.
        proxy: String,
        /// What the connect said.
        detail: String,
    },
    /// 407 (some proxies say 401): the proxy wants credentials, or other ones.
    #[error(
        "the proxy {proxy} wants credentials ({status} {reason}): give them, or the right ones, in the proxy URL (http://user:password@host:port, or the password in HOLDLINE_PROXY_PASSWORD)"
    )]
    AuthRequired {
        /// The proxy.
        proxy: String,
        /// 407, or 401.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The proxy refused the tunnel or could not open it.
    #[error("the proxy {proxy} did not open a tunnel to {target} ({status} {reason}){}", hint(*.status))]
    Refused {
        /// The proxy.
        proxy: String,
        /// Where the tunnel was to go.
        target: String,
        /// The proxy's status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The proxy answered something that is not HTTP.
    #[error("the proxy {proxy} gave an unreadable answer to CONNECT: {detail}")]
    Garbled {
        /// The proxy.
        proxy: String,
        /// What was wrong.
        detail: String,
    },
}

fn hint(status: u16) -> &'static str {
    match status {
        403 => {
            ": its rules forbid this host or port; ask for the streaming and API hosts (port 443) to be allowed"
        }
        502..=504 => {
            ": it could not reach the host; check the host name and that the proxy itself can get out"
        }
        _ => "",
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port]` (or `host:port`); the port defaults to
    /// 1080, as curl's.
    pub fn parse(text: &str) -> Result<Proxy, ProxyError> {
        let invalid = |why: &str| ProxyError::Invalid {
            url: redact(text),
            why: why.to_owned(),
        };
        let rest = match text.split_once("://") {
            Some(("http" | "HTTP", rest)) => rest,
            Some((scheme, _)) => {
                return Err(invalid(&format!(
                    "only http:// proxies are supported, not {scheme}://"
                )));
            }
            None => text,
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((auth, hostport)) => (Some(auth), hostport),
            None => (None, authority),
        };
        let port_of = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| invalid("the port is not a number"))
        };
        let (host, port) = match hostport.strip_prefix('[') {
            // [v6] or [v6]:port; the brackets stay, for the address.
            Some(v6) => {
                let (addr, rest) = v6.split_once(']').ok_or_else(|| invalid("an unclosed ["))?;
                let port = rest.strip_prefix(':').map(port_of).transpose()?;
                (format!("[{addr}]"), port.unwrap_or(1080))
            }
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), port_of(p)?),
                None => (hostport.to_owned(), 1080),
            },
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let (user, password) = match auth {
            Some(auth) => {
                let (u, p) = auth
                    .split_once(':')
                    .map_or((auth, None), |(u, p)| (u, Some(p)));
                let password = p
                    .map(percent_decode)
                    .or_else(|| std::env::var("HOLDLINE_PROXY_PASSWORD").ok())
                    .map(Secret::new);
                (Some(percent_decode(u)), password)
            }
            None => (None, None),
        };
        Ok(Proxy {
            host,
            port,
            user,
            password,
        })
    }

    /// The proxy's address for a TCP connect.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The proxy as a URL with its credentials, for the HTTP client.
    fn url_with_credentials(&self) -> String {
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => format!(
                "http://{}:{}@{}:{}",
                percent_encode(u),
                percent_encode(p.expose()),
                self.host,
                self.port
            ),
            (Some(u), None) => format!("http://{}@{}:{}", percent_encode(u), self.host, self.port),
            _ => format!("http://{}:{}", self.host, self.port),
        }
    }

    fn authorization(&self) -> Option<String> {
        let user = self.user.as_deref()?;
        let password = self.password.as_ref().map_or("", |p| p.expose());
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {token}"))
    }

    /// A TCP connection to `host:port` through the proxy (`CONNECT`), within `timeout`.
    pub async fn tunnel(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpStream, ProxyError> {
        match tokio::time::timeout(timeout, self.open(host, port)).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::Unreachable {
                proxy: self.to_string(),
                detail: format!("no tunnel within {timeout:?}"),
            }),
        }
    }

    async fn open(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let mut tcp =
            TcpStream::connect(self.address())
                .await
                .map_err(|e| ProxyError::Unreachable {
                    proxy: self.to_string(),
                    detail: e.to_string(),
                })?;
        let target = format!("{host}:{port}");
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = self.authorization() {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        let garbled = |detail: String| ProxyError::Garbled {
            proxy: self.to_string(),
            detail,
        };
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| garbled(e.to_string()))?;
        let head = read_head(&mut tcp).await.map_err(garbled)?;
        let (status, reason) = status_line(&head).ok_or_else(|| {
            garbled(format!(
                "{:?}",
                String::from_utf8_lossy(&head[..head.len().min(80)])
            ))
        })?;
        match status {
            200..=299 => Ok(tcp),
            401 | 407 => Err(ProxyError::AuthRequired {
                proxy: self.to_string(),
                status,
                reason,
            }),
            _ => Err(ProxyError::Refused {
                proxy: self.to_string(),
                target,
                status,
                reason,
            }),
        }
    }
}

/// Reads the proxy's response head byte by byte, so nothing of the tunnel is taken.
async fn read_head(tcp: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(format!("more than {MAX_HEAD} bytes of headers"));
        }
        match tcp.read(&mut byte).await {
            Ok(0) => return Err("the proxy closed the connection".to_owned()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(head)
}

/// `HTTP/1.1 407 Proxy Authentication Required` → (407, "Proxy Authentication Required").
fn status_line(head: &[u8]) -> Option<(u16, String)> {
    let line = head.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((status, parts.next().unwrap_or_default().to_owned()))
}

/// The proxies in force: one for everything, or by scheme; and the hosts reached directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRules {
    everything: Option<Proxy>,
    https: Option<Proxy>,
    http: Option<Proxy>,
    all: Option<Proxy>,
    no_proxy: Vec<String>,
}

impl ProxyRules {
    /// The rules a setting gives, reading the environment as curl does.
    pub fn new(setting: &ProxySetting) -> Result<ProxyRules, ProxyError> {
        Self::with_env(setting, |name| std::env::var(name).ok())
    }

    /// Like [`ProxyRules::new`] with the environment given (for tests).
    pub fn with_env(
        setting: &ProxySetting,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ProxyRules, ProxyError> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
        };
        let parse = |v: Option<String>| v.as_deref().map(Proxy::parse).transpose();
        let no_proxy = var(&["no_proxy", "NO_PROXY"])
            .map(|v| {
                v.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Ok(match setting {
            ProxySetting::Direct => ProxyRules::default(),
            ProxySetting::Url(url) => ProxyRules {
                everything: Some(Proxy::parse(url)?),
                no_proxy,
                ..ProxyRules::default()
            },
            ProxySetting::Environment => ProxyRules {
                everything: None,
                https: parse(var(&["https_proxy", "HTTPS_PROXY"]))?,
                // Only lowercase, as curl: HTTP_PROXY can be set by a web request's
                // `Proxy:` header in CGI environments.
                http: parse(var(&["http_proxy"]))?,
                all: parse(var(&["all_proxy", "ALL_PROXY"]))?,
                no_proxy,
            },
        })
    }

    /// The proxy for a URL of `scheme` (http, https, ws, wss) to `host`, if any.
    pub fn for_url(&self, scheme: &str, host: &str) -> Option<&Proxy> {
        if self.bypass(host) {
            return None;
        }
        if let Some(p) = &self.everything {
            return Some(p);
        }
        let by_scheme = match scheme {
            "https" | "wss" => self.https.as_ref(),
            "http" | "ws" => self.http.as_ref(),
            _ => None,
        };
        by_scheme.or(self.all.as_ref())
    }

    /// True when `NO_PROXY` says to reach `host` directly.
    fn bypass(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.no_proxy.iter().any(|entry| {
            let entry = entry.split(':').next().unwrap_or_default();
            let entry = entry.trim_start_matches('.');
            entry == "*" || host == entry || host.ends_with(&format!(".{entry}"))
        })
    }

    /// True when some URL would go through a proxy.
    pub fn any(&self) -> bool {
        self.everything.is_some()
            || self.https.is_some()
            || self.http.is_some()
            || self.all.is_some()
    }

    /// The rules as reqwest's proxy, so REST takes the same way as the sockets.
    pub fn for_reqwest(&self) -> reqwest::Proxy {
        let rules = self.clone();
        reqwest::Proxy::custom(move |url| {
            let host = url.host_str()?;
            rules
                .for_url(url.scheme(), host)
                .and_then(|p| reqwest::Url::parse(&p.url_with_credentials()).ok())
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A proxy URL with any password removed, for messages.
fn redact(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &text[s + 3..at];
            let user = auth.split(':').next().unwrap_or_default();
            format!("{}{user}:[redacted]{}", &text[..s + 3], &text[at..])
        }
        (None, Some(at)) => {
            let user = text[..at].split(':').next().unwrap_or_default();
            format!("{user}:[redacted]{}", &text[at..])
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
