//! The Kafka sink's settings, read from its URL.

use std::time::Duration;

use rdkafka::config::ClientConfig;

use crate::duration_option;

/// Kafka sink settings.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// Most time a batch may take to be acknowledged.
    pub timeout: Duration,
    /// Further librdkafka properties, in order (`compression.type`, `security.protocol`, …).
    pub properties: Vec<(String, String)>,
    /// `sasl.password`, from the environment variable named by `password_env`.
    pub password: Option<String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("timeout", &self.timeout)
            .field("properties", &self.properties)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

const FORM: &str = "kafka://broker:9092/topic";

impl KafkaConfig {
    pub(crate) fn from_parts(rest: &str, params: &[(String, String)]) -> Result<Self, String> {
        let (brokers, topic) = rest
            .split_once('/')
            .filter(|(_, t)| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            })
            .ok_or_else(|| {
                format!("kafka sink needs a topic (letters, digits, '.', '_', '-'): {FORM}")
            })?;
        for broker in brokers.split(',') {
            crate::host_port(broker, 9092, FORM)?;
        }
        let mut config = KafkaConfig {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            timeout: Duration::from_secs(30),
            properties: Vec::new(),
            password: None,
        };
        let mut set = |k: &str, v: &str| config.properties.push((k.to_owned(), v.to_owned()));
        let mut timeout = None;
        let mut password = None;
        for (k, v) in params {
            match k.as_str() {
                "compression" => set("compression.type", v),
                "linger" => {
                    set("linger.ms", &duration_option(k, v)?.as_millis().to_string());
                }
                "timeout" => timeout = Some(duration_option(k, v)?),
                "security" => set("security.protocol", v),
                "sasl_mechanism" => set("sasl.mechanism", v),
                "user" => set("sasl.username", v),
                "password_env" => {
                    password = Some(std::env::var(v).map_err(|_| {
                        format!("kafka password_env={v}: set the environment variable {v} to the password")
                    })?);
                }
                other => match other.strip_prefix("kafka.") {
                    Some(property)
                        if property.contains("password") || property.contains("secret") =>
                    {
                        return Err(format!(
                            "kafka sink option {other}: keep secrets out of the URL (it is logged and shown in errors); use password_env=VARIABLE for sasl.password"
                        ));
                    }
                    Some(property) if !property.is_empty() => set(property, v),
                    _ => {
                        return Err(format!(
                            "unknown kafka sink option {other:?}; the options are compression, linger, timeout, security, sasl_mechanism, user, password_env and kafka.<librdkafka property>"
                        ));
                    }
                },
            }
        }
        if let Some(t) = timeout {
            config.timeout = t;
        }
        config.password = password;
        Ok(config)
    }

    pub(super) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", concat!("holdline/", env!("CARGO_PKG_VERSION")))
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                self.timeout.as_millis().max(1).to_string(),
            );
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        if let Some(password) = &self.password {
            c.set("sasl.password", password);
        }
        c
    }
}
