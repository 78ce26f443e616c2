//! The derive stage's computation, pure and clock-free: a decoded raw batch goes
//! in, the derived samples of its resource come out (rates, ratios, shares), and
//! window accumulators are updated; moving the watermark closes windows into
//! derived batches (per-series aggregates) and partial aggregates for the
//! repartition topic (group-by aggregates); partials from the repartition topic
//! are merged and finished the same way. The stage around it does the I/O.
//!
//! It also knows, per source partition, the earliest offset a new owner must
//! replay to rebuild its state (the latest message of every live series' resource
//! and metric set, the first message of every open window): the stage commits
//! that position instead of the last processed one, so a rebalance or a crash
//! costs a short replay and never a bogus rate or a missing window.

use super::counter::{CounterWidth, Reading};
use super::definitions::{Definition, DefinitionSet, Function, Operand};
use super::rates::{IgnoredCause, RateOutcome, RateSettings, RateTracker, RestartCause};
use super::window::{Accumulator, Aggregate, TumblingWindows, WindowBounds};
use super::{HashedMap, SeriesId};
use crate::rules::LabelMatcher;
use crate::series_identity;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use vigil_proto::labels::label;
use vigil_proto::v1::{
    Label, MetricBatch, MetricKind, PartialAggregateBatch, Resource, Sample, ValueType, sample,
};
use vigil_proto::view::{
    DerivedBatchWriter, GaugeSample, LabelView, MetricBatchView, ResourceView,
};
use xxhash_rust::xxh3::xxh3_64;

/// A partition whose latest event time is this far behind the latest of all is
/// taken as no longer assigned here: it stops holding back the expiry of silent
/// series. A replay further behind than this starts its series afresh.
const PARTITION_IDLE_NANOS: i64 = 10 * 60 * 1_000_000_000;

/// sysUpTime counts hundredths of a second in 32 bits.
const SYS_UPTIME_WRAPS_AFTER_SECONDS: f64 = 4_294_967_296.0 / 100.0;

/// How the engine treats time.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Gap and interval handling of counter series.
    pub rates: RateSettings,
    /// How late a sample may be (behind the latest event time seen) and still count
    /// in its window.
    pub allowed_lateness: Duration,
    /// How long after its local close a group window waits for the partials of
    /// other instances before it is finished.
    pub group_wait: Duration,
    /// Name of this instance, in the `producer` field of what it publishes.
    pub producer: String,
}

/// What happened to samples, for self-metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineCounts {
    pub rates: u64,
    pub started: u64,
    pub resets: u64,
    pub gaps: u64,
    pub reboots: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Samples or partials that arrived after their window was closed.
    pub late: u64,
    /// Partials naming a definition or window this instance does not have.
    pub unknown_partials: u64,
}

/// Interned metric name: an input, an output, or `rate(name)`.
type NameId = u32;

/// One compiled definition.
#[derive(Debug)]
enum Step {
    Rate {
        rate_of_input: NameId,
        output: NameId,
        scale: f64,
    },
    Ratio {
        numerator: NameId,
        denominator: NameId,
        output: NameId,
        complement: bool,
        scale: f64,
    },
    Share {
        rate_of_input: NameId,
        output: NameId,
        label: String,
        values: Vec<String>,
        complement: bool,
        scale: f64,
    },
    Aggregate {
        input: NameId,
        /// Indexes into `Engine::series_windows` or `Engine::group_windows`.
        windows: Vec<usize>,
        group_by: Vec<String>,
    },
}

/// A definition compiled against the interned names.
#[derive(Debug)]
struct CompiledDefinition {
    definition: Definition,
    step: Step,
}

/// Per-series windows of one aggregate definition and width.
#[derive(Debug)]
struct SeriesWindows {
    definition: usize,
    aggregate: Aggregate,
    label: String,
    windows: TumblingWindows<SeriesId>,
}

/// Local group windows of one aggregate definition and width, per source partition.
#[derive(Debug)]
struct GroupWindows {
    definition: usize,
    label: String,
    windows: TumblingWindows<(u64, i32)>,
}

/// Where the samples of a series window came from, to write its output.
#[derive(Debug)]
struct SeriesOrigin {
    resource: Arc<Resource>,
    labels: Vec<Label>,
    metric_set: String,
    unit: String,
    last_seen_unix_nano: i64,
}

/// Partials of one group and window, by source partition: a partial sent again
/// (after a replay) replaces the earlier one.
#[derive(Debug)]
struct FinishingGroup {
    definition: usize,
    group: Vec<Label>,
    window: WindowBounds,
    window_label: String,
    by_partition: BTreeMap<i32, Accumulator>,
}

/// The latest message of one resource and metric set in a partition.
#[derive(Debug, Clone, Copy)]
struct LatestMessage {
    offset: i64,
    time_unix_nano: i64,
    /// Event time between its two latest messages, once there were two.
    interval_nanos: Option<i64>,
}

/// A value of the batch being derived: a raw sample, a rate, or a derived value.
#[derive(Debug, Clone, Copy)]
struct Entry {
    name: NameId,
    labels_hash: u64,
    sample: usize,
    value: f64,
}

/// A derived value to write into the batch's output.
#[derive(Debug, Clone, Copy)]
struct Output {
    definition: usize,
    sample: usize,
    value: f64,
}

/// The key of an entry in the batch's index: its name and labels.
fn entry_key(name: NameId, labels_hash: u64) -> u64 {
    labels_hash ^ u64::from(name).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Everything that closing windows produced.
#[derive(Debug, Default)]
pub struct Closed {
    /// Per-series aggregates (by resource) and finished group aggregates.
    pub derived: Vec<MetricBatch>,
    /// Local partials of group windows, one batch per group, for the repartition topic.
    pub partials: Vec<PartialAggregateBatch>,
}

/// The derive computation of one instance.
#[derive(Debug)]
pub struct Engine {
    settings: EngineSettings,
    definitions: Vec<CompiledDefinition>,
    /// Interned names by the xxh3 hash of their text.
    names: HashedMap<u64, NameId>,
    /// Name id of `rate(name)` for every counter name that needs a rate.
    rate_of: HashMap<NameId, NameId>,
    /// Bound of a counter's rate: a gauge of the same labels times a factor.
    rate_bounds: HashMap<NameId, (NameId, f64)>,
    rates: RateTracker,
    series_windows: Vec<SeriesWindows>,
    series_origins: HashMap<SeriesId, SeriesOrigin>,
    group_windows: Vec<GroupWindows>,
    group_labels: HashMap<u64, Vec<Label>>,
    finishing: HashMap<(usize, u64, i64), FinishingGroup>,
    /// Per source partition: the offset from which replay rebuilds each resource's
    /// series, by hash of resource and metric set.
    resource_offsets: HashMap<i32, HashMap<u64, LatestMessage>>,
    /// Per source partition: the first offset of every open window, by window end.
    window_offsets: HashMap<i32, BTreeMap<i64, i64>>,
    /// Per repartition partition: the first offset of every unfinished group, by window end.
    partial_offsets: HashMap<i32, BTreeMap<i64, i64>>,
    /// Per source partition: the last offset seen, and the start of the first
    /// window it may still fill (earlier ones were emitted before a replay began).
    partition_floors: HashMap<i32, (i64, i64)>,
    /// Per source partition: the latest event time seen in it. Silence is judged
    /// by these, so a partition being replayed (taken over from another instance)
    /// does not see its series expire against the others' later time.
    partition_watermarks: HashMap<i32, i64>,
    watermark_unix_nano: i64,
    counts: EngineCounts,
    entries: Vec<Entry>,
    /// Entries by [`entry_key`] of name and labels.
    index: HashedMap<u64, usize>,
    /// Positions of the entries of each name, so a definition visits only its inputs.
    named: Vec<Vec<usize>>,
    outputs: Vec<Output>,
    hash_buffer: Vec<u8>,
}

impl Engine {
    /// An engine computing `definitions`.
    pub fn new(definitions: &DefinitionSet, settings: EngineSettings) -> Self {
        let mut engine = Self {
            rates: RateTracker::new(settings.rates),
            settings,
            definitions: Vec::new(),
            names: HashedMap::default(),
            rate_of: HashMap::new(),
            rate_bounds: HashMap::new(),
            series_windows: Vec::new(),
            series_origins: HashMap::new(),
            group_windows: Vec::new(),
            group_labels: HashMap::new(),
            finishing: HashMap::new(),
            resource_offsets: HashMap::new(),
            window_offsets: HashMap::new(),
            partial_offsets: HashMap::new(),
            partition_floors: HashMap::new(),
            partition_watermarks: HashMap::new(),
            watermark_unix_nano: i64::MIN,
            counts: EngineCounts::default(),
            entries: Vec::new(),
            index: HashedMap::default(),
            named: Vec::new(),
            outputs: Vec::new(),
            hash_buffer: Vec::new(),
        };
        for definition in &definitions.definitions {
            let step = engine.compile(engine.definitions.len(), definition);
            engine.definitions.push(CompiledDefinition {
                definition: definition.clone(),
                step,
            });
        }
        engine
    }

    /// Replaces the definitions, keeping counter state (rates continue without a
    /// gap); windows of definitions that changed start afresh.
    pub fn replace_definitions(&mut self, definitions: &DefinitionSet) {
        let rates = std::mem::replace(&mut self.rates, RateTracker::new(self.settings.rates));
        let resource_offsets = std::mem::take(&mut self.resource_offsets);
        let partition_floors = std::mem::take(&mut self.partition_floors);
        let partition_watermarks = std::mem::take(&mut self.partition_watermarks);
        let watermark = self.watermark_unix_nano;
        let counts = self.counts;
        *self = Self::new(definitions, self.settings.clone());
        self.rates = rates;
        self.resource_offsets = resource_offsets;
        self.partition_floors = partition_floors;
        self.partition_watermarks = partition_watermarks;
        self.watermark_unix_nano = watermark;
        self.counts = counts;
    }

    fn intern(&mut self, name: &str) -> NameId {
        let next = self.names.len() as NameId;
        *self.names.entry(xxh3_64(name.as_bytes())).or_insert(next)
    }

    fn intern_rate(&mut self, counter: &str) -> NameId {
        let counter_id = self.intern(counter);
        let rate_id = self.intern(&format!("rate({counter})"));
        self.rate_of.insert(counter_id, rate_id);
        rate_id
    }

    fn operand(&mut self, operand: &Operand) -> NameId {
        match operand {
            Operand::Value(name) => self.intern(name),
            Operand::Rate(name) => self.intern_rate(name),
        }
    }

    fn compile(&mut self, position: usize, definition: &Definition) -> Step {
        let output = self.intern(&definition.name);
        match &definition.function {
            Function::Rate {
                input,
                scale,
                max_rate,
            } => {
                let rate_of_input = self.intern_rate(input);
                if let Some(bound) = max_rate {
                    let counter = self.intern(input);
                    let gauge = self.intern(&bound.metric);
                    self.rate_bounds
                        .entry(counter)
                        .or_insert((gauge, bound.factor));
                }
                Step::Rate {
                    rate_of_input,
                    output,
                    scale: *scale,
                }
            }
            Function::Ratio {
                numerator,
                denominator,
                complement,
                scale,
            } => Step::Ratio {
                numerator: self.operand(numerator),
                denominator: self.operand(denominator),
                output,
                complement: *complement,
                scale: *scale,
            },
            Function::Share {
                input,
                label,
                values,
                complement,
                scale,
            } => Step::Share {
                rate_of_input: self.intern_rate(input),
                output,
                label: label.clone(),
                values: values.clone(),
                complement: *complement,
                scale: *scale,
            },
            Function::Aggregate {
                aggregate,
                input,
                windows,
                group_by,
            } => {
                let input = self.intern(input);
                let lateness = self.settings.allowed_lateness;
                let indexes = windows
                    .iter()
                    .map(|width| {
                        let label = vigil_runtime::duration::format_duration(*width);
                        let windows =
                            TumblingWindows::new(*width, lateness, aggregate.needs_sketch());
                        if group_by.is_empty() {
                            self.series_windows.push(SeriesWindows {
                                definition: position,
                                aggregate: *aggregate,
                                label,
                                windows,
                            });
                            self.series_windows.len() - 1
                        } else {
                            self.group_windows.push(GroupWindows {
                                definition: position,
                                label,
                                windows: TumblingWindows::new(
                                    *width,
                                    lateness,
                                    aggregate.needs_sketch(),
                                ),
                            });
                            self.group_windows.len() - 1
                        }
                    })
                    .collect();
                Step::Aggregate {
                    input,
                    windows: indexes,
                    group_by: group_by.clone(),
                }
            }
        }
    }

    /// Counts so far.
    pub fn counts(&self) -> EngineCounts {
        self.counts
    }

    /// Counter series held.
    pub fn series(&self) -> usize {
        self.rates.len()
    }

    /// Windows open, local and finishing.
    pub fn open_windows(&self) -> usize {
        self.series_windows
            .iter()
            .map(|w| w.windows.open_windows())
            .chain(self.group_windows.iter().map(|w| w.windows.open_windows()))
            .sum::<usize>()
            + self.finishing.len()
    }

    /// The latest event time seen.
    pub fn watermark(&self) -> i64 {
        self.watermark_unix_nano
    }

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
                Some(sample::Value::Gauge(value)) => value,
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

    fn note_offsets(
        &mut self,
        batch: &MetricBatchView<'_>,
        resource_hash: u64,
        partition: i32,
        offset: i64,
        time: i64,
    ) {
        let (last_offset, floor) = self
            .partition_floors
            .entry(partition)
            .or_insert((i64::MIN, i64::MIN));
        if offset <= *last_offset || *floor == i64::MIN {
            // A partition seen for the first time, or rewound: a replay begins here.
            // Windows that ended before it were emitted by whoever had it before.
            let earliest = batch
                .samples
                .iter()
                .map(|s| s.time_unix_nano)
                .min()
                .unwrap_or(time);
            *floor = earliest;
        }
        *last_offset = offset;
        let offsets = self.resource_offsets.entry(partition).or_default();
        let mut previous_set: Option<&str> = None;
        for sample in &batch.samples {
            if previous_set == Some(sample.metric_set) {
                continue;
            }
            previous_set = Some(sample.metric_set);
            let key = resource_hash ^ xxh3_64(sample.metric_set.as_bytes()).rotate_left(17);
            let latest = offsets.entry(key).or_insert(LatestMessage {
                offset,
                time_unix_nano: time,
                interval_nanos: None,
            });
            if time > latest.time_unix_nano {
                latest.interval_nanos = Some(time - latest.time_unix_nano);
            }
            latest.offset = offset;
            latest.time_unix_nano = latest.time_unix_nano.max(time);
        }
    }

    fn observe_uptime(&mut self, batch: &MetricBatchView<'_>, resource_hash: u64) -> bool {
        let uptime = batch.samples.iter().find_map(|s| {
            let value = match s.value {
                Some(sample::Value::Gauge(value)) => value,
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
            let Some(sample::Value::Counter(value)) = sample.value else {
                continue;
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
            let reading = Reading {
                time_unix_nano: sample.time_unix_nano,
                value,
            };
            let width =
                CounterWidth::of(ValueType::try_from(sample.value_type).unwrap_or_default());
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

    /// Whether a value at `time` of `partition` may still go into a window of `width`.
    fn accepts(&self, partition: i32, width: Duration, time: i64) -> bool {
        let floor = self
            .partition_floors
            .get(&partition)
            .map_or(i64::MIN, |(_, floor)| *floor);
        let width = vigil_runtime::duration::nanos(width).max(1);
        time - time.rem_euclid(width) >= floor - floor.rem_euclid(width)
    }

    fn note_window_offset(&mut self, partition: i32, end: i64, offset: i64) {
        let first = self
            .window_offsets
            .entry(partition)
            .or_default()
            .entry(end)
            .or_insert(offset);
        *first = (*first).min(offset);
    }

    fn add_to_series_windows(
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

    fn add_to_group_windows(
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

    /// Merges the partials of `batch` (at `offset` of repartition partition
    /// `partition`) into the groups this instance finishes.
    pub fn merge_partials(&mut self, batch: &PartialAggregateBatch, partition: i32, offset: i64) {
        for partial in &batch.partials {
            let width = Duration::from_nanos(
                (partial.window_end_unix_nano - partial.window_start_unix_nano).max(0) as u64,
            );
            let found = self.group_windows.iter().position(|g| {
                self.definitions[g.definition].definition.name == partial.definition
                    && g.windows.width() == width
            });
            let Some(index) = found else {
                self.counts.unknown_partials += 1;
                continue;
            };
            let close_at = partial.window_end_unix_nano
                + vigil_runtime::duration::nanos(
                    self.settings.allowed_lateness + self.settings.group_wait,
                );
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

        let wait = vigil_runtime::duration::nanos(
            self.settings.allowed_lateness + self.settings.group_wait,
        );
        let due: Vec<(usize, u64, i64)> = self
            .finishing
            .keys()
            .filter(|(_, _, end)| end + wait <= watermark)
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

    /// Drops bookkeeping of closed windows and of series not seen for longer than a
    /// gap allows.
    fn forget_closed(&mut self, watermark: i64, wait: i64) {
        let lateness = vigil_runtime::duration::nanos(self.settings.allowed_lateness);
        for offsets in self.window_offsets.values_mut() {
            *offsets = offsets.split_off(&(watermark - lateness + 1));
        }
        for offsets in self.partial_offsets.values_mut() {
            *offsets = offsets.split_off(&(watermark - wait + 1));
        }
        let settings = &self.settings.rates;
        let default_interval = vigil_runtime::duration::nanos(settings.default_interval);
        let gap_intervals = i64::from(settings.max_gap_intervals.max(1));
        let active_from = watermark.saturating_sub(PARTITION_IDLE_NANOS);
        let slowest_active = self
            .partition_watermarks
            .values()
            .copied()
            .filter(|latest| *latest >= active_from)
            .min()
            .unwrap_or(watermark);
        self.rates.expire_silent(slowest_active);
        for (partition, offsets) in &mut self.resource_offsets {
            let clock = self
                .partition_watermarks
                .get(partition)
                .copied()
                .unwrap_or(watermark)
                .max(active_from);
            offsets.retain(|_, latest| {
                let interval = latest.interval_nanos.unwrap_or(default_interval);
                clock.saturating_sub(latest.time_unix_nano)
                    <= interval.saturating_mul(gap_intervals).max(lateness)
            });
        }
        let horizon =
            watermark.saturating_sub(default_interval.saturating_mul(gap_intervals).max(lateness));
        let open_until = self
            .series_windows
            .iter()
            .filter_map(|w| w.windows.oldest_open_start())
            .min()
            .unwrap_or(watermark);
        self.series_origins
            .retain(|_, origin| origin.last_seen_unix_nano >= open_until.min(horizon));
    }

    /// Where a new owner of source `partition` must start to rebuild this
    /// instance's state: the earliest offset still needed, or `None` if nothing
    /// from it is held.
    pub fn resume_offset(&self, partition: i32) -> Option<i64> {
        let resources = self
            .resource_offsets
            .get(&partition)
            .and_then(|offsets| offsets.values().map(|latest| latest.offset).min());
        let windows = self
            .window_offsets
            .get(&partition)
            .and_then(|offsets| offsets.values().min().copied());
        resources.into_iter().chain(windows).min()
    }

    /// Where a new owner of repartition `partition` must start to finish the
    /// groups this instance holds open.
    pub fn resume_partial_offset(&self, partition: i32) -> Option<i64> {
        self.partial_offsets
            .get(&partition)
            .and_then(|offsets| offsets.values().min().copied())
    }
}

/// A hash of `labels` (except the one named `except`), in their order.
fn hash_labels(buffer: &mut Vec<u8>, labels: &[LabelView<'_>], except: Option<&str>) -> u64 {
    series_identity::hash_labels(
        buffer,
        labels
            .iter()
            .filter(|pair| except != Some(pair.name))
            .map(|pair| (pair.name, pair.value)),
    )
}

/// [`hash_labels`] of owned labels.
fn hash_owned_labels(buffer: &mut Vec<u8>, labels: &[Label]) -> u64 {
    series_identity::hash_labels(
        buffer,
        labels
            .iter()
            .map(|pair| (pair.name.as_str(), pair.value.as_str())),
    )
}

fn owned_labels(labels: &[LabelView<'_>]) -> Vec<Label> {
    labels
        .iter()
        .map(|pair| label(pair.name, pair.value))
        .collect()
}

fn owned_resource(resource: &ResourceView<'_>) -> Resource {
    Resource {
        id: resource.id.to_owned(),
        kind: resource.kind,
        host_name: resource.host_name.to_owned(),
        attributes: owned_labels(&resource.attributes),
    }
}

/// Whether a sample's labels (or, for names it lacks, its resource) pass `matchers`.
fn selected(
    matchers: &[LabelMatcher],
    labels: &[LabelView<'_>],
    resource: &ResourceView<'_>,
) -> bool {
    matchers
        .iter()
        .all(|matcher| matcher.matches(label_value(labels, resource, &matcher.name)))
}

/// The value of label `name`: the sample's label, else the resource attribute,
/// else `host` as the resource's host name; empty when none has it.
fn label_value<'a>(labels: &[LabelView<'a>], resource: &ResourceView<'a>, name: &str) -> &'a str {
    let find = |labels: &[LabelView<'a>]| {
        labels
            .iter()
            .find(|pair| pair.name == name)
            .map(|pair| pair.value)
    };
    find(labels)
        .or_else(|| find(&resource.attributes))
        .or_else(|| (name == "host").then_some(resource.host_name))
        .unwrap_or_default()
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

/// The sample of an aggregate over a window, stamped with the window's end.
fn window_sample(
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

/// The derived batch of a finished group: a resource standing for the group.
fn group_batch(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use vigil_proto::Payload;
    use vigil_proto::labels::find;

    const SECOND: i64 = 1_000_000_000;
    /// A minute boundary, so windows line up with readable times.
    const T0: i64 = 1_800_000_000 * SECOND;

    fn settings() -> EngineSettings {
        EngineSettings {
            rates: RateSettings {
                max_gap_intervals: 3,
                default_interval: Duration::from_secs(10),
            },
            allowed_lateness: Duration::from_secs(5),
            group_wait: Duration::from_secs(5),
            producer: "test".into(),
        }
    }

    /// The derived batch of `batch`, through the wire format as in the stage.
    fn derive(
        engine: &mut Engine,
        batch: &MetricBatch,
        partition: i32,
        offset: i64,
    ) -> Option<MetricBatch> {
        let payload = batch.to_payload();
        let view = MetricBatchView::decode(&payload).unwrap();
        let mut writer = DerivedBatchWriter::default();
        engine
            .derive(&view, partition, offset, &mut writer)
            .then(|| MetricBatch::from_payload(&writer.bytes).unwrap())
    }

    fn engine_with(user: &str) -> Engine {
        let files = if user.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([("user.yaml".to_owned(), user.to_owned())])
        };
        Engine::new(&DefinitionSet::from_files(&files).unwrap(), settings())
    }

    fn counter(
        name: &str,
        labels: &[(&str, &str)],
        time: i64,
        value: u64,
        width: ValueType,
    ) -> Sample {
        Sample {
            name: name.into(),
            labels: labels.iter().map(|(n, v)| label(*n, *v)).collect(),
            kind: MetricKind::Counter as i32,
            time_unix_nano: time,
            value: Some(sample::Value::Counter(value)),
            value_type: width as i32,
            unit: String::new(),
            metric_set: "if".into(),
        }
    }

    fn gauge(name: &str, labels: &[(&str, &str)], time: i64, value: f64) -> Sample {
        Sample {
            kind: MetricKind::Gauge as i32,
            value: Some(sample::Value::Gauge(value)),
            value_type: ValueType::Float as i32,
            ..counter(name, labels, time, 0, ValueType::Float)
        }
    }

    fn batch(resource: &str, attributes: &[(&str, &str)], samples: Vec<Sample>) -> MetricBatch {
        MetricBatch {
            resource: Some(Resource {
                id: resource.into(),
                host_name: resource.into(),
                attributes: attributes.iter().map(|(n, v)| label(*n, *v)).collect(),
                ..Resource::default()
            }),
            samples,
            producer: "test".into(),
        }
    }

    fn value(batch: &MetricBatch, name: &str) -> Option<f64> {
        batch
            .samples
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| match s.value {
                Some(sample::Value::Gauge(value)) => Some(value),
                _ => None,
            })
    }

    /// One poll of a switch port: octets (32-bit), speed and sysUpTime.
    fn port_poll(time: i64, octets_in: u64, uptime_ticks: f64) -> MetricBatch {
        let port = [("ifIndex", "1"), ("ifName", "Gi0/1")];
        batch(
            "switch-1",
            &[],
            vec![
                gauge("system.uptime.ticks", &[], time, uptime_ticks),
                counter("if.in.octets", &port, time, octets_in, ValueType::Counter32),
                gauge("if.speed.bits_per_second", &port, time, 1e9),
            ],
        )
    }

    #[test]
    fn interface_rates_and_utilisation_come_from_two_polls() {
        let mut engine = engine_with("");
        assert!(derive(&mut engine, &port_poll(T0, 1_000, 100.0), 0, 0).is_none());
        let derived = derive(
            &mut engine,
            &port_poll(T0 + 10 * SECOND, 1_000 + 12_500_000, 1_100.0),
            0,
            1,
        )
        .unwrap();
        assert_eq!(value(&derived, "if.in.bits_per_second"), Some(10_000_000.0));
        assert_eq!(value(&derived, "if.in.utilisation_percent"), Some(1.0));
        let rate = derived
            .samples
            .iter()
            .find(|s| s.name == "if.in.bits_per_second")
            .unwrap();
        assert_eq!(find(&rate.labels, "ifName"), Some("Gi0/1"));
        assert_eq!(rate.metric_set, "if");
        assert_eq!(rate.unit, "bit/s");
        assert_eq!(rate.time_unix_nano, T0 + 10 * SECOND);
    }

    #[test]
    fn a_32_bit_wrap_within_the_speed_is_a_rate_and_a_reboot_is_none() {
        let mut engine = engine_with("");
        derive(
            &mut engine,
            &port_poll(T0, u64::from(u32::MAX) - 999, 100.0),
            0,
            0,
        );
        let wrapped = derive(
            &mut engine,
            &port_poll(T0 + 10 * SECOND, 9_000, 1_100.0),
            0,
            1,
        )
        .unwrap();
        assert_eq!(
            value(&wrapped, "if.in.bits_per_second"),
            Some(10_000.0 * 8.0 / 10.0)
        );
        // The device rebooted: sysUpTime went back and the counter restarted low.
        let rebooted = derive(&mut engine, &port_poll(T0 + 20 * SECOND, 500, 50.0), 0, 2);
        assert!(rebooted.is_none_or(|b| value(&b, "if.in.bits_per_second").is_none()));
        assert_eq!(engine.counts().reboots, 1);
        let after = derive(
            &mut engine,
            &port_poll(T0 + 30 * SECOND, 1_750, 1_050.0),
            0,
            3,
        )
        .unwrap();
        assert_eq!(value(&after, "if.in.bits_per_second"), Some(1_000.0));
    }

    #[test]
    fn cpu_utilisation_is_the_busy_share_of_ticks() {
        let mut engine = engine_with("");
        let ticks = |time, user, idle, iowait| {
            let tick = |mode, value| Sample {
                metric_set: "host.cpu".into(),
                ..counter(
                    "host.cpu.ticks",
                    &[("mode", mode)],
                    time,
                    value,
                    ValueType::Counter64,
                )
            };
            batch(
                "web-1",
                &[],
                vec![
                    tick("user", user),
                    tick("idle", idle),
                    tick("iowait", iowait),
                ],
            )
        };
        derive(&mut engine, &ticks(T0, 100, 1_000, 10), 0, 0);
        let derived = derive(&mut engine, &ticks(T0 + 10 * SECOND, 400, 1_600, 110), 0, 1).unwrap();
        let close = |found: Option<f64>, expected: f64| {
            assert!(
                found.is_some_and(|v| (v - expected).abs() < 1e-9),
                "{found:?} ≠ {expected}"
            );
        };
        close(value(&derived, "host.cpu.utilisation_percent"), 30.0);
        close(value(&derived, "host.cpu.iowait_percent"), 10.0);
        let busy = derived
            .samples
            .iter()
            .find(|s| s.name == "host.cpu.utilisation_percent")
            .unwrap();
        assert!(busy.labels.is_empty(), "the mode label is summed away");
    }

    #[test]
    fn memory_and_container_kpis_are_ratios_of_the_same_labels() {
        let mut engine = engine_with("");
        let memory = batch(
            "web-1",
            &[],
            vec![
                gauge("host.memory.total_bytes", &[], T0, 1000.0),
                gauge("host.memory.available_bytes", &[], T0, 250.0),
                gauge("host.fs.size_bytes", &[("mountpoint", "/")], T0, 200.0),
                gauge("host.fs.used_bytes", &[("mountpoint", "/")], T0, 50.0),
                gauge("host.fs.used_bytes", &[("mountpoint", "/var")], T0, 50.0),
            ],
        );
        let derived = derive(&mut engine, &memory, 0, 0).unwrap();
        assert_eq!(value(&derived, "host.memory.used_percent"), Some(75.0));
        let fs: Vec<_> = derived
            .samples
            .iter()
            .filter(|s| s.name == "host.fs.used_percent")
            .collect();
        assert_eq!(fs.len(), 1, "/var has no size, so no share");
        assert_eq!(fs[0].value, Some(sample::Value::Gauge(25.0)));

        let container = |time, usage, periods, throttled| {
            batch(
                "web-1/c1",
                &[],
                vec![
                    counter(
                        "container.cpu.usage.microseconds",
                        &[],
                        time,
                        usage,
                        ValueType::Counter64,
                    ),
                    counter(
                        "container.cpu.periods",
                        &[],
                        time,
                        periods,
                        ValueType::Counter64,
                    ),
                    counter(
                        "container.cpu.throttled.periods",
                        &[],
                        time,
                        throttled,
                        ValueType::Counter64,
                    ),
                    gauge("container.cpu.available_cores", &[], time, 0.5),
                ],
            )
        };
        derive(&mut engine, &container(T0, 0, 0, 0), 0, 1);
        let derived = derive(
            &mut engine,
            &container(T0 + 10 * SECOND, 2_000_000, 100, 25),
            0,
            2,
        )
        .unwrap();
        // 0.2 s of CPU per second on half a core: 40 %.
        assert_eq!(
            value(&derived, "container.cpu.utilisation_percent"),
            Some(40.0)
        );
        assert_eq!(
            value(&derived, "container.cpu.throttled_percent"),
            Some(25.0)
        );
        assert!(value(&derived, "rate(container.cpu.periods)").is_none());
    }

    #[test]
    fn per_series_windows_close_once_the_watermark_passes_their_end() {
        let mut engine = engine_with(
            "definitions:\n  - {name: load.max, function: max, input: host.load.1m, windows: [1m]}\n",
        );
        for (step, load) in [1.0, 4.0, 2.0].into_iter().enumerate() {
            let time = T0 + (step as i64 * 20 + 5) * SECOND;
            derive(
                &mut engine,
                &batch("web-1", &[], vec![gauge("host.load.1m", &[], time, load)]),
                0,
                step as i64,
            );
        }
        assert!(
            engine.advance(T0 + 64 * SECOND).derived.is_empty(),
            "lateness not over yet"
        );
        let closed = engine.advance(T0 + 65 * SECOND);
        assert_eq!(closed.derived.len(), 1);
        let aggregate = &closed.derived[0].samples[0];
        assert_eq!(aggregate.name, "load.max");
        assert_eq!(aggregate.value, Some(sample::Value::Gauge(4.0)));
        assert_eq!(aggregate.time_unix_nano, T0 + 60 * SECOND);
        assert_eq!(find(&aggregate.labels, "window"), Some("1m"));
        assert!(
            engine.advance(T0 + 200 * SECOND).derived.is_empty(),
            "closed only once"
        );
    }

    #[test]
    fn group_partials_merge_per_source_partition_and_a_resent_one_replaces() {
        let definitions = "definitions:\n  - {name: site.load.sum, function: sum, input: host.load.1m, windows: [1m], group_by: [site]}\n";
        let mut first = engine_with(definitions);
        let mut second = engine_with(definitions);
        let load = |host: &str, value| {
            batch(
                host,
                &[("site", "ams")],
                vec![gauge("host.load.1m", &[], T0 + 5 * SECOND, value)],
            )
        };
        derive(&mut first, &load("web-1", 1.5), 0, 0);
        derive(&mut second, &load("web-2", 2.5), 1, 0);
        let from_first = first.advance(T0 + 65 * SECOND).partials;
        let from_second = second.advance(T0 + 65 * SECOND).partials;
        assert_eq!(from_first.len(), 1);
        assert_eq!(from_first[0].group_key, "site.load.sum|site=ams");
        assert_eq!(from_second[0].partials[0].source_partition, 1);

        let mut finisher = engine_with(definitions);
        finisher.merge_partials(&from_first[0], 0, 10);
        finisher.merge_partials(&from_second[0], 0, 11);
        // Partition 0 replayed by a new owner sends its partial again.
        finisher.merge_partials(&from_first[0], 0, 12);
        assert_eq!(finisher.resume_partial_offset(0), Some(10));
        assert!(
            finisher.advance(T0 + 69 * SECOND).derived.is_empty(),
            "waits for other instances"
        );
        let finished = finisher.advance(T0 + 70 * SECOND).derived;
        assert_eq!(finished.len(), 1);
        let sample = &finished[0].samples[0];
        assert_eq!(sample.name, "site.load.sum");
        assert_eq!(sample.value, Some(sample::Value::Gauge(4.0)));
        assert_eq!(find(&sample.labels, "site"), Some("ams"));
        assert_eq!(
            finished[0].resource.as_ref().unwrap().id,
            "group:site.load.sum|site=ams"
        );
        assert_eq!(finisher.resume_partial_offset(0), None);
    }

    #[test]
    fn the_resume_offset_keeps_what_a_new_owner_must_replay() {
        let mut engine = engine_with(
            "definitions:\n  - {name: load.avg, function: avg, input: host.load.1m, windows: [1m]}\n",
        );
        let load = |host: &str, seconds| {
            batch(
                host,
                &[],
                vec![gauge("host.load.1m", &[], T0 + seconds * SECOND, 1.0)],
            )
        };
        derive(&mut engine, &load("web-1", 5), 3, 100);
        derive(&mut engine, &load("web-2", 6), 3, 101);
        derive(&mut engine, &load("web-1", 15), 3, 102);
        // web-2's latest message and the open window's first message.
        assert_eq!(engine.resume_offset(3), Some(100));
        derive(&mut engine, &load("web-1", 65), 3, 103);
        derive(&mut engine, &load("web-2", 66), 3, 104);
        engine.advance(T0 + 71 * SECOND);
        // The first window is closed; the latest messages are what is left.
        assert_eq!(engine.resume_offset(3), Some(103));
        assert_eq!(engine.resume_offset(4), None);
    }

    #[test]
    fn a_partition_replayed_behind_the_others_keeps_its_series_across_ticks() {
        let mut engine = engine_with("");
        let poll = |seconds: i64, octets| {
            port_poll(T0 + seconds * SECOND, octets, (100 + seconds * 100) as f64)
        };
        // This instance's own partition is at +100 s ...
        let mut own = poll(100, 0);
        own.resource.as_mut().unwrap().id = "switch-own".into();
        derive(&mut engine, &own, 1, 0);
        // ... while a taken-over partition is replayed from +10 s, one tick per reading.
        for step in 0..5 {
            let derived = derive(&mut engine, &poll(10 + step, 1_000 * step as u64), 2, step);
            engine.advance(engine.watermark());
            if step > 0 {
                let derived = derived.expect("every replayed reading after the first gives a rate");
                assert_eq!(value(&derived, "if.in.bits_per_second"), Some(8_000.0));
            }
        }
        assert_eq!(
            engine.counts().started,
            2,
            "one start per series, none after a tick"
        );
    }

    #[test]
    fn a_replayed_partition_does_not_refill_windows_emitted_before() {
        let mut engine = engine_with(
            "definitions:\n  - {name: load.count, function: count, input: host.load.1m, windows: [1m]}\n",
        );
        let load = |seconds| {
            batch(
                "web-1",
                &[],
                vec![gauge("host.load.1m", &[], T0 + seconds * SECOND, 1.0)],
            )
        };
        // A new owner starts in the second window; a late sample of the first
        // window must not make a one-sample aggregate of it.
        derive(&mut engine, &load(70), 0, 50);
        derive(&mut engine, &load(55), 0, 51);
        assert_eq!(engine.counts().late, 1);
        let closed = engine.advance(T0 + 200 * SECOND);
        assert_eq!(closed.derived.len(), 1);
        assert_eq!(
            closed.derived[0].samples[0].time_unix_nano,
            T0 + 120 * SECOND
        );
    }
}
