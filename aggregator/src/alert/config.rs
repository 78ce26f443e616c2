//! The `alert` section of the aggregator's configuration file: deserialized with
//! the rest of the file, validated here, and turned into the alert stage's settings
//! and its notification settings.

use super::AlertStageConfig;
use super::notify::{InhibitRule, NotifyConfig, Receiver, Route};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use vigil_config::InvalidSetting;

/// Why the `alert` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertSectionError {
    #[error(transparent)]
    Setting(#[from] InvalidSetting),
    /// Receivers, routes or inhibit rules; the message names the field.
    #[error("{0}")]
    Notify(String),
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
    #[serde(default = "default_tick", with = "vigil_config::duration")]
    pub tick: Duration,
    /// How late data may be before wall-clock time closes its windows.
    #[serde(default = "default_lateness", with = "vigil_config::duration")]
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
    /// Most metric series and log keys the rules engine holds together; samples
    /// of new series and lines of new keys beyond are refused and counted by rule.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// This stage's own `/metrics`, `/health` and `/ready` address, instead of
    /// the top-level `http.listen`.
    pub http: Option<crate::config::HttpSection>,
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
            max_series: default_max_series(),
            http: None,
        }
    }
}

fn default_alert_group() -> String {
    "vigil-alert".to_owned()
}

fn default_max_series() -> usize {
    AlertStageConfig::default().max_series
}

fn default_tick() -> Duration {
    Duration::from_secs(1)
}

fn default_lateness() -> Duration {
    Duration::from_secs(5)
}

impl AlertSection {
    /// Checks the values serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), AlertSectionError> {
        if self.group.is_empty() {
            return Err(InvalidSetting::new("alert.group", "must not be empty").into());
        }
        if self.tick.is_zero() {
            return Err(InvalidSetting::new("alert.tick", "must be positive").into());
        }
        if self.max_series == 0 {
            return Err(InvalidSetting::new("alert.max_series", "must be at least 1").into());
        }
        self.notify_config()
            .validate()
            .map_err(AlertSectionError::Notify)
    }

    /// The alert stage's runtime settings (without silences, which need etcd).
    pub fn stage_config(&self) -> AlertStageConfig {
        AlertStageConfig {
            group: self.group.clone(),
            tick: self.tick,
            allowed_lateness: self.allowed_lateness,
            notify: self.notify_config(),
            silences: None,
            max_series: self.max_series,
        }
    }

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
