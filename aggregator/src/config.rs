//! Configuration of the aggregator's distributed stages (`derive`, `alert`, `index`): where
//! Kafka, etcd and Elasticsearch are, and how each stage behaves. Deserialized
//! strictly (unknown keys are errors naming the key, file, line and column), then
//! validated with errors that name the field.

use crate::alert::AlertStageConfig;
use crate::alert::notify::{InhibitRule, NotifyConfig, Receiver, Route};
use crate::derive::DeriveStageConfig;
use crate::index::kibana::KibanaConfig;
use crate::index::{
    BulkClient, BulkClientConfig, ConcurrencySettings, DocumentSink, ElasticsearchAuth, IndexNames,
    IndexStage, IndexStageConfig,
};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_runtime::SecretRef;
use vigil_runtime::config_file::load_yaml;
use vigil_runtime::etcd::EtcdSettings;
use vigil_runtime::kafka::KafkaSettings;
use vigil_runtime::{Bus, SelfMetrics};

/// The whole aggregator configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// The Kafka cluster every stage consumes from and produces to.
    pub kafka: KafkaSettings,
    /// etcd, where rules are kept (required by `alert` unless `alert.rules_dir` is set).
    pub etcd: Option<EtcdSettings>,
    /// The HTTP endpoint with `/metrics`, `/health` and `/ready`.
    #[serde(default)]
    pub http: HttpSection,
    /// The `derive` stage.
    #[serde(default)]
    pub derive: DeriveSection,
    /// The `alert` stage.
    #[serde(default)]
    pub alert: AlertSection,
    /// The `index` stage.
    pub index: Option<IndexSection>,
}

/// Where the self-observability endpoint listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Address of `/metrics`, `/health` and `/ready`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9465))
}

/// Settings of the `derive` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeriveSection {
    /// Consumer group shared by all derive instances.
    #[serde(default = "default_derive_group")]
    pub group: String,
    /// Read user definitions from this folder (watched) instead of etcd.
    pub definitions_dir: Option<PathBuf>,
    /// How late a sample may be and still count in its window.
    #[serde(default = "default_derive_lateness", with = "vigil_runtime::duration")]
    pub allowed_lateness: Duration,
    /// How long a group window waits for the partials of other instances.
    #[serde(default = "default_group_wait", with = "vigil_runtime::duration")]
    pub group_wait: Duration,
    /// Gaps longer than this many intervals restart a counter series.
    #[serde(default = "default_max_gap_intervals")]
    pub max_gap_intervals: u32,
    /// Interval assumed for a series before it has shown its own.
    #[serde(default = "default_series_interval", with = "vigil_runtime::duration")]
    pub default_interval: Duration,
}

impl Default for DeriveSection {
    fn default() -> Self {
        Self {
            group: default_derive_group(),
            definitions_dir: None,
            allowed_lateness: default_derive_lateness(),
            group_wait: default_group_wait(),
            max_gap_intervals: default_max_gap_intervals(),
            default_interval: default_series_interval(),
        }
    }
}

fn default_derive_group() -> String {
    DeriveStageConfig::default().group
}

fn default_derive_lateness() -> Duration {
    DeriveStageConfig::default().allowed_lateness
}

fn default_group_wait() -> Duration {
    DeriveStageConfig::default().group_wait
}

fn default_max_gap_intervals() -> u32 {
    DeriveStageConfig::default().max_gap_intervals
}

fn default_series_interval() -> Duration {
    DeriveStageConfig::default().default_interval
}

/// Settings of the `alert` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSection {
    /// Consumer group shared by all alert instances.
    #[serde(default = "default_alert_group")]
    pub group: String,
    /// Read rules from this folder (watched) instead of etcd.
    pub rules_dir: Option<PathBuf>,
    /// How often the evaluation clock moves on when no data arrives.
    #[serde(default = "default_tick", with = "vigil_runtime::duration")]
    pub tick: Duration,
    /// How late data may be before wall-clock time closes its windows.
    #[serde(default = "default_lateness", with = "vigil_runtime::duration")]
    pub allowed_lateness: Duration,
    /// Base URL that alerts link to (`externalURL` in webhooks).
    #[serde(default)]
    pub external_url: String,
    /// Where notifications go, by name.
    #[serde(default)]
    pub receivers: Vec<Receiver>,
    /// The routing tree; without one, every alert goes to every receiver.
    pub route: Option<Route>,
    /// Alerts that mute others while they fire.
    #[serde(default)]
    pub inhibit_rules: Vec<InhibitRule>,
}

impl Default for AlertSection {
    fn default() -> Self {
        Self {
            group: default_alert_group(),
            rules_dir: None,
            tick: default_tick(),
            allowed_lateness: default_lateness(),
            external_url: String::new(),
            receivers: Vec::new(),
            route: None,
            inhibit_rules: Vec::new(),
        }
    }
}

fn default_alert_group() -> String {
    "vigil-alert".to_owned()
}

fn default_tick() -> Duration {
    Duration::from_secs(1)
}

fn default_lateness() -> Duration {
    Duration::from_secs(5)
}

/// Settings of the `index` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSection {
    /// Consumer group shared by all index instances.
    #[serde(default = "default_index_group")]
    pub group: String,
    /// The Elasticsearch cluster.
    pub elasticsearch: ElasticsearchSection,
    /// Index names per dataset.
    #[serde(default)]
    pub indices: IndexNamesSection,
    /// Most documents in one `_bulk` request.
    #[serde(default = "default_max_documents")]
    pub max_documents: usize,
    /// Most bytes of documents in one `_bulk` request.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// How long to wait for more messages before sending a partial bulk request.
    #[serde(default = "default_linger", with = "vigil_runtime::duration")]
    pub linger: Duration,
    /// Most `_bulk` requests in flight at once; the stage starts with one and adds
    /// more while Elasticsearch keeps up.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Kibana, where `setup` imports the saved objects of `dashboards/kibana`.
    pub kibana: Option<KibanaSection>,
}

fn default_max_bytes() -> usize {
    5 * 1024 * 1024
}

fn default_max_in_flight() -> usize {
    4
}

/// How to reach Kibana.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KibanaSection {
    /// Base URL, for example `https://kibana.example.net:5601`.
    pub url: String,
    /// Kibana space to import into (the default space when absent).
    pub space: Option<String>,
    /// Basic-auth user; without one, Elasticsearch's credentials are used.
    pub username: Option<String>,
    /// Basic-auth password, from a file or an environment variable.
    pub password: Option<SecretRef>,
    /// API key, from a file or an environment variable.
    pub api_key: Option<SecretRef>,
    /// CA bundle for an `https://` URL with a private CA.
    pub ca_file: Option<PathBuf>,
}

fn default_index_group() -> String {
    "vigil-index".to_owned()
}

fn default_max_documents() -> usize {
    5000
}

fn default_linger() -> Duration {
    Duration::from_millis(200)
}

/// How to reach Elasticsearch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSection {
    /// Base URL, for example `https://es.example.net:9200`.
    pub url: String,
    /// Basic-auth user.
    pub username: Option<String>,
    /// Basic-auth password, from a file or an environment variable.
    pub password: Option<SecretRef>,
    /// API key (instead of basic auth), from a file or an environment variable.
    pub api_key: Option<SecretRef>,
    /// CA bundle for `https://` URLs with a private CA.
    pub ca_file: Option<PathBuf>,
}

/// Index names per dataset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexNamesSection {
    #[serde(default = "default_logs_index")]
    pub logs: String,
    #[serde(default = "default_metrics_index")]
    pub metrics: String,
    #[serde(default = "default_alerts_index")]
    pub alerts: String,
}

impl Default for IndexNamesSection {
    fn default() -> Self {
        Self {
            logs: default_logs_index(),
            metrics: default_metrics_index(),
            alerts: default_alerts_index(),
        }
    }
}

fn default_logs_index() -> String {
    "vigil-logs".to_owned()
}

fn default_metrics_index() -> String {
    "vigil-metrics".to_owned()
}

fn default_alerts_index() -> String {
    "vigil-alerts".to_owned()
}

/// An API key wins over basic auth; a user without a password is no login.
fn auth(
    api_key: &Option<SecretRef>,
    username: &Option<String>,
    password: &Option<SecretRef>,
) -> ElasticsearchAuth {
    match (api_key, username, password) {
        (Some(key), _, _) => ElasticsearchAuth::ApiKey(key.clone()),
        (None, Some(username), Some(password)) => ElasticsearchAuth::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        _ => ElasticsearchAuth::None,
    }
}

impl AggregatorConfig {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config: Self = load_yaml(path)?;
        config
            .validate()
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        Ok(config)
    }

    /// Checks the values serde cannot; errors name the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.kafka.validate()?;
        if let Some(etcd) = &self.etcd {
            etcd.validate()?;
        }
        if self.derive.group.is_empty() {
            anyhow::bail!("`derive.group` must not be empty");
        }
        if self.derive.max_gap_intervals == 0 {
            anyhow::bail!("`derive.max_gap_intervals` must be at least 1");
        }
        if self.derive.default_interval.is_zero() {
            anyhow::bail!("`derive.default_interval` must be positive");
        }
        if self.alert.group.is_empty() {
            anyhow::bail!("`alert.group` must not be empty");
        }
        if self.alert.tick.is_zero() {
            anyhow::bail!("`alert.tick` must be positive");
        }
        self.alert
            .notify_config()
            .validate()
            .map_err(anyhow::Error::msg)?;
        if let Some(index) = &self.index {
            if reqwest::Url::parse(&index.elasticsearch.url).is_err() {
                anyhow::bail!(
                    "`index.elasticsearch.url` is not a URL: `{}`",
                    index.elasticsearch.url
                );
            }
            if index.max_documents == 0 {
                anyhow::bail!("`index.max_documents` must be positive");
            }
            if index.max_bytes == 0 {
                anyhow::bail!("`index.max_bytes` must be positive");
            }
            if index.max_in_flight == 0 {
                anyhow::bail!("`index.max_in_flight` must be at least 1");
            }
            if let Some(kibana) = &index.kibana {
                if reqwest::Url::parse(&kibana.url).is_err() {
                    anyhow::bail!("`index.kibana.url` is not a URL: `{}`", kibana.url);
                }
                if kibana.password.is_some() && kibana.username.is_none() {
                    anyhow::bail!("`index.kibana.password` needs `index.kibana.username`");
                }
            }
            if index.elasticsearch.password.is_some() && index.elasticsearch.username.is_none() {
                anyhow::bail!(
                    "`index.elasticsearch.password` needs `index.elasticsearch.username`"
                );
            }
        }
        Ok(())
    }

    /// The index stage writing to the configured Elasticsearch, subscribed on `bus`.
    pub fn index_stage(&self, bus: &Bus, metrics: &SelfMetrics) -> anyhow::Result<IndexStage> {
        let section = self.index_section()?;
        let client = self.bulk_client()?;
        let config = IndexStageConfig {
            group: section.group.clone(),
            max_documents: section.max_documents,
            max_bytes: section.max_bytes,
            linger: section.linger,
        };
        Ok(IndexStage::new(
            bus,
            DocumentSink::Elasticsearch(client),
            self.index_names()?,
            config,
            metrics,
        )?)
    }

    fn index_section(&self) -> anyhow::Result<&IndexSection> {
        self.index
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the index stage needs an `index` section"))
    }

    /// The configured index names.
    pub fn index_names(&self) -> anyhow::Result<IndexNames> {
        let indices = &self.index_section()?.indices;
        Ok(IndexNames {
            logs: indices.logs.clone(),
            metrics: indices.metrics.clone(),
            alerts: indices.alerts.clone(),
        })
    }

    /// The client of the configured Elasticsearch.
    pub fn bulk_client(&self) -> anyhow::Result<BulkClient> {
        let section = self.index_section()?;
        let elasticsearch = &section.elasticsearch;
        BulkClient::new(BulkClientConfig {
            auth: auth(
                &elasticsearch.api_key,
                &elasticsearch.username,
                &elasticsearch.password,
            ),
            ca_file: elasticsearch.ca_file.clone(),
            concurrency: ConcurrencySettings {
                max: section.max_in_flight,
                ..ConcurrencySettings::default()
            },
            ..BulkClientConfig::new(&elasticsearch.url)
        })
        .map_err(|error| anyhow::anyhow!("`index.elasticsearch`: {error}"))
    }

    /// The configured Kibana, if any; without credentials of its own it logs in as
    /// Elasticsearch does.
    pub fn kibana(&self) -> anyhow::Result<Option<KibanaConfig>> {
        let section = self.index_section()?;
        let Some(kibana) = &section.kibana else {
            return Ok(None);
        };
        let own = auth(&kibana.api_key, &kibana.username, &kibana.password);
        let elasticsearch = &section.elasticsearch;
        Ok(Some(KibanaConfig {
            url: kibana.url.clone(),
            auth: match own {
                ElasticsearchAuth::None => auth(
                    &elasticsearch.api_key,
                    &elasticsearch.username,
                    &elasticsearch.password,
                ),
                own => own,
            },
            ca_file: kibana.ca_file.clone().or(elasticsearch.ca_file.clone()),
            space: kibana.space.clone(),
        }))
    }

    /// The derive stage's runtime settings.
    pub fn derive_stage(&self) -> DeriveStageConfig {
        DeriveStageConfig {
            group: self.derive.group.clone(),
            allowed_lateness: self.derive.allowed_lateness,
            group_wait: self.derive.group_wait,
            max_gap_intervals: self.derive.max_gap_intervals,
            default_interval: self.derive.default_interval,
            ..DeriveStageConfig::default()
        }
    }

    /// The alert stage's runtime settings.
    pub fn alert_stage(&self) -> AlertStageConfig {
        AlertStageConfig {
            group: self.alert.group.clone(),
            tick: self.alert.tick,
            allowed_lateness: self.alert.allowed_lateness,
            notify: self.alert.notify_config(),
            silences: None,
        }
    }
}

impl AlertSection {
    /// The notification settings of this section.
    pub fn notify_config(&self) -> NotifyConfig {
        NotifyConfig {
            receivers: self.receivers.clone(),
            route: self.route.clone(),
            inhibit_rules: self.inhibit_rules.clone(),
            external_url: self.external_url.clone(),
            ..NotifyConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<AggregatorConfig> {
        let config: AggregatorConfig =
            vigil_runtime::config_file::parse_yaml("aggregator.yaml", text)?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let config = parse("kafka: {brokers: 'k:9092'}\n").unwrap();
        assert_eq!(config.alert.group, "vigil-alert");
        assert_eq!(config.alert.tick, Duration::from_secs(1));
        assert_eq!(config.http.listen.port(), 9465);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_file_and_line() {
        let error = parse("kafka: {brokers: 'k:9092'}\nalert:\n  grup: x\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("aggregator.yaml:3:3: unknown field `grup`"),
            "{error}"
        );
    }

    #[test]
    fn receivers_a_routing_tree_and_inhibit_rules_load() {
        let config = parse(
            r#"kafka: {brokers: 'k:9092'}
alert:
  receivers:
    - {type: pagerduty, name: oncall, routing_key: {env: PAGERDUTY_KEY}}
    - {type: slack, name: chat, url: {file: /etc/vigil/slack-url}, channel: '#ops'}
    - {type: webhook, name: hook, url: 'http://receiver:9095/hook', send_resolved: false}
  route:
    receiver: chat
    group_by: [alertname, site]
    routes:
      - {matchers: ['severity="page"'], receiver: oncall, continue: true, repeat_interval: 1h}
      - {matchers: ['team=~"db|storage"'], receiver: hook, group_wait: 10s}
  inhibit_rules:
    - {source_matchers: [alertname=SiteDown], target_matchers: ['severity=~warning|page'], equal: [site]}
"#,
        )
        .unwrap();
        let notify = config.alert_stage().notify;
        let route = notify.route.unwrap();
        assert_eq!(route.receiver.as_deref(), Some("chat"));
        assert_eq!(
            route.group_wait, None,
            "the default applies when the tree is built"
        );
        assert_eq!(
            route.routes[0].matchers[0].to_string(),
            r#"severity="page""#
        );
        assert!(route.routes[0].continue_matching);
        assert_eq!(
            route.routes[0].repeat_interval,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(route.routes[1].group_wait, Some(Duration::from_secs(10)));
        assert_eq!(notify.inhibit_rules[0].equal, ["site"]);
        assert!(!notify.receivers[2].send_resolved());
    }

    #[test]
    fn malformed_notification_settings_name_the_field() {
        let error = |alert: &str| {
            parse(&format!("kafka: {{brokers: 'k:9092'}}\nalert:\n{alert}"))
                .unwrap_err()
                .to_string()
        };
        let receivers =
            "  receivers:\n    - {type: console, name: a}\n    - {type: console, name: b}\n";
        assert_eq!(
            error(&format!(
                "{receivers}  route:\n    receiver: a\n    routes:\n      - {{receiver: b}}\n      - {{receiver: x}}\n"
            )),
            "`alert.route.routes[1].receiver` names no receiver `x`"
        );
        assert_eq!(
            error(&format!("{receivers}  route: {{group_by: [alertname]}}\n")),
            "`alert.route.receiver` is required"
        );
        assert_eq!(
            error(&format!(
                "{receivers}  route: {{receiver: a, routes: [{{group_interval: 0s}}]}}\n"
            )),
            "`alert.route.routes[0].group_interval` must be positive"
        );
        assert_eq!(
            error("  receivers:\n    - {type: console}\n    - {type: console}\n"),
            "`alert.receivers[1].name` repeats the receiver name `console`"
        );
        assert_eq!(
            error(&format!(
                "{receivers}  route: {{receiver: a, matchers: ['severity']}}\n"
            )),
            "aggregator.yaml:6:35: invalid matcher `severity`: expected `=`, `!=`, `=~` or `!~` after the label name"
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        let error = parse(
            "kafka: {brokers: 'k:9092'}\nalert:\n  receivers:\n    - {type: webhook, name: x, url: 'not a url'}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(error, "`alert.receivers[0].url` is not a URL: `not a url`");
        let error = parse("kafka: {brokers: 'k:9092'}\nalert: {tick: 0s}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "`alert.tick` must be positive");
        let error = parse("kafka: {brokers: 'k:9092'}\nderive: {max_gap_intervals: 0}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "`derive.max_gap_intervals` must be at least 1");
        let error = parse("kafka: {brokers: 'k:9092'}\nderive: {allowed_lateness: soon}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "aggregator.yaml:2:28: invalid duration `soon`: expected a number followed by a unit (ms, s, m, h, d, w)"
        );
    }
}
