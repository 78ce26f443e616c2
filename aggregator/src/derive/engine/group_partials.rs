//! Group aggregates in the derive engine, after the repartition topic: partials of
//! every instance are merged per group and window, and a finished group becomes a
//! derived batch of its own.

use super::Engine;
use super::labels::hash_owned_labels;
use super::windows::window_sample;
use crate::derive::definitions::Definition;
use crate::derive::window::{Accumulator, WindowBounds};
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_proto::labels::label;
use vigil_proto::v1::{Label, MetricBatch, PartialAggregateBatch, Resource};

/// Partials of one group and window, by source partition: a partial sent again
/// (after a replay) replaces the earlier one.
#[derive(Debug)]
pub(super) struct FinishingGroup {
    pub(super) definition: usize,
    group: Vec<Label>,
    window: WindowBounds,
    window_label: String,
    pub(super) by_partition: BTreeMap<i32, Accumulator>,
}

impl Engine {
    /// Merges the partials of `batch` (at `offset` of repartition partition
    /// `partition`) into the groups this instance finishes.
    pub fn merge_partials(&mut self, batch: &PartialAggregateBatch, partition: i32, offset: i64) {
        for partial in &batch.partials {
            let width = Duration::from_nanos(
                partial
                    .window_end_unix_nano
                    .abs_diff(partial.window_start_unix_nano),
            );
            let found = self.group_windows.iter().position(|g| {
                self.definitions[g.definition].definition.name == partial.definition
                    && g.windows.width() == width
            });
            let Some(index) = found else {
                self.counts.unknown_partials += 1;
                continue;
            };
            let close_at = partial
                .window_end_unix_nano
                .saturating_add(self.group_close_delay());
            if close_at <= self.watermark_unix_nano {
                self.counts.late += 1;
                continue;
            }
            let group_hash = hash_owned_labels(&mut self.hash_buffer, &partial.group);
            let key = (index, group_hash, partial.window_end_unix_nano);
            let group_windows = &self.group_windows[index];
            let finishing = self.finishing.entry(key).or_insert_with(|| FinishingGroup {
                definition: group_windows.definition,
                group: partial.group.clone(),
                window: WindowBounds {
                    start_unix_nano: partial.window_start_unix_nano,
                    end_unix_nano: partial.window_end_unix_nano,
                },
                window_label: group_windows.label.clone(),
                by_partition: BTreeMap::new(),
            });
            finishing
                .by_partition
                .insert(partial.source_partition, Accumulator::from_partial(partial));
            let first = self
                .partial_offsets
                .entry(partition)
                .or_default()
                .entry(partial.window_end_unix_nano)
                .or_insert(offset);
            *first = (*first).min(offset);
        }
    }
}

/// The Kafka key of a group: its definition and labels, so that every instance's
/// partials of it go to one partition.
pub fn group_key(definition: &str, group: &[Label]) -> String {
    let mut key = definition.to_owned();
    for pair in group {
        key.push('|');
        key.push_str(&pair.name);
        key.push('=');
        key.push_str(&pair.value);
    }
    key
}

/// The derived batch of a finished group: a resource standing for the group.
pub(super) fn group_batch(
    definition: &Definition,
    group: &FinishingGroup,
    value: f64,
    producer: &str,
) -> MetricBatch {
    let key = group_key(&definition.name, &group.group);
    let mut labels = group.group.clone();
    labels.push(label("window", group.window_label.as_str()));
    MetricBatch {
        resource: Some(Resource {
            id: format!("group:{key}"),
            attributes: group.group.clone(),
            ..Resource::default()
        }),
        samples: vec![window_sample(
            &definition.name,
            labels,
            group.window.end_unix_nano,
            value,
            &definition.unit,
            "group",
        )],
        producer: producer.to_owned(),
    }
}
