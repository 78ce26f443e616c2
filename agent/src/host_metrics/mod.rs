//! Host metrics pushed from the proc filesystem and statvfs, for hosts not polled
//! over SNMP: a source of the metrics data path. Every interval one `MetricBatch`
//! of the host goes to the raw metrics topic, all samples with the same timestamp.
//!
//! The metric names are the ones the SNMP poller gives the same quantities
//! (`host.cpu.ticks`, `if.in.octets`, ...), so that one rule serves both sources.
//! Parsing is pure functions over file text; a file that cannot be read or parsed
//! is reported and counted, and the other files still produce their samples.

mod cpu;
mod disks;
mod filesystems;
mod memory;
mod network;
mod publishing;
mod samples;

#[cfg(test)]
mod tests;

pub(crate) use publishing::{MetricsOutput, run};
pub(crate) use samples::Samples;

use crate::config::{HostMetricsConfig, InvalidConfig, NameMatcher};
use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use thiserror::Error;
use vigil_proto::v1::Sample;

/// A source of host metrics could not be read or did not look as expected.
#[derive(Debug, Error)]
pub enum HostMetricError {
    #[error("{path} could not be read: {cause}")]
    Read {
        file: &'static str,
        path: String,
        cause: std::io::Error,
    },
    #[error("{path} could not be parsed: {problem}")]
    Parse {
        file: &'static str,
        path: String,
        problem: String,
    },
    #[error("the usage of the file system at {mount_point} could not be read: {cause}")]
    Usage {
        mount_point: String,
        cause: std::io::Error,
    },
}

impl HostMetricError {
    /// The source that failed, as the self-metric `agent_metric_collection_errors`
    /// labels it: the file under /proc (`meminfo`, `net/dev`, `mounts`) or `statvfs`.
    fn source(&self) -> &'static str {
        match self {
            Self::Read { file, .. } | Self::Parse { file, .. } => file
                .strip_prefix("1/")
                .or_else(|| file.strip_prefix("self/"))
                .unwrap_or(file),
            Self::Usage { .. } => "statvfs",
        }
    }
}

/// A source of the metrics data path that collects one batch of samples at a time.
pub(crate) trait Collector: Send + Sync + 'static {
    /// Why part of a collection failed.
    type Error: Display + Send + 'static;

    /// Reads everything once, all samples stamped `time_unix_nano`. A part that
    /// fails is reported in the errors; the others still give samples.
    fn collect(&self, time_unix_nano: i64) -> (Vec<Sample>, Vec<Self::Error>);

    /// The part of the source an error is about, for the self-metric label.
    fn error_source(error: &Self::Error) -> &'static str;
}

/// Host metrics of this machine, with the devices, interfaces and mounts chosen
/// by the configuration.
#[derive(Debug)]
pub struct HostCollector {
    proc_root: PathBuf,
    mount_root: PathBuf,
    disks: NameMatcher,
    partitions: bool,
    interfaces: NameMatcher,
    mount_points: NameMatcher,
    excluded_fs_types: BTreeSet<String>,
}

impl HostCollector {
    /// A collector for `config`; fails only on what `config.validate()` refuses.
    pub fn new(config: &HostMetricsConfig) -> Result<Self, InvalidConfig> {
        Ok(Self {
            proc_root: config.proc_root.clone(),
            mount_root: config.mount_root.clone(),
            disks: config.disks.matcher()?,
            partitions: config.disks.partitions,
            interfaces: config.interfaces.matcher()?,
            mount_points: config.filesystems.mount_points()?,
            excluded_fs_types: config.filesystems.exclude_types.iter().cloned().collect(),
        })
    }

    /// Reads every host metric once, all stamped `time_unix_nano`. A file that
    /// fails is reported in the errors; the others still give samples.
    pub fn collect(&self, time_unix_nano: i64) -> (Vec<Sample>, Vec<HostMetricError>) {
        let mut samples = Samples::new(time_unix_nano);
        let mut errors = Vec::new();
        let mut record = |result: Result<(), HostMetricError>| {
            if let Err(error) = result {
                errors.push(error);
            }
        };
        record(self.uptime(&mut samples));
        record(self.load(&mut samples));
        record(self.memory(&mut samples));
        record(self.cpu(&mut samples));
        record(self.disks(&mut samples));
        record(self.interfaces(&mut samples));
        errors.extend(self.filesystems(&mut samples));
        (samples.into_vec(), errors)
    }
}

impl Collector for HostCollector {
    type Error = HostMetricError;

    fn collect(&self, time_unix_nano: i64) -> (Vec<Sample>, Vec<HostMetricError>) {
        HostCollector::collect(self, time_unix_nano)
    }

    fn error_source(error: &HostMetricError) -> &'static str {
        error.source()
    }
}

fn read<T>(
    proc_root: &Path,
    file: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, HostMetricError> {
    let path = proc_root.join(file);
    let text = std::fs::read_to_string(&path).map_err(|cause| HostMetricError::Read {
        file,
        path: path.display().to_string(),
        cause,
    })?;
    parse(&text).map_err(|problem| HostMetricError::Parse {
        file,
        path: path.display().to_string(),
        problem,
    })
}
