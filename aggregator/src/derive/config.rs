//! The `derive` section of the aggregator's configuration file: deserialized with
//! the rest of the file, validated here, and turned into the derive stage's settings.

use super::DeriveStageConfig;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use vigil_config::InvalidSetting;

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
    #[serde(default = "default_derive_lateness", with = "vigil_config::duration")]
    pub allowed_lateness: Duration,
    /// How long a group window waits for the partials of other instances.
    #[serde(default = "default_group_wait", with = "vigil_config::duration")]
    pub group_wait: Duration,
    /// Gaps longer than this many intervals restart a counter series.
    #[serde(default = "default_max_gap_intervals")]
    pub max_gap_intervals: u32,
    /// Interval assumed for a series before it has shown its own.
    #[serde(default = "default_series_interval", with = "vigil_config::duration")]
    pub default_interval: Duration,
    /// Most counter series, and most per-series window series, held; samples of
    /// new series beyond are refused and counted by metric.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// This stage's own `/metrics`, `/health` and `/ready` address, instead of
    /// the top-level `http.listen`.
    pub http: Option<crate::config::HttpSection>,
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
            max_series: default_max_series(),
            http: None,
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

fn default_max_series() -> usize {
    DeriveStageConfig::default().max_series
}

fn default_series_interval() -> Duration {
    DeriveStageConfig::default().default_interval
}

impl DeriveSection {
    /// Checks the values serde cannot; errors name the field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.group.is_empty() {
            return Err(InvalidSetting::new("derive.group", "must not be empty"));
        }
        if self.max_gap_intervals == 0 {
            return Err(InvalidSetting::new(
                "derive.max_gap_intervals",
                "must be at least 1",
            ));
        }
        if self.max_series == 0 {
            return Err(InvalidSetting::new(
                "derive.max_series",
                "must be at least 1",
            ));
        }
        if self.default_interval.is_zero() {
            return Err(InvalidSetting::new(
                "derive.default_interval",
                "must be positive",
            ));
        }
        Ok(())
    }

    /// The derive stage's runtime settings.
    pub fn stage_config(&self) -> DeriveStageConfig {
        DeriveStageConfig {
            group: self.group.clone(),
            allowed_lateness: self.allowed_lateness,
            group_wait: self.group_wait,
            max_gap_intervals: self.max_gap_intervals,
            default_interval: self.default_interval,
            max_series: self.max_series,
            ..DeriveStageConfig::default()
        }
    }
}
