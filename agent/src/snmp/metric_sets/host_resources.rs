//! The built-in set `host_resources`: HOST-RESOURCES-MIB's hrStorageTable and
//! hrProcessorLoad walked on a device, and the `host.fs`, `host.storage` and
//! `host.cpu.load_percent` samples they become.

use super::under;
use crate::snmp::samples::{
    Column, Measurement, SnmpValue, index_text, label_value, measurement, snmp_sample,
};
use std::collections::BTreeMap;
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricKind, Sample, ValueType, sample};

const HR_STORAGE_TABLE: [u64; 10] = [1, 3, 6, 1, 2, 1, 25, 2, 3, 1];
/// hrStorageTypes: the arcs below it name the kind of storage.
pub(super) const HR_STORAGE_TYPES: [u64; 9] = [1, 3, 6, 1, 2, 1, 25, 2, 1];
const HR_PROCESSOR_LOAD: [u64; 11] = [1, 3, 6, 1, 2, 1, 25, 3, 3, 1, 2];

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
