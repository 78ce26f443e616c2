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

use crate::config::{ContainerMetricsConfig, InvalidConfig};
use crate::host_metrics::{Collector, Samples};
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use thiserror::Error;
use vigil_proto::labels::label;
use vigil_proto::v1::{Label, Sample};

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

/// Path prefixes of container cgroups, and the runtime each names.
const RUNTIME_PREFIXES: [(&str, &str); 4] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

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

/// A cgroup controller Vigil reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Cpu,
    Memory,
    Io,
    Pids,
}

impl Controller {
    const ALL: [Self; 4] = [Self::Cpu, Self::Memory, Self::Io, Self::Pids];

    /// Its name in cgroup v2's `cgroup.controllers`, and in self-metrics.
    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Io => "io",
            Self::Pids => "pids",
        }
    }

    /// The v1 hierarchies it reads, the first holding its main counters.
    fn v1_hierarchies(self) -> &'static [&'static str] {
        match self {
            Self::Cpu => &["cpuacct", "cpu"],
            Self::Memory => &["memory"],
            Self::Io => &["blkio"],
            Self::Pids => &["pids"],
        }
    }
}

/// Where each controller's files are on this host, found anew every collection.
#[derive(Debug)]
struct Layout {
    root: PathBuf,
    /// The cgroup v2 hierarchy: the root itself, or `unified` on hybrid hosts.
    v2_root: Option<PathBuf>,
    v2_controllers: Vec<String>,
}

/// Which cgroup version serves a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Layout {
    fn detect(root: &Path) -> Self {
        let v2_root = [root.to_owned(), root.join("unified")]
            .into_iter()
            .find(|candidate| candidate.join("cgroup.controllers").is_file());
        let v2_controllers = v2_root
            .as_ref()
            .and_then(|v2| std::fs::read_to_string(v2.join("cgroup.controllers")).ok())
            .map(|text| text.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        Self {
            root: root.to_owned(),
            v2_root,
            v2_controllers,
        }
    }

    /// The version that has `controller`: v2 when its hierarchy lists it, else v1
    /// when its hierarchy is mounted.
    fn version(&self, controller: Controller) -> Option<Version> {
        self.version_named(controller.name(), controller.v1_hierarchies()[0])
    }

    /// The version of the cpuset controller, read only for the CPUs a cgroup may
    /// run on.
    fn cpuset_version(&self) -> Option<Version> {
        self.version_named("cpuset", "cpuset")
    }

    /// The version that has the controller `name`, whose v1 hierarchy is `v1_main`.
    fn version_named(&self, name: &str, v1_main: &str) -> Option<Version> {
        if self.v2_controllers.iter().any(|listed| listed == name) {
            Some(Version::V2)
        } else {
            self.root.join(v1_main).is_dir().then_some(Version::V1)
        }
    }

    /// The number of the host's online CPUs: `<sys>/devices/system/cpu/online`
    /// when the cgroup root is `<sys>/fs/cgroup` and that file is there, else the
    /// CPUs of the root cgroup's cpuset; `None` when neither is there.
    fn host_cpus(&self) -> Result<Option<u32>, ContainerMetricError> {
        let sys = Some(&self.root)
            .filter(|root| root.ends_with("fs/cgroup"))
            .and_then(|root| root.parent()?.parent());
        if let Some(sys) = sys {
            let online = sys.join("devices/system/cpu/online");
            let count = read_file(Controller::Cpu, &online, parse_cpu_list)?;
            if let Some(count) = count.filter(|count| *count > 0) {
                return Ok(Some(count));
            }
        }
        let Some(version) = self.cpuset_version() else {
            return Ok(None);
        };
        let root_cpuset = self.dir(version, "cpuset", "/").join(cpuset_file(version));
        Ok(read_file(Controller::Cpu, &root_cpuset, parse_cpu_list)?.filter(|count| *count > 0))
    }

    /// The directory of `cgroup` (`/` or `/a/b`) in the hierarchy `v1_name`, or in
    /// the v2 hierarchy for `Version::V2`.
    fn dir(&self, version: Version, v1_name: &str, cgroup: &str) -> PathBuf {
        let base = match (version, &self.v2_root) {
            (Version::V2, Some(v2)) => v2.clone(),
            _ => self.root.join(v1_name),
        };
        base.join(cgroup.trim_start_matches('/'))
    }

    /// The hierarchies to walk for cgroups: each in use once.
    fn hierarchies(&self) -> Vec<PathBuf> {
        let mut roots = Vec::new();
        for controller in Controller::ALL {
            let candidates: Vec<PathBuf> = match self.version(controller) {
                Some(Version::V2) => self.v2_root.iter().cloned().collect(),
                Some(Version::V1) => controller
                    .v1_hierarchies()
                    .iter()
                    .map(|name| self.root.join(name))
                    .filter(|dir| dir.is_dir())
                    .collect(),
                None => Vec::new(),
            };
            for candidate in candidates {
                let canonical = candidate.canonicalize().unwrap_or(candidate);
                if !roots.contains(&canonical) {
                    roots.push(canonical);
                }
            }
        }
        roots
    }
}

/// Who runs the processes of a cgroup, as far as its path tells.
#[derive(Debug, Default, PartialEq, Eq)]
struct ContainerIdentity {
    id: Option<String>,
    runtime: Option<&'static str>,
    pod_uid: Option<String>,
}

/// Recognises containers of Docker (`/docker/<id>`, `docker-<id>.scope`),
/// containerd (`cri-containerd-<id>.scope`), CRI-O (`crio-<id>.scope`), Podman
/// (`libpod-<id>.scope`) and Kubernetes pods (`kubepods…pod<uid>…`) by the last
/// component of the cgroup path; a conmon or pod cgroup is no container.
fn identify(cgroup: &str) -> ContainerIdentity {
    let components: Vec<&str> = cgroup.split('/').filter(|c| !c.is_empty()).collect();
    let kubernetes = components.iter().any(|c| c.starts_with("kubepods"));
    let pod_uid = if kubernetes {
        components.iter().find_map(|component| pod_uid(component))
    } else {
        None
    };
    let Some(last) = components.last() else {
        return ContainerIdentity::default();
    };
    let name = last.strip_suffix(".scope").unwrap_or(last);
    let parent = components
        .len()
        .checked_sub(2)
        .map(|index| components[index]);
    let (id, runtime) = RUNTIME_PREFIXES
        .iter()
        .find_map(|(prefix, runtime)| {
            name.strip_prefix(prefix)
                .filter(|id| is_container_id(id))
                .map(|id| (Some(id.to_owned()), Some(*runtime)))
        })
        .unwrap_or_else(|| {
            if is_container_id(name) {
                let runtime = match parent {
                    Some("docker") => Some("docker"),
                    Some("libpod_parent") => Some("podman"),
                    _ => None,
                };
                (Some(name.to_owned()), runtime)
            } else {
                (None, None)
            }
        });
    ContainerIdentity {
        id,
        runtime,
        pod_uid,
    }
}

/// 64 lowercase hexadecimal digits, as every runtime names its containers.
fn is_container_id(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The pod uid of `pod<uid>` (cgroupfs driver) or `kubepods-<qos>-pod<uid>.slice`
/// (systemd driver, dashes written as underscores).
fn pod_uid(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let uid = name
        .strip_prefix("pod")
        .or_else(|| name.rsplit_once("-pod").map(|(_, uid)| uid))?
        .replace('_', "-");
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

/// The labels of every sample of `cgroup`.
fn identity_labels(cgroup: &str, identity: &ContainerIdentity) -> Vec<Label> {
    let mut labels = vec![label("cgroup.path", cgroup)];
    if let Some(id) = &identity.id {
        labels.push(label("container.id", id));
    }
    if let Some(runtime) = identity.runtime {
        labels.push(label("container.runtime", runtime));
    }
    if let Some(uid) = &identity.pod_uid {
        labels.push(label("kubernetes.pod.uid", uid));
    }
    labels
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

/// Adds every directory below `root` (itself included) to `cgroups`, as a path
/// from the hierarchy's root; stops after `limit` directories.
fn walk(
    root: &Path,
    limit: usize,
    cgroups: &mut BTreeSet<String>,
) -> Result<(), ContainerMetricError> {
    let mut pending = vec![(root.to_owned(), String::from("/"))];
    let mut visited = 0;
    while let Some((dir, cgroup)) = pending.pop() {
        visited += 1;
        if visited > limit {
            return Err(ContainerMetricError::TooManyCgroups {
                path: root.display().to_string(),
                limit,
            });
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(cause) if dir == root => {
                return Err(ContainerMetricError::Read {
                    controller: "discovery",
                    path: root.display().to_string(),
                    cause,
                });
            }
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = if cgroup == "/" {
                format!("/{name}")
            } else {
                format!("{cgroup}/{name}")
            };
            pending.push((entry.path(), child));
        }
        cgroups.insert(cgroup);
    }
    Ok(())
}

/// Reads the controllers of one cgroup into samples with its labels.
#[derive(Debug)]
struct CgroupReader<'a> {
    layout: &'a Layout,
    cgroup: &'a str,
    labels: &'a [Label],
    /// The host's online CPUs, counted once per collection.
    host_cpus: Option<u32>,
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
    fn cpu(&self, version: Version, samples: &mut Samples) -> Result<(), ContainerMetricError> {
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

    fn memory(&self, version: Version, samples: &mut Samples) -> Result<(), ContainerMetricError> {
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

    fn io(&self, version: Version, samples: &mut Samples) -> Result<(), ContainerMetricError> {
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

    fn pids(&self, version: Version, samples: &mut Samples) -> Result<(), ContainerMetricError> {
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

/// Reads and parses the file at `path`; `None` when it does not exist.
fn read_file<T>(
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

/// The file listing the CPUs a cgroup may run on: the effective ones in v2, in
/// v1 `cpuset.cpus`, which the kernel keeps within the parent's and the online
/// CPUs.
fn cpuset_file(version: Version) -> &'static str {
    match version {
        Version::V2 => "cpuset.cpus.effective",
        Version::V1 => "cpuset.cpus",
    }
}

/// Flat `key value` lines (cpu.stat, memory.stat) with whole-number values.
#[derive(Debug, Default, PartialEq, Eq)]
struct KeyedValues(Vec<(String, u64)>);

impl KeyedValues {
    fn get(&self, key: &str) -> Option<u64> {
        self.0
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }
}

fn parse_keyed(text: &str) -> Result<KeyedValues, String> {
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
fn parse_number(text: &str) -> Result<u64, String> {
    let value = text.trim();
    if value.is_empty() {
        return Err("the file is empty".into());
    }
    value
        .parse::<u64>()
        .map_err(|_| format!("`{value}` is not a whole number"))
}

/// A limit: a whole number, or `max` for none (memory.max, pids.max).
fn parse_limit(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        _ => parse_number(text).map(Some),
    }
}

/// A CFS bandwidth limit: `quota_us` microseconds of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuQuota {
    quota_us: u64,
    period_us: u64,
}

impl CpuQuota {
    /// The limit in cores: 50000 every 100000 microseconds is half a core.
    fn cores(self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }
}

/// cgroup v2 cpu.max: `quota period` in microseconds, the quota `max` for none.
fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, String> {
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
fn parse_cfs_quota(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "" => Err("the file is empty".into()),
        "-1" => Ok(None),
        quota => positive(quota, "quota").map(Some).map_err(|_| {
            format!("the quota `{quota}` is neither `-1` nor a positive whole number")
        }),
    }
}

/// cgroup v1 cpu.cfs_period_us: microseconds.
fn parse_cfs_period(text: &str) -> Result<u64, String> {
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
fn parse_cpu_list(text: &str) -> Result<u32, String> {
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
struct DeviceIo {
    device: String,
    read_bytes: u64,
    written_bytes: u64,
    reads: u64,
    writes: u64,
}

/// cgroup v2 io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` lines.
fn parse_io_stat(text: &str) -> Result<Vec<DeviceIo>, String> {
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
type BlkioCounts = Vec<(String, u64, u64)>;

/// cgroup v1 blkio.throttle.io_service_bytes / io_serviced: `8:0 Read 123` lines
/// and a last `Total` line.
fn parse_blkio(text: &str) -> Result<BlkioCounts, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::find;
    use vigil_proto::v1::sample;

    const DOCKER_ID: &str = "3f4e1c5b9a7d2e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

    fn write(root: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = root.join(name.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn collector(root: &Path, include: &[&str]) -> ContainerCollector {
        ContainerCollector::new(&ContainerMetricsConfig {
            cgroup_root: root.to_owned(),
            include: include.iter().map(|glob| (*glob).to_owned()).collect(),
            ..ContainerMetricsConfig::default()
        })
        .unwrap()
    }

    fn value(samples: &[Sample], name: &str, cgroup: &str) -> Option<sample::Value> {
        samples
            .iter()
            .find(|s| s.name == name && find(&s.labels, "cgroup.path") == Some(cgroup))
            .and_then(|s| s.value)
    }

    #[test]
    fn containers_are_recognised_by_their_cgroup_path() {
        let docker = identify(&format!("/system.slice/docker-{DOCKER_ID}.scope"));
        assert_eq!(docker.id.as_deref(), Some(DOCKER_ID));
        assert_eq!(docker.runtime, Some("docker"));
        assert_eq!(docker.pod_uid, None);
        assert_eq!(
            identify(&format!("/docker/{DOCKER_ID}")).runtime,
            Some("docker")
        );

        let kubernetes_systemd = identify(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{DOCKER_ID}.scope"
        ));
        assert_eq!(
            kubernetes_systemd,
            ContainerIdentity {
                id: Some(DOCKER_ID.into()),
                runtime: Some("containerd"),
                pod_uid: Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
            }
        );
        let kubernetes_cgroupfs = identify(&format!(
            "/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{DOCKER_ID}"
        ));
        assert_eq!(kubernetes_cgroupfs.id.as_deref(), Some(DOCKER_ID));
        assert_eq!(kubernetes_cgroupfs.runtime, None);
        assert_eq!(
            kubernetes_cgroupfs.pod_uid.as_deref(),
            Some("0a1b2c3d-4e5f-6789-abcd-ef0123456789")
        );
        let crio = identify(&format!(
            "/kubepods.slice/kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/crio-{DOCKER_ID}.scope"
        ));
        assert_eq!(crio.runtime, Some("cri-o"));
        assert!(crio.pod_uid.is_some());
        let podman = identify(&format!("/machine.slice/libpod-{DOCKER_ID}.scope"));
        assert_eq!(podman.runtime, Some("podman"));

        for not_a_container in [
            "/".to_owned(),
            "/system.slice/sshd.service".to_owned(),
            format!("/machine.slice/libpod-conmon-{DOCKER_ID}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/crio-conmon-{DOCKER_ID}.scope"),
            "/kubepods.slice/kubepods-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice".to_owned(),
            format!("/system.slice/docker-{}.scope", &DOCKER_ID[..12]),
        ] {
            assert_eq!(identify(&not_a_container).id, None, "{not_a_container}");
        }
    }

    #[test]
    fn cgroup_files_are_parsed() {
        let stat = parse_keyed("usage_usec 3500\nuser_usec 2000\nsystem_usec 1500\n").unwrap();
        assert_eq!(stat.get("user_usec"), Some(2000));
        assert_eq!(stat.get("nr_periods"), None);
        assert_eq!(parse_number("123456\n"), Ok(123456));
        assert_eq!(parse_limit("max\n"), Ok(None));
        assert_eq!(parse_limit("1048576\n"), Ok(Some(1048576)));
        assert_eq!(
            parse_io_stat("8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=1 wbytes=0 rios=1 wios=0\n")
                .unwrap(),
            [
                DeviceIo {
                    device: "8:0".into(),
                    read_bytes: 4096,
                    written_bytes: 8192,
                    reads: 1,
                    writes: 2,
                },
                DeviceIo {
                    device: "253:1".into(),
                    read_bytes: 1,
                    written_bytes: 0,
                    reads: 1,
                    writes: 0,
                },
            ]
        );
        assert_eq!(
            parse_blkio("8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n"),
            Ok(vec![("8:0".into(), 4096, 512)])
        );
    }

    #[test]
    fn cpu_quotas_and_lists_are_parsed() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        let half = parse_cpu_max("50000 100000\n").unwrap().unwrap();
        assert_eq!(
            half,
            CpuQuota {
                quota_us: 50000,
                period_us: 100000,
            }
        );
        assert_eq!(half.cores(), 0.5);
        assert_eq!(
            parse_cpu_max("250000 50000\n")
                .unwrap()
                .map(CpuQuota::cores),
            Some(5.0)
        );
        assert_eq!(parse_cfs_quota("-1\n"), Ok(None));
        assert_eq!(parse_cfs_quota("150000\n"), Ok(Some(150000)));
        assert_eq!(parse_cfs_period("100000\n"), Ok(100000));
        assert_eq!(parse_cpu_list("0-3\n"), Ok(4));
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), Ok(7));
        assert_eq!(parse_cpu_list("5\n"), Ok(1));
        assert_eq!(parse_cpu_list("\n"), Ok(0));
    }

    #[test]
    fn malformed_cgroup_files_get_a_clear_error() {
        assert_eq!(
            parse_keyed("usage_usec 12\nnr_periods many\n"),
            Err("line 2: `nr_periods` is `many`, not a whole number".into())
        );
        assert_eq!(
            parse_keyed("usage_usec\n"),
            Err("line 1: expected `key value`, got `usage_usec`".into())
        );
        assert_eq!(parse_number(""), Err("the file is empty".into()));
        assert_eq!(
            parse_number("-1\n"),
            Err("`-1` is not a whole number".into())
        );
        assert_eq!(
            parse_limit("unlimited"),
            Err("`unlimited` is not a whole number".into())
        );
        assert_eq!(
            parse_io_stat("sda rbytes=1\n"),
            Err("line 1: `sda` is not a `major:minor` device number".into())
        );
        assert_eq!(
            parse_io_stat("8:0 rbytes\n"),
            Err("line 1: `rbytes` is not `key=value`".into())
        );
        assert_eq!(
            parse_blkio("8:0 Read lots\n"),
            Err("line 1: `8:0 Read` is `lots`, not a whole number".into())
        );
        assert_eq!(
            parse_blkio("garbage\n"),
            Err("line 1: expected `major:minor operation value`, got `garbage`".into())
        );
    }

    #[test]
    fn malformed_cpu_quotas_and_lists_get_a_clear_error() {
        assert_eq!(parse_cpu_max(""), Err("the file is empty".into()));
        assert_eq!(
            parse_cpu_max("max\n"),
            Err("expected `quota period`, got `max`".into())
        );
        assert_eq!(
            parse_cpu_max("fifty 100000\n"),
            Err("the quota `fifty` is neither `max` nor a positive whole number".into())
        );
        assert_eq!(
            parse_cpu_max("50000 0\n"),
            Err("the period `0` is not a positive whole number".into())
        );
        assert_eq!(
            parse_cpu_max("50000 100000 1\n"),
            Err("expected `quota period`, got `50000 100000 1`".into())
        );
        assert_eq!(parse_cfs_quota(""), Err("the file is empty".into()));
        assert_eq!(
            parse_cfs_quota("-2\n"),
            Err("the quota `-2` is neither `-1` nor a positive whole number".into())
        );
        assert_eq!(
            parse_cfs_quota("0\n"),
            Err("the quota `0` is neither `-1` nor a positive whole number".into())
        );
        assert_eq!(
            parse_cfs_period("-1\n"),
            Err("the period `-1` is not a positive whole number".into())
        );
        assert_eq!(
            parse_cpu_list("0-3,x\n"),
            Err("`x` is not a CPU number or range `first-last`".into())
        );
        assert_eq!(
            parse_cpu_list("0-\n"),
            Err("`0-` is not a CPU number or range `first-last`".into())
        );
        assert_eq!(
            parse_cpu_list("3-1\n"),
            Err("the range `3-1` ends before it starts".into())
        );
    }

    #[test]
    fn cgroup_v2_cores_come_from_cpu_max_and_the_cpusets() {
        let root = tempfile::tempdir().unwrap();
        let half = format!("/system.slice/docker-{DOCKER_ID}.scope");
        let pinned = format!("/kubepods.slice/cri-containerd-{DOCKER_ID}.scope");
        let unlimited = format!("/machine.slice/libpod-{DOCKER_ID}.scope");
        let broken = format!("/system.slice/crio-{DOCKER_ID}.scope");
        let stat = "usage_usec 3500\nuser_usec 2000\nsystem_usec 1500\n";
        write(
            root.path(),
            &[
                ("cgroup.controllers", "cpuset cpu memory\n"),
                ("cpuset.cpus.effective", "0-7\n"),
                (&format!("{half}/cpu.stat"), stat),
                (&format!("{half}/cpu.max"), "50000 100000\n"),
                (&format!("{half}/cpuset.cpus.effective"), "0-7\n"),
                (&format!("{pinned}/cpu.stat"), stat),
                (&format!("{pinned}/cpu.max"), "400000 100000\n"),
                (&format!("{pinned}/cpuset.cpus.effective"), "2-3\n"),
                (&format!("{unlimited}/cpu.stat"), stat),
                (&format!("{unlimited}/cpu.max"), "max 100000\n"),
                (&format!("{broken}/cpu.stat"), stat),
                (&format!("{broken}/cpu.max"), "fifty 100000\n"),
                (&format!("{broken}/cpuset.cpus.effective"), "0-1\n"),
                (&format!("{broken}/memory.current"), "4096\n"),
            ],
        );

        let (samples, errors) = collector(root.path(), &["/"]).collect(1);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [format!(
                "{} could not be parsed: the quota `fifty` is neither `max` nor a positive whole number",
                root.path().join(&broken[1..]).join("cpu.max").display()
            )]
        );
        assert_eq!(errors[0].source(), "cpu");
        let cores = |cgroup: &str| {
            ["container.cpu.limit_cores", "container.cpu.available_cores"]
                .map(|name| value(&samples, name, cgroup))
        };
        let gauge = |cores: f64| Some(sample::Value::Gauge(cores));
        assert_eq!(cores(&half), [gauge(0.5), gauge(0.5)]);
        assert_eq!(cores(&pinned), [gauge(4.0), gauge(2.0)]);
        assert_eq!(cores(&unlimited), [None, gauge(8.0)]);
        assert_eq!(cores("/"), [None, gauge(8.0)]);
        assert_eq!(cores(&broken), [None, None]);
        assert_eq!(
            value(&samples, "container.cpu.usage.microseconds", &broken),
            Some(sample::Value::Counter(3500)),
            "a bad cpu.max spares the CPU time"
        );
        assert_eq!(
            value(&samples, "container.memory.usage_bytes", &broken),
            Some(sample::Value::Gauge(4096.0))
        );
        let limit = samples
            .iter()
            .find(|s| s.name == "container.cpu.limit_cores")
            .unwrap();
        assert_eq!(limit.unit, "{cpu}");
        assert_eq!(limit.metric_set, "container.cpu");
        assert_eq!(find(&limit.labels, "container.id"), Some(DOCKER_ID));
    }

    #[test]
    fn cgroup_v1_cores_come_from_the_cfs_quota_and_the_cpusets() {
        let root = tempfile::tempdir().unwrap();
        let limited = format!("/docker/{DOCKER_ID}");
        let unlimited =
            format!("/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{DOCKER_ID}");
        let broken = format!("/machine.slice/libpod-{DOCKER_ID}.scope");
        let mut files = vec![
            ("unified/cgroup.controllers".to_owned(), "".to_owned()),
            ("cpuset/cpuset.cpus".to_owned(), "0-3\n".to_owned()),
            (format!("cpuset{limited}/cpuset.cpus"), "0-3\n".to_owned()),
            (format!("cpuset{unlimited}/cpuset.cpus"), "1,3\n".to_owned()),
            (format!("cpuset{broken}/cpuset.cpus"), "0-3\n".to_owned()),
            (
                format!("cpu{limited}/cpu.cfs_quota_us"),
                "150000\n".to_owned(),
            ),
            (
                format!("cpu{limited}/cpu.cfs_period_us"),
                "100000\n".to_owned(),
            ),
            (
                format!("cpu{unlimited}/cpu.cfs_quota_us"),
                "-1\n".to_owned(),
            ),
            (
                format!("cpu{unlimited}/cpu.cfs_period_us"),
                "100000\n".to_owned(),
            ),
            (
                format!("cpu{broken}/cpu.cfs_quota_us"),
                "50000\n".to_owned(),
            ),
            (format!("cpu{broken}/cpu.cfs_period_us"), "0\n".to_owned()),
        ];
        for cgroup in [&limited, &unlimited, &broken] {
            files.push((format!("cpuacct{cgroup}/cpuacct.usage"), "5000000\n".into()));
        }
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
            .collect();
        write(root.path(), &files);

        let (samples, errors) = collector(root.path(), &[]).collect(1);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [format!(
                "{} could not be parsed: the period `0` is not a positive whole number",
                root.path()
                    .join("cpu")
                    .join(&broken[1..])
                    .join("cpu.cfs_period_us")
                    .display()
            )]
        );
        let cores = |cgroup: &str| {
            ["container.cpu.limit_cores", "container.cpu.available_cores"]
                .map(|name| value(&samples, name, cgroup))
        };
        let gauge = |cores: f64| Some(sample::Value::Gauge(cores));
        assert_eq!(cores(&limited), [gauge(1.5), gauge(1.5)]);
        assert_eq!(cores(&unlimited), [None, gauge(2.0)]);
        assert_eq!(cores(&broken), [None, None]);
        assert_eq!(
            value(&samples, "container.cpu.usage.microseconds", &broken),
            Some(sample::Value::Counter(5000))
        );
    }

    #[test]
    fn the_hosts_cpus_are_the_online_ones_beside_the_cgroup_root() {
        let host = tempfile::tempdir().unwrap();
        let docker = format!("/system.slice/docker-{DOCKER_ID}.scope");
        write(
            host.path(),
            &[
                ("sys/devices/system/cpu/online", "0-5\n"),
                ("sys/fs/cgroup/cgroup.controllers", "cpuset cpu\n"),
                ("sys/fs/cgroup/cpuset.cpus.effective", "0-1\n"),
                (&format!("sys/fs/cgroup{docker}/cpu.stat"), "usage_usec 1\n"),
                (&format!("sys/fs/cgroup{docker}/cpu.max"), "max 100000\n"),
            ],
        );
        let root = host.path().join("sys/fs/cgroup");
        let (samples, errors) = collector(&root, &[]).collect(1);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            value(&samples, "container.cpu.available_cores", &docker),
            Some(sample::Value::Gauge(6.0))
        );

        write(host.path(), &[("sys/devices/system/cpu/online", "0-\n")]);
        let (samples, errors) = collector(&root, &[]).collect(1);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            format!(
                "{} could not be parsed: `0-` is not a CPU number or range `first-last`",
                host.path().join("sys/devices/system/cpu/online").display()
            )
        );
        assert_eq!(errors[0].source(), "cpu");
        assert_eq!(
            value(&samples, "container.cpu.usage.microseconds", &docker),
            Some(sample::Value::Counter(1))
        );
        assert_eq!(
            value(&samples, "container.cpu.available_cores", &docker),
            None
        );
    }

    #[test]
    fn cgroup_v2_containers_are_read_and_a_bad_file_spares_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let docker = format!("/system.slice/docker-{DOCKER_ID}.scope");
        write(
            root.path(),
            &[
                ("cgroup.controllers", "cpuset cpu io memory pids\n"),
                ("/system.slice/sshd.service/memory.current", "100\n"),
                (
                    &format!("{docker}/cpu.stat"),
                    "usage_usec 3500\nuser_usec 2000\nsystem_usec 1500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 700\n",
                ),
                (&format!("{docker}/memory.current"), "1000000\n"),
                (&format!("{docker}/memory.max"), "max\n"),
                (
                    &format!("{docker}/memory.stat"),
                    "anon 600000\nfile 300000\nkernel 50000\nshmem 0\ninactive_file 100000\npgfault 42\npgmajfault 1\n",
                ),
                (
                    &format!("{docker}/io.stat"),
                    "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
                ),
                (&format!("{docker}/pids.current"), "oops\n"),
                (&format!("{docker}/pids.max"), "100\n"),
            ],
        );

        let (samples, errors) = collector(root.path(), &[]).collect(7);
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [format!(
                "{} could not be parsed: `oops` is not a whole number",
                root.path()
                    .join(&docker[1..])
                    .join("pids.current")
                    .display()
            )]
        );
        assert_eq!(errors[0].source(), "pids");
        assert!(
            samples
                .iter()
                .all(|s| find(&s.labels, "cgroup.path") == Some(docker.as_str())),
            "only the container is reported unless included"
        );
        let first = &samples[0];
        assert_eq!(find(&first.labels, "container.id"), Some(DOCKER_ID));
        assert_eq!(find(&first.labels, "container.runtime"), Some("docker"));
        assert_eq!(first.time_unix_nano, 7);
        let counter = |name| value(&samples, name, &docker);
        assert_eq!(
            counter("container.cpu.usage.microseconds"),
            Some(sample::Value::Counter(3500))
        );
        assert_eq!(
            counter("container.cpu.throttled.periods"),
            Some(sample::Value::Counter(2))
        );
        assert_eq!(
            counter("container.cpu.throttled.microseconds"),
            Some(sample::Value::Counter(700))
        );
        assert_eq!(
            counter("container.memory.usage_bytes"),
            Some(sample::Value::Gauge(1000000.0))
        );
        assert_eq!(counter("container.memory.limit_bytes"), None);
        assert_eq!(
            counter("container.memory.working_set_bytes"),
            Some(sample::Value::Gauge(900000.0))
        );
        assert_eq!(
            counter("container.memory.kernel_bytes"),
            Some(sample::Value::Gauge(50000.0))
        );
        assert_eq!(
            counter("container.memory.major_page_faults"),
            Some(sample::Value::Counter(1))
        );
        let written = samples
            .iter()
            .find(|s| s.name == "container.io.written.bytes")
            .unwrap();
        assert_eq!(find(&written.labels, "device"), Some("8:0"));
        assert_eq!(written.value, Some(sample::Value::Counter(8192)));
        assert_eq!(counter("container.pids.current"), None);

        let (samples, _) = collector(root.path(), &["/system.slice/*.service"]).collect(7);
        assert_eq!(
            value(
                &samples,
                "container.memory.usage_bytes",
                "/system.slice/sshd.service"
            ),
            Some(sample::Value::Gauge(100.0))
        );
    }

    #[test]
    fn cgroup_v1_hierarchies_are_read_on_hybrid_hosts() {
        let root = tempfile::tempdir().unwrap();
        let docker = format!("/docker/{DOCKER_ID}");
        write(
            root.path(),
            &[
                ("unified/cgroup.controllers", ""),
                (&format!("cpuacct{docker}/cpuacct.usage"), "5000000\n"),
                (&format!("cpuacct{docker}/cpuacct.usage_user"), "3000000\n"),
                (&format!("cpuacct{docker}/cpuacct.usage_sys"), "2000000\n"),
                (
                    &format!("cpu{docker}/cpu.stat"),
                    "nr_periods 20\nnr_throttled 5\nthrottled_time 9000\n",
                ),
                (
                    &format!("memory{docker}/memory.usage_in_bytes"),
                    "2000000\n",
                ),
                (
                    &format!("memory{docker}/memory.limit_in_bytes"),
                    "9223372036854771712\n",
                ),
                (
                    &format!("memory{docker}/memory.stat"),
                    "cache 1\nrss 2\ntotal_cache 500000\ntotal_rss 1400000\ntotal_inactive_file 250000\ntotal_pgfault 9\ntotal_pgmajfault 0\n",
                ),
                (
                    &format!("blkio{docker}/blkio.throttle.io_service_bytes"),
                    "8:0 Read 4096\n8:0 Write 1024\n8:0 Total 5120\nTotal 5120\n",
                ),
                (
                    &format!("blkio{docker}/blkio.throttle.io_serviced"),
                    "8:0 Read 2\n8:0 Write 1\n8:0 Total 3\nTotal 3\n",
                ),
                (&format!("pids{docker}/pids.current"), "4\n"),
                (&format!("pids{docker}/pids.max"), "max\n"),
                ("memory/memory.usage_in_bytes", "7000000\n"),
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ],
        );
        let (samples, errors) = collector(root.path(), &[]).collect(1);
        assert!(errors.is_empty(), "{errors:?}");
        let read = |name| value(&samples, name, &docker);
        assert_eq!(
            read("container.cpu.usage.microseconds"),
            Some(sample::Value::Counter(5000))
        );
        assert_eq!(
            read("container.cpu.system.microseconds"),
            Some(sample::Value::Counter(2000))
        );
        assert_eq!(
            read("container.cpu.throttled.microseconds"),
            Some(sample::Value::Counter(9))
        );
        assert_eq!(
            read("container.memory.usage_bytes"),
            Some(sample::Value::Gauge(2000000.0))
        );
        assert_eq!(read("container.memory.limit_bytes"), None);
        assert_eq!(
            read("container.memory.anon_bytes"),
            Some(sample::Value::Gauge(1400000.0))
        );
        assert_eq!(
            read("container.memory.working_set_bytes"),
            Some(sample::Value::Gauge(1750000.0))
        );
        assert_eq!(read("container.io.reads"), Some(sample::Value::Counter(2)));
        assert_eq!(
            read("container.io.written.bytes"),
            Some(sample::Value::Counter(1024))
        );
        assert_eq!(
            read("container.pids.current"),
            Some(sample::Value::Gauge(4.0))
        );
        assert_eq!(read("container.pids.limit"), None);
        assert_eq!(value(&samples, "container.memory.usage_bytes", "/"), None);
    }

    #[test]
    fn discovery_is_bounded() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), &[("cgroup.controllers", "memory\n")]);
        for index in 0..5 {
            std::fs::create_dir(root.path().join(format!("slice-{index}"))).unwrap();
        }
        let config = ContainerMetricsConfig {
            cgroup_root: root.path().to_owned(),
            max_cgroups: 3,
            ..ContainerMetricsConfig::default()
        };
        let (_, errors) = ContainerCollector::new(&config).unwrap().collect(1);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            format!(
                "{} has more than 3 cgroups (`container_metrics.max_cgroups`); the rest is skipped",
                root.path().canonicalize().unwrap().display()
            )
        );
        assert_eq!(errors[0].source(), "discovery");
    }

    /// Reads this machine's /sys/fs/cgroup (v2, or v1 on hybrid hosts): the root
    /// cgroup always has CPU and memory accounting, and the cgroup this test runs
    /// in is found by the walk.
    #[test]
    fn this_machines_cgroups_are_found_and_read() {
        let root = Path::new("/sys/fs/cgroup");
        let (samples, errors) = collector(root, &["/", "/*", "/*/*"]).collect(1);
        assert!(errors.is_empty(), "{errors:?}");
        let cgroups: BTreeSet<&str> = samples
            .iter()
            .filter_map(|s| find(&s.labels, "cgroup.path"))
            .collect();
        assert!(
            !cgroups.is_empty(),
            "no cgroup found under {}",
            root.display()
        );

        let with_cpu_and_memory: Vec<&str> = cgroups
            .iter()
            .copied()
            .filter(|cgroup| {
                matches!(
                    value(&samples, "container.cpu.usage.microseconds", cgroup),
                    Some(sample::Value::Counter(usage)) if usage > 0
                )
            })
            .filter(|cgroup| {
                let memory = value(&samples, "container.memory.usage_bytes", cgroup)
                    .or_else(|| value(&samples, "container.memory.anon_bytes", cgroup));
                matches!(memory, Some(sample::Value::Gauge(bytes)) if bytes > 0.0)
            })
            .collect();
        assert!(
            !with_cpu_and_memory.is_empty(),
            "no cgroup with CPU and memory among {cgroups:?}"
        );
        assert!(
            matches!(
                value(&samples, "container.cpu.available_cores", "/"),
                Some(sample::Value::Gauge(cores)) if cores >= 1.0
            ),
            "the root cgroup may use no CPU"
        );

        let own_memory_cgroup = std::fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
            .find_map(|line| {
                let (_, rest) = line.split_once(':')?;
                let (controllers, path) = rest.split_once(':')?;
                (controllers.split(',').any(|c| c == "memory") || controllers.is_empty())
                    .then(|| path.to_owned())
            });
        if let Some(own) = own_memory_cgroup.filter(|path| path.matches('/').count() <= 2) {
            assert!(
                value(&samples, "container.memory.usage_bytes", &own).is_some() || own == "/",
                "this process's cgroup {own} was not read; found {cgroups:?}"
            );
        }
    }
}
