//! Per-batch derivation in the derive engine, where a raw batch from the metrics
//! topic becomes derived samples: counter rates first, then the KPIs of each
//! definition (rates, ratios, shares), while aggregate inputs go to windows.

use super::Engine;
use super::compile::{NameId, Step};
use super::labels::{hash_labels, selected};
use crate::derive::SeriesId;
use crate::derive::counter::{CounterWidth, Reading};
use crate::derive::rates::{IgnoredCause, RateOutcome, RestartCause};
use vigil_proto::v1::{ValueType, sample};
use vigil_proto::view::{DerivedBatchWriter, GaugeSample, MetricBatchView};
use xxhash_rust::xxh3::xxh3_64;

/// sysUpTime counts hundredths of a second in 32 bits.
const SYS_UPTIME_WRAPS_AFTER_SECONDS: f64 = 4_294_967_296.0 / 100.0;

/// A value of the batch being derived: a raw sample, a rate, or a derived value.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    name: NameId,
    pub(super) labels_hash: u64,
    pub(super) sample: usize,
    pub(super) value: f64,
}

/// A derived value to write into the batch's output.
#[derive(Debug, Clone, Copy)]
pub(super) struct Output {
    definition: usize,
    sample: usize,
    value: f64,
}

/// The key of an entry in the batch's index: its name and labels.
fn entry_key(name: NameId, labels_hash: u64) -> u64 {
    labels_hash ^ u64::from(name).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Engine {
    /// Derives what `batch` (at `offset` of source partition `partition`) gives:
    /// the derived samples of its resource, written as one encoded batch into
    /// `writer`. Returns whether anything was written.
    pub fn derive(
        &mut self,
        batch: &MetricBatchView<'_>,
        partition: i32,
        offset: i64,
        writer: &mut DerivedBatchWriter,
    ) -> bool {
        let resource = &batch.resource;
        let resource_hash = xxh3_64(resource.id.as_bytes());
        let Some(batch_time) = batch.samples.iter().map(|s| s.time_unix_nano).max() else {
            return false;
        };
        self.watermark_unix_nano = self.watermark_unix_nano.max(batch_time);
        let partition_watermark = self
            .partition_watermarks
            .entry(partition)
            .or_insert(batch_time);
        *partition_watermark = (*partition_watermark).max(batch_time);
        self.note_offsets(batch, resource_hash, partition, offset, batch_time);
        let restarted = self.observe_uptime(batch, resource_hash);

        self.entries.clear();
        self.index.clear();
        self.named.resize_with(self.names.len(), Vec::new);
        self.named.iter_mut().for_each(Vec::clear);
        self.outputs.clear();
        for (position, sample) in batch.samples.iter().enumerate() {
            let Some(&name) = self.names.get(&xxh3_64(sample.name.as_bytes())) else {
                continue;
            };
            let value = match sample.value {
                // A staleness marker only says that the series ended.
                Some(value) if value.is_stale_marker() => continue,
                Some(sample::Value::Gauge(value) | sample::Value::FloatCounter(value)) => value,
                Some(sample::Value::Counter(count)) => count as f64,
                None => continue,
            };
            let labels_hash = hash_labels(&mut self.hash_buffer, batch.labels(sample), None);
            self.push_entry(Entry {
                name,
                labels_hash,
                sample: position,
                value,
            });
        }
        self.rates_of_counters(batch, resource_hash, restarted);
        for position in 0..self.definitions.len() {
            self.apply(position, batch, resource_hash, partition, offset);
        }
        if self.outputs.is_empty() {
            return false;
        }
        writer.begin(resource);
        for output in &self.outputs {
            let compiled = &self.definitions[output.definition];
            let without_label = match &compiled.step {
                Step::Share { label, .. } => Some(label.as_str()),
                _ => None,
            };
            let sample = &batch.samples[output.sample];
            writer.push(&GaugeSample {
                name: &compiled.definition.name,
                labels: batch.labels(sample),
                without_label,
                time_unix_nano: sample.time_unix_nano,
                value: output.value,
                unit: &compiled.definition.unit,
                metric_set: sample.metric_set,
            });
        }
        writer.finish(&self.settings.producer).is_some()
    }

    fn push_entry(&mut self, entry: Entry) {
        let position = self.entries.len();
        self.index
            .insert(entry_key(entry.name, entry.labels_hash), position);
        self.named[entry.name as usize].push(position);
        self.entries.push(entry);
    }

    fn observe_uptime(&mut self, batch: &MetricBatchView<'_>, resource_hash: u64) -> bool {
        let uptime = batch.samples.iter().find_map(|s| {
            let value = match s.value {
                Some(sample::Value::Gauge(value) | sample::Value::FloatCounter(value)) => value,
                Some(sample::Value::Counter(count)) => count as f64,
                None => return None,
            };
            match s.name {
                "system.uptime.ticks" => Some((
                    s.time_unix_nano,
                    value / 100.0,
                    Some(SYS_UPTIME_WRAPS_AFTER_SECONDS),
                )),
                "host.uptime.seconds" => Some((s.time_unix_nano, value, None)),
                _ => None,
            }
        });
        uptime.is_some_and(|(time, seconds, wraps)| {
            self.rates
                .observe_uptime(SeriesId(!resource_hash), time, seconds, wraps)
        })
    }

    fn rates_of_counters(
        &mut self,
        batch: &MetricBatchView<'_>,
        resource_hash: u64,
        restarted: bool,
    ) {
        for position in 0..self.entries.len() {
            let entry = self.entries[position];
            let Some(&rate_name) = self.rate_of.get(&entry.name) else {
                continue;
            };
            let sample = &batch.samples[entry.sample];
            let (value, width) = match sample.value {
                Some(sample::Value::Counter(value)) => (
                    value,
                    CounterWidth::of(ValueType::try_from(sample.value_type).unwrap_or_default()),
                ),
                Some(sample::Value::FloatCounter(value)) if value.is_finite() => {
                    (value.to_bits(), CounterWidth::Float)
                }
                _ => continue,
            };
            let bound = self
                .rate_bounds
                .get(&entry.name)
                .and_then(|(gauge, factor)| {
                    let found = *self.index.get(&entry_key(*gauge, entry.labels_hash))?;
                    let bound = self.entries[found].value * factor;
                    (bound > 0.0).then_some(bound)
                });
            let series = SeriesId(
                resource_hash
                    ^ entry.labels_hash.rotate_left(23)
                    ^ u64::from(entry.name).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            if self.rates.len() >= self.settings.max_series && !self.rates.contains(series) {
                self.refuse_series(sample.name);
                continue;
            }
            let reading = Reading {
                time_unix_nano: sample.time_unix_nano,
                value,
            };
            match self.rates.observe(series, reading, width, bound, restarted) {
                RateOutcome::Rate(rate) => {
                    self.counts.rates += 1;
                    self.push_entry(Entry {
                        name: rate_name,
                        value: rate,
                        ..entry
                    });
                }
                RateOutcome::Started => self.counts.started += 1,
                RateOutcome::Restarted(RestartCause::Reset) => self.counts.resets += 1,
                RateOutcome::Restarted(RestartCause::Gap) => self.counts.gaps += 1,
                RateOutcome::Restarted(RestartCause::Reboot) => self.counts.reboots += 1,
                RateOutcome::Ignored(IgnoredCause::Duplicate) => self.counts.duplicates += 1,
                RateOutcome::Ignored(IgnoredCause::OutOfOrder) => self.counts.out_of_order += 1,
            }
        }
    }

    /// Applies definition `position` to the entries of the batch: new entries and
    /// outputs, or values added to windows.
    fn apply(
        &mut self,
        position: usize,
        batch: &MetricBatchView<'_>,
        resource_hash: u64,
        partition: i32,
        offset: i64,
    ) {
        let compiled = &self.definitions[position];
        let matchers = &compiled.definition.matchers;
        let resource = &batch.resource;
        let entries = &self.entries;
        let named = &self.named;
        let of = |name: NameId| named[name as usize].iter().map(|&at| &entries[at]);
        let passes = |entry: &Entry, name: NameId| {
            entry.name == name
                && selected(
                    matchers,
                    batch.labels(&batch.samples[entry.sample]),
                    resource,
                )
        };
        let mut produced: Vec<Entry> = Vec::new();
        match &compiled.step {
            Step::Rate {
                rate_of_input,
                output,
                scale,
            } => {
                for entry in of(*rate_of_input) {
                    if passes(entry, *rate_of_input) {
                        produced.push(Entry {
                            name: *output,
                            value: entry.value * scale,
                            ..*entry
                        });
                    }
                }
            }
            Step::Ratio {
                numerator,
                denominator,
                output,
                complement,
                scale,
            } => {
                for entry in of(*numerator) {
                    if !passes(entry, *numerator) {
                        continue;
                    }
                    let Some(&below) = self.index.get(&entry_key(*denominator, entry.labels_hash))
                    else {
                        continue;
                    };
                    let divisor = entries[below].value;
                    if divisor == 0.0 {
                        continue;
                    }
                    let share = entry.value / divisor;
                    let value = if *complement { 1.0 - share } else { share };
                    produced.push(Entry {
                        name: *output,
                        value: value * scale,
                        ..*entry
                    });
                }
            }
            Step::Share {
                rate_of_input,
                output,
                label: share_label,
                values,
                complement,
                scale,
            } => {
                // Series that differ only in the share label: (hash, first entry,
                // selected sum, total).
                let mut groups: Vec<(u64, Entry, f64, f64)> = Vec::new();
                for entry in of(*rate_of_input) {
                    if !passes(entry, *rate_of_input) {
                        continue;
                    }
                    let labels = batch.labels(&batch.samples[entry.sample]);
                    let group = hash_labels(&mut self.hash_buffer, labels, Some(share_label));
                    let chosen = labels.iter().any(|pair| {
                        pair.name == share_label && values.iter().any(|v| v == pair.value)
                    });
                    let part = if chosen { entry.value } else { 0.0 };
                    match groups.iter_mut().find(|g| g.0 == group) {
                        Some(found) => {
                            found.2 += part;
                            found.3 += entry.value;
                        }
                        None => groups.push((group, *entry, part, entry.value)),
                    }
                }
                for (group, first, part, total) in groups {
                    if total > 0.0 {
                        let share = part / total;
                        let value = if *complement { 1.0 - share } else { share };
                        produced.push(Entry {
                            name: *output,
                            labels_hash: group,
                            sample: first.sample,
                            value: value * scale,
                        });
                    }
                }
            }
            Step::Aggregate {
                input,
                windows,
                group_by,
            } => {
                let selected_entries: Vec<Entry> = of(*input)
                    .filter(|entry| passes(entry, *input))
                    .copied()
                    .collect();
                let windows = windows.clone();
                let group_by = group_by.clone();
                for entry in selected_entries {
                    if group_by.is_empty() {
                        self.add_to_series_windows(
                            &windows,
                            entry,
                            batch,
                            resource_hash,
                            partition,
                            offset,
                        );
                    } else {
                        self.add_to_group_windows(
                            &windows, &group_by, entry, batch, partition, offset,
                        );
                    }
                }
                return;
            }
        }
        for entry in produced {
            if entry.value.is_finite() {
                self.outputs.push(Output {
                    definition: position,
                    sample: entry.sample,
                    value: entry.value,
                });
            }
            self.push_entry(entry);
        }
    }
}
