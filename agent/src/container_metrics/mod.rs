//! Container metrics from cgroups, a source of the metrics data path: every
//! interval the cgroup hierarchies are walked (with a bound), the cgroups of
//! containers and those the configuration names are read, and one `MetricBatch`
//! of the host goes to the raw metrics topic, every sample labelled with its
//! cgroup and, where the path tells, the container's id, runtime and pod.
//!
//! cgroup v2 files are read for the controllers v2 has; on hybrid hosts the v1
//! hierarchies (`cpuacct`, `cpu`, `cpuset`, `memory`, `blkio`, `pids`) serve the
//! others.
//! A cgroup that disappears between the walk and the read is skipped silently; a
//! file that cannot be read or parsed is reported and counted, and the rest of
//! the collection goes on.
//!
//! Beside its CPU time, every cgroup tells the cores it may use: its CFS quota
//! (`container.cpu.limit_cores`, only when it has one) and the least of that
//! quota, the number of CPUs of its cpuset and the number of the host's online
//! CPUs (`container.cpu.available_cores`), so that its CPU time can be read as a
//! share of what it may use. The host's CPUs are those listed in
//! `<sys>/devices/system/cpu/online` when the cgroup root is `<sys>/fs/cgroup`,
//! else those of the root cgroup's cpuset, which follows CPUs going online and
//! offline: both are found from the configured cgroup root, so that an agent in
//! a container counts the host's CPUs, not those it is itself given. Only the
//! cgroup's own cpuset file is read: one without (v2, the cpuset controller not
//! enabled for it) counts the host's CPUs, the cpusets of its ancestors unread.

mod cgroup_files;
mod cgroup_reader;
mod discovery;
mod layout;

#[cfg(test)]
mod tests;

use crate::config::{ContainerMetricsConfig, InvalidConfig};
use crate::host_metrics::{Collector, Samples};
use cgroup_reader::CgroupReader;
use discovery::{identify, identity_labels, walk};
use layout::{Controller, Layout};
use std::collections::BTreeSet;
use std::path::PathBuf;
use thiserror::Error;
use vigil_proto::v1::Sample;

/// A part of the container metrics could not be read or did not look as expected.
#[derive(Debug, Error)]
pub enum ContainerMetricError {
    #[error("{path} could not be read: {cause}")]
    Read {
        controller: &'static str,
        path: String,
        cause: std::io::Error,
    },
    #[error("{path} could not be parsed: {problem}")]
    Parse {
        controller: &'static str,
        path: String,
        problem: String,
    },
    #[error(
        "{path} has more than {limit} cgroups (`container_metrics.max_cgroups`); the rest is skipped"
    )]
    TooManyCgroups { path: String, limit: usize },
}

impl ContainerMetricError {
    /// The part that failed, as the self-metric `agent_metric_collection_errors`
    /// labels it: a controller (`cpu`, `memory`, `io`, `pids`) or `discovery`.
    fn source(&self) -> &'static str {
        match self {
            Self::Read { controller, .. } | Self::Parse { controller, .. } => controller,
            Self::TooManyCgroups { .. } => "discovery",
        }
    }
}

/// Container metrics of this host's cgroups, chosen by the configuration.
#[derive(Debug)]
pub struct ContainerCollector {
    cgroup_root: PathBuf,
    containers: bool,
    include: Vec<glob::Pattern>,
    max_cgroups: usize,
}

impl Collector for ContainerCollector {
    type Error = ContainerMetricError;

    fn collect(&self, time_unix_nano: i64) -> (Vec<Sample>, Vec<ContainerMetricError>) {
        ContainerCollector::collect(self, time_unix_nano)
    }

    fn error_source(error: &ContainerMetricError) -> &'static str {
        error.source()
    }
}

impl ContainerCollector {
    /// A collector for `config`; fails only on what `config.validate()` refuses.
    pub fn new(config: &ContainerMetricsConfig) -> Result<Self, InvalidConfig> {
        Ok(Self {
            cgroup_root: config.cgroup_root.clone(),
            containers: config.containers,
            include: config.include_globs()?,
            max_cgroups: config.max_cgroups,
        })
    }

    /// Walks the hierarchies and reads every selected cgroup once, all samples
    /// stamped `time_unix_nano`. What fails is reported in the errors; the rest
    /// still gives samples.
    pub fn collect(&self, time_unix_nano: i64) -> (Vec<Sample>, Vec<ContainerMetricError>) {
        let layout = Layout::detect(&self.cgroup_root);
        let mut errors = Vec::new();
        let mut cgroups = BTreeSet::new();
        for hierarchy in layout.hierarchies() {
            if let Err(error) = walk(&hierarchy, self.max_cgroups, &mut cgroups) {
                errors.push(error);
            }
        }
        let host_cpus = match layout.version(Controller::Cpu) {
            Some(_) => layout.host_cpus().unwrap_or_else(|error| {
                errors.push(error);
                None
            }),
            None => None,
        };
        let mut samples = Samples::new(time_unix_nano);
        for cgroup in &cgroups {
            let identity = identify(cgroup);
            let included = self.include.iter().any(|glob| glob.matches(cgroup));
            let container = self.containers && identity.id.is_some();
            if !(included || container) {
                continue;
            }
            let labels = identity_labels(cgroup, &identity);
            let reading = CgroupReader {
                layout: &layout,
                cgroup,
                labels: &labels,
                host_cpus,
            };
            for controller in Controller::ALL {
                let Some(version) = layout.version(controller) else {
                    continue;
                };
                let read = match controller {
                    Controller::Cpu => reading.cpu(version, &mut samples),
                    Controller::Memory => reading.memory(version, &mut samples),
                    Controller::Io => reading.io(version, &mut samples),
                    Controller::Pids => reading.pids(version, &mut samples),
                };
                if let Err(error) = read {
                    errors.push(error);
                }
            }
        }
        (samples.into_vec(), errors)
    }
}
