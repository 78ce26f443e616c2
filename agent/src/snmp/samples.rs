//! Turning SNMP answers into samples: the value-type mapping and the join of table
//! columns into one labelled series per row. Pure functions, so that what a device
//! answered and what goes on the wire can be tested without a device.
//!
//! Types are kept: Counter32 and Counter64 become unsigned counters with their width
//! as value type (the derive stage needs it for wrap arithmetic); Gauge32, Integer
//! and TimeTicks become gauges; OctetStrings become label values.

use std::collections::{BTreeMap, BTreeSet};
use vigil_proto::labels::label;
use vigil_proto::v1::{Label, MetricKind, Sample, ValueType, sample};

/// An SNMP value, owned: the client's values borrow its receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnmpValue {
    Integer(i64),
    OctetString(Vec<u8>),
    Counter32(u32),
    Counter64(u64),
    /// Gauge32, which shares its encoding with Unsigned32.
    Gauge32(u32),
    TimeTicks(u32),
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
    /// A type no metric set uses (IpAddress, OBJECT IDENTIFIER, Opaque, ...), by name.
    Other(&'static str),
}

impl SnmpValue {
    pub(crate) fn from_wire(value: &snmp2::Value<'_>) -> Self {
        use snmp2::Value;
        match value {
            Value::Integer(value) => Self::Integer(*value),
            Value::OctetString(bytes) => Self::OctetString(bytes.to_vec()),
            Value::Counter32(value) => Self::Counter32(*value),
            Value::Counter64(value) => Self::Counter64(*value),
            Value::Unsigned32(value) => Self::Gauge32(*value),
            Value::Timeticks(value) => Self::TimeTicks(*value),
            Value::NoSuchObject => Self::NoSuchObject,
            Value::NoSuchInstance => Self::NoSuchInstance,
            Value::EndOfMibView => Self::EndOfMibView,
            Value::Null => Self::Other("Null"),
            Value::Boolean(_) => Self::Other("Boolean"),
            Value::IpAddress(_) => Self::Other("IpAddress"),
            Value::ObjectIdentifier(_) => Self::Other("OBJECT IDENTIFIER"),
            Value::Opaque(_) => Self::Other("Opaque"),
            _ => Self::Other("constructed"),
        }
    }
}

/// A numeric SNMP value as a sample value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Measurement {
    pub(crate) kind: MetricKind,
    pub(crate) value: sample::Value,
    pub(crate) value_type: ValueType,
}

/// The sample value of `value`, if it is numeric.
pub(crate) fn measurement(value: &SnmpValue) -> Option<Measurement> {
    let (kind, value, value_type) = match *value {
        SnmpValue::Counter32(count) => (
            MetricKind::Counter,
            sample::Value::Counter(u64::from(count)),
            ValueType::Counter32,
        ),
        SnmpValue::Counter64(count) => (
            MetricKind::Counter,
            sample::Value::Counter(count),
            ValueType::Counter64,
        ),
        SnmpValue::Gauge32(gauge) => (
            MetricKind::Gauge,
            sample::Value::Gauge(f64::from(gauge)),
            ValueType::Gauge32,
        ),
        SnmpValue::Integer(integer) => (
            MetricKind::Gauge,
            sample::Value::Gauge(integer as f64),
            ValueType::Integer,
        ),
        SnmpValue::TimeTicks(ticks) => (
            MetricKind::Gauge,
            sample::Value::Gauge(f64::from(ticks)),
            ValueType::Timeticks,
        ),
        SnmpValue::OctetString(_)
        | SnmpValue::NoSuchObject
        | SnmpValue::NoSuchInstance
        | SnmpValue::EndOfMibView
        | SnmpValue::Other(_) => return None,
    };
    Some(Measurement {
        kind,
        value,
        value_type,
    })
}

/// The label value of `value`, if it is a string: lossy UTF-8, without the
/// trailing NULs some agents pad with.
pub(crate) fn label_value(value: &SnmpValue) -> Option<String> {
    match value {
        SnmpValue::OctetString(bytes) => Some(
            String::from_utf8_lossy(bytes)
                .trim_end_matches('\0')
                .to_owned(),
        ),
        _ => None,
    }
}

/// A sample of the SNMP source.
pub(crate) fn snmp_sample(
    name: &str,
    labels: Vec<Label>,
    measurement: Measurement,
    unit: &str,
    metric_set: &str,
    time_unix_nano: i64,
) -> Sample {
    Sample {
        name: name.to_owned(),
        labels,
        kind: measurement.kind as i32,
        time_unix_nano,
        value: Some(measurement.value),
        value_type: measurement.value_type as i32,
        unit: unit.to_owned(),
        metric_set: metric_set.to_owned(),
    }
}

/// The rows of one table column: the OID suffix after the column (the row index)
/// and the value.
pub(crate) type Column = BTreeMap<Vec<u64>, SnmpValue>;

/// The walked columns of ifTable and ifXTable.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct InterfaceColumns {
    pub(crate) descr: Column,
    pub(crate) name: Column,
    pub(crate) hc_in_octets: Column,
    pub(crate) hc_out_octets: Column,
    pub(crate) in_octets: Column,
    pub(crate) out_octets: Column,
}

impl InterfaceColumns {
    /// Whether some interface lacks a 64-bit counter, so that the 32-bit columns
    /// are needed.
    pub(crate) fn lacks_64_bit_counters(&self) -> bool {
        self.indexes().into_iter().any(|index| {
            counter_of(&self.hc_in_octets, index).is_none()
                || counter_of(&self.hc_out_octets, index).is_none()
        })
    }

    fn indexes(&self) -> BTreeSet<&Vec<u64>> {
        [
            &self.descr,
            &self.name,
            &self.hc_in_octets,
            &self.hc_out_octets,
            &self.in_octets,
            &self.out_octets,
        ]
        .into_iter()
        .flat_map(BTreeMap::keys)
        .collect()
    }
}

fn counter_of(column: &Column, index: &[u64]) -> Option<Measurement> {
    column
        .get(index)
        .and_then(measurement)
        .filter(|measured| measured.kind == MetricKind::Counter)
}

/// `if.in.octets` and `if.out.octets` per interface, labelled with `ifIndex`,
/// `ifName` and `ifDescr` when the device has them; the 64-bit counter when there
/// is one, the 32-bit one otherwise.
pub(crate) fn interface_samples(columns: &InterfaceColumns, time_unix_nano: i64) -> Vec<Sample> {
    let mut samples = Vec::new();
    for index in columns.indexes() {
        let mut labels = vec![label("ifIndex", index_text(index))];
        if let Some(name) = columns.name.get(index).and_then(label_value) {
            labels.push(label("ifName", name));
        }
        if let Some(descr) = columns.descr.get(index).and_then(label_value) {
            labels.push(label("ifDescr", descr));
        }
        let directions = [
            ("if.in.octets", &columns.hc_in_octets, &columns.in_octets),
            ("if.out.octets", &columns.hc_out_octets, &columns.out_octets),
        ];
        for (name, wide, narrow) in directions {
            if let Some(measured) = counter_of(wide, index).or_else(|| counter_of(narrow, index)) {
                samples.push(snmp_sample(
                    name,
                    labels.clone(),
                    measured,
                    "By",
                    "if",
                    time_unix_nano,
                ));
            }
        }
    }
    samples
}

fn index_text(index: &[u64]) -> String {
    index
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::find;

    #[test]
    fn value_types_are_kept() {
        let cases = [
            (
                SnmpValue::Counter32(7),
                MetricKind::Counter,
                sample::Value::Counter(7),
                ValueType::Counter32,
            ),
            (
                SnmpValue::Counter64(u64::MAX),
                MetricKind::Counter,
                sample::Value::Counter(u64::MAX),
                ValueType::Counter64,
            ),
            (
                SnmpValue::Gauge32(5),
                MetricKind::Gauge,
                sample::Value::Gauge(5.0),
                ValueType::Gauge32,
            ),
            (
                SnmpValue::Integer(-3),
                MetricKind::Gauge,
                sample::Value::Gauge(-3.0),
                ValueType::Integer,
            ),
            (
                SnmpValue::TimeTicks(123),
                MetricKind::Gauge,
                sample::Value::Gauge(123.0),
                ValueType::Timeticks,
            ),
        ];
        for (value, kind, sample_value, value_type) in cases {
            assert_eq!(
                measurement(&value),
                Some(Measurement {
                    kind,
                    value: sample_value,
                    value_type
                }),
                "{value:?}"
            );
        }
        assert_eq!(measurement(&SnmpValue::OctetString(b"x".to_vec())), None);
        assert_eq!(measurement(&SnmpValue::NoSuchObject), None);
        assert_eq!(
            label_value(&SnmpValue::OctetString(b"eth0\0\0".to_vec())).as_deref(),
            Some("eth0")
        );
        assert_eq!(label_value(&SnmpValue::Integer(1)), None);
    }

    fn column(rows: &[(u64, SnmpValue)]) -> Column {
        rows.iter()
            .map(|(index, value)| (vec![*index], value.clone()))
            .collect()
    }

    fn text(value: &str) -> SnmpValue {
        SnmpValue::OctetString(value.as_bytes().to_vec())
    }

    #[test]
    fn columns_join_into_one_series_per_interface_with_32_bit_fallback() {
        let columns = InterfaceColumns {
            descr: column(&[(1, text("lo")), (2, text("Intel eth0"))]),
            name: column(&[(1, text("lo")), (2, text("eth0"))]),
            hc_in_octets: column(&[(2, SnmpValue::Counter64(1 << 40))]),
            hc_out_octets: column(&[(2, SnmpValue::Counter64(5))]),
            in_octets: column(&[(1, SnmpValue::Counter32(10)), (2, SnmpValue::Counter32(99))]),
            out_octets: column(&[(1, SnmpValue::Counter32(20)), (2, SnmpValue::Counter32(98))]),
        };
        assert!(columns.lacks_64_bit_counters());
        let samples = interface_samples(&columns, 9);
        let summary: Vec<(&str, &str, Option<sample::Value>, i32)> = samples
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    find(&s.labels, "ifName").unwrap(),
                    s.value,
                    s.value_type,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "if.in.octets",
                    "lo",
                    Some(sample::Value::Counter(10)),
                    ValueType::Counter32 as i32
                ),
                (
                    "if.out.octets",
                    "lo",
                    Some(sample::Value::Counter(20)),
                    ValueType::Counter32 as i32
                ),
                (
                    "if.in.octets",
                    "eth0",
                    Some(sample::Value::Counter(1 << 40)),
                    ValueType::Counter64 as i32
                ),
                (
                    "if.out.octets",
                    "eth0",
                    Some(sample::Value::Counter(5)),
                    ValueType::Counter64 as i32
                ),
            ]
        );
        let eth0 = &samples[2];
        assert_eq!(find(&eth0.labels, "ifIndex"), Some("2"));
        assert_eq!(find(&eth0.labels, "ifDescr"), Some("Intel eth0"));
        assert_eq!(eth0.metric_set, "if");
        assert_eq!(eth0.kind, MetricKind::Counter as i32);
        assert_eq!(eth0.time_unix_nano, 9);
    }

    #[test]
    fn an_interface_without_any_counter_gives_no_sample() {
        let columns = InterfaceColumns {
            descr: column(&[(3, text("tunnel"))]),
            in_octets: column(&[(3, SnmpValue::NoSuchInstance)]),
            ..InterfaceColumns::default()
        };
        assert!(interface_samples(&columns, 1).is_empty());
    }

    #[test]
    fn complete_64_bit_counters_need_no_fallback() {
        let columns = InterfaceColumns {
            descr: column(&[(1, text("eth0"))]),
            hc_in_octets: column(&[(1, SnmpValue::Counter64(1))]),
            hc_out_octets: column(&[(1, SnmpValue::Counter64(2))]),
            ..InterfaceColumns::default()
        };
        assert!(!columns.lacks_64_bit_counters());
        let samples = interface_samples(&columns, 1);
        assert_eq!(samples.len(), 2);
        assert_eq!(find(&samples[0].labels, "ifName"), None);
    }
}
