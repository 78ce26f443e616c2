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
//!
//! This module holds the engine, its settings and counts; `compile` turns
//! definitions into steps over interned names, `derivation` computes a raw
//! batch's rates and KPIs, `windows` fills and closes per-series and group
//! windows, `group_partials` merges and finishes the partials of groups,
//! `resume_offsets` tracks what a new owner must replay, and `labels` hashes,
//! copies and matches labels.

mod compile;
mod derivation;
mod group_partials;
mod labels;
mod resume_offsets;
mod windows;

pub use group_partials::group_key;

use super::definitions::DefinitionSet;
use super::rates::{RateSettings, RateTracker};
use super::{HashedMap, SeriesId};
use compile::{CompiledDefinition, NameId};
use derivation::{Entry, Output};
use group_partials::FinishingGroup;
use resume_offsets::LatestMessage;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use vigil_proto::v1::{Label, MetricBatch, PartialAggregateBatch};
use windows::{GroupWindows, SeriesOrigin, SeriesWindows};

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
    /// Most counter series, and most per-series window series, held: a sample
    /// of a new series beyond it is refused (counted by metric) instead of
    /// growing memory without bound.
    pub max_series: usize,
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
    /// Entries by `derivation::entry_key` of name and labels.
    index: HashedMap<u64, usize>,
    /// Positions of the entries of each name, so a definition visits only its inputs.
    named: Vec<Vec<usize>>,
    outputs: Vec<Output>,
    hash_buffer: Vec<u8>,
    /// Samples of new series refused at `max_series` since the last
    /// `take_refused_series`, by metric name.
    refused_series: BTreeMap<String, u64>,
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
            refused_series: BTreeMap::new(),
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

    /// Counts so far.
    pub fn counts(&self) -> EngineCounts {
        self.counts
    }

    /// Counter series held.
    pub fn series(&self) -> usize {
        self.rates.len()
    }

    /// Samples of new series refused because `max_series` series were held,
    /// by metric name, since the last call.
    pub fn take_refused_series(&mut self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.refused_series)
    }

    /// Counts a sample of a new series of `metric` refused at `max_series`.
    fn refuse_series(&mut self, metric: &str) {
        if let Some(count) = self.refused_series.get_mut(metric) {
            *count += 1;
        } else {
            self.refused_series.insert(metric.to_owned(), 1);
        }
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

    /// How long after its end a group window is finished: the allowed lateness,
    /// then the wait for the partials of other instances.
    fn group_close_delay(&self) -> i64 {
        vigil_config::duration::nanos(
            self.settings
                .allowed_lateness
                .saturating_add(self.settings.group_wait),
        )
    }
}

#[cfg(test)]
mod tests;
