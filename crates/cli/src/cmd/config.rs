//! Configuration as data: a `listen` config file holds the same settings as the flags,
//! under the flags' names, and is read into the same structs ([`ServiceArgs`] and
//! [`ListenArgs`]); flags and environment are laid over it. Every problem is a
//! [`ConfigError`] variant, and every one of them exits with the usage code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use holdline_proto::filter::FilterError;

use super::listen::ListenArgs;
use super::orgs::OrgTable;
use super::service::ServiceArgs;

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {} is not valid: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("no OAuth client id: set GENESYSCLOUD_OAUTHCLIENT_ID or --client-id")]
    NoClientId,
    #[error("no OAuth client secret: set GENESYSCLOUD_OAUTHCLIENT_SECRET (or --client-secret)")]
    NoClientSecret,
    #[error(
        "no region: set GENESYSCLOUD_REGION or --region (e.g. eu-west-1 or mypurecloud.ie), or --api-base for the simulator"
    )]
    NoRegion,
    #[error("{0:?} is not an http(s) URL")]
    NotHttp(String),
    #[error(transparent)]
    Region(#[from] holdline_proto::RegionError),
    #[error("--redundancy must be at least 1")]
    NoRedundancy,
    #[error("the {0} must be longer than 0")]
    Zero(&'static str),
    #[error(
        "--watchdog {watchdog:?} is shorter than --ping-interval {ping:?} + --pong-timeout {pong:?}: a quiet socket \
         hears nothing but the answers to its pings, so every healthy socket would be declared dead \
         between two pings. Make the watchdog at least {:?} (the default is 66s: 2.2 server heartbeats)",
        *ping + *pong
    )]
    WatchdogTooShort {
        watchdog: Duration,
        ping: Duration,
        pong: Duration,
    },
    #[error("--sink needs --spool DIR: sinks deliver from the durable spool")]
    SinkWithoutSpool,
    #[error("--spool-max-bytes must be at least 65536")]
    SpoolTooSmall,
    #[error("--backfill-share {0} is not a share: give 0.01 to 1 (0.25 is the default)")]
    BackfillShare(f64),
    #[error(transparent)]
    Sink(#[from] holdline_sinks::SinkUrlError),
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// Reads a `listen` config file into the settings it gives.
pub fn read(path: &Path) -> Result<(ServiceArgs, ListenArgs), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "config",
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    // The message and where, never the line itself: it may hold a secret.
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let line = text[..at].matches('\n').count() + 1;
        invalid(format!("line {line}: {}", e.message().trim()))
    })?;
    // The keys of the service settings go to their struct, the rest to listen's; each
    // refuses keys it does not know.
    let service: toml::Table = ServiceArgs::KEYS
        .iter()
        .filter_map(|k| table.remove(*k).map(|v| ((*k).to_owned(), v)))
        .collect();
    let service: ServiceArgs = service.try_into().map_err(|e| invalid(e.to_string()))?;
    // `org` is the records' label; `[[org]]` tables are orgs of their own.
    let orgs = match table.remove("org") {
        Some(toml::Value::Array(tables)) => tables
            .into_iter()
            .map(|t| t.try_into::<OrgTable>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("[[org]]: {e}")))?,
        Some(label) => {
            table.insert("org".to_owned(), label);
            Vec::new()
        }
        None => Vec::new(),
    };
    super::orgs::check_names(orgs.iter().map(|o| o.name.as_str()), path)?;
    // `cluster = { url, node, lease, channel_audit }` is the flags `--cluster`, `--node`,
    // `--cluster-lease`, `--channel-audit`.
    if let Some(toml::Value::Table(mut cluster)) = table.remove("cluster") {
        for (key, flat) in [
            ("url", "cluster"),
            ("node", "node"),
            ("lease", "cluster_lease"),
            ("channel_audit", "channel_audit"),
        ] {
            if let Some(value) = cluster.remove(key) {
                table.insert(flat.to_owned(), value);
            }
        }
        if let Some(unknown) = cluster.keys().next() {
            return Err(invalid(format!(
                "cluster: unknown key {unknown:?}; the keys are url, node, lease and channel_audit"
            )));
        }
    }
    let mut listen: ListenArgs = table.try_into().map_err(|e| invalid(e.to_string()))?;
    listen.orgs = orgs;
    Ok((service, listen))
}

/// A file of topics, one per line (`#` starts a comment).
pub fn read_topics(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "topics file",
        path: path.to_owned(),
        source,
    })?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Serde helpers for the config file's typed values.
pub mod de {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// A duration written as text: `90s`, `15m`, `1h 30m`.
    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::super::duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
    }

    /// `[[sink]]` tables, each with a `url`.
    pub fn sinks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            url: String,
        }
        Ok(Vec::<Table>::deserialize(d)?
            .into_iter()
            .map(|t| t.url)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Result<(ServiceArgs, ListenArgs), ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("listen.toml");
        std::fs::write(&path, text).unwrap();
        read(&path)
    }

    #[test]
    fn every_service_key_is_a_field_and_a_flag() {
        let text: String = ServiceArgs::KEYS
            .iter()
            .map(|k| match *k {
                "resolve" => "resolve = [\"h:443:127.0.0.1\"]\n".to_owned(),
                k => format!("{k} = \"x\"\n"),
            })
            .collect();
        let (service, _) = file(&text).unwrap();
        assert_eq!(service.region.as_deref(), Some("x"));
        assert_eq!(service.resolve.len(), 1);
        let cmd = <ServiceArgs as clap::Args>::augment_args(clap::Command::new("x"));
        let mut flags: Vec<&str> = cmd.get_arguments().map(|a| a.get_id().as_str()).collect();
        let mut keys = ServiceArgs::KEYS.to_vec();
        flags.sort_unstable();
        keys.sort_unstable();
        assert_eq!(flags, keys);
    }

    #[test]
    fn typos_durations_and_sink_tables_are_checked() {
        let err = file("pign_interval = \"5s\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { message, .. } if message.contains("pign_interval")),
            "{err}"
        );
        let err = file("watchdog = \"soon\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { message, .. } if message.contains("soon")),
            "{err}"
        );
        let err = file("[[sink]]\nuri = \"stdout\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
        let (_, listen) =
            file("watchdog = \"90s\"\n[[sink]]\nurl = \"stdout\"\n[[sink]]\nurl = \"-\"\n")
                .unwrap();
        assert_eq!(listen.watchdog, Some(Duration::from_secs(90)));
        assert_eq!(listen.sinks, ["stdout", "-"]);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let (service, _) =
            file("client_secret = \"hunter2\"\nproxy = \"http://alice:s3cret@p:3128\"\n").unwrap();
        let shown = format!("{service:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert_eq!(service.client_secret.unwrap().expose(), "hunter2");
    }

    #[test]
    fn errors_in_the_file_never_repeat_a_secret() {
        for text in [
            "client_secret = hunter2\n",
            "client_secret = 12345678\n",
            "region = \"x\"\nclient_secret = \"hunter2\n",
        ] {
            let err = file(text).unwrap_err().to_string();
            assert!(
                !err.contains("hunter2") && !err.contains("12345678"),
                "{err}"
            );
            assert!(err.contains("line") || err.contains("string"), "{err}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = read(Path::new("/nonexistent/listen.toml")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Read { what: "config", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("/nonexistent/listen.toml"));
    }
}
