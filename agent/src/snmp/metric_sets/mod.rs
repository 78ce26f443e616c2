//! What each metric set asks a device for, and how the answers become samples: the
//! built-in sets (SNMPv2-MIB system, IF-MIB, HOST-RESOURCES-MIB, UCD-SNMP-MIB) and
//! the sets users define as lists of scalars and table columns.
//!
//! Metric names are those of the host-push source (`host.cpu.ticks`,
//! `host.memory.total_bytes`, `if.in.octets`, ...), so that one rule or dashboard
//! serves a host whether it pushes its metrics or is polled. A [`PollPlan`] is
//! built once per target configuration; the poller runs it every interval.

mod defined_tables;
mod host_resources;
mod interfaces;
mod ucd;

#[cfg(test)]
mod tests;

pub(crate) use defined_tables::{defined_table_oids, defined_table_samples};
pub(crate) use host_resources::{
    StorageColumn, processor_load_oid, processor_samples, storage_samples,
};
pub(crate) use interfaces::{IfColumn, InterfaceColumns, interface_samples, lacks_64_bit_counters};

use super::samples::{Measurement, SnmpValue, measurement, snmp_sample};
use crate::config::{MetricSet, MetricSetDefinition, TableMetrics};
use std::collections::{BTreeMap, BTreeSet};
use ucd::ucd_scalars;
use vigil_proto::labels::label;
use vigil_proto::v1::{Label, MetricKind, Sample, ValueType, sample};

pub(crate) const SYS_UPTIME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
pub(crate) const SYS_NAME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];

fn under(table: &[u64], arcs: &[u64]) -> Vec<u64> {
    [table, arcs].concat()
}

/// How a scalar's raw value is turned into the metric's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    /// Kept as the device sent it, type included.
    Raw,
    /// Kilobytes (UCD-SNMP-MIB memory) to bytes.
    KilobytesToBytes,
    /// Hundredths (UCD-SNMP-MIB laLoadInt) to units.
    Hundredths,
}

/// One scalar of a plan: the OID to GET and the sample it becomes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScalarSpec {
    pub(crate) oid: Vec<u64>,
    name: String,
    labels: Vec<Label>,
    unit: String,
    scale: Scale,
    metric_set: String,
}

impl ScalarSpec {
    pub(super) fn new(set: &str, name: &str, oid: Vec<u64>, unit: &str, scale: Scale) -> Self {
        Self {
            oid,
            name: name.to_owned(),
            labels: Vec::new(),
            unit: unit.to_owned(),
            scale,
            metric_set: set.to_owned(),
        }
    }

    pub(super) fn labelled(mut self, name: &str, value: &str) -> Self {
        self.labels.push(label(name, value));
        self
    }

    /// The sample of `value`, if it is numeric.
    pub(crate) fn sample(&self, value: &SnmpValue, time: i64) -> Option<Sample> {
        let measured = scaled(measurement(value)?, self.scale);
        Some(snmp_sample(
            &self.name,
            self.labels.clone(),
            measured,
            &self.unit,
            &self.metric_set,
            time,
        ))
    }
}

fn scaled(measured: Measurement, scale: Scale) -> Measurement {
    let factor = match scale {
        Scale::Raw => return measured,
        Scale::KilobytesToBytes => 1024.0,
        Scale::Hundredths => 0.01,
    };
    let raw = match measured.value {
        sample::Value::Gauge(value) | sample::Value::FloatCounter(value) => value,
        sample::Value::Counter(count) => count as f64,
    };
    Measurement {
        kind: MetricKind::Gauge,
        value: sample::Value::Gauge(raw * factor),
        value_type: ValueType::Float,
    }
}

/// A table a plan walks, and how its rows become samples.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TableSpec {
    /// ifTable and ifXTable, joined on ifIndex.
    Interfaces,
    /// hrStorageTable.
    Storage,
    /// hrProcessorTable's load column.
    Processors,
    /// A table of a defined metric set.
    Defined { set: String, table: TableMetrics },
}

/// Everything one poll of a target asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PollPlan {
    /// Fetched with GET, a few per request; sysUpTime and sysName always.
    pub(crate) scalars: Vec<ScalarSpec>,
    /// Walked with GETBULK (GETNEXT for v1).
    pub(crate) tables: Vec<TableSpec>,
}

impl PollPlan {
    /// The plan of `sets`; defined sets are looked up in `definitions`, and one
    /// missing there (which validation prevents) is skipped.
    pub(crate) fn new(
        sets: &[MetricSet],
        definitions: &BTreeMap<String, MetricSetDefinition>,
    ) -> Self {
        let sets: BTreeSet<&MetricSet> = sets.iter().collect();
        let mut plan = Self {
            scalars: Vec::new(),
            tables: Vec::new(),
        };
        for set in sets {
            match set {
                MetricSet::System => {}
                MetricSet::If => plan.tables.push(TableSpec::Interfaces),
                MetricSet::HostResources => {
                    plan.tables.push(TableSpec::Processors);
                    plan.tables.push(TableSpec::Storage);
                }
                MetricSet::Ucd => plan.scalars.extend(ucd_scalars()),
                MetricSet::Defined(name) => {
                    let Some(definition) = definitions.get(name) else {
                        continue;
                    };
                    plan.scalars.extend(definition.scalars.iter().map(|scalar| {
                        ScalarSpec::new(
                            name,
                            &scalar.name,
                            scalar.oid.0.clone(),
                            &scalar.unit,
                            Scale::Raw,
                        )
                    }));
                    plan.tables
                        .extend(definition.tables.iter().map(|table| TableSpec::Defined {
                            set: name.clone(),
                            table: table.clone(),
                        }));
                }
            }
        }
        plan
    }

    /// How many OIDs one poll asks for before walking: the GETs, sysUpTime and
    /// sysName included.
    pub(crate) fn scalar_oids(&self) -> Vec<&[u64]> {
        [SYS_UPTIME, SYS_NAME]
            .into_iter()
            .chain(self.scalars.iter().map(|spec| spec.oid.as_slice()))
            .collect()
    }
}
