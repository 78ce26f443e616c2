//! The metric sets' samples built from columns and values as a device would answer
//! them, and the poll plan of a list of sets.

use super::host_resources::HR_STORAGE_TYPES;
use super::interfaces::WIDE_AND_NARROW;
use super::*;
use crate::config::{LabelColumn, NumericOid, ScalarMetric};
use crate::snmp::samples::Column;
use vigil_proto::labels::find;

fn column(rows: &[(u64, SnmpValue)]) -> Column {
    rows.iter()
        .map(|(index, value)| (vec![*index], value.clone()))
        .collect()
}

fn text(value: &str) -> SnmpValue {
    SnmpValue::OctetString(value.as_bytes().to_vec())
}

fn summary(samples: &[Sample], label_name: &str) -> Vec<(String, String, Option<sample::Value>)> {
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
