//! Block device counters from /proc/diskstats, for the disks the configuration
//! selects (partitions only when asked), as the `host.disk` samples of the host's
//! batch.

use super::{HostCollector, HostMetricError, Samples, read};
use std::collections::BTreeSet;
use vigil_proto::labels::label;

/// /proc/diskstats counts sectors of 512 bytes, whatever the device's sector size.
const DISKSTATS_SECTOR_BYTES: u64 = 512;

impl HostCollector {
    pub(super) fn disks(&self, samples: &mut Samples) -> Result<(), HostMetricError> {
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
}

/// The counters of one block device, from one line of /proc/diskstats.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DiskStats {
    pub(super) name: String,
    pub(super) reads: u64,
    pub(super) sectors_read: u64,
    pub(super) writes: u64,
    pub(super) sectors_written: u64,
    pub(super) io_milliseconds: u64,
}

/// Every device of /proc/diskstats: `major minor name` then at least 11 counters.
pub(super) fn parse_diskstats(text: &str) -> Result<Vec<DiskStats>, String> {
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
pub(super) fn is_partition(name: &str, devices: &BTreeSet<&str>) -> bool {
    let disk = name.trim_end_matches(|c: char| c.is_ascii_digit());
    disk.len() < name.len()
        && (devices.contains(disk)
            || disk
                .strip_suffix('p')
                .is_some_and(|disk| devices.contains(disk)))
}
