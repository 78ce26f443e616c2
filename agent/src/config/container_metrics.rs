//! The `container_metrics` section: how often the container collector walks the
//! cgroup hierarchies, where they are mounted, and which cgroups it reports in its
//! batches for the raw metrics topic.

use super::globs::compile_globs;
use super::{InvalidConfig, default_true};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Container metrics from cgroups: cgroup v2, or the v1 hierarchies for the
/// controllers v2 does not have (hybrid hosts).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContainerMetricsConfig {
    /// Whether container metrics are collected at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Time between two collections; the cgroup hierarchy is walked again each time,
    /// so that new containers are found and gone ones dropped.
    #[serde(
        default = "default_container_metrics_interval",
        with = "vigil_config::duration"
    )]
    pub interval: Duration,
    /// Where the cgroup file systems are mounted; the host's /sys/fs/cgroup mounted
    /// elsewhere in a container.
    #[serde(default = "default_cgroup_root")]
    pub cgroup_root: PathBuf,
    /// Whether every cgroup recognised as a container (Docker, containerd, CRI-O,
    /// Podman, containers of Kubernetes pods) is reported.
    #[serde(default = "default_true")]
    pub containers: bool,
    /// More cgroups to report, by path glob from the hierarchy's root: `/` for the
    /// whole host, `/system.slice/*.service` for systemd services.
    #[serde(default)]
    pub include: Vec<String>,
    /// Most cgroup directories visited per hierarchy in one collection, so that a
    /// host with runaway cgroups costs bounded work; the rest is skipped and counted.
    #[serde(default = "default_max_cgroups")]
    pub max_cgroups: usize,
}

impl Default for ContainerMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_container_metrics_interval(),
            cgroup_root: default_cgroup_root(),
            containers: true,
            include: Vec::new(),
            max_cgroups: default_max_cgroups(),
        }
    }
}

impl ContainerMetricsConfig {
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.enabled && self.interval < Duration::from_secs(1) {
            return Err(InvalidConfig::field(
                "container_metrics.interval",
                "must be at least 1s",
            ));
        }
        if !self.cgroup_root.is_absolute() {
            return Err(InvalidConfig::field(
                "container_metrics.cgroup_root",
                format!(
                    "must be an absolute path, not `{}`",
                    self.cgroup_root.display()
                ),
            ));
        }
        if let Some(index) = self.include.iter().position(|path| !path.starts_with('/')) {
            return Err(InvalidConfig::field(
                format!("container_metrics.include[{index}]"),
                format!(
                    "must start with `/` (the hierarchy's root), not `{}`",
                    self.include[index]
                ),
            ));
        }
        self.include_globs()?;
        if self.max_cgroups == 0 {
            return Err(InvalidConfig::field(
                "container_metrics.max_cgroups",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The cgroup paths reported beside the recognised containers.
    pub(crate) fn include_globs(&self) -> Result<Vec<glob::Pattern>, InvalidConfig> {
        compile_globs(&self.include, "container_metrics.include")
    }
}

fn default_container_metrics_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_cgroup_root() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}

fn default_max_cgroups() -> usize {
    10_000
}
