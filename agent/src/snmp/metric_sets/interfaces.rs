//! The built-in set `if`: the IF-MIB columns walked on a device (ifTable and
//! ifXTable) and the `if.*` samples they become per interface, the 32-bit counters
//! serving only where the 64-bit ones are missing.

use super::under;
use crate::snmp::samples::{
    Column, Measurement, index_text, label_value, measurement, snmp_sample,
};
use std::collections::{BTreeMap, BTreeSet};
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricKind, Sample, ValueType, sample};

const IF_TABLE: [u64; 9] = [1, 3, 6, 1, 2, 1, 2, 2, 1];
const IF_X_TABLE: [u64; 10] = [1, 3, 6, 1, 2, 1, 31, 1, 1, 1];

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
pub(super) const WIDE_AND_NARROW: [(&str, IfColumn, IfColumn, &str); 4] = [
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
        sample::Value::Counter(_) | sample::Value::FloatCounter(_) => None,
    }
}
