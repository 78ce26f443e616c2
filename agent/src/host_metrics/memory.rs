//! Memory and swap from /proc/meminfo, in bytes, as the `host.memory` samples of
//! the host's batch.

use super::{HostCollector, HostMetricError, Samples, read};

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

impl HostCollector {
    pub(super) fn memory(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
        for (name, bytes) in read(&self.proc_root, "meminfo", parse_meminfo)? {
            samples.gauge(name, bytes as f64, "By", "host.memory", &[]);
        }
        Ok(())
    }
}

/// The memory metrics of /proc/meminfo, in bytes.
pub(super) fn parse_meminfo(text: &str) -> Result<Vec<(&'static str, u64)>, String> {
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
