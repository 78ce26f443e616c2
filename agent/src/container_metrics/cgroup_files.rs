//! The text of cgroup files (cpu.stat, memory.stat, io.stat, blkio, cpu.max, CFS
//! quotas, CPU lists, single numbers and limits), read and parsed into the values
//! the cgroup reader makes samples of; a file that does not parse becomes an error
//! that names it.

use super::ContainerMetricError;
use super::layout::Controller;
use std::io::ErrorKind;
use std::path::Path;

/// Reads and parses the file at `path`; `None` when it does not exist.
pub(super) fn read_file<T>(
    controller: Controller,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ContainerMetricError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(cause) if cause.kind() == ErrorKind::NotFound => return Ok(None),
        Err(cause) => {
            return Err(ContainerMetricError::Read {
                controller: controller.name(),
                path: path.display().to_string(),
                cause,
            });
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|problem| ContainerMetricError::Parse {
            controller: controller.name(),
            path: path.display().to_string(),
            problem,
        })
}

/// Flat `key value` lines (cpu.stat, memory.stat) with whole-number values.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct KeyedValues(Vec<(String, u64)>);

impl KeyedValues {
    pub(super) fn get(&self, key: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }
}

pub(super) fn parse_keyed(text: &str) -> Result<KeyedValues, String> {
    let mut values = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "line {}: expected `key value`, got `{line}`",
                index + 1
            ));
        };
        let value = value.parse::<u64>().map_err(|_| {
            format!(
                "line {}: `{key}` is `{value}`, not a whole number",
                index + 1
            )
        })?;
        values.push((key.to_owned(), value));
    }
    Ok(KeyedValues(values))
}

/// A file of one whole number (memory.current, cpuacct.usage, pids.current).
pub(super) fn parse_number(text: &str) -> Result<u64, String> {
    let value = text.trim();
    if value.is_empty() {
        return Err("the file is empty".into());
    }
    value
        .parse::<u64>()
        .map_err(|_| format!("`{value}` is not a whole number"))
}

/// A limit: a whole number, or `max` for none (memory.max, pids.max).
pub(super) fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        _ => parse_number(text).map(Some),
    }
}

/// A CFS bandwidth limit: `quota_us` microseconds of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CpuQuota {
    pub(super) quota_us: u64,
    pub(super) period_us: u64,
}

impl CpuQuota {
    /// The limit in cores: 50000 every 100000 microseconds is half a core.
    pub(super) fn cores(self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }
}

/// cgroup v2 cpu.max: `quota period` in microseconds, the quota `max` for none.
pub(super) fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, String> {
    let line = text.trim();
    if line.is_empty() {
        return Err("the file is empty".into());
    }
    let mut fields = line.split_whitespace();
    let (Some(quota), Some(period), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(format!("expected `quota period`, got `{line}`"));
    };
    let period_us = positive(period, "period")?;
    if quota == "max" {
        return Ok(None);
    }
    let quota_us = positive(quota, "quota")
        .map_err(|_| format!("the quota `{quota}` is neither `max` nor a positive whole number"))?;
    Ok(Some(CpuQuota {
        quota_us,
        period_us,
    }))
}

/// cgroup v1 cpu.cfs_quota_us: microseconds per period, `-1` for none.
pub(super) fn parse_cfs_quota(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "" => Err("the file is empty".into()),
        "-1" => Ok(None),
        quota => positive(quota, "quota").map(Some).map_err(|_| {
            format!("the quota `{quota}` is neither `-1` nor a positive whole number")
        }),
    }
}

/// cgroup v1 cpu.cfs_period_us: microseconds.
pub(super) fn parse_cfs_period(text: &str) -> Result<u64, String> {
    match text.trim() {
        "" => Err("the file is empty".into()),
        period => positive(period, "period"),
    }
}

/// A whole number above zero, the `what` of a CPU quota.
fn positive(text: &str, what: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|value| *value > 0)
        .ok_or_else(|| format!("the {what} `{text}` is not a positive whole number"))
}

/// A CPU list (cpuset.cpus, cpuset.cpus.effective, devices/system/cpu/online) as
/// the kernel writes it, `0-3,8,10-11`: the number of CPUs it names, 0 when empty.
pub(super) fn parse_cpu_list(text: &str) -> Result<u32, String> {
    let list = text.trim();
    if list.is_empty() {
        return Ok(0);
    }
    let mut count: u32 = 0;
    for range in list.split(',') {
        let cpu = |number: &str| {
            number
                .parse::<u32>()
                .map_err(|_| format!("`{range}` is not a CPU number or range `first-last`"))
        };
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (cpu(first)?, cpu(last)?),
            None => (cpu(range)?, cpu(range)?),
        };
        let in_range = last
            .checked_sub(first)
            .ok_or_else(|| format!("the range `{range}` ends before it starts"))?;
        count = count.saturating_add(in_range).saturating_add(1);
    }
    Ok(count)
}

/// I/O counters of one block device, named `major:minor`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DeviceIo {
    pub(super) device: String,
    pub(super) read_bytes: u64,
    pub(super) written_bytes: u64,
    pub(super) reads: u64,
    pub(super) writes: u64,
}

/// cgroup v2 io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` lines.
pub(super) fn parse_io_stat(text: &str) -> Result<Vec<DeviceIo>, String> {
    let mut devices = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let Some(device) = fields.next() else {
            continue;
        };
        if !is_device_number(device) {
            return Err(format!(
                "line {}: `{device}` is not a `major:minor` device number",
                index + 1
            ));
        }
        let mut io = DeviceIo {
            device: device.to_owned(),
            read_bytes: 0,
            written_bytes: 0,
            reads: 0,
            writes: 0,
        };
        for field in fields {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("line {}: `{field}` is not `key=value`", index + 1))?;
            let value = value.parse::<u64>().map_err(|_| {
                format!(
                    "line {}: `{key}` is `{value}`, not a whole number",
                    index + 1
                )
            })?;
            match key {
                "rbytes" => io.read_bytes = value,
                "wbytes" => io.written_bytes = value,
                "rios" => io.reads = value,
                "wios" => io.writes = value,
                _ => {}
            }
        }
        devices.push(io);
    }
    Ok(devices)
}

/// Read and write counts (bytes or operations) per device, in file order.
pub(super) type BlkioCounts = Vec<(String, u64, u64)>;

/// cgroup v1 blkio.throttle.io_service_bytes / io_serviced: `8:0 Read 123` lines
/// and a last `Total` line.
pub(super) fn parse_blkio(text: &str) -> Result<BlkioCounts, String> {
    let mut devices: Vec<(String, u64, u64)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] | ["Total", _] => {}
            [device, operation, value] if is_device_number(device) => {
                let value = value.parse::<u64>().map_err(|_| {
                    format!(
                        "line {}: `{device} {operation}` is `{value}`, not a whole number",
                        index + 1
                    )
                })?;
                let position = match devices.iter().position(|(name, _, _)| name == device) {
                    Some(position) => position,
                    None => {
                        devices.push(((*device).to_owned(), 0, 0));
                        devices.len() - 1
                    }
                };
                match *operation {
                    "Read" => devices[position].1 = value,
                    "Write" => devices[position].2 = value,
                    _ => {}
                }
            }
            _ => {
                return Err(format!(
                    "line {}: expected `major:minor operation value`, got `{line}`",
                    index + 1
                ));
            }
        }
    }
    Ok(devices)
}

fn is_device_number(text: &str) -> bool {
    text.split_once(':').is_some_and(|(major, minor)| {
        !major.is_empty()
            && !minor.is_empty()
            && major.bytes().all(|b| b.is_ascii_digit())
            && minor.bytes().all(|b| b.is_ascii_digit())
    })
}
