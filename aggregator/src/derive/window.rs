//! Tumbling windows of the derive stage: avg, min, max, sum, count and p50/p95/p99
//! of each key over fixed windows (1m and 5m by default) in event time.
//!
//! Samples are added to the window their timestamp falls in; a window stays open
//! until the watermark passes its end plus the allowed lateness, so samples that
//! arrive a little late still count, and later ones are refused as [`Late`]. For a
//! cross-host group-by, every instance closes its windows into partial
//! [`Accumulator`]s, sends them as [`PartialAggregate`]s through the repartition
//! topic, and the instance owning the group merges them into its own windows, which
//! is why an accumulator merges without loss.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::Duration;

use thiserror::Error;
use vigil_proto::v1::{Label, PartialAggregate};

use super::sketch::QuantileSketch;

/// An aggregate a derive definition can ask of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    P50,
    P95,
    P99,
}

impl Aggregate {
    /// Every aggregate, in the order the configuration documents them.
    pub const ALL: [Aggregate; 8] = [
        Aggregate::Avg,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Sum,
        Aggregate::Count,
        Aggregate::P50,
        Aggregate::P95,
        Aggregate::P99,
    ];

    /// The aggregate a configuration names, `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|aggregate| aggregate.name() == name)
    }

    /// The name in configurations, also the suffix of the derived metric.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Avg => "avg",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Sum => "sum",
            Aggregate::Count => "count",
            Aggregate::P50 => "p50",
            Aggregate::P95 => "p95",
            Aggregate::P99 => "p99",
        }
    }

    /// Whether the aggregate is a quantile, which needs the accumulator's sketch.
    pub fn needs_sketch(self) -> bool {
        matches!(self, Aggregate::P50 | Aggregate::P95 | Aggregate::P99)
    }
}

/// Mergeable accumulator of one window of one key.
///
/// Count, sum, min and max are exact; quantiles come from a sketch, kept only when
/// the definition asks for one, since it costs memory per open window.
#[derive(Clone, Debug, PartialEq)]
pub struct Accumulator {
    count: u64,
    sum: f64,
    /// `+∞` while empty, so that merging an empty accumulator changes nothing.
    min: f64,
    /// `−∞` while empty, for the same reason.
    max: f64,
    sketch: Option<QuantileSketch>,
}

impl Accumulator {
    /// An empty accumulator, with a quantile sketch if `with_sketch`.
    pub fn new(with_sketch: bool) -> Self {
        Accumulator {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: with_sketch.then(QuantileSketch::default),
        }
    }

    /// Adds a value; NaN and infinities are ignored, as they would poison every
    /// aggregate of the window.
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.count = self.count.saturating_add(1);
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if let Some(sketch) = &mut self.sketch {
            sketch.add(value);
        }
    }

    /// Adds the values `other` accumulated, as if they had been added here.
    ///
    /// If only `other` has a sketch, this one takes a copy; quantiles are then
    /// answered only if that sketch covers every value counted (see [`Self::value`]).
    pub fn merge(&mut self, other: &Accumulator) {
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        match (&mut self.sketch, &other.sketch) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, Some(theirs)) => self.sketch = Some(theirs.clone()),
            (_, None) => {}
        }
    }

    /// The value of `aggregate`; `None` when the accumulator is empty, or for a
    /// quantile when there is no sketch or the sketch misses some of the values
    /// (a partial from an instance that kept none).
    ///
    /// Quantiles are clamped to the exact min and max, which only brings them
    /// closer to the truth. Min and max come from partials of other instances too,
    /// so the clamp is one that takes any pair (NaN, or min above max) without
    /// panicking, as `f64::clamp` would.
    pub fn value(&self, aggregate: Aggregate) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        match aggregate {
            Aggregate::Avg => Some(self.sum / self.count as f64),
            Aggregate::Min => Some(self.min),
            Aggregate::Max => Some(self.max),
            Aggregate::Sum => Some(self.sum),
            Aggregate::Count => Some(self.count as f64),
            Aggregate::P50 => self.quantile(0.5),
            Aggregate::P95 => self.quantile(0.95),
            Aggregate::P99 => self.quantile(0.99),
        }
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        let sketch = self
            .sketch
            .as_ref()
            .filter(|sketch| sketch.count() == self.count)?;
        sketch
            .quantile(q)
            .map(|estimate| estimate.max(self.min).min(self.max))
    }

    /// The partial aggregate for the repartition topic.
    ///
    /// An empty accumulator writes 0 as min and max: the codec refuses non-finite
    /// ones, and [`Self::from_partial`] reads any partial of count 0 as empty.
    pub fn to_partial(
        &self,
        definition: &str,
        group: Vec<Label>,
        window: WindowBounds,
    ) -> PartialAggregate {
        let empty = self.count == 0;
        let mut partial = PartialAggregate {
            definition: definition.to_owned(),
            group,
            window_start_unix_nano: window.start_unix_nano,
            window_end_unix_nano: window.end_unix_nano,
            count: self.count,
            sum: self.sum,
            min: if empty { 0.0 } else { self.min },
            max: if empty { 0.0 } else { self.max },
            ..PartialAggregate::default()
        };
        if let Some(sketch) = &self.sketch {
            sketch.write_to(&mut partial);
        }
        partial
    }

    /// The accumulator a partial aggregate carries.
    ///
    /// It has a sketch exactly when the partial carries buckets or a zero count:
    /// whoever merges the partials need not know whether its producer kept one. An
    /// empty sketch therefore does not survive the trip, which loses nothing, as
    /// merging an accumulator without a sketch leaves the sketch of the other as is.
    pub fn from_partial(partial: &PartialAggregate) -> Self {
        let empty = partial.count == 0;
        let has_sketch = !partial.positive_bucket_index.is_empty()
            || !partial.negative_bucket_index.is_empty()
            || partial.zero_count > 0;
        Accumulator {
            count: partial.count,
            sum: partial.sum,
            min: if empty { f64::INFINITY } else { partial.min },
            max: if empty {
                f64::NEG_INFINITY
            } else {
                partial.max
            },
            sketch: has_sketch.then(|| QuantileSketch::read_from(partial)),
        }
    }
}

/// The span of one window: from its start (inclusive) to its end (exclusive), in
/// nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowBounds {
    pub start_unix_nano: i64,
    pub end_unix_nano: i64,
}

/// A value or partial that arrived after its window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "the window has already been closed: the data arrived after its end plus the allowed lateness"
)]
pub struct Late;

/// A window the watermark has passed, with its final accumulator.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedWindow<K> {
    pub key: K,
    pub window: WindowBounds,
    pub accumulator: Accumulator,
}

/// Tumbling windows of one width over keys `K`, in event time.
///
/// Windows are aligned to the epoch, so every instance cuts the same windows and
/// the partials of a group line up. A window closes once the watermark reaches its
/// end plus the allowed lateness.
#[derive(Debug)]
pub struct TumblingWindows<K> {
    width: Duration,
    width_nanos: i64,
    lateness_nanos: i64,
    with_sketch: bool,
    /// The highest watermark seen; it never moves back, so a closed window stays
    /// closed.
    watermark: i64,
    /// Every open window of every key: one hash lookup per added value.
    open: HashMap<(K, WindowBounds), Accumulator>,
    /// The keys with an open window, by window end and then start: the order in
    /// which windows close, so [`Self::advance`] looks only at those that do.
    closing: BTreeMap<(i64, i64), Vec<K>>,
}

impl<K: Clone + Eq + Hash> TumblingWindows<K> {
    /// Windows `width` wide that accept data until `allowed_lateness` after their
    /// end; accumulators keep a quantile sketch if `with_sketch`.
    ///
    /// # Panics
    ///
    /// If `width` is zero or longer than `i64::MAX` nanoseconds (292 years); the
    /// configuration is validated before.
    pub fn new(width: Duration, allowed_lateness: Duration, with_sketch: bool) -> Self {
        let width_nanos = i64::try_from(width.as_nanos())
            .ok()
            .filter(|&nanos| nanos > 0)
            .expect("window width must be positive and at most i64::MAX nanoseconds");
        TumblingWindows {
            width,
            width_nanos,
            lateness_nanos: i64::try_from(allowed_lateness.as_nanos()).unwrap_or(i64::MAX),
            with_sketch,
            watermark: i64::MIN,
            open: HashMap::new(),
            closing: BTreeMap::new(),
        }
    }

    /// The window `time_unix_nano` falls in; window boundaries are aligned to the
    /// epoch (start = t − t mod width), so a time on a boundary starts a window.
    pub fn bounds_of(&self, time_unix_nano: i64) -> WindowBounds {
        let start_unix_nano =
            time_unix_nano.saturating_sub(time_unix_nano.rem_euclid(self.width_nanos));
        WindowBounds {
            start_unix_nano,
            end_unix_nano: start_unix_nano.saturating_add(self.width_nanos),
        }
    }

    /// Adds a value at `time_unix_nano` to the window of `key`; `Err(Late)` when
    /// that window has already been closed (its end plus the allowed lateness is at
    /// or before the watermark reached so far).
    pub fn add(&mut self, key: K, time_unix_nano: i64, value: f64) -> Result<(), Late> {
        let window = self.bounds_of(time_unix_nano);
        self.accumulator(key, window)?.add(value);
        Ok(())
    }

    /// Moves the watermark (never backwards) and returns every window whose end
    /// plus the allowed lateness is at or before it, removing them: in window
    /// order, and the keys of one window in the order their windows opened.
    pub fn advance(&mut self, watermark_unix_nano: i64) -> Vec<ClosedWindow<K>> {
        self.watermark = self.watermark.max(watermark_unix_nano);
        let closed_through = self.closed_through();
        let mut closed = Vec::new();
        while let Some(entry) = self.closing.first_entry() {
            let &(end_unix_nano, start_unix_nano) = entry.key();
            if end_unix_nano > closed_through {
                break;
            }
            let window = WindowBounds {
                start_unix_nano,
                end_unix_nano,
            };
            for key in entry.remove() {
                if let Some(((key, window), accumulator)) = self.open.remove_entry(&(key, window)) {
                    closed.push(ClosedWindow {
                        key,
                        window,
                        accumulator,
                    });
                }
            }
        }
        closed
    }

    /// Number of open windows, counting each key's apart.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Earliest start of any open window, `None` when none is open.
    ///
    /// The stage keeps its committed consumer position before it, so that a restart
    /// replays the data of every window still open.
    pub fn oldest_open_start(&self) -> Option<i64> {
        self.closing.keys().map(|&(_, start)| start).min()
    }

    /// The width of the windows.
    pub fn width(&self) -> Duration {
        self.width
    }

    /// The latest window end that is closed: the watermark less the allowed
    /// lateness.
    fn closed_through(&self) -> i64 {
        self.watermark.saturating_sub(self.lateness_nanos)
    }

    /// The accumulator of an open window, opened if needed.
    fn accumulator(&mut self, key: K, window: WindowBounds) -> Result<&mut Accumulator, Late> {
        if window.end_unix_nano <= self.closed_through() {
            return Err(Late);
        }
        Ok(match self.open.entry((key, window)) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(vacant) => {
                self.closing
                    .entry((window.end_unix_nano, window.start_unix_nano))
                    .or_default()
                    .push(vacant.key().0.clone());
                vacant.insert(Accumulator::new(self.with_sketch))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vigil_proto::Payload;
    use vigil_proto::v1::PartialAggregateBatch;

    const SECOND: i64 = 1_000_000_000;

    fn minute_windows(lateness_secs: u64) -> TumblingWindows<&'static str> {
        TumblingWindows::new(
            Duration::from_secs(60),
            Duration::from_secs(lateness_secs),
            false,
        )
    }

    fn bounds(start_secs: i64, end_secs: i64) -> WindowBounds {
        WindowBounds {
            start_unix_nano: start_secs * SECOND,
            end_unix_nano: end_secs * SECOND,
        }
    }

    fn accumulator_of(values: &[f64], with_sketch: bool) -> Accumulator {
        let mut accumulator = Accumulator::new(with_sketch);
        for &value in values {
            accumulator.add(value);
        }
        accumulator
    }

    /// What the codec makes of a partial on its way through the repartition topic.
    fn through_the_wire(partial: PartialAggregate) -> PartialAggregate {
        let batch = PartialAggregateBatch {
            group_key: "site=eu".into(),
            partials: vec![partial],
            producer: "derive test".into(),
        };
        let mut decoded = PartialAggregateBatch::from_payload(&batch.to_payload()).unwrap();
        decoded.partials.remove(0)
    }

    fn assert_within_one_percent(estimate: f64, exact: f64) {
        assert!(
            (estimate - exact).abs() <= 0.01 * exact.abs(),
            "{estimate} vs {exact}"
        );
    }

    fn summary(closed: &[ClosedWindow<&'static str>]) -> Vec<(&'static str, WindowBounds, f64)> {
        closed
            .iter()
            .map(|window| {
                let count = window.accumulator.value(Aggregate::Count).unwrap();
                (window.key, window.window, count)
            })
            .collect()
    }

    #[test]
    fn aggregate_names_round_trip() {
        for aggregate in Aggregate::ALL {
            assert_eq!(Aggregate::parse(aggregate.name()), Some(aggregate));
        }
        assert_eq!(Aggregate::parse("median"), None);
        assert_eq!(Aggregate::parse("P95"), None);
        let quantiles: Vec<Aggregate> = Aggregate::ALL
            .into_iter()
            .filter(|aggregate| aggregate.needs_sketch())
            .collect();
        assert_eq!(quantiles, [Aggregate::P50, Aggregate::P95, Aggregate::P99]);
    }

    #[test]
    fn accumulates_exact_aggregates() {
        let accumulator = accumulator_of(&[3.0, 1.0, 4.0, 1.0, 5.0], false);
        assert_eq!(accumulator.value(Aggregate::Avg), Some(2.8));
        assert_eq!(accumulator.value(Aggregate::Min), Some(1.0));
        assert_eq!(accumulator.value(Aggregate::Max), Some(5.0));
        assert_eq!(accumulator.value(Aggregate::Sum), Some(14.0));
        assert_eq!(accumulator.value(Aggregate::Count), Some(5.0));
        assert_eq!(accumulator.value(Aggregate::P50), None);
    }

    #[test]
    fn empty_accumulator_has_no_values() {
        let accumulator = Accumulator::new(true);
        for aggregate in Aggregate::ALL {
            assert_eq!(accumulator.value(aggregate), None, "{}", aggregate.name());
        }
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let accumulator = accumulator_of(&[f64::NAN, 2.0, f64::INFINITY], true);
        assert_eq!(accumulator.value(Aggregate::Count), Some(1.0));
        assert_eq!(accumulator.value(Aggregate::Sum), Some(2.0));
        assert_eq!(accumulator.value(Aggregate::P99), Some(2.0));
    }

    #[test]
    fn quantiles_within_one_percent_and_clamped() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        let accumulator = accumulator_of(&values, true);
        for (aggregate, exact) in [
            (Aggregate::P50, 500.0),
            (Aggregate::P95, 950.0),
            (Aggregate::P99, 990.0),
        ] {
            let estimate = accumulator.value(aggregate).unwrap();
            assert!(
                (estimate - exact).abs() <= 0.01 * exact,
                "{estimate} vs {exact}"
            );
        }
        // The sketch alone would answer up to 1% off; the exact bounds pin it.
        let single = accumulator_of(&[7.3], true);
        assert_eq!(single.value(Aggregate::P50), Some(7.3));
    }

    #[test]
    fn quantiles_need_a_sketch_of_every_value() {
        let mut accumulator = accumulator_of(&[1.0, 2.0], true);
        accumulator.merge(&accumulator_of(&[3.0], false));
        assert_eq!(accumulator.value(Aggregate::Count), Some(3.0));
        assert_eq!(accumulator.value(Aggregate::P50), None);

        let mut without = Accumulator::new(false);
        without.merge(&accumulator_of(&[1.0, 2.0, 3.0], true));
        assert_within_one_percent(without.value(Aggregate::P50).unwrap(), 2.0);
    }

    #[test]
    fn partial_round_trips_through_the_codec() {
        let window = bounds(60, 120);
        let group = vec![Label {
            name: "site".into(),
            value: "eu".into(),
        }];
        for accumulator in [
            accumulator_of(&[-2.5, 0.0, 1e-12, 4.0, 1e6], true),
            accumulator_of(&[-2.5, 4.0], false),
            Accumulator::new(false),
        ] {
            let partial =
                through_the_wire(accumulator.to_partial("site.latency", group.clone(), window));
            assert_eq!(partial.definition, "site.latency");
            assert_eq!(partial.group, group);
            assert_eq!(partial.window_start_unix_nano, window.start_unix_nano);
            assert_eq!(partial.window_end_unix_nano, window.end_unix_nano);
            assert_eq!(Accumulator::from_partial(&partial), accumulator);
        }
    }

    #[test]
    fn empty_partial_merges_as_nothing() {
        let empty = through_the_wire(Accumulator::new(true).to_partial(
            "site.latency",
            Vec::new(),
            bounds(0, 60),
        ));
        let mut accumulator = accumulator_of(&[1.0, 2.0], true);
        let before = accumulator.clone();
        accumulator.merge(&Accumulator::from_partial(&empty));
        assert_eq!(accumulator, before);
    }

    #[test]
    fn windows_align_to_the_epoch() {
        let windows = minute_windows(0);
        assert_eq!(windows.width(), Duration::from_secs(60));
        assert_eq!(windows.bounds_of(90 * SECOND), bounds(60, 120));
        assert_eq!(windows.bounds_of(60 * SECOND - 1), bounds(0, 60));
        assert_eq!(windows.bounds_of(-1), bounds(-60, 0));
        let five_minutes: TumblingWindows<u64> =
            TumblingWindows::new(Duration::from_secs(300), Duration::ZERO, false);
        assert_eq!(
            five_minutes.bounds_of(1_700_000_123 * SECOND),
            bounds(1_700_000_100, 1_700_000_400)
        );
    }

    #[test]
    fn value_on_a_boundary_belongs_to_the_next_window() {
        let mut windows = minute_windows(0);
        assert_eq!(windows.bounds_of(120 * SECOND), bounds(120, 180));
        windows.add("web-1", 120 * SECOND - 1, 1.0).unwrap();
        windows.add("web-1", 120 * SECOND, 2.0).unwrap();
        let closed = windows.advance(180 * SECOND);
        assert_eq!(
            summary(&closed),
            [
                ("web-1", bounds(60, 120), 1.0),
                ("web-1", bounds(120, 180), 1.0)
            ]
        );
        assert_eq!(closed[1].accumulator.value(Aggregate::Sum), Some(2.0));
    }

    #[test]
    fn late_values_count_until_the_lateness_runs_out() {
        let mut windows = minute_windows(10);
        windows.add("web-1", 30 * SECOND, 1.0).unwrap();
        assert!(windows.advance(65 * SECOND).is_empty());
        // After the end of its window, but within the allowed lateness.
        windows.add("web-1", 50 * SECOND, 3.0).unwrap();
        windows.add("web-1", 65 * SECOND, 5.0).unwrap();

        let closed = windows.advance(70 * SECOND);
        assert_eq!(summary(&closed), [("web-1", bounds(0, 60), 2.0)]);
        assert_eq!(closed[0].accumulator.value(Aggregate::Avg), Some(2.0));

        assert_eq!(windows.add("web-1", 59 * SECOND, 1.0), Err(Late));
        assert_eq!(windows.add("web-2", 0, 1.0), Err(Late));
        // The watermark does not move back.
        assert!(windows.advance(0).is_empty());
        assert_eq!(windows.add("web-1", 59 * SECOND, 1.0), Err(Late));
        windows.add("web-1", 60 * SECOND, 1.0).unwrap();
        assert_eq!(windows.open_windows(), 1);
    }

    #[test]
    fn advance_closes_in_window_order_and_only_once() {
        let mut windows = minute_windows(0);
        windows.add("web-2", 130 * SECOND, 1.0).unwrap();
        windows.add("web-1", 10 * SECOND, 1.0).unwrap();
        windows.add("web-2", 20 * SECOND, 1.0).unwrap();
        windows.add("web-1", 70 * SECOND, 1.0).unwrap();
        windows.add("web-1", 15 * SECOND, 1.0).unwrap();
        assert_eq!(windows.open_windows(), 4);
        assert_eq!(windows.oldest_open_start(), Some(0));

        let closed = windows.advance(120 * SECOND);
        assert_eq!(
            summary(&closed),
            [
                ("web-1", bounds(0, 60), 2.0),
                ("web-2", bounds(0, 60), 1.0),
                ("web-1", bounds(60, 120), 1.0),
            ]
        );
        assert!(windows.advance(120 * SECOND).is_empty());
        assert_eq!(windows.open_windows(), 1);
        assert_eq!(windows.oldest_open_start(), Some(120 * SECOND));

        assert_eq!(
            summary(&windows.advance(i64::MAX)),
            [("web-2", bounds(120, 180), 1.0)]
        );
        assert_eq!(windows.open_windows(), 0);
        assert_eq!(windows.oldest_open_start(), None);
    }

    /// A partial of one value in the sketch bucket of 2.0, with `min` and `max`
    /// as given, as a hostile or broken producer may send it.
    fn partial_with_bounds(min: f64, max: f64) -> PartialAggregate {
        let mut partial =
            accumulator_of(&[2.0], true).to_partial("site.latency", Vec::new(), bounds(0, 60));
        partial.min = min;
        partial.max = max;
        partial
    }

    // A partial with min above max made the quantile's `f64::clamp` panic, and
    // derive crash-looped on the message it replayed.
    #[test]
    fn quantiles_of_a_partial_with_min_above_max_do_not_panic() {
        let accumulator = Accumulator::from_partial(&partial_with_bounds(5.0, 1.0));
        assert_eq!(accumulator.value(Aggregate::P50), Some(1.0));
        for (min, max) in [
            (f64::NAN, 1.0),
            (1.0, f64::NAN),
            (f64::INFINITY, f64::NEG_INFINITY),
            (f64::NAN, f64::NAN),
        ] {
            let mut merged = accumulator_of(&[3.0], true);
            merged.merge(&Accumulator::from_partial(&partial_with_bounds(min, max)));
            for aggregate in Aggregate::ALL {
                let _ = merged.value(aggregate);
            }
        }
    }

    proptest! {
        #[test]
        fn no_partial_makes_an_accumulator_panic(
            count in any::<u64>(),
            sum in any::<f64>(),
            min in any::<f64>(),
            max in any::<f64>(),
            buckets in proptest::collection::vec((any::<i32>(), any::<u64>()), 0..4),
            zero_count in any::<u64>(),
            added in proptest::collection::vec(any::<f64>(), 0..4),
        ) {
            let partial = PartialAggregate {
                count,
                sum,
                min,
                max,
                positive_bucket_index: buckets.iter().map(|&(index, _)| index).collect(),
                positive_bucket_count: buckets.iter().map(|&(_, count)| count).collect(),
                negative_bucket_index: buckets.iter().map(|&(index, _)| index).collect(),
                negative_bucket_count: buckets.iter().map(|&(_, count)| count).collect(),
                zero_count,
                ..partial_with_bounds(0.0, 0.0)
            };
            let mut accumulator = Accumulator::from_partial(&partial);
            for &value in &added {
                accumulator.add(value);
            }
            accumulator.merge(&Accumulator::from_partial(&partial));
            for aggregate in Aggregate::ALL {
                let _ = accumulator.value(aggregate);
            }
            let _ = accumulator.to_partial("site.latency", Vec::new(), bounds(0, 60));
        }
    }

    proptest! {
        #[test]
        fn merging_a_split_equals_one_accumulator(
            split in proptest::collection::vec((-1e6_f64..1e6, any::<bool>()), 1..500),
        ) {
            let all: Vec<f64> = split.iter().map(|&(value, _)| value).collect();
            let (left, right): (Vec<_>, Vec<_>) = split.iter().partition(|&&(_, left)| left);
            let values = |part: Vec<&(f64, bool)>| -> Vec<f64> {
                part.into_iter().map(|&(value, _)| value).collect()
            };
            let whole = accumulator_of(&all, true);
            // One half goes through the repartition topic, as a remote partial would.
            let mut merged = accumulator_of(&values(left), true);
            let remote = accumulator_of(&values(right), true)
                .to_partial("site.latency", Vec::new(), bounds(0, 60));
            merged.merge(&Accumulator::from_partial(&through_the_wire(remote)));

            let magnitude: f64 = all.iter().map(|value| value.abs()).sum();
            let sum_error = merged.value(Aggregate::Sum).unwrap() - whole.value(Aggregate::Sum).unwrap();
            prop_assert!(sum_error.abs() <= 1e-9 * magnitude.max(1.0));
            for aggregate in [
                Aggregate::Count,
                Aggregate::Min,
                Aggregate::Max,
                Aggregate::P50,
                Aggregate::P95,
                Aggregate::P99,
            ] {
                prop_assert_eq!(merged.value(aggregate), whole.value(aggregate), "{}", aggregate.name());
            }
        }
    }
}
