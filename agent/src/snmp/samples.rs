//! Turning SNMP answers into samples: the value-type mapping from what a device
//! answered to what goes on the wire. Pure functions, testable without a device.
//!
//! Types are kept: Counter32 and Counter64 become unsigned counters with their width
//! as value type (the derive stage needs it for wrap arithmetic); Gauge32, Integer
//! and TimeTicks become gauges; OctetStrings become label values.

use std::collections::BTreeMap;
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
    /// An OBJECT IDENTIFIER value, such as hrStorageType.
    ObjectIdentifier(Vec<u64>),
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
            Value::ObjectIdentifier(oid) => {
                oid.iter().map_or(Self::Other("OBJECT IDENTIFIER"), |arcs| {
                    Self::ObjectIdentifier(arcs.collect())
                })
            }
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
        | SnmpValue::ObjectIdentifier(_)
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

/// A row index as label value: its arcs joined with dots.
pub(crate) fn index_text(index: &[u64]) -> String {
    index
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
