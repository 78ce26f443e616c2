//! CPU time and load from /proc: the aggregate `cpu` line of /proc/stat, the load
//! averages of /proc/loadavg and the uptime of /proc/uptime, as the `host.cpu`,
//! `host.load` and `host.uptime` samples of the host's batch.

use super::{HostCollector, HostMetricError, Samples, read};
use vigil_proto::labels::label;

/// The columns of the `cpu` line of /proc/stat, in order.
const CPU_MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

impl HostCollector {
    pub(super) fn uptime(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        let seconds = read(&self.proc_root, "uptime", parse_uptime)?;
        samples.gauge("host.uptime.seconds", seconds, "s", "host.uptime", &[]);
        Ok(())
    }

    pub(super) fn load(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        let loads = read(&self.proc_root, "loadavg", parse_loadavg)?;
        for (name, load) in ["host.load.1m", "host.load.5m", "host.load.15m"]
            .into_iter()
            .zip(loads)
        {
            samples.gauge(name, load, "", "host.load", &[]);
        }
        Ok(())
    }

    pub(super) fn cpu(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        for (mode, ticks) in read(&self.proc_root, "stat", parse_cpu_ticks)? {
            let labels = [label("mode", mode)];
            samples.counter("host.cpu.ticks", ticks, "{tick}", "host.cpu", &labels);
        }
        Ok(())
    }
}

/// Seconds since boot: the first number of /proc/uptime.
pub(super) fn parse_uptime(text: &str) -> Result<f64, String> {
    let first = text.split_whitespace().next().ok_or("the file is empty")?;
    parse_float(first)
}

/// The 1, 5 and 15 minute load averages: the first three numbers of /proc/loadavg.
pub(super) fn parse_loadavg(text: &str) -> Result<[f64; 3], String> {
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

/// Ticks spent in each mode by all CPUs together: the `cpu` line of /proc/stat.
/// Older kernels have fewer columns; the modes present are returned.
pub(super) fn parse_cpu_ticks(text: &str) -> Result<Vec<(&'static str, u64)>, String> {
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
