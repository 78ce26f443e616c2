//! The aggregator's configuration file: where Kafka and etcd are, the HTTP endpoint,
//! and one section per stage (`derive`, `alert`, `index`), each defined, validated
//! and turned into its stage's settings by its stage. Each stage runs as a process
//! of its own from the same file, so each serves its endpoints on its own address
//! (`<stage>.http.listen`, else the shared `http.listen`, else a port per stage). Deserialized strictly
//! (unknown keys are errors naming the key, file, line and column), then validated
//! with errors that name the field.

use crate::alert::{AlertSection, AlertSectionError};
use crate::derive::DeriveSection;
use crate::index::IndexSection;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use vigil_config::{ConfigFileError, InvalidSetting, parse_yaml, read_text, setting_place};
use vigil_runtime::etcd::{EtcdSettings, EtcdSettingsError};
use vigil_runtime::kafka::{KafkaSettings, KafkaSettingsError};

/// The whole aggregator configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// The Kafka cluster every stage consumes from and produces to.
    pub kafka: KafkaSettings,
    /// etcd, where rules are kept (required by `alert` unless `alert.rules_dir` is set).
    pub etcd: Option<EtcdSettings>,
    /// The HTTP endpoint with `/metrics`, `/health` and `/ready` of every stage
    /// without one of its own.
    pub http: Option<HttpSection>,
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
    pub listen: SocketAddr,
}

/// The stream stages, each a process of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageName {
    Derive,
    Alert,
    Index,
}

impl StageName {
    /// The stage's section and command name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Derive => "derive",
            Self::Alert => "alert",
            Self::Index => "index",
        }
    }

    /// Where the stage listens when the file says nothing: ports 9465, 9466 and
    /// 9467 on loopback, so the three stages can run on one host as they are.
    fn default_listen(self) -> SocketAddr {
        let port = match self {
            Self::Derive => 9465,
            Self::Alert => 9466,
            Self::Index => 9467,
        };
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The field of the stage's own address.
    fn own_listen_field(self) -> &'static str {
        match self {
            Self::Derive => "derive.http.listen",
            Self::Alert => "alert.http.listen",
            Self::Index => "index.http.listen",
        }
    }
}

/// The field the top-level address is written in.
const SHARED_LISTEN_FIELD: &str = "http.listen";

/// Why an aggregator configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorConfigError {
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// A value that parsed but cannot be used, at `file:line:column` of the
    /// setting it names (or the file alone when that setting is not written).
    #[error("{place}: {reason}")]
    Invalid {
        place: String,
        reason: Box<AggregatorConfigError>,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaSettingsError),
    #[error(transparent)]
    Etcd(#[from] EtcdSettingsError),
    #[error(transparent)]
    Setting(#[from] InvalidSetting),
    #[error(transparent)]
    Alert(#[from] AlertSectionError),
    #[error("the index stage needs an `index` section")]
    NoIndexSection,
    /// Two stages would listen on one address, so the second to start could not.
    #[error(
        "`{field}` is {address}, where the {other_stage} stage listens too (`{other_field}`{other_place}): each stage runs as a process of its own and needs an address of its own"
    )]
    SharedListen {
        field: &'static str,
        address: SocketAddr,
        other_stage: &'static str,
        other_field: &'static str,
        /// Where `other_field` is written, as ` at file:line:column`, once known.
        other_place: String,
    },
}

impl AggregatorConfig {
    /// Secrets this configuration would send without TLS: the stages log these
    /// when they start and `--check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = vigil_runtime::plaintext::kafka(&self.kafka)
            .into_iter()
            .collect();
        if let Some(etcd) = &self.etcd {
            warnings.extend(vigil_runtime::plaintext::etcd(etcd));
        }
        if let Some(index) = &self.index {
            warnings.extend(index.warnings());
        }
        warnings
    }

    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, AggregatorConfigError> {
        Self::from_yaml(&path.display().to_string(), &read_text(path)?)
    }

    /// Parses and validates `text`, read from `origin`; every error names
    /// `origin` and, where the YAML says it, the line and column.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, AggregatorConfigError> {
        let config: Self = parse_yaml(origin, text)?;
        config.validate().map_err(|mut reason| {
            if let AggregatorConfigError::SharedListen {
                other_field,
                other_place,
                ..
            } = &mut reason
            {
                *other_place = match vigil_config::locate(text, other_field) {
                    Some(position) => format!(" at {origin}:{position}"),
                    None => ", its default".to_owned(),
                };
            }
            AggregatorConfigError::Invalid {
                place: setting_place(origin, text, &reason.to_string()),
                reason: Box::new(reason),
            }
        })?;
        Ok(config)
    }

    /// Checks the values serde cannot, section by section; errors name the field.
    pub fn validate(&self) -> Result<(), AggregatorConfigError> {
        self.kafka.validate()?;
        if let Some(etcd) = &self.etcd {
            etcd.validate()?;
        }
        self.derive.validate()?;
        self.alert.validate()?;
        if let Some(index) = &self.index {
            index.validate()?;
        }
        self.validate_listen_addresses()
    }

    /// The stages this file configures: `derive` and `alert` always (their
    /// sections have defaults), `index` with its section.
    fn stages(&self) -> Vec<StageName> {
        let mut stages = vec![StageName::Derive, StageName::Alert];
        if self.index.is_some() {
            stages.push(StageName::Index);
        }
        stages
    }

    /// The stage's own `http` section, if it has one.
    fn own_http(&self, stage: StageName) -> Option<&HttpSection> {
        match stage {
            StageName::Derive => self.derive.http.as_ref(),
            StageName::Alert => self.alert.http.as_ref(),
            StageName::Index => self.index.as_ref().and_then(|index| index.http.as_ref()),
        }
    }

    /// Where `stage` serves `/metrics`, `/health` and `/ready`: its own
    /// `<stage>.http.listen`, else the shared `http.listen`, else its default port.
    pub fn listen(&self, stage: StageName) -> SocketAddr {
        self.own_http(stage)
            .or(self.http.as_ref())
            .map_or_else(|| stage.default_listen(), |http| http.listen)
    }

    /// The field `stage`'s address comes from.
    pub fn listen_field(&self, stage: StageName) -> &'static str {
        match (self.own_http(stage), &self.http) {
            (Some(_), _) => stage.own_listen_field(),
            (None, Some(_)) => SHARED_LISTEN_FIELD,
            (None, None) => stage.own_listen_field(),
        }
    }

    /// Refuses two stages on one address when one of them names it in its own
    /// section: run from this file on one host, the second could not listen.
    /// Stages that all take the shared `http.listen` are left alone: that is a
    /// file for hosts that run one stage each. Port 0 (any free port) never clashes.
    fn validate_listen_addresses(&self) -> Result<(), AggregatorConfigError> {
        let stages = self.stages();
        for (position, &stage) in stages.iter().enumerate() {
            let address = self.listen(stage);
            if address.port() == 0 {
                continue;
            }
            for &other in &stages[..position] {
                let own = self.own_http(stage).is_some() || self.own_http(other).is_some();
                if own && self.listen(other) == address {
                    let (named, other) = if self.own_http(stage).is_some() {
                        (stage, other)
                    } else {
                        (other, stage)
                    };
                    return Err(AggregatorConfigError::SharedListen {
                        field: self.listen_field(named),
                        address,
                        other_stage: other.as_str(),
                        other_field: self.listen_field(other),
                        other_place: String::new(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The `index` section, which the index stage and `setup` need.
    pub fn index_section(&self) -> Result<&IndexSection, AggregatorConfigError> {
        self.index
            .as_ref()
            .ok_or(AggregatorConfigError::NoIndexSection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(text: &str) -> Result<AggregatorConfig, AggregatorConfigError> {
        AggregatorConfig::from_yaml("aggregator.yaml", text)
    }

    #[test]
    fn a_minimal_config_gets_defaults() {
        let config = parse("kafka: {brokers: 'k:9092'}\n").unwrap();
        assert_eq!(config.alert.group, "vigil-alert");
        assert_eq!(config.alert.tick, Duration::from_secs(1));
        assert_eq!(config.listen(StageName::Derive).port(), 9465);
        assert_eq!(config.listen(StageName::Alert).port(), 9466);
        assert_eq!(config.listen(StageName::Index).port(), 9467);
    }

    #[test]
    fn each_stage_listens_on_its_own_address_before_the_shared_one() {
        let config = parse(
            "kafka: {brokers: 'k:9092'}\nhttp: {listen: '0.0.0.0:9000'}\nalert:\n  http: {listen: '0.0.0.0:9001'}\nindex:\n  elasticsearch: {url: 'http://es:9200'}\n  http: {listen: '0.0.0.0:9002'}\n",
        )
        .unwrap();
        assert_eq!(config.listen(StageName::Derive).port(), 9000);
        assert_eq!(config.listen_field(StageName::Derive), "http.listen");
        assert_eq!(config.listen(StageName::Alert).port(), 9001);
        assert_eq!(config.listen_field(StageName::Alert), "alert.http.listen");
        assert_eq!(config.listen(StageName::Index).port(), 9002);
    }

    #[test]
    fn credentials_that_would_travel_without_tls_are_warned_about() {
        let config = parse(
            "kafka: {brokers: 'k:9092'}\nindex:\n  elasticsearch: {url: 'http://es:9200', api_key: {env: ES_KEY}}\n  kibana: {url: 'https://kibana:5601'}\n",
        )
        .unwrap();
        assert_eq!(
            config.warnings(),
            [
                "`index.elasticsearch` sends its credentials to `http://es:9200` without TLS; use an `https://` URL"
            ]
        );
        let config = parse(
            "kafka: {brokers: 'k:9092'}\nindex:\n  elasticsearch: {url: 'https://es:9200', api_key: {env: ES_KEY}}\n  kibana: {url: 'http://kibana:5601'}\n",
        )
        .unwrap();
        assert_eq!(
            config.warnings(),
            [
                "`index.kibana` sends its credentials to `http://kibana:5601` without TLS; use an `https://` URL"
            ],
            "Kibana without credentials of its own gets Elasticsearch's"
        );
    }

    #[test]
    fn stages_that_all_take_the_shared_address_are_left_alone() {
        let config = parse(
            "kafka: {brokers: 'k:9092'}\nhttp: {listen: '0.0.0.0:9000'}\nindex:\n  elasticsearch: {url: 'http://es:9200'}\n",
        )
        .unwrap();
        assert_eq!(config.listen(StageName::Index).port(), 9000);
    }

    #[test]
    fn two_stages_on_one_address_are_refused_naming_both_places() {
        let error = parse(
            "kafka: {brokers: 'k:9092'}\nderive:\n  http: {listen: '0.0.0.0:9465'}\nalert:\n  http: {listen: '0.0.0.0:9465'}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "aggregator.yaml:5:18: `alert.http.listen` is 0.0.0.0:9465, where the derive stage listens too (`derive.http.listen` at aggregator.yaml:3:18): each stage runs as a process of its own and needs an address of its own"
        );
        let error = parse(
            "kafka: {brokers: 'k:9092'}\nhttp: {listen: '127.0.0.1:9000'}\nindex:\n  elasticsearch: {url: 'http://es:9200'}\n  http: {listen: '127.0.0.1:9000'}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "aggregator.yaml:5:18: `index.http.listen` is 127.0.0.1:9000, where the derive stage listens too (`http.listen` at aggregator.yaml:2:16): each stage runs as a process of its own and needs an address of its own"
        );
        let error =
            parse("kafka: {brokers: 'k:9092'}\nderive: {http: {listen: '127.0.0.1:9466'}}\n")
                .unwrap_err()
                .to_string();
        assert_eq!(
            error,
            "aggregator.yaml:2:25: `derive.http.listen` is 127.0.0.1:9466, where the alert stage listens too (`alert.http.listen`, its default): each stage runs as a process of its own and needs an address of its own"
        );
        parse(
            "kafka: {brokers: 'k:9092'}\nderive: {http: {listen: '127.0.0.1:0'}}\nalert: {http: {listen: '127.0.0.1:0'}}\n",
        )
        .expect("port 0 is any free port");
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
        let notify = config.alert.stage_config().notify;
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
    fn malformed_notification_settings_name_the_field_at_its_line() {
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
            "aggregator.yaml:10:20: `alert.route.routes[1].receiver` names no receiver `x`"
        );
        assert_eq!(
            error(&format!("{receivers}  route: {{group_by: [alertname]}}\n")),
            "aggregator.yaml:6:10: `alert.route.receiver` is required"
        );
        assert_eq!(
            error(&format!(
                "{receivers}  route: {{receiver: a, routes: [{{group_interval: 0s}}]}}\n"
            )),
            "aggregator.yaml:6:50: `alert.route.routes[0].group_interval` must be positive"
        );
        assert_eq!(
            error("  receivers:\n    - {type: console}\n    - {type: console}\n"),
            "aggregator.yaml:5:7: `alert.receivers[1].name` repeats the receiver name `console`"
        );
        assert_eq!(
            error(&format!(
                "{receivers}  route: {{receiver: a, matchers: ['severity']}}\n"
            )),
            "aggregator.yaml:6:35: invalid matcher `severity`: expected `=`, `!=`, `=~` or `!~` after the label name"
        );
    }

    #[test]
    fn invalid_values_name_the_field_at_its_line() {
        let error = parse(
            "kafka: {brokers: 'k:9092'}\nalert:\n  receivers:\n    - {type: webhook, name: x, url: 'not a url'}\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "aggregator.yaml:4:37: `alert.receivers[0].url` is not a URL: `not a url`"
        );
        let error = parse("kafka: {brokers: 'k:9092'}\nalert: {tick: 0s}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(error, "aggregator.yaml:2:15: `alert.tick` must be positive");
        let error = parse("kafka: {brokers: 'k:9092'}\nderive: {max_gap_intervals: 0}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "aggregator.yaml:2:29: `derive.max_gap_intervals` must be at least 1"
        );
        let error = parse("kafka: {brokers: 'k:9092'}\nderive: {allowed_lateness: soon}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "aggregator.yaml:2:28: invalid duration `soon`: expected a number followed by a unit (ms, s, m, h, d, w)"
        );
    }
}
