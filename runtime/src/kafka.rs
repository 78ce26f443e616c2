//! Kafka client settings shared by every producer and consumer: brokers, TLS, SASL
//! and raw librdkafka properties, with the delivery guarantees Vigil relies on.

use crate::secret::{SecretError, SecretRef};
use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The SASL mechanisms librdkafka is built with here.
const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Why Kafka settings cannot be used; each names its field.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSettingsError {
    #[error("`kafka.brokers` must list at least one broker")]
    NoBrokers,
    #[error("`kafka.topic_prefix`: {0}")]
    TopicPrefix(String),
    #[error("`kafka.sasl.mechanism` is `{0}`; use one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")]
    SaslMechanism(String),
    #[error("`kafka.sasl.password`: {0}")]
    SaslPassword(#[source] SecretError),
    #[error("`kafka.{field}` must be between 1 and {max}, not {value}")]
    ProducerQueue {
        field: &'static str,
        value: u64,
        max: u64,
    },
}

/// How to reach the Kafka cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic prefix: topics are named `<prefix>.<dataset>.<kind>`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// TLS to the brokers; omitted means plaintext (or SASL over plaintext).
    pub tls: Option<TlsSettings>,
    /// SASL authentication.
    pub sasl: Option<SaslSettings>,
    /// Extra librdkafka properties for producers and consumers, applied last
    /// (for tuning; not for secrets).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Extra librdkafka properties for producers only.
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
    /// Most KiB of messages a producer holds before Kafka acknowledged them
    /// (librdkafka's `queue.buffering.max.kbytes`); a full queue makes
    /// publishers wait. The default keeps a producer well inside the agent
    /// unit's `MemoryMax` (librdkafka's own default is 1 GiB).
    #[serde(default = "default_producer_queue_kbytes")]
    pub producer_queue_kbytes: u64,
    /// Most messages a producer holds before Kafka acknowledged them
    /// (`queue.buffering.max.messages`).
    #[serde(default = "default_producer_queue_messages")]
    pub producer_queue_messages: u64,
    /// Extra librdkafka properties for consumers only (e.g. `session.timeout.ms`).
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
}

/// TLS files for the Kafka connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// CA bundle that signed the brokers' certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key, for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// SASL credentials for the Kafka connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSettings {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    pub username: String,
    /// The password, from a file or an environment variable.
    pub password: SecretRef,
}

fn default_topic_prefix() -> String {
    "vigil".to_owned()
}

/// 64 MiB: room for several seconds of a busy host's batches while a broker
/// fails over, and an eighth of the agent unit's `MemoryMax`.
fn default_producer_queue_kbytes() -> u64 {
    64 * 1024
}

fn default_producer_queue_messages() -> u64 {
    100_000
}

/// The largest values librdkafka takes for the producer queue bounds.
const MAX_QUEUE_KBYTES: u64 = 2_147_483_647;
const MAX_QUEUE_MESSAGES: u64 = 2_147_483_647;

/// The largest `message.max.bytes` librdkafka takes.
const MAX_MESSAGE_BYTES: u64 = 1_000_000_000;

impl KafkaSettings {
    /// Settings for `brokers` with everything else defaulted.
    pub fn for_brokers(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic_prefix: default_topic_prefix(),
            tls: None,
            sasl: None,
            properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
            producer_queue_kbytes: default_producer_queue_kbytes(),
            producer_queue_messages: default_producer_queue_messages(),
            consumer_properties: BTreeMap::new(),
        }
    }

    /// Checks what can be checked without connecting; errors name the field.
    pub fn validate(&self) -> Result<(), KafkaSettingsError> {
        if self.brokers.trim().is_empty() {
            return Err(KafkaSettingsError::NoBrokers);
        }
        vigil_proto::Topics::new(&self.topic_prefix)
            .map_err(|error| KafkaSettingsError::TopicPrefix(error.to_string()))?;
        if let Some(sasl) = &self.sasl {
            if !SASL_MECHANISMS.contains(&sasl.mechanism.as_str()) {
                return Err(KafkaSettingsError::SaslMechanism(sasl.mechanism.clone()));
            }
            sasl.password
                .resolve()
                .map_err(KafkaSettingsError::SaslPassword)?;
        }
        let bounds = [
            (
                "producer_queue_kbytes",
                self.producer_queue_kbytes,
                MAX_QUEUE_KBYTES,
            ),
            (
                "producer_queue_messages",
                self.producer_queue_messages,
                MAX_QUEUE_MESSAGES,
            ),
        ];
        for (field, value, max) in bounds {
            if !(1..=max).contains(&value) {
                return Err(KafkaSettingsError::ProducerQueue { field, value, max });
            }
        }
        Ok(())
    }

    /// The topic names under this deployment's prefix.
    pub fn topics(&self) -> vigil_proto::Topics {
        vigil_proto::Topics::new(&self.topic_prefix).unwrap_or_default()
    }

    /// Base client configuration: brokers, security, then the extra properties.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaSettingsError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        let protocol = match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        // Vigil exports its own metrics. librdkafka's client telemetry (KIP-714)
        // asks the cluster for a metrics subscription; against tansu, which grants
        // none, every client asked again every few seconds, at rest too.
        config.set("enable.metrics.push", "false");
        if let Some(tls) = &self.tls {
            let files = [
                ("ssl.ca.location", &tls.ca_file),
                ("ssl.certificate.location", &tls.cert_file),
                ("ssl.key.location", &tls.key_file),
            ];
            for (property, path) in files {
                if let Some(path) = path {
                    config.set(property, path.display().to_string());
                }
            }
        }
        if let Some(sasl) = &self.sasl {
            config.set("sasl.mechanism", &sasl.mechanism);
            config.set("sasl.username", &sasl.username);
            let password = sasl
                .password
                .resolve()
                .map_err(KafkaSettingsError::SaslPassword)?;
            config.set("sasl.password", password);
        }
        Ok(with_properties(config, &self.properties))
    }

    /// Producer configuration: every acknowledged message is on all in-sync
    /// replicas and retries never duplicate or reorder (acks=all, idempotence),
    /// and what waits for acknowledgement is bounded.
    pub fn producer_config(&self) -> Result<ClientConfig, KafkaSettingsError> {
        let mut config = ClientConfig::new();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "10")
            .set("message.timeout.ms", "60000")
            .set(
                "queue.buffering.max.kbytes",
                self.producer_queue_kbytes.to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                self.producer_queue_messages.to_string(),
            )
            .set("message.max.bytes", self.max_message_bytes().to_string());
        Ok(with_properties(
            merge(config, self.client_config()?),
            &self.producer_properties,
        ))
    }

    /// The largest message a producer sends: as much as its queue holds, so that
    /// a stage can pass any message it consumed on to its dead-letter topic and
    /// the broker's limit (`message.max.bytes`, a topic's `max.message.bytes`)
    /// decides. librdkafka's own default, 1,000,000 bytes, is below the 1 MiB a
    /// broker takes by default, and what a stage cannot dead-letter is lost.
    fn max_message_bytes(&self) -> u64 {
        self.producer_queue_kbytes
            .saturating_mul(1024)
            .min(MAX_MESSAGE_BYTES)
    }

    /// Consumer configuration for `group`: offsets are stored by the stage only
    /// after it finished with a message, and committed from the stored offsets.
    pub fn consumer_config(&self, group: &str) -> Result<ClientConfig, KafkaSettingsError> {
        let mut config = ClientConfig::new();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("max.poll.interval.ms", "30000");
        Ok(with_properties(
            merge(config, self.client_config()?),
            &self.consumer_properties,
        ))
    }
}

fn with_properties(
    mut config: ClientConfig,
    properties: &BTreeMap<String, String>,
) -> ClientConfig {
    for (key, value) in properties {
        config.set(key, value);
    }
    config
}

/// `base` with every property of `overrides` applied on top.
fn merge(mut base: ClientConfig, overrides: ClientConfig) -> ClientConfig {
    for (key, value) in overrides.config_map() {
        base.set(key, value);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_keeps_delivery_guarantees_and_user_properties_win() {
        let mut settings = KafkaSettings::for_brokers("127.0.0.1:9092");
        settings.properties.insert("linger.ms".into(), "50".into());
        let config = settings.producer_config().unwrap();
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("enable.metrics.push"), Some("false"));
        assert_eq!(config.get("queue.buffering.max.kbytes"), Some("65536"));
        assert_eq!(config.get("queue.buffering.max.messages"), Some("100000"));
    }

    #[test]
    fn the_producer_queue_is_bounded_as_configured() {
        let mut settings = KafkaSettings::for_brokers("127.0.0.1:9092");
        settings.producer_queue_kbytes = 16 * 1024;
        settings.producer_queue_messages = 5_000;
        settings.validate().unwrap();
        let config = settings.producer_config().unwrap();
        assert_eq!(config.get("queue.buffering.max.kbytes"), Some("16384"));
        assert_eq!(config.get("queue.buffering.max.messages"), Some("5000"));
        config
            .create::<rdkafka::producer::BaseProducer>()
            .expect("librdkafka takes the bounds");
        settings.producer_queue_kbytes = 0;
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "`kafka.producer_queue_kbytes` must be between 1 and 2147483647, not 0"
        );
    }

    #[test]
    fn a_producer_sends_messages_as_large_as_its_queue_holds() {
        let mut settings = KafkaSettings::for_brokers("127.0.0.1:9092");
        let config = settings.producer_config().unwrap();
        assert_eq!(config.get("message.max.bytes"), Some("67108864"));
        config
            .create::<rdkafka::producer::BaseProducer>()
            .expect("librdkafka takes the limit");
        settings.producer_queue_kbytes = MAX_QUEUE_KBYTES;
        let config = settings.producer_config().unwrap();
        assert_eq!(config.get("message.max.bytes"), Some("1000000000"));
        config
            .create::<rdkafka::producer::BaseProducer>()
            .expect("librdkafka takes its largest limit");
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let mut settings = KafkaSettings::for_brokers(" ");
        assert_eq!(
            settings.validate().unwrap_err().to_string(),
            "`kafka.brokers` must list at least one broker"
        );
        settings.brokers = "b:9092".into();
        settings.topic_prefix = "Bad/Prefix".into();
        assert!(
            settings
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("`kafka.topic_prefix`: topic prefix `Bad/Prefix` is invalid")
        );
    }
}
