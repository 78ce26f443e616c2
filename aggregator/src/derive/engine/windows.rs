//! Windows of the derive engine, between the per-batch derivation and the derived
//! and repartition topics: aggregate inputs fill per-series and group windows, and
//! the watermark closes them into derived batches and group partials.

use super::derivation::Entry;
use super::group_partials::{group_batch, group_key};
use super::labels::{hash_owned_labels, label_value, owned_labels, owned_resource};
use super::{Closed, Engine};
use crate::derive::SeriesId;
use crate::derive::definitions::Function;
use crate::derive::window::{Accumulator, Aggregate, TumblingWindows};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vigil_proto::labels::label;
use vigil_proto::v1::{
    Label, MetricBatch, MetricKind, PartialAggregateBatch, Resource, Sample, ValueType, sample,
};
use vigil_proto::view::MetricBatchView;

/// Per-series windows of one aggregate definition and width.
#[derive(Debug)]
pub(super) struct SeriesWindows {
    pub(super) definition: usize,
    pub(super) aggregate: Aggregate,
    pub(super) label: String,
    pub(super) windows: TumblingWindows<SeriesId>,
}

/// Local group windows of one aggregate definition and width, per source partition.
#[derive(Debug)]
pub(super) struct GroupWindows {
    pub(super) definition: usize,
    pub(super) label: String,
    pub(super) windows: TumblingWindows<(u64, i32)>,
}

/// Where the samples of a series window came from, to write its output.
#[derive(Debug)]
pub(super) struct SeriesOrigin {
    resource: Arc<Resource>,
    labels: Vec<Label>,
    metric_set: String,
    unit: String,
    pub(super) last_seen_unix_nano: i64,
}

impl Engine {
    /// Whether a value at `time` of `partition` may still go into a window of `width`.
    fn accepts(&self, partition: i32, width: Duration, time: i64) -> bool {
        let floor = self
            .partition_floors
            .get(&partition)
            .map_or(i64::MIN, |(_, floor)| *floor);
        let width = vigil_config::duration::nanos(width).max(1);
        let start_of = |time: i64| time.saturating_sub(time.rem_euclid(width));
        start_of(time) >= start_of(floor)
    }

    pub(super) fn add_to_series_windows(
        &mut self,
        windows: &[usize],
        entry: Entry,
        batch: &MetricBatchView<'_>,
        resource_hash: u64,
        partition: i32,
        offset: i64,
    ) {
        let sample = &batch.samples[entry.sample];
        let time = sample.time_unix_nano;
        for &index in windows {
            let series = SeriesId(
                resource_hash
                    ^ entry.labels_hash.rotate_left(29)
                    ^ (index as u64 + 1).wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
            );
            if self.series_origins.len() >= self.settings.max_series
                && !self.series_origins.contains_key(&series)
            {
                let definition = self.series_windows[index].definition;
                let name = self.definitions[definition].definition.name.clone();
                self.refuse_series(&name);
                continue;
            }
            let width = self.series_windows[index].windows.width();
            if !self.accepts(partition, width, time) {
                self.counts.late += 1;
                continue;
            }
            if self.series_windows[index]
                .windows
                .add(series, time, entry.value)
                .is_err()
            {
                self.counts.late += 1;
                continue;
            }
            let end = self.series_windows[index]
                .windows
                .bounds_of(time)
                .end_unix_nano;
            self.note_window_offset(partition, end, offset);
            let definition = &self.definitions[self.series_windows[index].definition].definition;
            let origin = self
                .series_origins
                .entry(series)
                .or_insert_with(|| SeriesOrigin {
                    resource: Arc::new(owned_resource(&batch.resource)),
                    labels: owned_labels(batch.labels(sample)),
                    metric_set: sample.metric_set.to_owned(),
                    unit: if definition.unit.is_empty() {
                        sample.unit.to_owned()
                    } else {
                        definition.unit.clone()
                    },
                    last_seen_unix_nano: time,
                });
            origin.last_seen_unix_nano = origin.last_seen_unix_nano.max(time);
        }
    }

    pub(super) fn add_to_group_windows(
        &mut self,
        windows: &[usize],
        group_by: &[String],
        entry: Entry,
        batch: &MetricBatchView<'_>,
        partition: i32,
        offset: i64,
    ) {
        let sample = &batch.samples[entry.sample];
        let time = sample.time_unix_nano;
        let labels = batch.labels(sample);
        let group: Vec<Label> = group_by
            .iter()
            .map(|name| label(name.as_str(), label_value(labels, &batch.resource, name)))
            .collect();
        let group_hash = hash_owned_labels(&mut self.hash_buffer, &group);
        self.group_labels.entry(group_hash).or_insert(group);
        for &index in windows {
            let width = self.group_windows[index].windows.width();
            if !self.accepts(partition, width, time) {
                self.counts.late += 1;
                continue;
            }
            let windows = &mut self.group_windows[index].windows;
            if windows
                .add((group_hash, partition), time, entry.value)
                .is_err()
            {
                self.counts.late += 1;
                continue;
            }
            let end = windows.bounds_of(time).end_unix_nano;
            self.note_window_offset(partition, end, offset);
        }
    }

    /// Moves the watermark to `watermark_unix_nano` (never back) and closes every
    /// window it passed.
    pub fn advance(&mut self, watermark_unix_nano: i64) -> Closed {
        self.watermark_unix_nano = self.watermark_unix_nano.max(watermark_unix_nano);
        let watermark = self.watermark_unix_nano;
        let mut closed = Closed::default();
        let mut by_resource: BTreeMap<String, MetricBatch> = BTreeMap::new();
        for series_windows in &mut self.series_windows {
            let definition = &self.definitions[series_windows.definition].definition;
            for window in series_windows.windows.advance(watermark) {
                let Some(origin) = self.series_origins.get(&window.key) else {
                    continue;
                };
                let Some(value) = window.accumulator.value(series_windows.aggregate) else {
                    continue;
                };
                let mut labels = origin.labels.clone();
                labels.push(label("window", series_windows.label.as_str()));
                let batch = by_resource
                    .entry(origin.resource.id.clone())
                    .or_insert_with(|| MetricBatch {
                        resource: Some((*origin.resource).clone()),
                        samples: Vec::new(),
                        producer: self.settings.producer.clone(),
                    });
                batch.samples.push(window_sample(
                    &definition.name,
                    labels,
                    window.window.end_unix_nano,
                    value,
                    &origin.unit,
                    &origin.metric_set,
                ));
            }
        }
        let mut partials: BTreeMap<String, PartialAggregateBatch> = BTreeMap::new();
        for group_windows in &mut self.group_windows {
            let definition = &self.definitions[group_windows.definition].definition;
            for window in group_windows.windows.advance(watermark) {
                let (group_hash, partition) = window.key;
                let group = self
                    .group_labels
                    .get(&group_hash)
                    .cloned()
                    .unwrap_or_default();
                let key = group_key(&definition.name, &group);
                let mut partial =
                    window
                        .accumulator
                        .to_partial(&definition.name, group, window.window);
                partial.source_partition = partition;
                partials
                    .entry(key.clone())
                    .or_insert_with(|| PartialAggregateBatch {
                        group_key: key,
                        partials: Vec::new(),
                        producer: self.settings.producer.clone(),
                    })
                    .partials
                    .push(partial);
            }
        }
        closed.partials = partials.into_values().collect();

        let wait = self.group_close_delay();
        let due: Vec<(usize, u64, i64)> = self
            .finishing
            .keys()
            .filter(|(_, _, end)| end.saturating_add(wait) <= watermark)
            .copied()
            .collect();
        for key in due {
            let Some(group) = self.finishing.remove(&key) else {
                continue;
            };
            let compiled = &self.definitions[group.definition];
            let Function::Aggregate { aggregate, .. } = &compiled.definition.function else {
                continue;
            };
            let mut total = Accumulator::new(aggregate.needs_sketch());
            for accumulator in group.by_partition.values() {
                total.merge(accumulator);
            }
            let Some(value) = total.value(*aggregate) else {
                continue;
            };
            closed.derived.push(group_batch(
                &compiled.definition,
                &group,
                value,
                &self.settings.producer,
            ));
        }
        closed.derived.extend(by_resource.into_values());
        self.forget_closed(watermark, wait);
        closed
    }
}

/// The sample of an aggregate over a window, stamped with the window's end.
pub(super) fn window_sample(
    name: &str,
    labels: Vec<Label>,
    end_unix_nano: i64,
    value: f64,
    unit: &str,
    metric_set: &str,
) -> Sample {
    Sample {
        name: name.to_owned(),
        labels,
        kind: MetricKind::Gauge as i32,
        time_unix_nano: end_unix_nano,
        value: Some(sample::Value::Gauge(value)),
        value_type: ValueType::Float as i32,
        unit: unit.to_owned(),
        metric_set: metric_set.to_owned(),
    }
}
