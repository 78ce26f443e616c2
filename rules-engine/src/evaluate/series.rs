//! The metric series the rules engine holds: each recognised by its
//! [`SeriesId`] (a hash of resource, name and labels, computed from the batch
//! without building label lists), its samples kept once however many rules
//! select it, and the rules that select it worked out once, when it first
//! reports or the rules change, rather than for every sample.

use super::alert::{BaseLabels, Source};
use super::measure::{measure, readings_until};
use crate::condition::Subject;
use std::collections::BTreeMap;
use vigil_proto::series_identity::{HashedMap, SeriesId, hash_labels};
use vigil_proto::v1::sample;
use xxhash_rust::xxh3::xxh3_64;

/// One sample of a series: its time and its value, the bits of an `f64` for a
/// gauge or the exact integer of a counter (so that increases stay exact past
/// 2^53); which of the two is the series' [`ValueKind`]. Sixteen bytes: a round
/// streams the samples of every series it evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    pub(crate) time: i64,
    bits: u64,
}

/// How the readings of a series hold their values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ValueKind {
    #[default]
    Gauge,
    Counter,
}

impl Reading {
    pub(crate) fn gauge(time: i64, value: f64) -> Reading {
        Reading {
            time,
            bits: value.to_bits(),
        }
    }

    pub(crate) fn counter(time: i64, count: u64) -> Reading {
        Reading { time, bits: count }
    }

    /// The reading of a sample's value at `time`, and its kind; `None` for a
    /// missing or non-finite value (and a staleness marker, see [`ends_series`]).
    /// A float counter is read as a gauge: its increase treats a decrease as a
    /// reset either way, as Prometheus does.
    pub(crate) fn of(time: i64, value: Option<sample::Value>) -> Option<(Reading, ValueKind)> {
        match value {
            Some(sample::Value::Gauge(value) | sample::Value::FloatCounter(value))
                if value.is_finite() =>
            {
                Some((Reading::gauge(time, value), ValueKind::Gauge))
            }
            Some(sample::Value::Counter(count)) => {
                Some((Reading::counter(time, count), ValueKind::Counter))
            }
            _ => None,
        }
    }

    /// The value, read as `kind`.
    pub(crate) fn value(self, kind: ValueKind) -> f64 {
        match kind {
            ValueKind::Gauge => f64::from_bits(self.bits),
            ValueKind::Counter => self.bits as f64,
        }
    }

    /// The counter's exact integer, for a reading of a counter.
    pub(crate) fn count(self) -> u64 {
        self.bits
    }

    /// The same value as a gauge.
    fn to_gauge(self, kind: ValueKind) -> Reading {
        Reading::gauge(self.time, self.value(kind))
    }
}

/// Whether a sample's value is a staleness marker: its series ended at the
/// sample's time (its target or the series itself disappeared).
pub(crate) fn ends_series(value: Option<sample::Value>) -> bool {
    value.is_some_and(|value| value.is_stale_marker())
}

/// A rule's place in the rule set: (group index, rule index).
pub(crate) type RulePosition = (usize, usize);

/// How long a series' samples matter to the rules that select it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Retention {
    /// Samples older than the newest by more than this are dropped.
    pub(crate) keep: i64,
    /// Silent this long (and without alerts) the series is forgotten.
    pub(crate) stale_after: i64,
    /// An `absent` rule selects it: it is kept however long it is silent, since
    /// its silence is what that rule watches.
    pub(crate) watched_for_absence: bool,
}

impl Retention {
    /// What the rules in `retentions` need together.
    pub(crate) fn combine(retentions: impl IntoIterator<Item = Retention>) -> Retention {
        retentions
            .into_iter()
            .fold(Retention::default(), |all, one| Retention {
                keep: all.keep.max(one.keep),
                stale_after: all.stale_after.max(one.stale_after),
                watched_for_absence: all.watched_for_absence || one.watched_for_absence,
            })
    }
}

/// A series' place in the [`SeriesStore`]; reused once the series is forgotten
/// (and every rule has let go of it).
pub(crate) type Slot = u32;

/// A series and its recent samples.
#[derive(Debug)]
pub(crate) struct StoredSeries {
    pub(crate) id: SeriesId,
    /// The metric name.
    pub(crate) name: String,
    /// Sorted by name: the resource's attributes, `host`, the sample's labels.
    pub(crate) labels: BaseLabels,
    /// Sorted by time, one reading per timestamp, after the first `dropped`
    /// (see `readings()`): dropping the oldest moves nothing until they make up
    /// half the buffer, and the live readings are always one slice.
    readings: Vec<Reading>,
    dropped: usize,
    /// The time of the newest reading, kept here so that a sample in order is
    /// appended without reading the buffer.
    newest: i64,
    /// How `readings` hold their values.
    kind: ValueKind,
    /// The time of the latest staleness marker (`i64::MIN` without one): from
    /// then until its next sample the series has no value.
    ended_at: i64,
    /// Where the series' latest sample arrived.
    pub(crate) source: Source,
    /// The rules that select it.
    pub(crate) selected_by: Vec<RulePosition>,
    /// Those of them evaluated for it when one of its samples arrives (see
    /// `evaluated_on_arrival`).
    pub(crate) evaluated_on_arrival: Vec<RulePosition>,
    pub(crate) retention: Retention,
}

impl StoredSeries {
    pub(crate) fn new(id: SeriesId, name: &str, labels: BaseLabels, source: Source) -> Self {
        StoredSeries {
            id,
            name: name.to_owned(),
            labels,
            readings: Vec::new(),
            dropped: 0,
            newest: i64::MIN,
            kind: ValueKind::default(),
            ended_at: i64::MIN,
            source,
            selected_by: Vec::new(),
            evaluated_on_arrival: Vec::new(),
            retention: Retention::default(),
        }
    }

    /// Adds a sample of `kind` that arrived from `source`, keeping the readings
    /// sorted and dropping those no rule needs any more. A series whose samples
    /// change kind is kept as a gauge from then on.
    pub(crate) fn insert(&mut self, reading: Reading, kind: ValueKind, source: &Source) {
        let reading = if kind == self.kind {
            reading
        } else if self.readings().is_empty() {
            self.kind = kind;
            reading
        } else {
            if self.kind == ValueKind::Counter {
                for kept in &mut self.readings {
                    *kept = kept.to_gauge(ValueKind::Counter);
                }
                self.kind = ValueKind::Gauge;
            }
            reading.to_gauge(kind)
        };
        if self.newest < reading.time {
            self.readings.push(reading);
            self.newest = reading.time;
        } else {
            let position =
                self.dropped + self.readings().partition_point(|r| r.time < reading.time);
            match self.readings.get_mut(position) {
                Some(existing) if existing.time == reading.time => *existing = reading,
                _ => self.readings.insert(position, reading),
            }
        }
        if self.source != *source {
            self.source = source.clone();
        }
        let horizon = self.newest().saturating_sub(self.retention.keep);
        // Usually one reading expires, if any: a scan from the oldest reads one
        // cache line where a binary search would read several.
        let live = self.readings();
        let expired = live[..live.len() - 1]
            .iter()
            .take_while(|r| r.time < horizon)
            .count();
        self.dropped += expired;
        if self.dropped >= self.readings.len() - self.dropped {
            self.readings.drain(..self.dropped);
            self.dropped = 0;
        }
    }

    /// Notes a staleness marker at `time`: the series ended there.
    pub(crate) fn end(&mut self, time: i64) {
        self.ended_at = self.ended_at.max(time);
    }

    /// What the condition's `subject` is at `at` (see [`measure`]); the latest
    /// value is none once a staleness marker ended the series, as in Prometheus.
    /// Window functions read the samples before the marker, as Prometheus' range
    /// functions do.
    pub(crate) fn measure(&self, subject: Subject, at: i64, stale_after: i64) -> Option<f64> {
        if subject == Subject::Value && self.ended_at <= at {
            let readings = self.readings();
            let latest = readings_until(readings, at)
                .checked_sub(1)
                .map_or(i64::MIN, |latest| readings[latest].time);
            if latest <= self.ended_at {
                return None;
            }
        }
        measure(self.readings(), self.kind, subject, at, stale_after)
    }

    /// The readings, sorted by time.
    pub(crate) fn readings(&self) -> &[Reading] {
        &self.readings[self.dropped..]
    }

    /// The time of the newest sample.
    pub(crate) fn newest(&self) -> i64 {
        self.newest
    }

    /// Whether the series has been silent long enough at `now` to be forgotten
    /// (when no alert holds on to it).
    pub(crate) fn is_stale(&self, now: i64) -> bool {
        now >= self.stale_at()
    }

    /// When the series goes stale if no sample comes; never for one an `absent`
    /// rule watches. Only ever moves later, as samples arrive.
    pub(crate) fn stale_at(&self) -> i64 {
        if self.retention.watched_for_absence {
            i64::MAX
        } else {
            self.newest().saturating_add(self.retention.stale_after)
        }
    }
}

/// The resource of a batch, as its series' identity and labels need it.
#[derive(Debug)]
pub(crate) struct BatchResource<'a> {
    hash: u64,
    host: &'a str,
    attributes: Vec<(&'a str, &'a str)>,
}

impl<'a> BatchResource<'a> {
    pub(crate) fn new(
        host: &'a str,
        attributes: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        buffer: &mut Vec<u8>,
    ) -> Self {
        let hash =
            hash_labels(buffer, attributes.clone()) ^ xxh3_64(host.as_bytes()).rotate_left(7);
        BatchResource {
            hash,
            host,
            attributes: attributes.collect(),
        }
    }

    /// The identity of the series `name` with `labels` on this resource.
    pub(crate) fn series_id<'l>(
        &self,
        name: &str,
        labels: impl Iterator<Item = (&'l str, &'l str)>,
        buffer: &mut Vec<u8>,
    ) -> SeriesId {
        SeriesId::of(self.hash, name, hash_labels(buffer, labels))
    }

    /// The labels of a series of this resource: its attributes, `host`, then the
    /// sample's labels (later ones win), sorted by name.
    pub(crate) fn series_labels<'l>(
        &self,
        labels: impl Iterator<Item = (&'l str, &'l str)>,
    ) -> BaseLabels {
        let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, value) in self.attributes.iter().copied() {
            merged.insert(name, value);
        }
        merged.insert("host", self.host);
        for (name, value) in labels {
            merged.insert(name, value);
        }
        merged
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect()
    }
}

/// Every series of the metrics some rule watches, in slots that rules refer to
/// directly, so that an evaluation round reads them without hashing.
#[derive(Debug, Default)]
pub(crate) struct SeriesStore {
    slots: Vec<Option<StoredSeries>>,
    free: Vec<Slot>,
    by_id: HashedMap<SeriesId, Slot>,
    /// Scratch space for hashing labels.
    pub(crate) buffer: Vec<u8>,
}

impl SeriesStore {
    pub(crate) fn find(&self, id: SeriesId) -> Option<Slot> {
        self.by_id.get(&id).copied()
    }

    pub(crate) fn get(&self, slot: Slot) -> Option<&StoredSeries> {
        self.slots.get(slot as usize)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: Slot) -> Option<&mut StoredSeries> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Stores a new series; returns its slot.
    pub(crate) fn add(&mut self, series: StoredSeries) -> Slot {
        let id = series.id;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(series);
                slot
            }
            None => {
                self.slots.push(Some(series));
                Slot::try_from(self.slots.len() - 1).expect("fewer than 2^32 series")
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    /// Keeps the series for which `keep` says so, and forgets the others.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Slot, &mut StoredSeries) -> bool) {
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(series) = entry else { continue };
            let slot = slot as Slot;
            if !keep(slot, series) {
                self.by_id.remove(&series.id);
                self.free.push(slot);
                *entry = None;
            }
        }
    }

    /// Every series, with its slot.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &mut StoredSeries)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(slot, entry)| Some((slot as Slot, entry.as_mut()?)))
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// The value of a label in sorted series labels; missing labels read as empty,
/// as in Prometheus.
pub(crate) fn label_value<'a>(labels: &'a BaseLabels, name: &str) -> &'a str {
    labels
        .binary_search_by(|(label, _)| label.as_str().cmp(name))
        .map_or("", |found| labels[found].1.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(time: i64, value: f64) -> Reading {
        Reading::gauge(time, value)
    }

    #[test]
    fn out_of_order_and_repeated_samples_stay_sorted() {
        let mut series = StoredSeries::new(SeriesId(1), "m", Vec::new(), Source::default());
        series.retention.keep = 100;
        for (time, value) in [(20, 2.0), (10, 1.0), (30, 3.0), (20, 9.0)] {
            series.insert(reading(time, value), ValueKind::Gauge, &Source::default());
        }
        let times: Vec<(i64, f64)> = series
            .readings()
            .iter()
            .map(|r| (r.time, r.value(ValueKind::Gauge)))
            .collect();
        assert_eq!(times, [(10, 1.0), (20, 9.0), (30, 3.0)]);
    }

    #[test]
    fn samples_older_than_the_retention_are_dropped_but_the_newest_stays() {
        let mut series = StoredSeries::new(SeriesId(1), "m", Vec::new(), Source::default());
        series.retention.keep = 15;
        for time in [0, 10, 20, 30] {
            series.insert(reading(time, 1.0), ValueKind::Gauge, &Source::default());
        }
        let times: Vec<i64> = series.readings().iter().map(|r| r.time).collect();
        assert_eq!(times, [20, 30]);
        series.retention.keep = 0;
        series.insert(reading(40, 1.0), ValueKind::Gauge, &Source::default());
        assert_eq!(series.readings().len(), 1);
    }

    #[test]
    fn a_reading_is_sixteen_bytes_and_a_counter_stays_exact() {
        assert_eq!(std::mem::size_of::<Reading>(), 16);
        let big = (1u64 << 60) + 1;
        let (counter, kind) = Reading::of(5, Some(sample::Value::Counter(big))).unwrap();
        assert_eq!((kind, counter.count()), (ValueKind::Counter, big));
        let (gauge, kind) = Reading::of(5, Some(sample::Value::Gauge(-2.5))).unwrap();
        assert_eq!((kind, gauge.value(kind)), (ValueKind::Gauge, -2.5));
        assert_eq!(Reading::of(5, Some(sample::Value::Gauge(f64::NAN))), None);
    }

    #[test]
    fn a_float_counter_is_read_as_a_float_and_a_marker_is_no_reading() {
        let (reading, kind) = Reading::of(5, Some(sample::Value::FloatCounter(2.5))).unwrap();
        assert_eq!((kind, reading.value(kind)), (ValueKind::Gauge, 2.5));
        let marker = vigil_proto::staleness::stale_marker();
        for value in [
            sample::Value::Gauge(marker),
            sample::Value::FloatCounter(marker),
        ] {
            assert_eq!(Reading::of(5, Some(value)), None);
            assert!(ends_series(Some(value)));
        }
        assert!(!ends_series(Some(sample::Value::Gauge(f64::NAN))));
        assert!(!ends_series(None));
    }

    #[test]
    fn a_staleness_marker_ends_the_latest_value_until_the_next_sample() {
        let mut series = StoredSeries::new(SeriesId(1), "m", Vec::new(), Source::default());
        series.retention.keep = 1_000;
        series.insert(reading(10, 4.0), ValueKind::Gauge, &Source::default());
        series.insert(reading(20, 6.0), ValueKind::Gauge, &Source::default());
        let stale_after = 300;
        assert_eq!(series.measure(Subject::Value, 25, stale_after), Some(6.0));
        series.end(30);
        assert_eq!(series.measure(Subject::Value, 29, stale_after), Some(6.0));
        assert_eq!(series.measure(Subject::Value, 30, stale_after), None);
        assert_eq!(series.measure(Subject::Value, 40, stale_after), None);
        let sum = Subject::Window(
            crate::condition::WindowFunction::Sum,
            std::time::Duration::from_nanos(100),
        );
        assert_eq!(series.measure(sum, 40, stale_after), Some(10.0));
        series.insert(reading(45, 1.0), ValueKind::Gauge, &Source::default());
        assert_eq!(series.measure(Subject::Value, 50, stale_after), Some(1.0));
    }

    #[test]
    fn a_series_whose_samples_change_kind_is_kept_as_a_gauge() {
        let mut series = StoredSeries::new(SeriesId(1), "m", Vec::new(), Source::default());
        series.retention.keep = 100;
        series.insert(
            Reading::counter(10, 7),
            ValueKind::Counter,
            &Source::default(),
        );
        assert_eq!(series.kind, ValueKind::Counter);
        series.insert(reading(20, 1.5), ValueKind::Gauge, &Source::default());
        series.insert(
            Reading::counter(30, 9),
            ValueKind::Counter,
            &Source::default(),
        );
        assert_eq!(series.kind, ValueKind::Gauge);
        let values: Vec<f64> = series
            .readings()
            .iter()
            .map(|r| r.value(series.kind))
            .collect();
        assert_eq!(values, [7.0, 1.5, 9.0]);
    }

    #[test]
    fn forgotten_slots_are_reused_and_found_by_id_no_more() {
        let mut store = SeriesStore::default();
        let series = |id| StoredSeries::new(SeriesId(id), "m", Vec::new(), Source::default());
        let first = store.add(series(1));
        let second = store.add(series(2));
        assert_eq!(store.find(SeriesId(2)), Some(second));
        store.retain(|slot, _| slot != first);
        assert_eq!((store.find(SeriesId(1)), store.len()), (None, 1));
        assert!(store.get(first).is_none());
        let third = store.add(series(3));
        assert_eq!(third, first);
        assert_eq!(store.get(third).map(|s| s.id), Some(SeriesId(3)));
        assert_eq!(store.find(SeriesId(2)), Some(second));
    }

    #[test]
    fn series_labels_merge_attributes_host_and_sample_labels_sorted() {
        let mut buffer = Vec::new();
        let attributes = [("site", "ams1"), ("host", "ignored")];
        let resource = BatchResource::new("web-1", attributes.iter().copied(), &mut buffer);
        let labels = resource.series_labels([("cpu", "0"), ("site", "fra1")].into_iter());
        assert_eq!(
            labels,
            [("cpu", "0"), ("host", "web-1"), ("site", "fra1")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(label_value(&labels, "site"), "fra1");
        assert_eq!(label_value(&labels, "missing"), "");
    }

    #[test]
    fn the_same_series_of_another_host_is_another_series() {
        let mut buffer = Vec::new();
        let web1 = BatchResource::new("web-1", std::iter::empty(), &mut buffer);
        let web2 = BatchResource::new("web-2", std::iter::empty(), &mut buffer);
        let cpu0 = || [("cpu", "0")].into_iter();
        assert_eq!(
            web1.series_id("cpu", cpu0(), &mut buffer),
            web1.series_id("cpu", cpu0(), &mut buffer)
        );
        assert_ne!(
            web1.series_id("cpu", cpu0(), &mut buffer),
            web2.series_id("cpu", cpu0(), &mut buffer)
        );
    }
}
