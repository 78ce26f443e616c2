//! The SNMP poller's handling of what a device answers, from the bytes of a
//! reply to samples, for the fuzz targets in `fuzz/` (see [`crate::fuzzing`]):
//! `snmp2` decodes the message, and the poller's own code does the rest, as in a
//! poll that asks for every metric set.

use super::client::{answer_varbinds, file_walked_rows};
use super::metric_sets::{self, IfColumn, InterfaceColumns, PollPlan, StorageColumn, TableSpec};
use super::samples::Column;
use super::system_samples;
use crate::config::{MetricSet, MetricSetDefinition};
use std::collections::BTreeMap;
use vigil_proto::v1::Sample;

/// The samples of one poll of every built-in metric set and of `definitions`
/// whose requests got `replies` as their answers, in order: the GET of the
/// scalars, then the first GETBULK of each table walk (ifTable and ifXTable,
/// their 32-bit counters if needed, hrProcessorTable, hrStorageTable, then the
/// defined tables). A request without a reply got an empty answer. `Err` when
/// `snmp2` cannot decode a reply.
pub fn snmp_reply_samples(
    replies: &[&[u8]],
    definitions: &BTreeMap<String, MetricSetDefinition>,
    time: i64,
) -> Result<Vec<Sample>, snmp2::Error> {
    let answers = replies
        .iter()
        .map(|reply| Ok(answer_varbinds(snmp2::Pdu::from_bytes(reply)?.varbinds)))
        .collect::<Result<Vec<_>, snmp2::Error>>()?;
    let mut answers = answers.into_iter();
    let answer = answers.next().unwrap_or_default();
    let sets: Vec<MetricSet> = MetricSet::BUILT_IN
        .iter()
        .copied()
        .chain(definitions.keys().map(String::as_str))
        .map(MetricSet::named)
        .collect();
    let plan = PollPlan::new(&sets, definitions);
    let (mut samples, _sys_name) = system_samples(&answer, time);
    for spec in &plan.scalars {
        if let Some((_, value)) = answer.iter().find(|(oid, _)| *oid == spec.oid) {
            samples.extend(spec.sample(value, time));
        }
    }
    let mut walk = |columns: &[Vec<u64>]| {
        let mut rows = vec![Column::new(); columns.len()];
        let mut cursors: Vec<Option<Vec<u64>>> = columns.iter().cloned().map(Some).collect();
        let active: Vec<usize> = (0..columns.len()).collect();
        let answer = answers.next().unwrap_or_default();
        file_walked_rows(columns, &active, answer, &mut cursors, &mut rows);
        rows
    };
    for table in &plan.tables {
        match table {
            TableSpec::Interfaces => {
                let oids =
                    |set: &[IfColumn]| set.iter().map(|column| column.oid()).collect::<Vec<_>>();
                let mut columns = InterfaceColumns::new();
                columns.extend(
                    IfColumn::FIRST
                        .into_iter()
                        .zip(walk(&oids(&IfColumn::FIRST))),
                );
                if metric_sets::lacks_64_bit_counters(&columns) {
                    columns.extend(
                        IfColumn::FALLBACK
                            .into_iter()
                            .zip(walk(&oids(&IfColumn::FALLBACK))),
                    );
                }
                samples.extend(metric_sets::interface_samples(&columns, time));
            }
            TableSpec::Storage => {
                let oids: Vec<Vec<u64>> = StorageColumn::ALL
                    .iter()
                    .map(|column| column.oid())
                    .collect();
                let columns = StorageColumn::ALL.into_iter().zip(walk(&oids)).collect();
                samples.extend(metric_sets::storage_samples(&columns, time));
            }
            TableSpec::Processors => {
                if let Some(loads) = walk(&[metric_sets::processor_load_oid()]).first() {
                    samples.extend(metric_sets::processor_samples(loads, time));
                }
            }
            TableSpec::Defined { set, table } => {
                let walked = walk(&metric_sets::defined_table_oids(table));
                samples.extend(metric_sets::defined_table_samples(
                    set, table, &walked, time,
                ));
            }
        }
    }
    Ok(samples)
}
