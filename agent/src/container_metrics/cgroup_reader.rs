//! Sample building for one cgroup: reads its cpu, memory, io and pids files (v1 or
//! v2, as the layout says) and turns them into the `container.*` samples, labelled
//! with the cgroup's identity, of the batch for the raw metrics topic.

use super::ContainerMetricError;
use super::cgroup_files::{
    BlkioCounts, CpuQuota, DeviceIo, parse_blkio, parse_cfs_period, parse_cfs_quota,
    parse_cpu_list, parse_cpu_max, parse_io_stat, parse_keyed, parse_limit, parse_number,
    read_file,
};
use super::layout::{Controller, Layout, Version, cpuset_file};
use crate::host_metrics::Samples;
use vigil_proto::labels::label;
use vigil_proto::v1::Label;

/// cgroup v1 writes a limit near `i64::MAX`, rounded to pages, for "no limit".
const V1_NO_LIMIT_FROM: u64 = 1 << 62;

/// memory.stat fields reported as gauges: metric, cgroup v2 key, cgroup v1 key.
const MEMORY_STAT_GAUGES: [(&str, &str, Option<&str>); 8] = [
    ("container.memory.anon_bytes", "anon", Some("total_rss")),
    ("container.memory.file_bytes", "file", Some("total_cache")),
    ("container.memory.kernel_bytes", "kernel", None),
    ("container.memory.shmem_bytes", "shmem", Some("total_shmem")),
    (
        "container.memory.file_mapped_bytes",
        "file_mapped",
        Some("total_mapped_file"),
    ),
    (
        "container.memory.file_dirty_bytes",
        "file_dirty",
        Some("total_dirty"),
    ),
    (
        "container.memory.file_writeback_bytes",
        "file_writeback",
        Some("total_writeback"),
    ),
    ("container.memory.sock_bytes", "sock", None),
];

/// memory.stat fields reported as counters: metric, cgroup v2 key, cgroup v1 key.
const MEMORY_STAT_COUNTERS: [(&str, &str, &str); 2] = [
    ("container.memory.page_faults", "pgfault", "total_pgfault"),
    (
        "container.memory.major_page_faults",
        "pgmajfault",
        "total_pgmajfault",
    ),
];

/// Reads the controllers of one cgroup into samples with its labels.
#[derive(Debug)]
pub(super) struct CgroupReader<'a> {
    pub(super) layout: &'a Layout,
    pub(super) cgroup: &'a str,
    pub(super) labels: &'a [Label],
    /// The host's online CPUs, counted once per collection.
    pub(super) host_cpus: Option<u32>,
}

impl CgroupReader<'_> {
    /// `file` of this cgroup in hierarchy `v1_name` (or v2), parsed; `None` when
    /// the cgroup or the file does not exist.
    fn read<T>(
        &self,
        controller: Controller,
        version: Version,
        v1_name: &str,
        file: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ContainerMetricError> {
        let path = self.layout.dir(version, v1_name, self.cgroup).join(file);
        read_file(controller, &path, parse)
    }

    /// CPU time, then the cores the cgroup may use; a file that fails in one
    /// spares the other.
    pub(super) fn cpu(
        &self,
        version: Version,
        samples: &mut Samples,
    ) -> Result<(), ContainerMetricError> {
        let time = self.cpu_time(version, samples);
        let cores = self.cpu_cores(version, samples);
        time.and(cores)
    }

    fn cpu_time(
        &self,
        version: Version,
        samples: &mut Samples,
    ) -> Result<(), ContainerMetricError> {
        let set = "container.cpu";
        let cpu = Controller::Cpu;
        let (usage, throttling) = match version {
            Version::V2 => {
                let Some(stat) = self.read(cpu, version, "", "cpu.stat", parse_keyed)? else {
                    return Ok(());
                };
                let usage = ["usage_usec", "user_usec", "system_usec"].map(|key| stat.get(key));
                let throttling = [
                    stat.get("nr_periods"),
                    stat.get("nr_throttled"),
                    stat.get("throttled_usec"),
                ];
                (usage, throttling)
            }
            Version::V1 => {
                let nanos = |file| self.read(cpu, version, "cpuacct", file, parse_number);
                let Some(total) = nanos("cpuacct.usage")? else {
                    return Ok(());
                };
                let usage = [
                    Some(total),
                    nanos("cpuacct.usage_user")?,
                    nanos("cpuacct.usage_sys")?,
                ]
                .map(|value| value.map(|nanos| nanos / 1000));
                let stat = self
                    .read(cpu, version, "cpu", "cpu.stat", parse_keyed)?
                    .unwrap_or_default();
                let throttling = [
                    stat.get("nr_periods"),
                    stat.get("nr_throttled"),
                    stat.get("throttled_time").map(|nanos| nanos / 1000),
                ];
                (usage, throttling)
            }
        };
        let names = [
            ("container.cpu.usage.microseconds", "us"),
            ("container.cpu.user.microseconds", "us"),
            ("container.cpu.system.microseconds", "us"),
            ("container.cpu.periods", "{period}"),
            ("container.cpu.throttled.periods", "{period}"),
            ("container.cpu.throttled.microseconds", "us"),
        ];
        for ((name, unit), value) in names.into_iter().zip(usage.into_iter().chain(throttling)) {
            if let Some(value) = value {
                samples.counter(name, value, unit, set, self.labels);
            }
        }
        Ok(())
    }

    /// `container.cpu.limit_cores`, the CFS quota in cores when there is one, and
    /// `container.cpu.available_cores`, the least of that quota, the CPUs of the
    /// cgroup's cpuset (when the cpuset controller is on for it) and the host's
    /// online CPUs; the latter only when the cpuset or the host's CPUs are known,
    /// as a quota can exceed the CPUs there are.
    fn cpu_cores(
        &self,
        version: Version,
        samples: &mut Samples,
    ) -> Result<(), ContainerMetricError> {
        let set = "container.cpu";
        let cpu = Controller::Cpu;
        if !self.layout.dir(version, "cpu", self.cgroup).is_dir() {
            return Ok(());
        }
        let quota = match version {
            Version::V2 => self
                .read(cpu, version, "", "cpu.max", parse_cpu_max)?
                .flatten(),
            Version::V1 => {
                match self
                    .read(cpu, version, "cpu", "cpu.cfs_quota_us", parse_cfs_quota)?
                    .flatten()
                {
                    Some(quota_us) => self
                        .read(cpu, version, "cpu", "cpu.cfs_period_us", parse_cfs_period)?
                        .map(|period_us| CpuQuota {
                            quota_us,
                            period_us,
                        }),
                    None => None,
                }
            }
        };
        let limit = quota.map(CpuQuota::cores);
        if let Some(cores) = limit {
            samples.gauge(
                "container.cpu.limit_cores",
                cores,
                "{cpu}",
                set,
                self.labels,
            );
        }
        let cpuset = match self.layout.cpuset_version() {
            Some(cpuset_version) => self
                .read(
                    cpu,
                    cpuset_version,
                    "cpuset",
                    cpuset_file(cpuset_version),
                    parse_cpu_list,
                )?
                .filter(|count| *count > 0),
            None => None,
        };
        let cpus = [cpuset, self.host_cpus].into_iter().flatten().min();
        if let Some(cpus) = cpus {
            let available = limit.map_or(f64::from(cpus), |cores| cores.min(f64::from(cpus)));
            samples.gauge(
                "container.cpu.available_cores",
                available,
                "{cpu}",
                set,
                self.labels,
            );
        }
        Ok(())
    }

    pub(super) fn memory(
        &self,
        version: Version,
        samples: &mut Samples,
    ) -> Result<(), ContainerMetricError> {
        let set = "container.memory";
        let memory = Controller::Memory;
        let (usage_file, limit_file) = match version {
            Version::V2 => ("memory.current", "memory.max"),
            Version::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes"),
        };
        let Some(usage) = self.read(memory, version, "memory", usage_file, parse_number)? else {
            return Ok(());
        };
        samples.gauge(
            "container.memory.usage_bytes",
            usage as f64,
            "By",
            set,
            self.labels,
        );
        let limit = self
            .read(memory, version, "memory", limit_file, parse_limit)?
            .flatten()
            .filter(|limit| *limit < V1_NO_LIMIT_FROM);
        if let Some(limit) = limit {
            samples.gauge(
                "container.memory.limit_bytes",
                limit as f64,
                "By",
                set,
                self.labels,
            );
        }
        let Some(stat) = self.read(memory, version, "memory", "memory.stat", parse_keyed)? else {
            return Ok(());
        };
        let key = |v2: &'static str, v1: Option<&'static str>| match version {
            Version::V2 => Some(v2),
            Version::V1 => v1,
        };
        let value = |v2, v1| key(v2, v1).and_then(|key| stat.get(key));
        if let Some(inactive_file) = value("inactive_file", Some("total_inactive_file")) {
            let working_set = usage.saturating_sub(inactive_file);
            samples.gauge(
                "container.memory.working_set_bytes",
                working_set as f64,
                "By",
                set,
                self.labels,
            );
        }
        for (name, v2, v1) in MEMORY_STAT_GAUGES {
            if let Some(bytes) = value(v2, v1) {
                samples.gauge(name, bytes as f64, "By", set, self.labels);
            }
        }
        for (name, v2, v1) in MEMORY_STAT_COUNTERS {
            if let Some(count) = value(v2, Some(v1)) {
                samples.counter(name, count, "{fault}", set, self.labels);
            }
        }
        Ok(())
    }

    pub(super) fn io(
        &self,
        version: Version,
        samples: &mut Samples,
    ) -> Result<(), ContainerMetricError> {
        let io = Controller::Io;
        let devices = match version {
            Version::V2 => self.read(io, version, "", "io.stat", parse_io_stat)?,
            Version::V1 => {
                let blkio = |suffix: &str| -> Result<Option<BlkioCounts>, ContainerMetricError> {
                    let recursive = format!("blkio.throttle.{suffix}_recursive");
                    match self.read(io, version, "blkio", &recursive, parse_blkio)? {
                        Some(found) => Ok(Some(found)),
                        None => self.read(
                            io,
                            version,
                            "blkio",
                            &format!("blkio.throttle.{suffix}"),
                            parse_blkio,
                        ),
                    }
                };
                let bytes = blkio("io_service_bytes")?.unwrap_or_default();
                let operations = blkio("io_serviced")?.unwrap_or_default();
                Some(
                    bytes
                        .into_iter()
                        .map(|(device, read_bytes, written_bytes)| {
                            let (reads, writes) = operations
                                .iter()
                                .find(|(other, _, _)| *other == device)
                                .map_or((0, 0), |(_, reads, writes)| (*reads, *writes));
                            DeviceIo {
                                device,
                                read_bytes,
                                written_bytes,
                                reads,
                                writes,
                            }
                        })
                        .collect(),
                )
            }
        };
        for device in devices.unwrap_or_default() {
            let mut labels = self.labels.to_vec();
            labels.push(label("device", &device.device));
            let set = "container.io";
            samples.counter(
                "container.io.read.bytes",
                device.read_bytes,
                "By",
                set,
                &labels,
            );
            samples.counter(
                "container.io.written.bytes",
                device.written_bytes,
                "By",
                set,
                &labels,
            );
            samples.counter(
                "container.io.reads",
                device.reads,
                "{operation}",
                set,
                &labels,
            );
            samples.counter(
                "container.io.writes",
                device.writes,
                "{operation}",
                set,
                &labels,
            );
        }
        Ok(())
    }

    pub(super) fn pids(
        &self,
        version: Version,
        samples: &mut Samples,
    ) -> Result<(), ContainerMetricError> {
        let set = "container.pids";
        let pids = Controller::Pids;
        let Some(current) = self.read(pids, version, "pids", "pids.current", parse_number)? else {
            return Ok(());
        };
        samples.gauge(
            "container.pids.current",
            current as f64,
            "{process}",
            set,
            self.labels,
        );
        if let Some(limit) = self
            .read(pids, version, "pids", "pids.max", parse_limit)?
            .flatten()
        {
            samples.gauge(
                "container.pids.limit",
                limit as f64,
                "{process}",
                set,
                self.labels,
            );
        }
        Ok(())
    }
}
