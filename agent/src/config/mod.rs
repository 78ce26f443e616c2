//! The agent's configuration: which files to tail, which devices to poll, where the
//! batches go. It is the first thing the agent reads and decides everything the
//! sources of the data path do.
//!
//! Loading is two steps: YAML is deserialized into these structs (unknown keys are
//! errors that name the key, the file, the line and the column), then `validate`
//! checks what types cannot express and names the offending field. The structs are
//! public with public fields so that the all-in-one mode can build one in code.

mod container_metrics;
mod errors;
mod globs;
mod host_metrics;
mod ip_network;
mod journald;
mod logs;
mod snmp;
mod snmp_metric_sets;
mod spool;

pub use container_metrics::ContainerMetricsConfig;
pub use errors::{ConfigError, InvalidConfig};
pub(crate) use globs::NameMatcher;
pub use host_metrics::{DiskSelection, FilesystemSelection, HostMetricsConfig, InterfaceSelection};
pub use ip_network::IpNetwork;
pub use journald::{JournaldConfig, Priority};
pub use logs::{LogBatchConfig, LogFileConfig, MultilineConfig, ReadFrom};
pub use snmp::{
    AuthProtocol, Community, PrivProtocol, SecurityLevel, SnmpConfig, SnmpCredential, SnmpTarget,
    SnmpV3Config, SnmpVersion, TargetCredential,
};
pub use snmp_metric_sets::{
    LabelColumn, MetricSet, MetricSetDefinition, NumericOid, ScalarMetric, TableMetrics,
};
pub use spool::SpoolConfig;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_runtime::kafka::KafkaSettings;

/// Everything one agent does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Identity of this host, carried by every batch the agent sends.
    #[serde(default)]
    pub resource: ResourceConfig,
    /// The Kafka cluster batches are produced to; the standalone agent requires it,
    /// the all-in-one mode leaves it out and runs on its in-process bus.
    #[serde(default)]
    pub kafka: Option<KafkaSettings>,
    /// Directory for the agent's state: the log checkpoints and the metric spool
    /// live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How much disk metric batches may take under `data_dir` while Kafka cannot
    /// take them.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// The self-observability endpoint (`/metrics`, `/health`, `/ready`).
    #[serde(default)]
    pub http: HttpConfig,
    /// Log files to tail.
    #[serde(default)]
    pub logs: Vec<LogFileConfig>,
    /// How log lines are grouped into batches (one Kafka message each).
    #[serde(default)]
    pub log_batch: LogBatchConfig,
    /// The systemd journal, read through `journalctl`; absent: not read.
    #[serde(default)]
    pub journald: Option<JournaldConfig>,
    /// Host metrics read from /proc.
    #[serde(default)]
    pub host_metrics: HostMetricsConfig,
    /// Container metrics read from cgroups.
    #[serde(default)]
    pub container_metrics: ContainerMetricsConfig,
    /// Devices polled over SNMP.
    #[serde(default)]
    pub snmp: SnmpConfig,
    /// How long shutdown waits for in-flight batches to be acknowledged before the
    /// last checkpoint is written; lines not acknowledged by then are sent again
    /// after the restart.
    #[serde(default = "default_shutdown_timeout", with = "vigil_config::duration")]
    pub shutdown_timeout: Duration,
}

/// Identity of the host the agent runs on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Resource id: the Kafka message key, so all data of this host shares a partition.
    #[serde(default = "default_host_name")]
    pub id: String,
    /// Host name as shown in dashboards (`host.name`).
    #[serde(default = "default_host_name")]
    pub host_name: String,
    /// Free-form identity attributes (site, role, ...), sent with every batch.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Where the self-observability endpoint listens.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/health` and `/ready`.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            resource: ResourceConfig::default(),
            kafka: None,
            data_dir: default_data_dir(),
            spool: SpoolConfig::default(),
            http: HttpConfig::default(),
            logs: Vec::new(),
            log_batch: LogBatchConfig::default(),
            journald: None,
            host_metrics: HostMetricsConfig::default(),
            container_metrics: ContainerMetricsConfig::default(),
            snmp: SnmpConfig::default(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

impl Default for ResourceConfig {
    fn default() -> Self {
        Self {
            id: default_host_name(),
            host_name: default_host_name(),
            attributes: BTreeMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
        }
    }
}

impl AgentConfig {
    /// What in a valid configuration an operator should still look at: inline
    /// SNMP communities, and secrets that would travel without TLS.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.snmp.warnings();
        warnings.extend(
            self.kafka
                .as_ref()
                .and_then(vigil_runtime::plaintext::kafka),
        );
        if let Some(etcd) = &self.snmp.etcd {
            warnings.extend(vigil_runtime::plaintext::etcd(etcd));
        }
        warnings
    }

    /// Reads, parses and validates the YAML file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = vigil_config::read_text(path)?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates YAML `text`; `source_name` (usually the file path)
    /// prefixes every error, with the line and column where the YAML says it.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let config: Self = vigil_config::parse_yaml(source_name, text)?;
        config.validate().map_err(|cause| ConfigError::Invalid {
            place: vigil_config::setting_place(source_name, text, &cause.to_string()),
            cause,
        })?;
        Ok(config)
    }

    /// Checks what the types cannot express; the error names the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.resource.id.trim().is_empty() {
            return Err(InvalidConfig::field("resource.id", "must not be empty"));
        }
        if self.resource.host_name.trim().is_empty() {
            return Err(InvalidConfig::field(
                "resource.host_name",
                "must not be empty",
            ));
        }
        if let Some(kafka) = &self.kafka {
            kafka.validate().map_err(|error| InvalidConfig {
                message: error.to_string(),
            })?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(InvalidConfig::field("data_dir", "must not be empty"));
        }
        self.spool.validate()?;
        let mut seen_paths = BTreeMap::new();
        for (index, log) in self.logs.iter().enumerate() {
            if !log.path.is_absolute() {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].path"),
                    format!("must be an absolute path, not `{}`", log.path.display()),
                ));
            }
            if let Some(first) = seen_paths.insert(&log.path, index) {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].path"),
                    format!("repeats `logs[{first}].path` (`{}`)", log.path.display()),
                ));
            }
            if log.dataset.trim().is_empty() {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].dataset"),
                    "must not be empty",
                ));
            }
            let Some(pattern) = log.path.to_str() else {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].path"),
                    format!("must be UTF-8, not `{}`", log.path.display()),
                ));
            };
            if let Err(error) = glob::Pattern::new(pattern) {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].path"),
                    format!("is not a valid glob: {error}"),
                ));
            }
            for (position, exclude) in log.exclude.iter().enumerate() {
                if let Err(error) = glob::Pattern::new(exclude) {
                    return Err(InvalidConfig::field(
                        format!("logs[{index}].exclude[{position}]"),
                        format!("is not a valid glob: {error}"),
                    ));
                }
            }
            if log.ignore_older.is_some_and(|age| age.is_zero()) {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].ignore_older"),
                    "must be longer than 0s",
                ));
            }
            if let Some(multiline) = &log.multiline {
                multiline.validate(&format!("logs[{index}].multiline"))?;
            }
            crate::parse::validate(&log.parsers).map_err(|invalid| {
                InvalidConfig::field(
                    format!("logs[{index}].parsers{}", invalid.field),
                    invalid.problem,
                )
            })?;
            if log.partial_line_timeout < Duration::from_millis(1) {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].partial_line_timeout"),
                    "must be at least 1ms",
                ));
            }
        }
        self.log_batch.validate()?;
        if let Some(journald) = &self.journald {
            journald.validate()?;
        }
        self.host_metrics.validate()?;
        self.container_metrics.validate()?;
        self.snmp.validate()?;
        if self.shutdown_timeout.is_zero() {
            return Err(InvalidConfig::field(
                "shutdown_timeout",
                "must be longer than 0s",
            ));
        }
        Ok(())
    }
}

fn default_host_name() -> String {
    hostname::get()
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/vigil-agent")
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_true() -> bool {
    true
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests;
