//! The tables of user-defined metric sets: the columns walked on a device (label
//! columns first), and the samples of each row, joined on the row index and named
//! as the definition says.

use crate::config::TableMetrics;
use crate::snmp::samples::{Column, index_text, label_value, measurement, snmp_sample};
use std::collections::{BTreeMap, BTreeSet};
use vigil_proto::labels::label;
use vigil_proto::v1::Sample;

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
