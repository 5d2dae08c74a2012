//! Sink URLs: read with the `url` crate, so paths and options are percent-decoded
//! (`file:///var/log/my%20events.jsonl`, `user=ops%40example`), with one extension URL
//! syntax lacks: NATS and Kafka URLs may list several `host:port`s separated by commas.

use percent_encoding::percent_decode_str;

/// The forms `--sink` takes.
pub const FORMS: &str = "stdout, file:///path/events.jsonl, https://host/path, nats://host:4222/subject, redis://host:6379/stream or kafka://host:9092/topic";

/// Why a sink URL could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkUrlError {
    #[error("sink {0:?} is not a URL; use {FORMS}")]
    NotAUrl(String),
    #[error("unknown sink scheme {0:?}; use {FORMS}")]
    Scheme(String),
    #[error("put no credentials in a {scheme} sink URL; {instead}")]
    Credentials {
        scheme: String,
        instead: &'static str,
    },
    #[error("unknown {sink} sink option {option:?}; the options are {known}")]
    UnknownOption {
        sink: &'static str,
        option: String,
        known: &'static str,
    },
    #[error("this holdline was built without the kafka sink; build it with --features kafka")]
    NotBuilt,
    /// A value that does not fit, with what to write instead.
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for SinkUrlError {
    fn from(message: String) -> Self {
        SinkUrlError::Invalid(message)
    }
}

/// A sink URL taken apart and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkUrl {
    pub scheme: String,
    /// `host[:port]`, or several separated by commas; empty for `file:///…`.
    pub authority: String,
    /// The path, percent-decoded (`/subject`, `/var/log/events.jsonl`).
    pub path: String,
    /// The query's options, decoded, in order.
    pub params: Vec<(String, String)>,
    /// The URL without its query (what a webhook posts to).
    pub base: String,
}

impl SinkUrl {
    pub fn parse(text: &str) -> Result<SinkUrl, SinkUrlError> {
        let not_a_url = || SinkUrlError::NotAUrl(text.to_owned());
        let (scheme, rest) = text.split_once("://").ok_or_else(not_a_url)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.contains('@') {
            return Err(SinkUrlError::Credentials {
                scheme: scheme.to_owned(),
                instead: match scheme {
                    "nats" => {
                        "use token_env=VARIABLE, user=NAME&password_env=VARIABLE or creds=/path/file.creds"
                    }
                    "http" | "https" => "use secret_env=VARIABLE for the signing secret",
                    _ => "use user=NAME&password_env=VARIABLE",
                },
            });
        }
        // URL syntax has one host: the first stands in for all while the rest is read.
        let first = authority.split(',').next().unwrap_or_default();
        let url = url::Url::parse(&format!("{scheme}://{first}{}", &rest[end..])).map_err(|e| {
            SinkUrlError::Invalid(format!(
                "sink {scheme}://{authority}… is not a valid URL: {e}"
            ))
        })?;
        let path = percent_decode_str(url.path())
            .decode_utf8()
            .map_err(|_| {
                SinkUrlError::Invalid(format!(
                    "sink {scheme}://{authority}…: the path is not UTF-8"
                ))
            })?
            .into_owned();
        let params = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut base = url.clone();
        base.set_query(None);
        base.set_fragment(None);
        Ok(SinkUrl {
            scheme: scheme.to_owned(),
            authority: authority.to_owned(),
            path,
            params,
            base: base.to_string(),
        })
    }

    /// `authority/path`, as the sinks split it into servers and a name.
    pub fn rest(&self) -> String {
        format!("{}{}", self.authority, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_options_are_decoded() {
        let u = SinkUrl::parse("file:///var/log/my%20events.jsonl?rotate=1h&x=a%40b+c").unwrap();
        assert_eq!(u.authority, "");
        assert_eq!(u.path, "/var/log/my events.jsonl");
        assert_eq!(
            u.params,
            [("rotate".into(), "1h".into()), ("x".into(), "a@b c".into())]
        );
    }

    #[test]
    fn several_hosts_are_kept_as_written() {
        let u = SinkUrl::parse("nats://h1:4222,h2:4223/events?stream=E").unwrap();
        assert_eq!(u.rest(), "h1:4222,h2:4223/events");
        assert_eq!(u.params, [("stream".into(), "E".into())]);
    }

    #[test]
    fn the_webhook_base_has_no_query() {
        let u = SinkUrl::parse("https://hooks.example.com/in/a%2Fb?secret_env=S").unwrap();
        assert_eq!(u.base, "https://hooks.example.com/in/a%2Fb");
    }

    #[test]
    fn credentials_and_non_urls_are_refused() {
        assert!(matches!(
            SinkUrl::parse("redis://u:p@h/s"),
            Err(SinkUrlError::Credentials { .. })
        ));
        assert!(matches!(
            SinkUrl::parse("events.jsonl"),
            Err(SinkUrlError::NotAUrl(_))
        ));
        assert!(matches!(
            SinkUrl::parse("redis://h:99999/s"),
            Err(SinkUrlError::Invalid(_))
        ));
    }
}
