//! Metric sets of the `snmp` section: the built-in sets a target names, and the
//! sets users define as scalars and table columns by OID (in the file or in etcd),
//! from which the SNMP poller builds what each poll asks a device for.

use super::InvalidConfig;
use super::errors::subfield;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::fmt;

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

fn default_index_label() -> String {
    "index".to_owned()
}
