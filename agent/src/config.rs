//! The agent's configuration: which files to tail, which devices to poll, where the
//! batches go. It is the first thing the agent reads and decides everything the
//! sources of the data path do.
//!
//! Loading is two steps: YAML is deserialized into these structs (unknown keys are
//! errors that name the key, the file, the line and the column), then `validate`
//! checks what types cannot express and names the offending field. The structs are
//! public with public fields so that the all-in-one mode can build one in code.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use vigil_runtime::SecretRef;
use vigil_runtime::duration::format_duration;
use vigil_runtime::etcd::EtcdSettings;
use vigil_runtime::kafka::KafkaSettings;
use vigil_runtime::secret::SecretError;

/// Everything one agent does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Identity of this host, carried by every batch the agent sends.
    #[serde(default)]
    pub resource: ResourceConfig,
    /// The Kafka cluster batches are produced to; the standalone agent requires it,
    /// the all-in-one mode leaves it out and runs on its in-process bus.
    #[serde(default)]
    pub kafka: Option<KafkaSettings>,
    /// Directory for the agent's state: the log checkpoints live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The self-observability endpoint (`/metrics`, `/health`, `/ready`).
    #[serde(default)]
    pub http: HttpConfig,
    /// Log files to tail.
    #[serde(default)]
    pub logs: Vec<LogFileConfig>,
    /// How log lines are grouped into batches (one Kafka message each).
    #[serde(default)]
    pub log_batch: LogBatchConfig,
    /// Host metrics read from /proc.
    #[serde(default)]
    pub host_metrics: HostMetricsConfig,
    /// Container metrics read from cgroups.
    #[serde(default)]
    pub container_metrics: ContainerMetricsConfig,
    /// Devices polled over SNMP.
    #[serde(default)]
    pub snmp: SnmpConfig,
    /// How long shutdown waits for in-flight batches to be acknowledged before the
    /// last checkpoint is written; lines not acknowledged by then are sent again
    /// after the restart.
    #[serde(default = "default_shutdown_timeout", with = "vigil_runtime::duration")]
    pub shutdown_timeout: Duration,
}

/// Identity of the host the agent runs on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Resource id: the Kafka message key, so all data of this host shares a partition.
    #[serde(default = "default_host_name")]
    pub id: String,
    /// Host name as shown in dashboards (`host.name`).
    #[serde(default = "default_host_name")]
    pub host_name: String,
    /// Free-form identity attributes (site, role, ...), sent with every batch.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Where the self-observability endpoint listens.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/health` and `/ready`.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
}

/// Log files to tail: one path or every file a glob matches.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogFileConfig {
    /// Absolute path or glob (`*`, `?`, `[a-z]`, `**` for any depth) of the files;
    /// they may not exist yet. Files are found through file-system events and a
    /// rescan every few seconds.
    pub path: PathBuf,
    /// Globs of files not to tail although `path` matches them (rotated copies one
    /// does not want, for example). Gzip-compressed files are never read.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where a file found at the first start, without checkpoint, is read from:
    /// `end` (its history is not shipped) or `beginning`. Files that appear later
    /// are always read from their beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Files not modified for longer than this are not tailed until they change.
    #[serde(default, deserialize_with = "optional_duration")]
    pub ignore_older: Option<Duration>,
    /// Dataset name, for routing and for `event.dataset` in the index.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// How long a last line without newline waits for it before it is shipped,
    /// with the field `log.partial`; the newline that may follow makes no line.
    #[serde(
        default = "default_partial_line_timeout",
        with = "vigil_runtime::duration"
    )]
    pub partial_line_timeout: Duration,
    /// Joins the physical lines of one event (a stack trace) into one log line.
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
}

/// How the physical lines of one event are recognised; exactly one pattern.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this regex starts an event; other lines continue it
    /// (`'^\d{4}-'` for lines starting with a date).
    #[serde(default)]
    pub start_pattern: Option<String>,
    /// A line matching this regex continues the event before it (`'^\s'`).
    #[serde(default)]
    pub continuation_pattern: Option<String>,
    /// How long an event waits for more lines before it is shipped.
    #[serde(
        default = "default_multiline_flush_timeout",
        with = "vigil_runtime::duration"
    )]
    pub flush_timeout: Duration,
    /// Most physical lines in one event; a longer one is shipped in parts.
    #[serde(default = "default_multiline_max_lines")]
    pub max_lines: usize,
}

/// Where a file already present at startup is read from.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// From its first byte.
    Beginning,
    /// From after its last complete line.
    #[default]
    End,
}

/// Limits of one log batch.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogBatchConfig {
    /// Most lines in one batch.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Most encoded bytes of lines in one batch; keep it below the producer's and
    /// the broker's `message.max.bytes` (librdkafka's default is 1000000).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// How long a batch that is not full waits for more lines before it is sent.
    #[serde(default = "default_flush_interval", with = "vigil_runtime::duration")]
    pub flush_interval: Duration,
    /// Longest line kept; the rest of a longer line is skipped and the line is
    /// flagged `truncated`. Must be smaller than `max_bytes` so a line always fits.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

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
        with = "vigil_runtime::duration"
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

/// Container metrics from cgroups: cgroup v2, or the v1 hierarchies for the
/// controllers v2 does not have (hybrid hosts).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContainerMetricsConfig {
    /// Whether container metrics are collected at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Time between two collections; the cgroup hierarchy is walked again each time,
    /// so that new containers are found and gone ones dropped.
    #[serde(
        default = "default_container_metrics_interval",
        with = "vigil_runtime::duration"
    )]
    pub interval: Duration,
    /// Where the cgroup file systems are mounted; the host's /sys/fs/cgroup mounted
    /// elsewhere in a container.
    #[serde(default = "default_cgroup_root")]
    pub cgroup_root: PathBuf,
    /// Whether every cgroup recognised as a container (Docker, containerd, CRI-O,
    /// Podman, containers of Kubernetes pods) is reported.
    #[serde(default = "default_true")]
    pub containers: bool,
    /// More cgroups to report, by path glob from the hierarchy's root: `/` for the
    /// whole host, `/system.slice/*.service` for systemd services.
    #[serde(default)]
    pub include: Vec<String>,
    /// Most cgroup directories visited per hierarchy in one collection, so that a
    /// host with runaway cgroups costs bounded work; the rest is skipped and counted.
    #[serde(default = "default_max_cgroups")]
    pub max_cgroups: usize,
}

/// A compiled pair of include and exclude globs: a name is selected when it
/// matches an include glob (or there are none) and no exclude glob.
#[derive(Debug, Clone)]
pub(crate) struct NameMatcher {
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
}

impl NameMatcher {
    /// Compiles the globs of `<field>.include` and `<field>.exclude`.
    fn new(include: &[String], exclude: &[String], field: &str) -> Result<Self, InvalidConfig> {
        Ok(Self {
            include: compile_globs(include, &format!("{field}.include"))?,
            exclude: compile_globs(exclude, &format!("{field}.exclude"))?,
        })
    }

    pub(crate) fn selects(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|glob| glob.matches(name)))
            && !self.exclude.iter().any(|glob| glob.matches(name))
    }
}

/// Compiles `patterns`; an error names `field[index]`.
fn compile_globs(patterns: &[String], field: &str) -> Result<Vec<glob::Pattern>, InvalidConfig> {
    patterns
        .iter()
        .enumerate()
        .map(|(index, pattern)| {
            glob::Pattern::new(pattern).map_err(|error| {
                InvalidConfig::field(
                    format!("{field}[{index}]"),
                    format!("is not a valid glob: {error}"),
                )
            })
        })
        .collect()
}

/// SNMP polling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    /// Devices to poll, each on its own schedule; used when `etcd` is not set.
    #[serde(default)]
    pub targets: Vec<SnmpTarget>,
    /// User-defined metric sets by name, which targets list beside the built-in ones.
    #[serde(default)]
    pub metric_sets: BTreeMap<String, MetricSetDefinition>,
    /// Where targets (and more metric sets) live instead: keys
    /// `<prefix>/snmp/targets/<name>` and `<prefix>/snmp/metric_sets/<name>`,
    /// watched, so that changes take effect without a restart.
    #[serde(default)]
    pub etcd: Option<EtcdSettings>,
    /// Polls running at the same time, over all targets; a poll waits for a free
    /// slot, so that thousands of targets cannot exhaust sockets or memory.
    #[serde(default = "default_max_polls_in_flight")]
    pub max_polls_in_flight: usize,
}

impl Default for SnmpConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            metric_sets: BTreeMap::new(),
            etcd: None,
            max_polls_in_flight: default_max_polls_in_flight(),
        }
    }
}

/// One device polled over SNMP.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnmpTarget {
    /// Name of the device: its resource id and host name downstream. In etcd it
    /// defaults to the last segment of the key.
    #[serde(default)]
    pub name: String,
    /// `host:port` (or `host`, meaning port 161) of the device's SNMP agent.
    pub address: String,
    /// Protocol version.
    #[serde(default)]
    pub version: SnmpVersion,
    /// v1 or v2c community: a plain string, or `{file: ...}` / `{env: ...}`.
    #[serde(default)]
    pub community: Option<Community>,
    /// v3 user-based security.
    #[serde(default)]
    pub v3: Option<SnmpV3Config>,
    /// Time between two polls.
    #[serde(default = "default_snmp_interval", with = "vigil_runtime::duration")]
    pub interval: Duration,
    /// How long one request waits for its answer.
    #[serde(default = "default_snmp_timeout", with = "vigil_runtime::duration")]
    pub timeout: Duration,
    /// How often a request that timed out is sent again.
    #[serde(default = "default_snmp_retries")]
    pub retries: u32,
    /// Groups of OIDs to poll: built-in (`system`, `if`, `host_resources`, `ucd`)
    /// or defined under `metric_sets`.
    #[serde(default = "default_metric_sets")]
    pub metric_sets: Vec<MetricSet>,
    /// Rows asked for per column in one GETBULK request of a table walk.
    #[serde(default = "default_max_repetitions")]
    pub max_repetitions: u32,
    /// Most variable bindings asked for in one request: OIDs of a GET, and
    /// columns times repetitions of a GETBULK. Small agents drop large replies.
    #[serde(default = "default_values_per_request")]
    pub values_per_request: u32,
    /// Extra labels of the device (site, role, ...), sent with every batch.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// SNMP protocol version.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnmpVersion {
    /// Community-based v1: no GETBULK, so tables are walked with GETNEXT.
    V1,
    /// Community-based v2c.
    #[default]
    V2c,
    /// User-based security model.
    V3,
}

impl fmt::Display for SnmpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2c => "v2c",
            Self::V3 => "v3",
        })
    }
}

/// A group of OIDs polled together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricSet {
    /// sysUpTime and sysName (sampled with every poll anyway).
    System,
    /// Interface counters, speed and status from ifTable and ifXTable.
    If,
    /// hrProcessorLoad and hrStorageTable of HOST-RESOURCES-MIB.
    HostResources,
    /// Load, memory and CPU counters of net-snmp's UCD-SNMP-MIB.
    Ucd,
    /// A set defined under `snmp.metric_sets` or in etcd, by name.
    Defined(String),
}

impl MetricSet {
    /// The names of the built-in sets.
    pub const BUILT_IN: [&str; 4] = ["system", "if", "host_resources", "ucd"];

    /// The set called `name`: a built-in one, or else a defined one.
    pub fn named(name: &str) -> Self {
        match name {
            "system" => Self::System,
            "if" => Self::If,
            "host_resources" => Self::HostResources,
            "ucd" => Self::Ucd,
            other => Self::Defined(other.to_owned()),
        }
    }

    /// The name of the set, as written in configurations and on every sample.
    pub fn name(&self) -> &str {
        match self {
            Self::System => "system",
            Self::If => "if",
            Self::HostResources => "host_resources",
            Self::Ucd => "ucd",
            Self::Defined(name) => name,
        }
    }
}

impl fmt::Display for MetricSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for MetricSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|name| Self::named(&name))
    }
}

/// A user-defined metric set: scalars fetched with GET and tables walked with
/// GETBULK, whose rows are joined on their index.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricSetDefinition {
    /// Single values, e.g. a CPU percentage at `...1.0`.
    #[serde(default)]
    pub scalars: Vec<ScalarMetric>,
    /// Tables, one series per row and value column.
    #[serde(default)]
    pub tables: Vec<TableMetrics>,
}

/// One scalar of a defined metric set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScalarMetric {
    /// Metric name on the wire, e.g. `cisco.cpu.busy_percent`.
    pub name: String,
    /// Numeric OID of the instance, e.g. `1.3.6.1.4.1.9.9.109.1.1.1.1.8.1`.
    pub oid: NumericOid,
    /// Unit (UCUM, as on every sample), e.g. `%` or `By`.
    #[serde(default)]
    pub unit: String,
}

/// One table of a defined metric set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TableMetrics {
    /// Label that carries the row index (dotted when it has several arcs).
    #[serde(default = "default_index_label")]
    pub index_label: String,
    /// String columns that become labels of every value of their row.
    #[serde(default)]
    pub labels: Vec<LabelColumn>,
    /// Numeric columns, one series per row each.
    pub columns: Vec<ScalarMetric>,
}

/// A string column whose values label the series of their row.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LabelColumn {
    /// Label name, e.g. `ifName`.
    pub name: String,
    /// Numeric OID of the column (without row index).
    pub oid: NumericOid,
}

/// A numeric OID such as `1.3.6.1.2.1.1.3.0` (a leading dot is allowed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NumericOid(pub Vec<u64>);

impl std::str::FromStr for NumericOid {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let arcs: Result<Vec<u64>, _> = text
            .trim()
            .trim_start_matches('.')
            .split('.')
            .map(str::parse)
            .collect();
        match arcs {
            Ok(arcs) if arcs.len() >= 2 && arcs[0] <= 2 => Ok(Self(arcs)),
            _ => Err(format!(
                "`{text}` is not a numeric OID such as 1.3.6.1.2.1.1.3.0"
            )),
        }
    }
}

impl fmt::Display for NumericOid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, arc) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_str(".")?;
            }
            write!(f, "{arc}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for NumericOid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(de::Error::custom)
    }
}

impl MetricSetDefinition {
    /// Checks the definition; `field` is how errors name it.
    pub fn validate(&self, field: &str) -> Result<(), InvalidConfig> {
        if self.scalars.is_empty() && self.tables.is_empty() {
            return Err(InvalidConfig::field(
                field,
                "must define at least one of `scalars` and `tables`",
            ));
        }
        for (index, scalar) in self.scalars.iter().enumerate() {
            if scalar.name.trim().is_empty() {
                return Err(InvalidConfig::field(
                    subfield(field, &format!("scalars[{index}].name")),
                    "must not be empty",
                ));
            }
        }
        for (index, table) in self.tables.iter().enumerate() {
            let table_field = subfield(field, &format!("tables[{index}]"));
            if table.columns.is_empty() {
                return Err(InvalidConfig::field(
                    format!("{table_field}.columns"),
                    "must list at least one column",
                ));
            }
            for (position, column) in table.columns.iter().enumerate() {
                if column.name.trim().is_empty() {
                    return Err(InvalidConfig::field(
                        format!("{table_field}.columns[{position}].name"),
                        "must not be empty",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `name` under `field`, or `name` alone when `field` is empty (an etcd entry,
/// whose errors are prefixed with its key instead).
fn subfield(field: &str, name: &str) -> String {
    if field.is_empty() {
        name.to_owned()
    } else {
        format!("{field}.{name}")
    }
}

/// SNMPv3 user-based security.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SnmpV3Config {
    /// USM user name.
    pub user: String,
    /// Whether messages are authenticated, and encrypted.
    #[serde(default)]
    pub security_level: SecurityLevel,
    /// Authentication hash; required unless `security_level` is `no_auth_no_priv`.
    #[serde(default)]
    pub auth_protocol: Option<AuthProtocol>,
    /// Authentication password, from a file or the environment.
    #[serde(default)]
    pub auth_password: Option<SecretRef>,
    /// Privacy cipher; required when `security_level` is `auth_priv`.
    #[serde(default)]
    pub priv_protocol: Option<PrivProtocol>,
    /// Privacy password, from a file or the environment.
    #[serde(default)]
    pub priv_password: Option<SecretRef>,
    /// SNMP context name, for agents that serve several contexts.
    #[serde(default)]
    pub context_name: Option<String>,
}

/// SNMPv3 security level.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecurityLevel {
    /// Neither authenticated nor encrypted.
    NoAuthNoPriv,
    /// Authenticated, not encrypted.
    AuthNoPriv,
    /// Authenticated and encrypted.
    #[default]
    AuthPriv,
}

/// SNMPv3 authentication hash.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtocol {
    Md5,
    /// SHA-1.
    Sha,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// SNMPv3 privacy cipher.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PrivProtocol {
    Des,
    /// AES-128.
    Aes,
    /// AES-192 with Blumenthal key extension (net-snmp's `AES192`).
    Aes192,
    /// AES-256 with Blumenthal key extension (net-snmp's `AES256`).
    Aes256,
    /// AES-192 with Reeder key extension (Cisco's `AES192C`).
    Aes192c,
    /// AES-256 with Reeder key extension (Cisco's `AES256C`).
    Aes256c,
}

/// A v2c community: inline for convenience (communities such as `public` are
/// rarely secret), or a secret reference. Never logged either way.
#[derive(Clone, PartialEq, Eq)]
pub enum Community {
    /// Written in the configuration file.
    Inline(String),
    /// Read from a file or an environment variable.
    Secret(SecretRef),
}

impl Community {
    /// The community string.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Self::Inline(community) => Ok(community.clone()),
            Self::Secret(secret) => secret.resolve(),
        }
    }
}

impl fmt::Debug for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Community::Inline(<redacted>)"),
            Self::Secret(secret) => f.debug_tuple("Community::Secret").field(secret).finish(),
        }
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommunityVisitor;

        impl<'de> Visitor<'de> for CommunityVisitor {
            type Value = Community;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a community string, or a secret `{file: ...}` or `{env: ...}`")
            }

            fn visit_str<E: de::Error>(self, community: &str) -> Result<Community, E> {
                Ok(Community::Inline(community.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Community, A::Error> {
                SecretRef::deserialize(MapAccessDeserializer::new(map)).map(Community::Secret)
            }
        }

        deserializer.deserialize_any(CommunityVisitor)
    }
}

/// The configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {cause}")]
    Invalid { path: String, cause: InvalidConfig },
}

/// A value the types accept but the agent cannot work with; the message names the
/// field, for example "`snmp.targets[0].interval` must be at least 1s".
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct InvalidConfig {
    message: String,
}

impl InvalidConfig {
    fn field(field: impl fmt::Display, problem: impl fmt::Display) -> Self {
        Self {
            message: format!("`{field}` {problem}"),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            resource: ResourceConfig::default(),
            kafka: None,
            data_dir: default_data_dir(),
            http: HttpConfig::default(),
            logs: Vec::new(),
            log_batch: LogBatchConfig::default(),
            host_metrics: HostMetricsConfig::default(),
            container_metrics: ContainerMetricsConfig::default(),
            snmp: SnmpConfig::default(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

impl Default for ResourceConfig {
    fn default() -> Self {
        Self {
            id: default_host_name(),
            host_name: default_host_name(),
            attributes: BTreeMap::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
        }
    }
}

impl Default for LogBatchConfig {
    fn default() -> Self {
        Self {
            max_lines: default_max_lines(),
            max_bytes: default_max_bytes(),
            flush_interval: default_flush_interval(),
            max_line_bytes: default_max_line_bytes(),
        }
    }
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

impl Default for ContainerMetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_container_metrics_interval(),
            cgroup_root: default_cgroup_root(),
            containers: true,
            include: Vec::new(),
            max_cgroups: default_max_cgroups(),
        }
    }
}

impl HostMetricsConfig {
    fn validate(&self) -> Result<(), InvalidConfig> {
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

impl ContainerMetricsConfig {
    fn validate(&self) -> Result<(), InvalidConfig> {
        if self.enabled && self.interval < Duration::from_secs(1) {
            return Err(InvalidConfig::field(
                "container_metrics.interval",
                "must be at least 1s",
            ));
        }
        if !self.cgroup_root.is_absolute() {
            return Err(InvalidConfig::field(
                "container_metrics.cgroup_root",
                format!(
                    "must be an absolute path, not `{}`",
                    self.cgroup_root.display()
                ),
            ));
        }
        if let Some(index) = self.include.iter().position(|path| !path.starts_with('/')) {
            return Err(InvalidConfig::field(
                format!("container_metrics.include[{index}]"),
                format!(
                    "must start with `/` (the hierarchy's root), not `{}`",
                    self.include[index]
                ),
            ));
        }
        self.include_globs()?;
        if self.max_cgroups == 0 {
            return Err(InvalidConfig::field(
                "container_metrics.max_cgroups",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The cgroup paths reported beside the recognised containers.
    pub(crate) fn include_globs(&self) -> Result<Vec<glob::Pattern>, InvalidConfig> {
        compile_globs(&self.include, "container_metrics.include")
    }
}

impl LogFileConfig {
    /// A file of dataset `dataset`.
    pub fn new(path: impl Into<PathBuf>, dataset: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            exclude: Vec::new(),
            read_from: ReadFrom::default(),
            ignore_older: None,
            dataset: dataset.into(),
            partial_line_timeout: default_partial_line_timeout(),
            multiline: None,
        }
    }
}

impl SnmpTarget {
    /// A v2c target with everything but name, address and community defaulted.
    pub fn v2c(name: impl Into<String>, address: impl Into<String>, community: Community) -> Self {
        Self {
            name: name.into(),
            address: address.into(),
            version: SnmpVersion::V2c,
            community: Some(community),
            v3: None,
            interval: default_snmp_interval(),
            timeout: default_snmp_timeout(),
            retries: default_snmp_retries(),
            metric_sets: default_metric_sets(),
            max_repetitions: default_max_repetitions(),
            values_per_request: default_values_per_request(),
            labels: BTreeMap::new(),
        }
    }

    /// A v3 target with everything but name, address and security defaulted.
    pub fn v3(name: impl Into<String>, address: impl Into<String>, v3: SnmpV3Config) -> Self {
        Self {
            version: SnmpVersion::V3,
            community: None,
            v3: Some(v3),
            ..Self::v2c(name, address, Community::Inline(String::new()))
        }
    }

    /// Checks this target alone; `field` is how errors name it, e.g.
    /// `snmp.targets[0]` (empty for an etcd entry, whose key names it).
    pub fn validate(&self, field: &str) -> Result<(), InvalidConfig> {
        let invalid =
            |name: &str, problem: String| Err(InvalidConfig::field(subfield(field, name), problem));
        if self.name.trim().is_empty() {
            return invalid("name", "must not be empty".into());
        }
        if self.address.trim().is_empty() {
            return invalid("address", "must be `host:port` or `host`".into());
        }
        if self.interval < Duration::from_secs(1) {
            return invalid("interval", "must be at least 1s".into());
        }
        if self.timeout < Duration::from_millis(10) {
            return invalid("timeout", "must be at least 10ms".into());
        }
        let worst_case = self.timeout * (self.retries + 1);
        if worst_case > self.interval {
            return invalid(
                "timeout",
                format!(
                    "times (retries + 1) is {}, longer than the interval {}; one poll must end before the next starts",
                    format_duration(worst_case),
                    format_duration(self.interval)
                ),
            );
        }
        if self.retries > 10 {
            return invalid("retries", "must be at most 10".into());
        }
        if self.metric_sets.is_empty() {
            return invalid(
                "metric_sets",
                format!(
                    "must name at least one of {} or a defined set",
                    MetricSet::BUILT_IN.join(", ")
                ),
            );
        }
        if self.max_repetitions == 0 || self.max_repetitions > 100 {
            return invalid("max_repetitions", "must be between 1 and 100".into());
        }
        if self.values_per_request == 0 || self.values_per_request > 1000 {
            return invalid("values_per_request", "must be between 1 and 1000".into());
        }
        match (self.version, &self.community, &self.v3) {
            (SnmpVersion::V1 | SnmpVersion::V2c, Some(community), None) => community
                .resolve()
                .map(drop)
                .map_err(|error| InvalidConfig::field(subfield(field, "community"), error)),
            (SnmpVersion::V1 | SnmpVersion::V2c, None, _) => invalid(
                "community",
                format!("is required with version {}", self.version),
            ),
            (SnmpVersion::V1 | SnmpVersion::V2c, Some(_), Some(_)) => {
                invalid("v3", "is only allowed with version v3".into())
            }
            (SnmpVersion::V3, Some(_), _) => invalid(
                "community",
                "is only allowed with versions v1 and v2c".into(),
            ),
            (SnmpVersion::V3, None, None) => invalid("v3", "is required with version v3".into()),
            (SnmpVersion::V3, None, Some(v3)) => v3.validate(&subfield(field, "v3")),
        }
    }

    /// Checks that every metric set the target lists is built in or `is_defined`.
    pub fn check_metric_sets(
        &self,
        field: &str,
        is_defined: impl Fn(&str) -> bool,
    ) -> Result<(), InvalidConfig> {
        for (index, set) in self.metric_sets.iter().enumerate() {
            if let MetricSet::Defined(name) = set
                && !is_defined(name)
            {
                return Err(InvalidConfig::field(
                    subfield(field, &format!("metric_sets[{index}]")),
                    format!(
                        "`{name}` is neither built in ({}) nor defined",
                        MetricSet::BUILT_IN.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl SnmpV3Config {
    fn validate(&self, field: &str) -> Result<(), InvalidConfig> {
        let invalid = |name: &str, problem: &str| {
            Err(InvalidConfig::field(format!("{field}.{name}"), problem))
        };
        if self.user.is_empty() {
            return invalid("user", "must not be empty");
        }
        let needs_auth = self.security_level != SecurityLevel::NoAuthNoPriv;
        let needs_priv = self.security_level == SecurityLevel::AuthPriv;
        let level = match self.security_level {
            SecurityLevel::NoAuthNoPriv => "no_auth_no_priv",
            SecurityLevel::AuthNoPriv => "auth_no_priv",
            SecurityLevel::AuthPriv => "auth_priv",
        };
        let presence = [
            ("auth_protocol", self.auth_protocol.is_some(), needs_auth),
            ("auth_password", self.auth_password.is_some(), needs_auth),
            ("priv_protocol", self.priv_protocol.is_some(), needs_priv),
            ("priv_password", self.priv_password.is_some(), needs_priv),
        ];
        for (name, present, needed) in presence {
            if needed && !present {
                return invalid(name, &format!("is required with security_level {level}"));
            }
            if present && !needed {
                return invalid(name, &format!("is not used with security_level {level}"));
            }
        }
        let secrets = [
            ("auth_password", &self.auth_password),
            ("priv_password", &self.priv_password),
        ];
        for (name, secret) in secrets {
            if let Some(secret) = secret {
                let password = secret
                    .resolve()
                    .map_err(|error| InvalidConfig::field(format!("{field}.{name}"), error))?;
                if password.len() < 8 {
                    return invalid(name, "must be at least 8 characters (RFC 3414)");
                }
            }
        }
        Ok(())
    }
}

impl AgentConfig {
    /// Reads, parses and validates the YAML file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            cause: source,
        })?;
        Self::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates YAML `text`; `source_name` (usually the file path)
    /// prefixes every error.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_saphyr::from_str(text).map_err(|error| {
            let (line, column) = error
                .location()
                .map_or((0, 0), |location| (location.line(), location.column()));
            let mut message = error.without_snippet().to_string();
            let suffix = format!(" at line {line}, column {column}");
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
            ConfigError::Syntax {
                path: source_name.to_owned(),
                line,
                column,
                message,
            }
        })?;
        config.validate().map_err(|source| ConfigError::Invalid {
            path: source_name.to_owned(),
            cause: source,
        })?;
        Ok(config)
    }

    /// Checks what the types cannot express; the error names the first bad field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.resource.id.trim().is_empty() {
            return Err(InvalidConfig::field("resource.id", "must not be empty"));
        }
        if self.resource.host_name.trim().is_empty() {
            return Err(InvalidConfig::field(
                "resource.host_name",
                "must not be empty",
            ));
        }
        if let Some(kafka) = &self.kafka {
            kafka.validate().map_err(|error| InvalidConfig {
                message: error.to_string(),
            })?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(InvalidConfig::field("data_dir", "must not be empty"));
        }
        let mut seen_paths = BTreeMap::new();
        for (index, log) in self.logs.iter().enumerate() {
            if !log.path.is_absolute() {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].path"),
                    format!("must be an absolute path, not `{}`", log.path.display()),
                ));
            }
            if let Some(first) = seen_paths.insert(&log.path, index) {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].path"),
                    format!("repeats `logs[{first}].path` (`{}`)", log.path.display()),
                ));
            }
            if log.dataset.trim().is_empty() {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].dataset"),
                    "must not be empty",
                ));
            }
            let Some(pattern) = log.path.to_str() else {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].path"),
                    format!("must be UTF-8, not `{}`", log.path.display()),
                ));
            };
            if let Err(error) = glob::Pattern::new(pattern) {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].path"),
                    format!("is not a valid glob: {error}"),
                ));
            }
            for (position, exclude) in log.exclude.iter().enumerate() {
                if let Err(error) = glob::Pattern::new(exclude) {
                    return Err(InvalidConfig::field(
                        format!("logs[{index}].exclude[{position}]"),
                        format!("is not a valid glob: {error}"),
                    ));
                }
            }
            if log.ignore_older.is_some_and(|age| age.is_zero()) {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].ignore_older"),
                    "must be longer than 0s",
                ));
            }
            if let Some(multiline) = &log.multiline {
                multiline.validate(&format!("logs[{index}].multiline"))?;
            }
            if log.partial_line_timeout < Duration::from_millis(1) {
                return Err(InvalidConfig::field(
                    format!("logs[{index}].partial_line_timeout"),
                    "must be at least 1ms",
                ));
            }
        }
        self.log_batch.validate()?;
        self.host_metrics.validate()?;
        self.container_metrics.validate()?;
        self.snmp.validate()?;
        if self.shutdown_timeout.is_zero() {
            return Err(InvalidConfig::field(
                "shutdown_timeout",
                "must be longer than 0s",
            ));
        }
        Ok(())
    }
}

impl SnmpConfig {
    /// Checks targets, metric set definitions and their references.
    fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_polls_in_flight == 0 {
            return Err(InvalidConfig::field(
                "snmp.max_polls_in_flight",
                "must be at least 1",
            ));
        }
        if let Some(etcd) = &self.etcd {
            etcd.validate().map_err(|error| InvalidConfig {
                message: error.to_string().replace("`etcd.", "`snmp.etcd."),
            })?;
            if !self.targets.is_empty() {
                return Err(InvalidConfig::field(
                    "snmp.targets",
                    "must be empty when `snmp.etcd` is set: targets then come from etcd",
                ));
            }
        }
        for (name, definition) in &self.metric_sets {
            let field = format!("snmp.metric_sets.{name}");
            if MetricSet::BUILT_IN.contains(&name.as_str()) {
                return Err(InvalidConfig::field(
                    field,
                    "redefines a built-in metric set",
                ));
            }
            definition.validate(&field)?;
        }
        let mut names = BTreeSet::new();
        for (index, target) in self.targets.iter().enumerate() {
            let field = format!("snmp.targets[{index}]");
            target.validate(&field)?;
            target.check_metric_sets(&field, |name| self.metric_sets.contains_key(name))?;
            if !names.insert(&target.name) {
                return Err(InvalidConfig::field(
                    format!("{field}.name"),
                    format!("`{}` is used by another target", target.name),
                ));
            }
        }
        Ok(())
    }
}

impl MultilineConfig {
    fn validate(&self, field: &str) -> Result<(), InvalidConfig> {
        let (key, pattern) = match (&self.start_pattern, &self.continuation_pattern) {
            (Some(start), None) => ("start_pattern", start),
            (None, Some(continuation)) => ("continuation_pattern", continuation),
            _ => {
                return Err(InvalidConfig::field(
                    field,
                    "needs exactly one of `start_pattern` and `continuation_pattern`",
                ));
            }
        };
        if let Err(error) = regex::bytes::Regex::new(pattern) {
            return Err(InvalidConfig::field(
                format!("{field}.{key}"),
                format!("is not a valid regex: {error}"),
            ));
        }
        if self.max_lines == 0 {
            return Err(InvalidConfig::field(
                format!("{field}.max_lines"),
                "must be at least 1",
            ));
        }
        if self.flush_timeout < Duration::from_millis(1) {
            return Err(InvalidConfig::field(
                format!("{field}.flush_timeout"),
                "must be at least 1ms",
            ));
        }
        Ok(())
    }
}

impl LogBatchConfig {
    fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_lines == 0 {
            return Err(InvalidConfig::field(
                "log_batch.max_lines",
                "must be at least 1",
            ));
        }
        if self.max_bytes < 1024 {
            return Err(InvalidConfig::field(
                "log_batch.max_bytes",
                "must be at least 1024",
            ));
        }
        if self.flush_interval < Duration::from_millis(1) {
            return Err(InvalidConfig::field(
                "log_batch.flush_interval",
                "must be at least 1ms",
            ));
        }
        if self.max_line_bytes == 0 || self.max_line_bytes >= self.max_bytes {
            return Err(InvalidConfig::field(
                "log_batch.max_line_bytes",
                format!(
                    "must be between 1 and `log_batch.max_bytes` ({}) so that one line always fits in a batch",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn default_host_name() -> String {
    hostname::get()
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/vigil-agent")
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    vigil_runtime::duration::deserialize(deserializer).map(Some)
}

fn default_multiline_flush_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_multiline_max_lines() -> usize {
    500
}

fn default_partial_line_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_dataset() -> String {
    "generic".to_owned()
}

fn default_max_lines() -> usize {
    2000
}

fn default_max_bytes() -> usize {
    256 * 1024
}

fn default_flush_interval() -> Duration {
    Duration::from_millis(200)
}

fn default_max_line_bytes() -> usize {
    128 * 1024
}

fn default_true() -> bool {
    true
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

fn default_disk_exclude() -> Vec<String> {
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

fn default_container_metrics_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_cgroup_root() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}

fn default_max_cgroups() -> usize {
    10_000
}

fn default_snmp_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_snmp_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_snmp_retries() -> u32 {
    1
}

fn default_metric_sets() -> Vec<MetricSet> {
    vec![MetricSet::System, MetricSet::If]
}

fn default_max_repetitions() -> u32 {
    25
}

fn default_values_per_request() -> u32 {
    60
}

fn default_max_polls_in_flight() -> usize {
    256
}

fn default_index_label() -> String {
    "index".to_owned()
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
resource: {id: web-1, host_name: web-1, attributes: {site: fra1}}
kafka: {brokers: "127.0.0.1:9092", topic_prefix: vigil}
data_dir: /var/lib/vigil-agent
http: {listen: "127.0.0.1:9464"}
logs:
  - {path: /var/log/app.log, dataset: app, partial_line_timeout: 2s, multiline: {start_pattern: '^\d{4}-'}}
  - path: /var/log/pods/**/*.log
    exclude: ['*.1']
    read_from: beginning
    ignore_older: 24h
  - {path: /var/log/syslog}
log_batch: {max_lines: 2000, max_bytes: 786432, flush_interval: 200ms, max_line_bytes: 65536}
host_metrics: {enabled: true, interval: 10s, proc_root: /proc}
snmp:
  targets:
    - {name: core1, address: "10.0.0.1:161", version: v2c, community: {env: PATH}, interval: 30s, timeout: 2s, retries: 1, metric_sets: [system, if]}
    - {name: edge, address: "10.0.0.3", community: public}
"#;

    #[test]
    fn a_full_configuration_loads() {
        let config = AgentConfig::from_yaml(FULL, "agent.yaml").unwrap();
        assert_eq!(config.resource.id, "web-1");
        assert_eq!(config.resource.attributes["site"], "fra1");
        assert_eq!(config.kafka.unwrap().brokers, "127.0.0.1:9092");
        assert_eq!(config.logs[2].dataset, "generic");
        assert_eq!(config.logs[0].partial_line_timeout, Duration::from_secs(2));
        assert_eq!(config.logs[0].read_from, ReadFrom::End);
        assert_eq!(config.logs[0].ignore_older, None);
        let multiline = config.logs[0].multiline.as_ref().unwrap();
        assert_eq!(multiline.start_pattern.as_deref(), Some(r"^\d{4}-"));
        assert_eq!(
            (multiline.flush_timeout, multiline.max_lines),
            (Duration::from_secs(1), 500)
        );
        assert_eq!(config.logs[1].exclude, ["*.1"]);
        assert_eq!(config.logs[1].read_from, ReadFrom::Beginning);
        assert_eq!(
            config.logs[1].ignore_older,
            Some(Duration::from_secs(24 * 3600))
        );
        assert_eq!(config.log_batch.flush_interval, Duration::from_millis(200));
        assert_eq!(config.snmp.targets[0].interval, Duration::from_secs(30));
        assert_eq!(
            config.snmp.targets[1].community,
            Some(Community::Inline("public".into()))
        );
        assert_eq!(
            config.snmp.targets[1].metric_sets,
            [MetricSet::System, MetricSet::If]
        );
    }

    #[test]
    fn an_empty_file_is_a_valid_configuration_of_defaults() {
        let config = AgentConfig::from_yaml("{}", "agent.yaml").unwrap();
        assert!(config.kafka.is_none());
        assert_eq!(config.resource.id, default_host_name());
        assert_eq!(config.log_batch, LogBatchConfig::default());
    }

    #[test]
    fn an_unknown_key_is_named_with_file_line_and_column() {
        let yaml = "resource: {id: a}\ndata_dir: /tmp\ncolour: blue\n";
        let error = AgentConfig::from_yaml(yaml, "agent.yaml").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("agent.yaml:3:1: unknown field `colour`, expected one of"),
            "{text}"
        );
        assert!(text.contains("data_dir"), "{text}");

        let nested = "snmp:\n  targets:\n    - name: a\n      address: b\n      comunity: x\n";
        let text = AgentConfig::from_yaml(nested, "/etc/vigil/agent.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("/etc/vigil/agent.yaml:5:7: unknown field `comunity`"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_duration_is_located_and_explained() {
        let yaml = "log_batch:\n  flush_interval: 10x\n";
        let text = AgentConfig::from_yaml(yaml, "agent.yaml")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("agent.yaml:2:"), "{text}");
        assert!(
            text.contains("invalid duration `10x`: unknown unit (expected ms, s, m, h, d or w)"),
            "{text}"
        );
    }

    fn invalid(yaml: &str) -> String {
        match AgentConfig::from_yaml(yaml, "agent.yaml").unwrap_err() {
            ConfigError::Invalid { path, cause } => {
                assert_eq!(path, "agent.yaml");
                cause.to_string()
            }
            other => panic!("expected a validation error, got {other}"),
        }
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            (
                "snmp: {targets: [{name: a, address: 'h:161', community: c, interval: 500ms}]}",
                "`snmp.targets[0].interval` must be at least 1s",
            ),
            (
                "snmp: {targets: [{name: a, address: 'h:161'}]}",
                "`snmp.targets[0].community` is required with version v2c",
            ),
            (
                "snmp: {targets: [{name: a, address: h, community: c}, {name: a, address: h, community: c}]}",
                "`snmp.targets[1].name` `a` is used by another target",
            ),
            (
                "snmp: {targets: [{name: a, address: h, version: v3, v3: {user: u, auth_protocol: sha}}]}",
                "`snmp.targets[0].v3.auth_password` is required with security_level auth_priv",
            ),
            (
                "snmp: {targets: [{name: a, address: h, community: {env: VIGIL_TEST_UNSET_COMMUNITY}}]}",
                "`snmp.targets[0].community` environment variable VIGIL_TEST_UNSET_COMMUNITY is not set",
            ),
            (
                "logs: [{path: relative.log}]",
                "`logs[0].path` must be an absolute path, not `relative.log`",
            ),
            (
                "logs: [{path: /a.log}, {path: /a.log}]",
                "`logs[1].path` repeats `logs[0].path` (`/a.log`)",
            ),
            (
                "logs: [{path: '/var/log/[a.log'}]",
                "`logs[0].path` is not a valid glob: Pattern syntax error near position 9: invalid range pattern",
            ),
            (
                "logs: [{path: /a.log, multiline: {start_pattern: 'a', continuation_pattern: 'b'}}]",
                "`logs[0].multiline` needs exactly one of `start_pattern` and `continuation_pattern`",
            ),
            (
                "logs: [{path: /a.log, ignore_older: 0}]",
                "`logs[0].ignore_older` must be longer than 0s",
            ),
            (
                "log_batch: {max_bytes: 4096, max_line_bytes: 4096}",
                "`log_batch.max_line_bytes` must be between 1 and `log_batch.max_bytes` (4096) so that one line always fits in a batch",
            ),
            (
                "host_metrics: {interval: 0s}",
                "`host_metrics.interval` must be at least 1s",
            ),
            (
                "kafka: {brokers: ''}",
                "`kafka.brokers` must list at least one broker",
            ),
        ];
        for (yaml, expected) in cases {
            assert_eq!(invalid(yaml), expected, "{yaml}");
        }
    }

    #[test]
    fn timeouts_must_fit_in_the_interval() {
        let yaml = "snmp: {targets: [{name: a, address: h, community: c, interval: 2s, timeout: 1500ms, retries: 1}]}";
        assert_eq!(
            invalid(yaml),
            "`snmp.targets[0].timeout` times (retries + 1) is 3s, longer than the interval 2s; one poll must end before the next starts"
        );
    }

    #[test]
    fn host_and_container_metrics_sections_load() {
        let yaml = "
host_metrics:
  interval: 15s
  proc_root: /host/proc
  mount_root: /host
  disks: {include: ['sd*', 'nvme*'], partitions: true}
  interfaces: {exclude: [lo, 'veth*']}
  filesystems: {exclude_types: [tmpfs]}
container_metrics: {interval: 30s, cgroup_root: /host/sys/fs/cgroup, include: [/, '/system.slice/*.service'], max_cgroups: 500}
";
        let config = AgentConfig::from_yaml(yaml, "agent.yaml").unwrap();
        let host = &config.host_metrics;
        assert_eq!(host.mount_root, Path::new("/host"));
        assert!(host.disks.partitions);
        assert_eq!(host.disks.exclude, default_disk_exclude());
        let disks = host.disks.matcher().unwrap();
        assert!(disks.selects("sda") && disks.selects("nvme0n1") && !disks.selects("vda"));
        let interfaces = host.interfaces.matcher().unwrap();
        assert!(interfaces.selects("eth0") && !interfaces.selects("lo"));
        assert!(!interfaces.selects("veth12ab"));
        assert_eq!(host.filesystems.exclude_types, ["tmpfs"]);
        let mounts = host.filesystems.mount_points().unwrap();
        assert!(mounts.selects("/") && mounts.selects("/srv/data"));
        assert!(!mounts.selects("/proc/sys/fs/binfmt_misc") && !mounts.selects("/dev"));
        let containers = &config.container_metrics;
        assert!(containers.enabled && containers.containers);
        assert_eq!(containers.interval, Duration::from_secs(30));
        assert_eq!(containers.max_cgroups, 500);
        assert_eq!(containers.include_globs().unwrap().len(), 2);
        assert_eq!(
            AgentConfig::from_yaml("{}", "agent.yaml")
                .unwrap()
                .container_metrics,
            ContainerMetricsConfig::default()
        );
    }

    #[test]
    fn invalid_host_and_container_metrics_values_name_the_field() {
        let cases = [
            (
                "host_metrics: {proc_root: proc}",
                "`host_metrics.proc_root` must be an absolute path, not `proc`",
            ),
            (
                "host_metrics: {disks: {include: ['sd[']}}",
                "`host_metrics.disks.include[0]` is not a valid glob: Pattern syntax error near position 2: invalid range pattern",
            ),
            (
                "host_metrics: {interfaces: {exclude: [lo, 'eth[']}}",
                "`host_metrics.interfaces.exclude[1]` is not a valid glob: Pattern syntax error near position 3: invalid range pattern",
            ),
            (
                "host_metrics: {filesystems: {exclude_types: [tmpfs, '']}}",
                "`host_metrics.filesystems.exclude_types[1]` must not be empty",
            ),
            (
                "container_metrics: {interval: 100ms}",
                "`container_metrics.interval` must be at least 1s",
            ),
            (
                "container_metrics: {cgroup_root: sys/fs/cgroup}",
                "`container_metrics.cgroup_root` must be an absolute path, not `sys/fs/cgroup`",
            ),
            (
                "container_metrics: {include: [/, 'docker/*']}",
                "`container_metrics.include[1]` must start with `/` (the hierarchy's root), not `docker/*`",
            ),
            (
                "container_metrics: {max_cgroups: 0}",
                "`container_metrics.max_cgroups` must be at least 1",
            ),
        ];
        for (yaml, expected) in cases {
            assert_eq!(invalid(yaml), expected, "{yaml}");
        }
    }

    #[test]
    fn inline_communities_are_never_printed() {
        let community = Community::Inline("s3cret".into());
        assert!(!format!("{community:?}").contains("s3cret"));
    }
}
