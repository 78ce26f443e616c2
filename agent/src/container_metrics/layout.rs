//! Where the container collector finds each controller's files: the cgroup v2
//! hierarchy for the controllers it lists, else the v1 hierarchy of that name
//! (hybrid hosts), and the host's online CPUs. Detected anew every collection; the
//! walk and the cgroup reader go by it.

use super::ContainerMetricError;
use super::cgroup_files::{parse_cpu_list, read_file};
use std::path::{Path, PathBuf};

/// A cgroup controller Vigil reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Controller {
    Cpu,
    Memory,
    Io,
    Pids,
}

impl Controller {
    pub(super) const ALL: [Self; 4] = [Self::Cpu, Self::Memory, Self::Io, Self::Pids];

    /// Its name in cgroup v2's `cgroup.controllers`, and in self-metrics.
    pub(super) fn name(self) -> &'static str {
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
pub(super) struct Layout {
    root: PathBuf,
    /// The cgroup v2 hierarchy: the root itself, or `unified` on hybrid hosts.
    v2_root: Option<PathBuf>,
    v2_controllers: Vec<String>,
}

/// Which cgroup version serves a controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

impl Layout {
    pub(super) fn detect(root: &Path) -> Self {
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
    pub(super) fn version(&self, controller: Controller) -> Option<Version> {
        self.version_named(controller.name(), controller.v1_hierarchies()[0])
    }

    /// The version of the cpuset controller, read only for the CPUs a cgroup may
    /// run on.
    pub(super) fn cpuset_version(&self) -> Option<Version> {
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
    pub(super) fn host_cpus(&self) -> Result<Option<u32>, ContainerMetricError> {
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
    pub(super) fn dir(&self, version: Version, v1_name: &str, cgroup: &str) -> PathBuf {
        let base = match (version, &self.v2_root) {
            (Version::V2, Some(v2)) => v2.clone(),
            _ => self.root.join(v1_name),
        };
        base.join(cgroup.trim_start_matches('/'))
    }

    /// The hierarchies to walk for cgroups: each in use once.
    pub(super) fn hierarchies(&self) -> Vec<PathBuf> {
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

/// The file listing the CPUs a cgroup may run on: the effective ones in v2, in
/// v1 `cpuset.cpus`, which the kernel keeps within the parent's and the online
/// CPUs.
pub(super) fn cpuset_file(version: Version) -> &'static str {
    match version {
        Version::V2 => "cpuset.cpus.effective",
        Version::V1 => "cpuset.cpus",
    }
}
