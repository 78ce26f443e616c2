//! The `host_metrics` section: how often the host collector reads /proc and
//! statvfs, where it finds them, and which disks, interfaces and file systems it
//! reports in its batches for the raw metrics topic.

use super::{InvalidConfig, NameMatcher, default_true};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Host metrics from the proc filesystem, and file-system usage from statvfs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostMetricsConfig {
    /// Whether host metrics are collected at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Time between two collections.
    #[serde(
        default = "default_host_metrics_interval",
        with = "vigil_config::duration"
    )]
    pub interval: Duration,
    /// Root of the proc filesystem; a host's /proc mounted elsewhere in a container.
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// Where the mount points listed by `<proc_root>/1/mounts` are reached: `/`,
    /// or the host's root file system mounted into the agent's container.
    #[serde(default = "default_mount_root")]
    pub mount_root: PathBuf,
    /// Which block devices of /proc/diskstats are reported.
    #[serde(default)]
    pub disks: DiskSelection,
    /// Which network interfaces of /proc/net/dev are reported.
    #[serde(default)]
    pub interfaces: InterfaceSelection,
    /// Which mounted file systems have their usage reported.
    #[serde(default)]
    pub filesystems: FilesystemSelection,
}

/// Block devices reported from /proc/diskstats. Globs match device names; `*`
/// matches any characters.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskSelection {
    /// Devices to report (every device when empty), for example `[sd*, nvme*]`.
    #[serde(default)]
    pub include: Vec<String>,
    /// Devices never reported; by default loop, RAM and floppy devices, whose
    /// counters are noise.
    #[serde(default = "default_disk_exclude")]
    pub exclude: Vec<String>,
    /// Whether partitions (`sda1`, `nvme0n1p2`) are reported beside their disk.
    /// Off by default, so that a sum over the devices of a host counts every I/O once.
    #[serde(default)]
    pub partitions: bool,
}

/// Network interfaces reported from /proc/net/dev, by name glob.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSelection {
    /// Interfaces to report (every interface when empty), for example `[eth*, en*]`.
    #[serde(default)]
    pub include: Vec<String>,
    /// Interfaces never reported, for example `[lo, veth*]`.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// Mounted file systems whose usage is reported. Globs match mount points; `*`
/// matches any characters, `/` included.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSelection {
    /// Mount points to report (every one when empty), for example `[/, /srv*]`.
    #[serde(default)]
    pub include: Vec<String>,
    /// Mount points never reported; by default the kernel's (`/proc`, `/sys`,
    /// `/dev`) and container runtimes' internal mounts.
    #[serde(default = "default_mount_exclude")]
    pub exclude: Vec<String>,
    /// File-system types never reported; by default pseudo file systems, which
    /// have no usage worth watching.
    #[serde(default = "default_fs_type_exclude")]
    pub exclude_types: Vec<String>,
}

impl Default for HostMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_host_metrics_interval(),
            proc_root: default_proc_root(),
            mount_root: default_mount_root(),
            disks: DiskSelection::default(),
            interfaces: InterfaceSelection::default(),
            filesystems: FilesystemSelection::default(),
        }
    }
}

impl Default for DiskSelection {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: default_disk_exclude(),
            partitions: false,
        }
    }
}

impl Default for FilesystemSelection {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: default_mount_exclude(),
            exclude_types: default_fs_type_exclude(),
        }
    }
}

impl HostMetricsConfig {
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.enabled && self.interval < Duration::from_secs(1) {
            return Err(InvalidConfig::field(
                "host_metrics.interval",
                "must be at least 1s",
            ));
        }
        for (field, path) in [
            ("host_metrics.proc_root", &self.proc_root),
            ("host_metrics.mount_root", &self.mount_root),
        ] {
            if !path.is_absolute() {
                return Err(InvalidConfig::field(
                    field,
                    format!("must be an absolute path, not `{}`", path.display()),
                ));
            }
        }
        self.disks.matcher()?;
        self.interfaces.matcher()?;
        self.filesystems.mount_points()?;
        if let Some(index) = self
            .filesystems
            .exclude_types
            .iter()
            .position(|fs_type| fs_type.trim().is_empty())
        {
            return Err(InvalidConfig::field(
                format!("host_metrics.filesystems.exclude_types[{index}]"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

impl DiskSelection {
    /// The device names selected.
    pub(crate) fn matcher(&self) -> Result<NameMatcher, InvalidConfig> {
        NameMatcher::new(&self.include, &self.exclude, "host_metrics.disks")
    }
}

impl InterfaceSelection {
    /// The interface names selected.
    pub(crate) fn matcher(&self) -> Result<NameMatcher, InvalidConfig> {
        NameMatcher::new(&self.include, &self.exclude, "host_metrics.interfaces")
    }
}

impl FilesystemSelection {
    /// The mount points selected.
    pub(crate) fn mount_points(&self) -> Result<NameMatcher, InvalidConfig> {
        NameMatcher::new(&self.include, &self.exclude, "host_metrics.filesystems")
    }
}

fn default_host_metrics_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}

fn default_mount_root() -> PathBuf {
    PathBuf::from("/")
}

pub(super) fn default_disk_exclude() -> Vec<String> {
    ["loop*", "ram*", "zram*", "fd*"]
        .map(str::to_owned)
        .to_vec()
}

fn default_mount_exclude() -> Vec<String> {
    [
        "/dev",
        "/dev/*",
        "/proc",
        "/proc/*",
        "/sys",
        "/sys/*",
        "/run/credentials/*",
        "/run/containerd/*",
        "/run/netns/*",
        "/var/lib/docker/*",
        "/var/lib/containers/storage/*",
        "/var/lib/kubelet/pods/*",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn default_fs_type_exclude() -> Vec<String> {
    [
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tracefs",
    ]
    .map(str::to_owned)
    .to_vec()
}
