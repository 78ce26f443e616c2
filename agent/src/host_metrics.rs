//! Host metrics pushed from the proc filesystem and statvfs, for hosts not polled
//! over SNMP: a source of the metrics data path. Every interval one `MetricBatch`
//! of the host goes to the raw metrics topic, all samples with the same timestamp.
//!
//! The metric names are the ones the SNMP poller gives the same quantities
//! (`host.cpu.ticks`, `if.in.octets`, ...), so that one rule serves both sources.
//! Parsing is pure functions over file text; a file that cannot be read or parsed
//! is reported and counted, and the other files still produce their samples.

use crate::config::{HostMetricsConfig, InvalidConfig, NameMatcher};
use crate::self_metrics::AgentMetrics;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use vigil_proto::labels::label;
use vigil_proto::v1::{Label, MetricBatch, MetricKind, Resource, Sample, ValueType, sample};
use vigil_runtime::Publisher;

/// The fields of /proc/meminfo read, the metric each becomes, and whether the file
/// is malformed without it (some kernels and sandboxes leave out the others).
const MEMINFO_FIELDS: [(&str, &str, bool); 7] = [
    ("MemTotal", "host.memory.total_bytes", true),
    ("MemAvailable", "host.memory.available_bytes", true),
    ("MemFree", "host.memory.free_bytes", true),
    ("Buffers", "host.memory.buffers_bytes", false),
    ("Cached", "host.memory.cached_bytes", false),
    ("SwapTotal", "host.swap.total_bytes", true),
    ("SwapFree", "host.swap.free_bytes", true),
];

/// The columns of the `cpu` line of /proc/stat, in order.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// /proc/diskstats counts sectors of 512 bytes, whatever the device's sector size.
const DISKSTATS_SECTOR_BYTES: u64 = 512;

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

/// Samples of one collection, all stamped with the same time.
#[derive(Debug)]
pub(crate) struct Samples {
    time_unix_nano: i64,
    samples: Vec<Sample>,
}

impl Samples {
    pub(crate) fn new(time_unix_nano: i64) -> Self {
        Self {
            time_unix_nano,
            samples: Vec::new(),
        }
    }

    /// Adds a point-in-time value.
    pub(crate) fn gauge(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        set: &str,
        labels: &[Label],
    ) {
        self.push(name, sample::Value::Gauge(value), unit, set, labels);
    }

    /// Adds a monotonically increasing count, carried as an unsigned 64-bit integer.
    pub(crate) fn counter(
        &mut self,
        name: &str,
        value: u64,
        unit: &str,
        set: &str,
        labels: &[Label],
    ) {
        self.push(name, sample::Value::Counter(value), unit, set, labels);
    }

    fn push(&mut self, name: &str, value: sample::Value, unit: &str, set: &str, labels: &[Label]) {
        let (kind, value_type) = match value {
            sample::Value::Counter(_) => (MetricKind::Counter, ValueType::Counter64),
            sample::Value::Gauge(_) => (MetricKind::Gauge, ValueType::Float),
        };
        self.samples.push(Sample {
            name: name.to_owned(),
            labels: labels.to_vec(),
            kind: kind as i32,
            time_unix_nano: self.time_unix_nano,
            value: Some(value),
            value_type: value_type as i32,
            unit: unit.to_owned(),
            metric_set: set.to_owned(),
        });
    }

    pub(crate) fn into_vec(self) -> Vec<Sample> {
        self.samples
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

    fn uptime(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        let seconds = read(&self.proc_root, "uptime", parse_uptime)?;
        samples.gauge("host.uptime.seconds", seconds, "s", "host.uptime", &[]);
        Ok(())
    }

    fn load(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        let loads = read(&self.proc_root, "loadavg", parse_loadavg)?;
        for (name, load) in ["host.load.1m", "host.load.5m", "host.load.15m"]
            .into_iter()
            .zip(loads)
        {
            samples.gauge(name, load, "", "host.load", &[]);
        }
        Ok(())
    }

    fn memory(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        for (name, bytes) in read(&self.proc_root, "meminfo", parse_meminfo)? {
            samples.gauge(name, bytes as f64, "By", "host.memory", &[]);
        }
        Ok(())
    }

    fn cpu(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        for (mode, ticks) in read(&self.proc_root, "stat", parse_cpu_ticks)? {
            let labels = [label("mode", mode)];
            samples.counter("host.cpu.ticks", ticks, "{tick}", "host.cpu", &labels);
        }
        Ok(())
    }

    fn disks(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        let disks = read(&self.proc_root, "diskstats", parse_diskstats)?;
        let names: BTreeSet<&str> = disks.iter().map(|disk| disk.name.as_str()).collect();
        for disk in &disks {
            if !self.disks.selects(&disk.name)
                || (!self.partitions && is_partition(&disk.name, &names))
            {
                continue;
            }
            let labels = [label("device", &disk.name)];
            let set = "host.disk";
            let read_bytes = disk.sectors_read.saturating_mul(DISKSTATS_SECTOR_BYTES);
            let written_bytes = disk.sectors_written.saturating_mul(DISKSTATS_SECTOR_BYTES);
            samples.counter("host.disk.read.bytes", read_bytes, "By", set, &labels);
            samples.counter("host.disk.written.bytes", written_bytes, "By", set, &labels);
            samples.counter("host.disk.reads", disk.reads, "{operation}", set, &labels);
            samples.counter("host.disk.writes", disk.writes, "{operation}", set, &labels);
            let io_seconds = disk.io_milliseconds / 1000;
            samples.counter("host.disk.io_time.seconds", io_seconds, "s", set, &labels);
        }
        Ok(())
    }

    fn interfaces(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        for interface in read(&self.proc_root, "net/dev", parse_net_dev)? {
            if !self.interfaces.selects(&interface.name) {
                continue;
            }
            let labels = [label("ifName", &interface.name)];
            let counters = [
                ("if.in.octets", interface.received.bytes, "By"),
                ("if.out.octets", interface.sent.bytes, "By"),
                ("if.in.packets", interface.received.packets, "{packet}"),
                ("if.out.packets", interface.sent.packets, "{packet}"),
                ("if.in.errors", interface.received.errors, "{packet}"),
                ("if.out.errors", interface.sent.errors, "{packet}"),
                ("if.in.discards", interface.received.dropped, "{packet}"),
                ("if.out.discards", interface.sent.dropped, "{packet}"),
            ];
            for (name, value, unit) in counters {
                samples.counter(name, value, unit, "if", &labels);
            }
        }
        Ok(())
    }

    /// Usage of every selected mount: one error per mount that fails.
    fn filesystems(&self, samples: &mut Samples) -> Vec<HostMetricError> {
        let mounts = match self.mounts() {
            Ok(mounts) => mounts,
            Err(error) => return vec![error],
        };
        let mut errors = Vec::new();
        for mount in mounts {
            if self.excluded_fs_types.contains(&mount.fs_type)
                || !self.mount_points.selects(&mount.mount_point)
            {
                continue;
            }
            let path = self
                .mount_root
                .join(mount.mount_point.trim_start_matches('/'));
            let usage = match rustix::fs::statvfs(&path) {
                Ok(usage) => usage,
                Err(cause) => {
                    errors.push(HostMetricError::Usage {
                        mount_point: mount.mount_point,
                        cause: cause.into(),
                    });
                    continue;
                }
            };
            if usage.f_blocks == 0 {
                continue;
            }
            let block = usage.f_frsize;
            let labels = [
                label("mountpoint", &mount.mount_point),
                label("device", &mount.device),
                label("fstype", &mount.fs_type),
            ];
            let size = usage.f_blocks.saturating_mul(block);
            let used = usage
                .f_blocks
                .saturating_sub(usage.f_bfree)
                .saturating_mul(block);
            let available = usage.f_bavail.saturating_mul(block);
            for (name, bytes) in [
                ("host.fs.size_bytes", size),
                ("host.fs.used_bytes", used),
                ("host.fs.available_bytes", available),
            ] {
                samples.gauge(name, bytes as f64, "By", "host.fs", &labels);
            }
        }
        errors
    }

    /// The mounts of the host: those of its init process, which a container with
    /// the host's /proc sees too, or this process's own when that is unreadable.
    /// A mount point mounted over keeps only its last mount.
    fn mounts(&self) -> Result<Vec<Mount>, HostMetricError> {
        let mounts = read(&self.proc_root, "1/mounts", parse_mounts)
            .or_else(|_| read(&self.proc_root, "self/mounts", parse_mounts))?;
        let mut by_mount_point = BTreeMap::new();
        for mount in mounts {
            by_mount_point.insert(mount.mount_point.clone(), mount);
        }
        Ok(by_mount_point.into_values().collect())
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

/// Seconds since boot: the first number of /proc/uptime.
fn parse_uptime(text: &str) -> Result<f64, String> {
    let first = text.split_whitespace().next().ok_or("the file is empty")?;
    parse_float(first)
}

/// The 1, 5 and 15 minute load averages: the first three numbers of /proc/loadavg.
fn parse_loadavg(text: &str) -> Result<[f64; 3], String> {
    let mut fields = text.split_whitespace();
    let mut loads = [0.0; 3];
    for (load, window) in loads.iter_mut().zip(["1", "5", "15"]) {
        let field = fields
            .next()
            .ok_or_else(|| format!("the {window} minute load average is missing"))?;
        *load = parse_float(field)?;
    }
    Ok(loads)
}

/// The memory metrics of /proc/meminfo, in bytes.
fn parse_meminfo(text: &str) -> Result<Vec<(&'static str, u64)>, String> {
    let mut found = Vec::with_capacity(MEMINFO_FIELDS.len());
    for (field, metric, required) in MEMINFO_FIELDS {
        let found_line = text.lines().enumerate().find_map(|(index, line)| {
            line.strip_prefix(field)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(|rest| (rest, index + 1))
        });
        let (number, line) = match found_line {
            Some(found_line) => found_line,
            None if required => return Err(format!("no `{field}` line")),
            None => continue,
        };
        let mut parts = number.split_whitespace();
        let value = parts
            .next()
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| format!("line {line}: `{field}` has no whole number"))?;
        let bytes = match parts.next() {
            Some("kB") => value.saturating_mul(1024),
            None => value,
            Some(unit) => return Err(format!("line {line}: `{field}` has unknown unit `{unit}`")),
        };
        found.push((metric, bytes));
    }
    Ok(found)
}

/// Ticks spent in each mode by all CPUs together: the `cpu` line of /proc/stat.
/// Older kernels have fewer columns; the modes present are returned.
fn parse_cpu_ticks(text: &str) -> Result<Vec<(&'static str, u64)>, String> {
    let (number, line) = text
        .lines()
        .enumerate()
        .find_map(|(index, line)| line.strip_prefix("cpu ").map(|rest| (rest, index + 1)))
        .ok_or("no aggregate `cpu` line")?;
    let values: Vec<&str> = number.split_whitespace().collect();
    if values.len() < 4 {
        return Err(format!(
            "line {line}: the `cpu` line has {} columns, expected at least 4",
            values.len()
        ));
    }
    CPU_MODES
        .into_iter()
        .zip(values)
        .map(|(mode, value)| {
            value
                .parse::<u64>()
                .map(|ticks| (mode, ticks))
                .map_err(|_| format!("line {line}: `{mode}` is `{value}`, not a whole number"))
        })
        .collect()
}

/// The counters of one block device, from one line of /proc/diskstats.
#[derive(Debug, PartialEq, Eq)]
struct DiskStats {
    name: String,
    reads: u64,
    sectors_read: u64,
    writes: u64,
    sectors_written: u64,
    io_milliseconds: u64,
}

/// Every device of /proc/diskstats: `major minor name` then at least 11 counters.
fn parse_diskstats(text: &str) -> Result<Vec<DiskStats>, String> {
    let mut disks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 14 {
            return Err(format!(
                "line {}: {} columns, expected at least 14",
                index + 1,
                fields.len()
            ));
        }
        let name = fields[2];
        let counter = |column: usize, what: &str| {
            fields[column].parse::<u64>().map_err(|_| {
                format!(
                    "line {}: {what} of `{name}` is `{}`, not a whole number",
                    index + 1,
                    fields[column]
                )
            })
        };
        disks.push(DiskStats {
            name: name.to_owned(),
            reads: counter(3, "reads completed")?,
            sectors_read: counter(5, "sectors read")?,
            writes: counter(7, "writes completed")?,
            sectors_written: counter(9, "sectors written")?,
            io_milliseconds: counter(12, "time doing I/O")?,
        });
    }
    Ok(disks)
}

/// Whether `name` is a partition of another device in `devices`: `sda1` of `sda`,
/// `nvme0n1p2` of `nvme0n1`, `mmcblk0p1` of `mmcblk0`.
fn is_partition(name: &str, devices: &BTreeSet<&str>) -> bool {
    let disk = name.trim_end_matches(|c: char| c.is_ascii_digit());
    disk.len() < name.len()
        && (devices.contains(disk)
            || disk
                .strip_suffix('p')
                .is_some_and(|disk| devices.contains(disk)))
}

/// Counters of one direction of one interface.
#[derive(Debug, Default, PartialEq, Eq)]
struct TrafficCounters {
    bytes: u64,
    packets: u64,
    errors: u64,
    dropped: u64,
}

/// The counters of one network interface, from one line of /proc/net/dev.
#[derive(Debug, PartialEq, Eq)]
struct InterfaceStats {
    name: String,
    received: TrafficCounters,
    sent: TrafficCounters,
}

/// Every interface of /proc/net/dev: two header lines, then `name: ` and 8
/// receive and 8 transmit counters.
fn parse_net_dev(text: &str) -> Result<Vec<InterfaceStats>, String> {
    let mut interfaces = Vec::new();
    for (index, line) in text.lines().enumerate().skip(2) {
        if line.trim().is_empty() {
            continue;
        }
        let line_number = index + 1;
        let (name, counters) = line
            .rsplit_once(':')
            .ok_or_else(|| format!("line {line_number}: no `name:` before the counters"))?;
        let name = name.trim();
        let values = counters
            .split_whitespace()
            .map(|value| {
                value.parse::<u64>().map_err(|_| {
                    format!("line {line_number}: `{name}` has `{value}`, not a whole number")
                })
            })
            .collect::<Result<Vec<u64>, String>>()?;
        if values.len() < 16 {
            return Err(format!(
                "line {line_number}: `{name}` has {} counters, expected 16",
                values.len()
            ));
        }
        let direction = |first: usize| TrafficCounters {
            bytes: values[first],
            packets: values[first + 1],
            errors: values[first + 2],
            dropped: values[first + 3],
        };
        interfaces.push(InterfaceStats {
            name: name.to_owned(),
            received: direction(0),
            sent: direction(8),
        });
    }
    if interfaces.is_empty() && !text.contains('|') {
        return Err("no header line: not the format of /proc/net/dev".into());
    }
    Ok(interfaces)
}

/// One line of a mounts file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    device: String,
    mount_point: String,
    fs_type: String,
}

/// Every mount of a mounts file (`device mount_point type options 0 0`), with the
/// octal escapes of spaces, tabs and backslashes decoded.
fn parse_mounts(text: &str) -> Result<Vec<Mount>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let mut fields = line.split_whitespace();
            match (fields.next(), fields.next(), fields.next()) {
                (Some(device), Some(mount_point), Some(fs_type)) => Ok(Mount {
                    device: unescape_mount_field(device),
                    mount_point: unescape_mount_field(mount_point),
                    fs_type: fs_type.to_owned(),
                }),
                _ => Err(format!(
                    "line {}: expected `device mount_point type ...`, got `{line}`",
                    index + 1
                )),
            }
        })
        .collect()
}

/// Decodes the `\ooo` octal escapes the kernel writes for space, tab, newline and
/// backslash in mount fields.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut position = 0;
    while position < bytes.len() {
        let escape = bytes.get(position + 1..position + 4);
        let octal = escape.filter(|digits| {
            bytes[position] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match octal.and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok())
        {
            Some(byte) => {
                decoded.push(byte);
                position += 4;
            }
            None => {
                decoded.push(bytes[position]);
                position += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn parse_float(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
        .ok_or_else(|| format!("`{text}` is not a number"))
}

/// Where the batches of a collector go, and what counts them.
#[derive(Debug, Clone)]
pub(crate) struct MetricsOutput {
    /// The host the batches are about; their Kafka key.
    pub(crate) resource: Resource,
    pub(crate) publisher: Publisher,
    pub(crate) topic: String,
    pub(crate) metrics: AgentMetrics,
}

/// Collects from `collector` every `interval` and publishes one batch each time,
/// until `shutdown`. `name` (`host`, `container`) says in logs and self-metrics
/// which source it is.
pub(crate) async fn run<C: Collector>(
    name: &'static str,
    collector: C,
    interval: Duration,
    output: MetricsOutput,
    shutdown: CancellationToken,
) {
    let MetricsOutput {
        resource,
        publisher,
        topic,
        metrics,
    } = output;
    let collector = Arc::new(collector);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let collecting = Arc::clone(&collector);
        let time = crate::unix_nanos(SystemTime::now());
        let Ok((samples, errors)) =
            tokio::task::spawn_blocking(move || collecting.collect(time)).await
        else {
            continue;
        };
        for error in errors {
            metrics.collection_failed(name, C::error_source(&error));
            tracing::warn!(%error, source = name, "metric not collected");
        }
        if samples.is_empty() {
            continue;
        }
        let batch = MetricBatch {
            resource: Some(resource.clone()),
            samples,
            producer: crate::PRODUCER.to_owned(),
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            published = publisher.publish_batch(&topic, &batch) => match published {
                Ok(()) => metrics.published(&topic),
                Err(error) => tracing::warn!(%error, topic = %topic, source = name, "metrics batch not delivered"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::find;

    const MEMINFO: &str = "MemTotal:       16318480 kB\nMemFree:         1210396 kB\nMemAvailable:    9418820 kB\nBuffers:          530108 kB\nCached:          7081224 kB\nSwapCached:        12345 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097148 kB\nHugePages_Total:       0\n";
    const STAT: &str = "cpu  4705 356 584 3699176 23060 0 277 0 0 0\ncpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0\nintr 1462898\n";
    const DISKSTATS: &str = "\
   7       0 loop0 12 0 24 1 0 0 0 0 0 4 1 0 0 0 0 0 0
 259       0 nvme0n1 2449289 32419 97677034 12441921 165576 189924 190100304 1013284 0 351224 13493095 77320 77 119933288 36175 14545 1713
 259       1 nvme0n1p1 100 0 800 5 10 0 80 1 0 6 6 0 0 0 0 0 0
   8       0 sda 10 0 16 0 20 0 40 0 0 2500 0
   8       1 sda1 5 0 8 0 10 0 20 0 0 1000 0
 253       0 dm-0 7 0 56 0 3 0 24 0 0 1999 0
   1       0 ram0 0 0 0 0 0 0 0 0 0 0 0
";
    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 2198116786  497541    0    0    0     0          0         0 2198116786  497541    0    0    0     0       0          0
  eth0:18446744073709551615   19878    3    4    0     0          0         0  1198082   11063    5    6    0     0       0          0
";
    const MOUNTS: &str = "\
proc /proc proc rw,relatime 0 0
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime 0 0
/dev/vdb /srv/my\\040data ext4 rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
";

    fn collector(proc_root: &Path) -> HostCollector {
        HostCollector::new(&HostMetricsConfig {
            proc_root: proc_root.to_owned(),
            ..HostMetricsConfig::default()
        })
        .unwrap()
    }

    fn write_proc(root: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<sample::Value> {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(key, value)| find(&s.labels, key) == Some(*value))
            })
            .and_then(|s| s.value)
    }

    #[test]
    fn uptime_and_load_are_read() {
        assert_eq!(parse_uptime("350735.47 234388.90\n"), Ok(350735.47));
        assert_eq!(
            parse_loadavg("0.20 0.18 0.12 1/80 11206\n"),
            Ok([0.20, 0.18, 0.12])
        );
    }

    #[test]
    fn memory_is_converted_to_bytes() {
        let memory = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(
            memory,
            [
                ("host.memory.total_bytes", 16318480 * 1024),
                ("host.memory.available_bytes", 9418820 * 1024),
                ("host.memory.free_bytes", 1210396 * 1024),
                ("host.memory.buffers_bytes", 530108 * 1024),
                ("host.memory.cached_bytes", 7081224 * 1024),
                ("host.swap.total_bytes", 2097148 * 1024),
                ("host.swap.free_bytes", 2097148 * 1024),
            ]
        );
    }

    #[test]
    fn cpu_ticks_come_from_the_aggregate_line() {
        assert_eq!(
            parse_cpu_ticks(STAT).unwrap(),
            [
                ("user", 4705),
                ("nice", 356),
                ("system", 584),
                ("idle", 3699176),
                ("iowait", 23060),
                ("irq", 0),
                ("softirq", 277),
                ("steal", 0),
            ]
        );
        assert_eq!(parse_cpu_ticks("cpu  1 2 3 4\n").unwrap().len(), 4);
    }

    #[test]
    fn disk_counters_are_read_per_device() {
        let disks = parse_diskstats(DISKSTATS).unwrap();
        assert_eq!(disks.len(), 7);
        assert_eq!(
            disks[1],
            DiskStats {
                name: "nvme0n1".into(),
                reads: 2449289,
                sectors_read: 97677034,
                writes: 165576,
                sectors_written: 190100304,
                io_milliseconds: 351224,
            }
        );
        let names: BTreeSet<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        let partitions: Vec<&str> = disks
            .iter()
            .map(|d| d.name.as_str())
            .filter(|name| is_partition(name, &names))
            .collect();
        assert_eq!(partitions, ["nvme0n1p1", "sda1"]);
    }

    #[test]
    fn interface_counters_are_read_per_interface() {
        let interfaces = parse_net_dev(NET_DEV).unwrap();
        assert_eq!(interfaces.len(), 2);
        assert_eq!(
            interfaces[1],
            InterfaceStats {
                name: "eth0".into(),
                received: TrafficCounters {
                    bytes: u64::MAX,
                    packets: 19878,
                    errors: 3,
                    dropped: 4,
                },
                sent: TrafficCounters {
                    bytes: 1198082,
                    packets: 11063,
                    errors: 5,
                    dropped: 6,
                },
            }
        );
    }

    #[test]
    fn mounts_are_read_with_escapes_decoded() {
        let mounts = parse_mounts(MOUNTS).unwrap();
        assert_eq!(mounts.len(), 5);
        assert_eq!(
            mounts[3],
            Mount {
                device: "/dev/vdb".into(),
                mount_point: "/srv/my data".into(),
                fs_type: "ext4".into(),
            }
        );
        assert_eq!(unescape_mount_field(r"a\134b\011c\1"), "a\\b\tc\\1");
    }

    #[test]
    fn malformed_text_gets_a_clear_error() {
        assert_eq!(parse_uptime(""), Err("the file is empty".into()));
        assert_eq!(parse_uptime("abc 1"), Err("`abc` is not a number".into()));
        assert_eq!(
            parse_loadavg("0.1 0.2"),
            Err("the 15 minute load average is missing".into())
        );
        assert_eq!(
            parse_meminfo("MemTotal: 12 kB\n"),
            Err("no `MemAvailable` line".into())
        );
        assert_eq!(
            parse_meminfo(
                "MemTotal: 1 kB\nMemAvailable: 1 kB\nMemFree: 1 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
            )
            .map(|memory| memory.len()),
            Ok(5),
            "Buffers and Cached may be missing"
        );
        assert_eq!(
            parse_meminfo("MemTotal: lots\n"),
            Err("line 1: `MemTotal` has no whole number".into())
        );
        assert_eq!(
            parse_cpu_ticks("intr 1\ncpu  1 x 3 4\n"),
            Err("line 2: `nice` is `x`, not a whole number".into())
        );
        assert_eq!(
            parse_cpu_ticks("cpu0 1 2 3 4\n"),
            Err("no aggregate `cpu` line".into())
        );
        assert_eq!(
            parse_diskstats("   8 0 sda 1 2 3\n"),
            Err("line 1: 6 columns, expected at least 14".into())
        );
        assert_eq!(
            parse_diskstats("8 0 sda 1 0 2 0 3 0 x 0 0 7 0\n"),
            Err("line 1: sectors written of `sda` is `x`, not a whole number".into())
        );
        assert_eq!(
            parse_net_dev("a|b\nc|d\n  eth0: 1 2 3\n"),
            Err("line 3: `eth0` has 3 counters, expected 16".into())
        );
        assert_eq!(
            parse_net_dev("a|b\nc|d\n  eth0 1 2 3\n"),
            Err("line 3: no `name:` before the counters".into())
        );
        assert_eq!(
            parse_net_dev("a|b\nc|d\n  eth0: 1 -2 3\n"),
            Err("line 3: `eth0` has `-2`, not a whole number".into())
        );
        assert_eq!(
            parse_net_dev("garbage\n"),
            Err("no header line: not the format of /proc/net/dev".into())
        );
        assert_eq!(
            parse_mounts("/dev/vda /\n"),
            Err("line 1: expected `device mount_point type ...`, got `/dev/vda /`".into())
        );
    }

    #[test]
    fn one_bad_file_leaves_the_other_metrics() {
        let proc_root = tempfile::tempdir().unwrap();
        write_proc(
            proc_root.path(),
            &[
                ("uptime", "12.5 3.0\n"),
                ("loadavg", "garbage\n"),
                ("meminfo", MEMINFO),
                ("stat", STAT),
                ("diskstats", "8 0 sda 1 2\n"),
                ("net/dev", NET_DEV),
                ("1/mounts", "proc /proc proc rw 0 0\n"),
            ],
        );

        let (samples, errors) = collector(proc_root.path()).collect(42);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                format!(
                    "{} could not be parsed: `garbage` is not a number",
                    proc_root.path().join("loadavg").display()
                ),
                format!(
                    "{} could not be parsed: line 1: 5 columns, expected at least 14",
                    proc_root.path().join("diskstats").display()
                ),
            ]
        );
        assert_eq!(
            errors
                .iter()
                .map(HostMetricError::source)
                .collect::<Vec<_>>(),
            ["loadavg", "diskstats"]
        );
        assert_eq!(samples.len(), 1 + 7 + 8 + 2 * 8);
        assert!(samples.iter().all(|s| s.time_unix_nano == 42));
        let uptime = &samples[0];
        assert_eq!(
            (
                uptime.name.as_str(),
                uptime.value,
                uptime.metric_set.as_str()
            ),
            (
                "host.uptime.seconds",
                Some(sample::Value::Gauge(12.5)),
                "host.uptime"
            )
        );
        let idle = samples
            .iter()
            .find(|s| s.labels.iter().any(|l| l.value == "idle"))
            .unwrap();
        assert_eq!(idle.name, "host.cpu.ticks");
        assert_eq!(idle.kind, MetricKind::Counter as i32);
        assert_eq!(idle.value_type, ValueType::Counter64 as i32);
        assert_eq!(idle.value, Some(sample::Value::Counter(3699176)));
        let in_octets = samples
            .iter()
            .find(|s| s.name == "if.in.octets" && find(&s.labels, "ifName") == Some("eth0"))
            .unwrap();
        assert_eq!(in_octets.value, Some(sample::Value::Counter(u64::MAX)));
        assert_eq!(
            (in_octets.kind, in_octets.metric_set.as_str()),
            (MetricKind::Counter as i32, "if")
        );
    }

    #[test]
    fn disks_and_interfaces_follow_the_selection() {
        let proc_root = tempfile::tempdir().unwrap();
        write_proc(
            proc_root.path(),
            &[("diskstats", DISKSTATS), ("net/dev", NET_DEV)],
        );
        let (samples, _) = collector(proc_root.path()).collect(1);
        let devices: BTreeSet<&str> = samples
            .iter()
            .filter(|s| s.name == "host.disk.reads")
            .filter_map(|s| find(&s.labels, "device"))
            .collect();
        assert_eq!(devices, BTreeSet::from(["nvme0n1", "sda", "dm-0"]));
        let nvme = [("device", "nvme0n1")];
        assert_eq!(
            value(&samples, "host.disk.read.bytes", &nvme),
            Some(sample::Value::Counter(97677034 * 512))
        );
        assert_eq!(
            value(&samples, "host.disk.written.bytes", &nvme),
            Some(sample::Value::Counter(190100304 * 512))
        );
        assert_eq!(
            value(&samples, "host.disk.writes", &nvme),
            Some(sample::Value::Counter(165576))
        );
        assert_eq!(
            value(&samples, "host.disk.io_time.seconds", &nvme),
            Some(sample::Value::Counter(351))
        );

        let mut config = HostMetricsConfig {
            proc_root: proc_root.path().to_owned(),
            ..HostMetricsConfig::default()
        };
        config.disks.partitions = true;
        config.disks.include = vec!["sd*".into()];
        config.interfaces.exclude = vec!["lo".into()];
        let (samples, _) = HostCollector::new(&config).unwrap().collect(1);
        let devices: BTreeSet<&str> = samples
            .iter()
            .filter(|s| s.name == "host.disk.reads")
            .filter_map(|s| find(&s.labels, "device"))
            .collect();
        assert_eq!(devices, BTreeSet::from(["sda", "sda1"]));
        let interfaces: BTreeSet<&str> = samples
            .iter()
            .filter(|s| s.name == "if.out.discards")
            .filter_map(|s| find(&s.labels, "ifName"))
            .collect();
        assert_eq!(interfaces, BTreeSet::from(["eth0"]));
    }

    #[test]
    fn file_system_usage_is_read_for_real_mounts_only() {
        let proc_root = tempfile::tempdir().unwrap();
        let mount_root = tempfile::tempdir().unwrap();
        std::fs::create_dir(mount_root.path().join("data")).unwrap();
        write_proc(
            proc_root.path(),
            &[(
                "self/mounts",
                "proc /proc proc rw 0 0\n/dev/vdz /data ext4 rw 0 0\n/dev/vdy /gone ext4 rw 0 0\ntmpfs /data tmpfs rw 0 0\n",
            )],
        );
        let config = HostMetricsConfig {
            proc_root: proc_root.path().to_owned(),
            mount_root: mount_root.path().to_owned(),
            ..HostMetricsConfig::default()
        };
        let (samples, errors) = HostCollector::new(&config).unwrap().collect(1);
        let fs_samples: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.metric_set == "host.fs")
            .collect();
        assert_eq!(fs_samples.len(), 3, "{fs_samples:?}");
        let size = fs_samples[0];
        assert_eq!(size.name, "host.fs.size_bytes");
        assert_eq!(find(&size.labels, "mountpoint"), Some("/data"));
        assert_eq!(find(&size.labels, "device"), Some("tmpfs"));
        assert_eq!(find(&size.labels, "fstype"), Some("tmpfs"));
        let Some(sample::Value::Gauge(bytes)) = size.value else {
            panic!("size is not a gauge: {size:?}");
        };
        assert!(bytes > 0.0);
        let usage_errors: Vec<String> = errors
            .iter()
            .filter(|e| e.source() == "statvfs")
            .map(ToString::to_string)
            .collect();
        assert_eq!(usage_errors.len(), 1);
        assert!(
            usage_errors[0].starts_with("the usage of the file system at /gone could not be read:"),
            "{usage_errors:?}"
        );
    }

    #[test]
    fn a_missing_file_is_reported_by_path() {
        let proc_root = tempfile::tempdir().unwrap();
        let (samples, errors) = collector(proc_root.path()).collect(1);
        assert!(samples.is_empty());
        assert_eq!(errors.len(), 7);
        assert!(errors[0].to_string().starts_with(&format!(
            "{} could not be read:",
            proc_root.path().join("uptime").display()
        )));
        assert_eq!(errors[6].source(), "mounts");
    }

    #[test]
    fn the_real_proc_parses() {
        let (samples, errors) = collector(Path::new("/proc")).collect(1);
        assert!(errors.is_empty(), "{errors:?}");
        for name in [
            "host.memory.cached_bytes",
            "host.cpu.ticks",
            "if.in.octets",
            "host.fs.size_bytes",
        ] {
            assert!(samples.iter().any(|s| s.name == name), "no {name}");
        }
        let root = [("mountpoint", "/")];
        assert!(value(&samples, "host.fs.available_bytes", &root).is_some());
    }
}
