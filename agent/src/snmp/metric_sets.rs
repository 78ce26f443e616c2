//! What each metric set asks a device for, and how the answers become samples: the
//! built-in sets (SNMPv2-MIB system, IF-MIB, HOST-RESOURCES-MIB, UCD-SNMP-MIB) and
//! the sets users define as lists of scalars and table columns.
//!
//! Metric names are those of the host-push source (`host.cpu.ticks`,
//! `host.memory.total_bytes`, `if.in.octets`, ...), so that one rule or dashboard
//! serves a host whether it pushes its metrics or is polled. A [`PollPlan`] is
//! built once per target configuration; the poller runs it every interval.

use super::samples::{
    Column, Measurement, SnmpValue, index_text, label_value, measurement, snmp_sample,
};
use crate::config::{MetricSet, MetricSetDefinition, TableMetrics};
use std::collections::{BTreeMap, BTreeSet};
use vigil_proto::labels::label;
use vigil_proto::v1::{Label, MetricKind, Sample, ValueType, sample};

pub(crate) const SYS_UPTIME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 3, 0];
pub(crate) const SYS_NAME: &[u64] = &[1, 3, 6, 1, 2, 1, 1, 5, 0];

const IF_TABLE: [u64; 9] = [1, 3, 6, 1, 2, 1, 2, 2, 1];
const IF_X_TABLE: [u64; 10] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1];
const HR_STORAGE_TABLE: [u64; 10] = [1, 3, 6, 1, 2, 1, 25, 2, 3, 1];
/// hrStorageTypes: the arcs below it name the kind of storage.
const HR_STORAGE_TYPES: [u64; 9] = [1, 3, 6, 1, 2, 1, 25, 2, 1];
const HR_PROCESSOR_LOAD: [u64; 11] = [1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 2];
const UCD_MEMORY: [u64; 8] = [1, 3, 6, 1, 4, 1, 2021, 4];
const UCD_LOAD_INT: [u64; 10] = [1, 3, 6, 1, 4, 1, 2021, 10, 1, 5];
const UCD_SYSTEM_STATS: [u64; 8] = [1, 3, 6, 1, 4, 1, 2021, 11];

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
    fn new(set: &str, name: &str, oid: Vec<u64>, unit: &str, scale: Scale) -> Self {
        Self {
            oid,
            name: name.to_owned(),
            labels: Vec::new(),
            unit: unit.to_owned(),
            scale,
            metric_set: set.to_owned(),
        }
    }

    fn labelled(mut self, name: &str, value: &str) -> Self {
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
        sample::Value::Gauge(value) => value,
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

fn ucd_scalars() -> Vec<ScalarSpec> {
    let memory = |arc: u64, name: &str| {
        ScalarSpec::new(
            "ucd",
            name,
            under(&UCD_MEMORY, &[arc, 0]),
            "By",
            Scale::KilobytesToBytes,
        )
    };
    let load = |row: u64, name: &str| {
        ScalarSpec::new(
            "ucd",
            name,
            under(&UCD_LOAD_INT, &[row]),
            "",
            Scale::Hundredths,
        )
    };
    let ticks = |arc: u64, mode: &str| {
        ScalarSpec::new(
            "ucd",
            "host.cpu.ticks",
            under(&UCD_SYSTEM_STATS, &[arc, 0]),
            "",
            Scale::Raw,
        )
        .labelled("mode", mode)
    };
    vec![
        load(1, "host.load.1m"),
        load(2, "host.load.5m"),
        load(3, "host.load.15m"),
        memory(5, "host.memory.total_bytes"),
        memory(6, "host.memory.free_bytes"),
        memory(14, "host.memory.buffers_bytes"),
        memory(15, "host.memory.cached_bytes"),
        memory(3, "host.swap.total_bytes"),
        memory(4, "host.swap.free_bytes"),
        ticks(50, "user"),
        ticks(51, "nice"),
        ticks(52, "system"),
        ticks(53, "idle"),
        ticks(54, "iowait"),
        ticks(56, "irq"),
        ticks(61, "softirq"),
        ticks(64, "steal"),
    ]
}

/// An IF-MIB column: where it lives, and what it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum IfColumn {
    Descr,
    Name,
    Speed,
    HighSpeed,
    OperStatus,
    InErrors,
    OutErrors,
    InDiscards,
    OutDiscards,
    HcInOctets,
    HcOutOctets,
    HcInUcastPkts,
    HcOutUcastPkts,
    InOctets,
    OutOctets,
    InUcastPkts,
    OutUcastPkts,
}

impl IfColumn {
    /// Walked on every poll: labels, gauges, error counters and the 64-bit
    /// counters of ifXTable.
    pub(crate) const FIRST: [Self; 13] = [
        Self::Descr,
        Self::Name,
        Self::Speed,
        Self::HighSpeed,
        Self::OperStatus,
        Self::InErrors,
        Self::OutErrors,
        Self::InDiscards,
        Self::OutDiscards,
        Self::HcInOctets,
        Self::HcOutOctets,
        Self::HcInUcastPkts,
        Self::HcOutUcastPkts,
    ];
    /// Walked only when some interface lacks its 64-bit counters.
    pub(crate) const FALLBACK: [Self; 4] = [
        Self::InOctets,
        Self::OutOctets,
        Self::InUcastPkts,
        Self::OutUcastPkts,
    ];

    pub(crate) fn oid(self) -> Vec<u64> {
        match self {
            Self::Descr => under(&IF_TABLE, &[2]),
            Self::Speed => under(&IF_TABLE, &[5]),
            Self::OperStatus => under(&IF_TABLE, &[8]),
            Self::InOctets => under(&IF_TABLE, &[10]),
            Self::InUcastPkts => under(&IF_TABLE, &[11]),
            Self::InDiscards => under(&IF_TABLE, &[13]),
            Self::InErrors => under(&IF_TABLE, &[14]),
            Self::OutOctets => under(&IF_TABLE, &[16]),
            Self::OutUcastPkts => under(&IF_TABLE, &[17]),
            Self::OutDiscards => under(&IF_TABLE, &[19]),
            Self::OutErrors => under(&IF_TABLE, &[20]),
            Self::Name => under(&IF_X_TABLE, &[1]),
            Self::HcInOctets => under(&IF_X_TABLE, &[6]),
            Self::HcInUcastPkts => under(&IF_X_TABLE, &[7]),
            Self::HcOutOctets => under(&IF_X_TABLE, &[10]),
            Self::HcOutUcastPkts => under(&IF_X_TABLE, &[11]),
            Self::HighSpeed => under(&IF_X_TABLE, &[15]),
        }
    }
}

/// The walked IF-MIB columns of one device.
pub(crate) type InterfaceColumns = BTreeMap<IfColumn, Column>;

/// Counters that exist in a 64-bit (ifXTable) and a 32-bit (ifTable) column.
const WIDE_AND_NARROW: [(&str, IfColumn, IfColumn, &str); 4] = [
    (
        "if.in.octets",
        IfColumn::HcInOctets,
        IfColumn::InOctets,
        "By",
    ),
    (
        "if.out.octets",
        IfColumn::HcOutOctets,
        IfColumn::OutOctets,
        "By",
    ),
    (
        "if.in.packets",
        IfColumn::HcInUcastPkts,
        IfColumn::InUcastPkts,
        "{packet}",
    ),
    (
        "if.out.packets",
        IfColumn::HcOutUcastPkts,
        IfColumn::OutUcastPkts,
        "{packet}",
    ),
];

/// Counters that only exist as 32-bit columns.
const NARROW_ONLY: [(&str, IfColumn, &str); 4] = [
    ("if.in.errors", IfColumn::InErrors, "{packet}"),
    ("if.out.errors", IfColumn::OutErrors, "{packet}"),
    ("if.in.discards", IfColumn::InDiscards, "{packet}"),
    ("if.out.discards", IfColumn::OutDiscards, "{packet}"),
];

fn cell(columns: &InterfaceColumns, column: IfColumn, index: &[u64]) -> Option<Measurement> {
    columns.get(&column)?.get(index).and_then(measurement)
}

fn counter(columns: &InterfaceColumns, column: IfColumn, index: &[u64]) -> Option<Measurement> {
    cell(columns, column, index).filter(|measured| measured.kind == MetricKind::Counter)
}

fn interface_indexes(columns: &InterfaceColumns) -> BTreeSet<&Vec<u64>> {
    columns.values().flat_map(BTreeMap::keys).collect()
}

/// Whether some interface lacks a 64-bit counter, so that the 32-bit columns are
/// needed.
pub(crate) fn lacks_64_bit_counters(columns: &InterfaceColumns) -> bool {
    interface_indexes(columns).into_iter().any(|index| {
        WIDE_AND_NARROW
            .iter()
            .any(|(_, wide, _, _)| counter(columns, *wide, index).is_none())
    })
}

/// The samples of every interface, labelled with `ifIndex`, `ifName` and `ifDescr`
/// when the device has them: octets and unicast packets (the 64-bit counter when
/// there is one, the 32-bit one otherwise), errors and discards, speed in bits per
/// second (from ifHighSpeed when present) and the operational status.
pub(crate) fn interface_samples(columns: &InterfaceColumns, time: i64) -> Vec<Sample> {
    let mut samples = Vec::new();
    for index in interface_indexes(columns) {
        let mut labels = vec![label("ifIndex", index_text(index))];
        let text = |column| columns.get(&column)?.get(index).and_then(label_value);
        if let Some(name) = text(IfColumn::Name) {
            labels.push(label("ifName", name));
        }
        if let Some(descr) = text(IfColumn::Descr) {
            labels.push(label("ifDescr", descr));
        }
        let mut push = |name: &str, measured: Measurement, unit: &str| {
            samples.push(snmp_sample(
                name,
                labels.clone(),
                measured,
                unit,
                "if",
                time,
            ));
        };
        for (name, wide, narrow, unit) in WIDE_AND_NARROW {
            if let Some(measured) =
                counter(columns, wide, index).or_else(|| counter(columns, narrow, index))
            {
                push(name, measured, unit);
            }
        }
        for (name, column, unit) in NARROW_ONLY {
            if let Some(measured) = counter(columns, column, index) {
                push(name, measured, unit);
            }
        }
        let high_speed = cell(columns, IfColumn::HighSpeed, index)
            .and_then(|measured| gauge_value(measured).filter(|mbps| *mbps > 0.0))
            .map(|mbps| mbps * 1e6);
        let speed =
            high_speed.or_else(|| cell(columns, IfColumn::Speed, index).and_then(gauge_value));
        if let Some(bits_per_second) = speed {
            push(
                "if.speed.bits_per_second",
                Measurement {
                    kind: MetricKind::Gauge,
                    value: sample::Value::Gauge(bits_per_second),
                    value_type: ValueType::Gauge32,
                },
                "bit/s",
            );
        }
        if let Some(status) = cell(columns, IfColumn::OperStatus, index) {
            push("if.oper.status", status, "");
        }
    }
    samples
}

fn gauge_value(measured: Measurement) -> Option<f64> {
    match measured.value {
        sample::Value::Gauge(value) => Some(value),
        sample::Value::Counter(_) => None,
    }
}

/// An hrStorageTable column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StorageColumn {
    Type,
    Descr,
    AllocationUnits,
    Size,
    Used,
}

impl StorageColumn {
    pub(crate) const ALL: [Self; 5] = [
        Self::Type,
        Self::Descr,
        Self::AllocationUnits,
        Self::Size,
        Self::Used,
    ];

    pub(crate) fn oid(self) -> Vec<u64> {
        let arc = match self {
            Self::Type => 2,
            Self::Descr => 3,
            Self::AllocationUnits => 4,
            Self::Size => 5,
            Self::Used => 6,
        };
        under(&HR_STORAGE_TABLE, &[arc])
    }
}

/// The kind of an hrStorageType, as a label value.
fn storage_kind(storage_type: &[u64]) -> &'static str {
    match storage_type.strip_prefix(HR_STORAGE_TYPES.as_slice()) {
        Some([2]) => "ram",
        Some([3]) => "virtual_memory",
        Some([4]) => "fixed_disk",
        Some([5]) => "removable_disk",
        Some([6]) => "floppy_disk",
        Some([7]) => "compact_disc",
        Some([8]) => "ram_disk",
        Some([9]) => "flash_memory",
        Some([10]) => "network_disk",
        _ => "other",
    }
}

/// `host.fs.size_bytes` and `host.fs.used_bytes{mountpoint}` of fixed disks, and
/// `host.storage.size_bytes` and `host.storage.used_bytes{storage, type}` of every
/// other storage (memory, swap, removable media), sizes times allocation units.
pub(crate) fn storage_samples(columns: &BTreeMap<StorageColumn, Column>, time: i64) -> Vec<Sample> {
    let Some(units) = columns.get(&StorageColumn::AllocationUnits) else {
        return Vec::new();
    };
    let mut samples = Vec::new();
    for (index, unit) in units {
        let Some(unit_bytes) = integer(unit) else {
            continue;
        };
        let value_of = |column| columns.get(&column).and_then(|rows| rows.get(index));
        let descr = value_of(StorageColumn::Descr)
            .and_then(label_value)
            .unwrap_or_default();
        let kind = match value_of(StorageColumn::Type) {
            Some(SnmpValue::ObjectIdentifier(oid)) => storage_kind(oid),
            _ => "other",
        };
        let (prefix, labels) = if kind == "fixed_disk" {
            ("host.fs", vec![label("mountpoint", &descr)])
        } else {
            (
                "host.storage",
                vec![label("storage", &descr), label("type", kind)],
            )
        };
        let mut labels = labels;
        labels.push(label("hrStorageIndex", index_text(index)));
        let sizes = [
            ("size_bytes", StorageColumn::Size),
            ("used_bytes", StorageColumn::Used),
        ];
        for (suffix, column) in sizes {
            if let Some(count) = value_of(column).and_then(integer) {
                samples.push(snmp_sample(
                    &format!("{prefix}.{suffix}"),
                    labels.clone(),
                    Measurement {
                        kind: MetricKind::Gauge,
                        value: sample::Value::Gauge(count as f64 * unit_bytes as f64),
                        value_type: ValueType::Float,
                    },
                    "By",
                    "host_resources",
                    time,
                ));
            }
        }
    }
    samples
}

fn integer(value: &SnmpValue) -> Option<i64> {
    match value {
        SnmpValue::Integer(integer) => Some(*integer),
        SnmpValue::Gauge32(gauge) => Some(i64::from(*gauge)),
        _ => None,
    }
}

/// The column hrProcessorLoad.
pub(crate) fn processor_load_oid() -> Vec<u64> {
    HR_PROCESSOR_LOAD.to_vec()
}

/// `host.cpu.load_percent{cpu=<hrDeviceIndex>}` of every processor.
pub(crate) fn processor_samples(loads: &Column, time: i64) -> Vec<Sample> {
    loads
        .iter()
        .filter_map(|(index, value)| {
            let measured = measurement(value)?;
            Some(snmp_sample(
                "host.cpu.load_percent",
                vec![label("cpu", index_text(index))],
                measured,
                "%",
                "host_resources",
                time,
            ))
        })
        .collect()
}

/// The columns of a defined table: labels first, then values.
pub(crate) fn defined_table_oids(table: &TableMetrics) -> Vec<Vec<u64>> {
    table
        .labels
        .iter()
        .map(|column| column.oid.0.clone())
        .chain(table.columns.iter().map(|column| column.oid.0.clone()))
        .collect()
}

/// One series per row and value column of a defined table, labelled with the row
/// index and the row's label columns; `walked` is in the order of
/// [`defined_table_oids`].
pub(crate) fn defined_table_samples(
    set: &str,
    table: &TableMetrics,
    walked: &[Column],
    time: i64,
) -> Vec<Sample> {
    let (label_columns, value_columns) = walked.split_at(table.labels.len().min(walked.len()));
    let indexes: BTreeSet<&Vec<u64>> = value_columns.iter().flat_map(BTreeMap::keys).collect();
    let mut samples = Vec::new();
    for index in indexes {
        let mut labels = vec![label(&table.index_label, index_text(index))];
        for (definition, rows) in table.labels.iter().zip(label_columns) {
            if let Some(value) = rows.get(index).and_then(label_value) {
                labels.push(label(&definition.name, value));
            }
        }
        for (definition, rows) in table.columns.iter().zip(value_columns) {
            if let Some(measured) = rows.get(index).and_then(measurement) {
                samples.push(snmp_sample(
                    &definition.name,
                    labels.clone(),
                    measured,
                    &definition.unit,
                    set,
                    time,
                ));
            }
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LabelColumn, NumericOid, ScalarMetric};
    use vigil_proto::labels::find;

    fn column(rows: &[(u64, SnmpValue)]) -> Column {
        rows.iter()
            .map(|(index, value)| (vec![*index], value.clone()))
            .collect()
    }

    fn text(value: &str) -> SnmpValue {
        SnmpValue::OctetString(value.as_bytes().to_vec())
    }

    fn summary(
        samples: &[Sample],
        label_name: &str,
    ) -> Vec<(String, String, Option<sample::Value>)> {
        samples
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    find(&s.labels, label_name).unwrap_or_default().to_owned(),
                    s.value,
                )
            })
            .collect()
    }

    #[test]
    fn interfaces_join_on_their_index_with_32_bit_fallback() {
        let columns: InterfaceColumns = [
            (
                IfColumn::Descr,
                column(&[(1, text("lo")), (2, text("Intel eth0"))]),
            ),
            (
                IfColumn::Name,
                column(&[(1, text("lo")), (2, text("eth0"))]),
            ),
            (
                IfColumn::HcInOctets,
                column(&[(2, SnmpValue::Counter64(1 << 40))]),
            ),
            (
                IfColumn::HcOutOctets,
                column(&[(2, SnmpValue::Counter64(5))]),
            ),
            (
                IfColumn::HcInUcastPkts,
                column(&[(2, SnmpValue::Counter64(6))]),
            ),
            (
                IfColumn::HcOutUcastPkts,
                column(&[(2, SnmpValue::Counter64(7))]),
            ),
            (
                IfColumn::InOctets,
                column(&[(1, SnmpValue::Counter32(10)), (2, SnmpValue::Counter32(99))]),
            ),
            (IfColumn::InErrors, column(&[(1, SnmpValue::Counter32(3))])),
            (
                IfColumn::Speed,
                column(&[
                    (1, SnmpValue::Gauge32(10_000_000)),
                    (2, SnmpValue::Gauge32(u32::MAX)),
                ]),
            ),
            (
                IfColumn::HighSpeed,
                column(&[(1, SnmpValue::Gauge32(0)), (2, SnmpValue::Gauge32(10_000))]),
            ),
            (
                IfColumn::OperStatus,
                column(&[(1, SnmpValue::Integer(1)), (2, SnmpValue::Integer(2))]),
            ),
        ]
        .into_iter()
        .collect();
        assert!(lacks_64_bit_counters(&columns));
        let samples = interface_samples(&columns, 9);
        let gauge = |value: f64| Some(sample::Value::Gauge(value));
        let counter = |value: u64| Some(sample::Value::Counter(value));
        let expected: Vec<(String, String, Option<sample::Value>)> = [
            ("if.in.octets", "lo", counter(10)),
            ("if.in.errors", "lo", counter(3)),
            ("if.speed.bits_per_second", "lo", gauge(1e7)),
            ("if.oper.status", "lo", gauge(1.0)),
            ("if.in.octets", "eth0", counter(1 << 40)),
            ("if.out.octets", "eth0", counter(5)),
            ("if.in.packets", "eth0", counter(6)),
            ("if.out.packets", "eth0", counter(7)),
            ("if.speed.bits_per_second", "eth0", gauge(1e10)),
            ("if.oper.status", "eth0", gauge(2.0)),
        ]
        .into_iter()
        .map(|(name, interface, value)| (name.to_owned(), interface.to_owned(), value))
        .collect();
        assert_eq!(summary(&samples, "ifName"), expected);
        let eth0_in = &samples[4];
        assert_eq!(find(&eth0_in.labels, "ifIndex"), Some("2"));
        assert_eq!(find(&eth0_in.labels, "ifDescr"), Some("Intel eth0"));
        assert_eq!(eth0_in.value_type, ValueType::Counter64 as i32);
        assert_eq!(samples[0].value_type, ValueType::Counter32 as i32);
        assert_eq!(eth0_in.metric_set, "if");
    }

    #[test]
    fn complete_64_bit_counters_need_no_fallback() {
        let columns: InterfaceColumns = WIDE_AND_NARROW
            .iter()
            .map(|(_, wide, _, _)| (*wide, column(&[(1, SnmpValue::Counter64(1))])))
            .collect();
        assert!(!lacks_64_bit_counters(&columns));
    }

    #[test]
    fn fixed_disks_are_file_systems_and_other_storage_keeps_its_type() {
        let fixed = under(&HR_STORAGE_TYPES, &[4]);
        let ram = under(&HR_STORAGE_TYPES, &[2]);
        let columns: BTreeMap<StorageColumn, Column> = [
            (
                StorageColumn::Type,
                column(&[
                    (1, SnmpValue::ObjectIdentifier(ram)),
                    (31, SnmpValue::ObjectIdentifier(fixed)),
                ]),
            ),
            (
                StorageColumn::Descr,
                column(&[(1, text("Physical memory")), (31, text("/"))]),
            ),
            (
                StorageColumn::AllocationUnits,
                column(&[
                    (1, SnmpValue::Integer(1024)),
                    (31, SnmpValue::Integer(4096)),
                ]),
            ),
            (
                StorageColumn::Size,
                column(&[(1, SnmpValue::Integer(100)), (31, SnmpValue::Integer(1000))]),
            ),
            (
                StorageColumn::Used,
                column(&[(1, SnmpValue::Integer(50)), (31, SnmpValue::Integer(10))]),
            ),
        ]
        .into_iter()
        .collect();
        let samples = storage_samples(&columns, 1);
        let names: Vec<(&str, Option<sample::Value>)> =
            samples.iter().map(|s| (s.name.as_str(), s.value)).collect();
        assert_eq!(
            names,
            [
                (
                    "host.storage.size_bytes",
                    Some(sample::Value::Gauge(102_400.0))
                ),
                (
                    "host.storage.used_bytes",
                    Some(sample::Value::Gauge(51_200.0))
                ),
                (
                    "host.fs.size_bytes",
                    Some(sample::Value::Gauge(4_096_000.0))
                ),
                ("host.fs.used_bytes", Some(sample::Value::Gauge(40_960.0))),
            ]
        );
        assert_eq!(find(&samples[0].labels, "type"), Some("ram"));
        assert_eq!(find(&samples[2].labels, "mountpoint"), Some("/"));
    }

    #[test]
    fn ucd_scalars_are_scaled_to_the_host_metric_units() {
        let scalars = ucd_scalars();
        let total = scalars
            .iter()
            .find(|spec| spec.name == "host.memory.total_bytes")
            .unwrap();
        let sample = total.sample(&SnmpValue::Integer(2048), 1).unwrap();
        assert_eq!(sample.value, Some(sample::Value::Gauge(2_097_152.0)));
        let load = scalars
            .iter()
            .find(|spec| spec.name == "host.load.5m")
            .unwrap();
        let sample = load.sample(&SnmpValue::Integer(42), 1).unwrap();
        assert_eq!(sample.value, Some(sample::Value::Gauge(0.42)));
        let idle = scalars
            .iter()
            .find(|spec| spec.labels.iter().any(|l| l.value == "idle"))
            .unwrap();
        let sample = idle.sample(&SnmpValue::Counter32(7), 1).unwrap();
        assert_eq!(sample.name, "host.cpu.ticks");
        assert_eq!(sample.kind, MetricKind::Counter as i32);
        assert_eq!(sample.value_type, ValueType::Counter32 as i32);
        assert_eq!(sample.metric_set, "ucd");
    }

    #[test]
    fn defined_tables_join_label_columns_on_the_row_index() {
        let table = TableMetrics {
            index_label: "slot".into(),
            labels: vec![LabelColumn {
                name: "module".into(),
                oid: NumericOid(vec![1, 3, 9, 1]),
            }],
            columns: vec![ScalarMetric {
                name: "module.temperature.celsius".into(),
                oid: NumericOid(vec![1, 3, 9, 2]),
                unit: "Cel".into(),
            }],
        };
        assert_eq!(
            defined_table_oids(&table),
            [vec![1, 3, 9, 1], vec![1, 3, 9, 2]]
        );
        let walked = [
            column(&[(1, text("psu")), (2, text("fan"))]),
            column(&[(1, SnmpValue::Integer(40)), (2, text("n/a"))]),
        ];
        let samples = defined_table_samples("chassis", &table, &walked, 3);
        assert_eq!(samples.len(), 1);
        assert_eq!(find(&samples[0].labels, "module"), Some("psu"));
        assert_eq!(find(&samples[0].labels, "slot"), Some("1"));
        assert_eq!(samples[0].metric_set, "chassis");
        assert_eq!(samples[0].unit, "Cel");
    }

    #[test]
    fn the_plan_always_reads_uptime_and_lists_each_set_once() {
        let plan = PollPlan::new(
            &[MetricSet::If, MetricSet::Ucd, MetricSet::If],
            &BTreeMap::new(),
        );
        assert_eq!(plan.tables, [TableSpec::Interfaces]);
        let oids = plan.scalar_oids();
        assert_eq!(oids[0], SYS_UPTIME);
        assert_eq!(oids.len(), 2 + ucd_scalars().len());
    }
}
