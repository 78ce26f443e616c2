//! Host metrics pushed from the proc filesystem, for hosts not polled over SNMP: a
//! source of the metrics data path. Every interval one `MetricBatch` of the host
//! goes to the raw metrics topic, all samples with the same timestamp.
//!
//! Parsing is pure functions over file text; a file that cannot be read or parsed
//! is reported and counted, and the other files still produce their samples.

use crate::self_metrics::AgentMetrics;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricBatch, MetricKind, Resource, Sample, ValueType, sample};
use vigil_runtime::Publisher;

/// The fields of /proc/meminfo read, and the metric each becomes.
const MEMINFO_FIELDS: [(&str, &str); 5] = [
    ("MemTotal", "host.memory.total_bytes"),
    ("MemAvailable", "host.memory.available_bytes"),
    ("MemFree", "host.memory.free_bytes"),
    ("SwapTotal", "host.swap.total_bytes"),
    ("SwapFree", "host.swap.free_bytes"),
];

/// The columns of the `cpu` line of /proc/stat, in order.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// A proc file could not be read or did not look as expected.
#[derive(Debug, Error)]
pub enum HostMetricError {
    #[error("{path} could not be read: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path} could not be parsed: {problem}")]
    Parse { path: String, problem: String },
}

/// Reads every host metric under `proc_root` once, all stamped `time_unix_nano`.
/// A file that fails is reported in the errors; the others still give samples.
pub fn collect(proc_root: &Path, time_unix_nano: i64) -> (Vec<Sample>, Vec<HostMetricError>) {
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    let sample = |name: &str, value: sample::Value, unit: &str, set: &str| Sample {
        name: name.to_owned(),
        labels: Vec::new(),
        kind: match value {
            sample::Value::Counter(_) => MetricKind::Counter,
            sample::Value::Gauge(_) => MetricKind::Gauge,
        } as i32,
        time_unix_nano,
        value: Some(value),
        value_type: match value {
            sample::Value::Counter(_) => ValueType::Counter64,
            sample::Value::Gauge(_) => ValueType::Float,
        } as i32,
        unit: unit.to_owned(),
        metric_set: set.to_owned(),
    };

    match read(proc_root, "uptime", parse_uptime) {
        Ok(seconds) => samples.push(sample(
            "host.uptime.seconds",
            sample::Value::Gauge(seconds),
            "s",
            "host.uptime",
        )),
        Err(error) => errors.push(error),
    }
    match read(proc_root, "loadavg", parse_loadavg) {
        Ok(loads) => {
            for (name, load) in ["host.load.1m", "host.load.5m", "host.load.15m"]
                .into_iter()
                .zip(loads)
            {
                samples.push(sample(name, sample::Value::Gauge(load), "", "host.load"));
            }
        }
        Err(error) => errors.push(error),
    }
    match read(proc_root, "meminfo", parse_meminfo) {
        Ok(memory) => {
            for (name, bytes) in memory {
                samples.push(sample(
                    name,
                    sample::Value::Gauge(bytes as f64),
                    "By",
                    "host.memory",
                ));
            }
        }
        Err(error) => errors.push(error),
    }
    match read(proc_root, "stat", parse_cpu_ticks) {
        Ok(ticks) => {
            for (mode, count) in ticks {
                let mut cpu = sample(
                    "host.cpu.ticks",
                    sample::Value::Counter(count),
                    "{tick}",
                    "host.cpu",
                );
                cpu.labels.push(label("mode", mode));
                samples.push(cpu);
            }
        }
        Err(error) => errors.push(error),
    }
    (samples, errors)
}

fn read<T>(
    proc_root: &Path,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, HostMetricError> {
    let path: PathBuf = proc_root.join(name);
    let text = std::fs::read_to_string(&path).map_err(|source| HostMetricError::Read {
        path: path.display().to_string(),
        cause: source,
    })?;
    parse(&text).map_err(|problem| HostMetricError::Parse {
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
    for (field, metric) in MEMINFO_FIELDS {
        let (number, line) = text
            .lines()
            .enumerate()
            .find_map(|(index, line)| {
                line.strip_prefix(field)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|rest| (rest, index + 1))
            })
            .ok_or_else(|| format!("no `{field}` line"))?;
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

fn parse_float(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|value| value.is_finite())
        .ok_or_else(|| format!("`{text}` is not a number"))
}

/// Collects every `interval` and publishes one batch each time, until `shutdown`.
pub(crate) async fn run(
    proc_root: PathBuf,
    interval: Duration,
    resource: Resource,
    publisher: Publisher,
    topic: String,
    metrics: AgentMetrics,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let root = proc_root.clone();
        let time = crate::unix_nanos(SystemTime::now());
        let Ok((samples, errors)) = tokio::task::spawn_blocking(move || collect(&root, time)).await
        else {
            continue;
        };
        for error in errors {
            metrics.host_metric_errors.inc();
            tracing::warn!(%error, "host metric not collected");
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
                Err(error) => tracing::warn!(%error, topic = %topic, "host metrics batch not delivered"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       16318480 kB\nMemFree:         1210396 kB\nMemAvailable:    9418820 kB\nBuffers:          530108 kB\nSwapCached:        12345 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097148 kB\nHugePages_Total:       0\n";
    const STAT: &str = "cpu  4705 356 584 3699176 23060 0 277 0 0 0\ncpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0\nintr 1462898\n";

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
    }

    #[test]
    fn one_bad_file_leaves_the_other_metrics() {
        let proc_root = tempfile::tempdir().unwrap();
        std::fs::write(proc_root.path().join("uptime"), "12.5 3.0\n").unwrap();
        std::fs::write(proc_root.path().join("loadavg"), "garbage\n").unwrap();
        std::fs::write(proc_root.path().join("meminfo"), MEMINFO).unwrap();
        std::fs::write(proc_root.path().join("stat"), STAT).unwrap();

        let (samples, errors) = collect(proc_root.path(), 42);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            format!(
                "{} could not be parsed: `garbage` is not a number",
                proc_root.path().join("loadavg").display()
            )
        );
        assert_eq!(samples.len(), 1 + 5 + 8);
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
    }

    #[test]
    fn a_missing_file_is_reported_by_path() {
        let proc_root = tempfile::tempdir().unwrap();
        let (samples, errors) = collect(proc_root.path(), 1);
        assert!(samples.is_empty());
        assert_eq!(errors.len(), 4);
        assert!(errors[0].to_string().starts_with(&format!(
            "{} could not be read:",
            proc_root.path().join("uptime").display()
        )));
    }

    #[test]
    fn the_real_proc_parses() {
        let (samples, errors) = collect(Path::new("/proc"), 1);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(samples.len() >= 1 + 3 + 5 + 4);
    }
}
