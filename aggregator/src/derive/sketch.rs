//! Quantile sketch of the derive stage: the p50/p95/p99 of a window.
//!
//! Exact quantiles would need every value of a window, and a cross-host group
//! window is computed as partials on several instances and merged on the one that
//! owns the group. This sketch (DDSketch) counts values in logarithmic buckets of a
//! fixed relative accuracy instead: two sketches merge by adding bucket counts, so
//! the merge of the partials is exactly the sketch of all values, and a quantile is
//! within 1% of the true value whatever the distribution. The buckets travel in a
//! [`PartialAggregate`] on the repartition topic.

use vigil_proto::v1::PartialAggregate;

/// Relative accuracy: a quantile is within this fraction of the true value.
const ALPHA: f64 = 0.01;

/// Ratio between the bounds of a bucket: `(1 + α) / (1 − α)`.
const GAMMA: f64 = (1.0 + ALPHA) / (1.0 - ALPHA);

/// `GAMMA.ln()`, written out because `ln` is not a `const fn`; a test keeps it equal.
const LN_GAMMA: f64 = 0.020_000_666_706_669_435;

/// Magnitudes below this count as zero: bucket indexes stay small, and nothing a
/// monitoring value means is lost.
const MIN_INDEXABLE: f64 = 1e-9;

/// A mergeable sketch of a set of values that answers quantile queries within a
/// relative accuracy of 1%.
///
/// Bucket `i` holds the magnitudes in `(γ^(i−1), γ^i]`; positive and negative
/// values have their own buckets, and magnitudes below 1e-9 are counted as zero.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct QuantileSketch {
    positive: Buckets,
    negative: Buckets,
    zero_count: u64,
    /// Total of all buckets and `zero_count`, kept so that quantile ranks need no
    /// pass over the buckets.
    count: u64,
}

impl QuantileSketch {
    /// Counts a value; NaN and infinities are ignored.
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let magnitude = value.abs();
        if magnitude < MIN_INDEXABLE {
            self.zero_count = self.zero_count.saturating_add(1);
        } else if value > 0.0 {
            self.positive.add(bucket_index(magnitude));
        } else {
            self.negative.add(bucket_index(magnitude));
        }
        self.count = self.count.saturating_add(1);
    }

    /// Adds the values counted by `other`, as if they had been added here.
    pub fn merge(&mut self, other: &QuantileSketch) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.count = self.count.saturating_add(other.count);
    }

    /// Number of values counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile within a relative accuracy of 1%; `None` when the sketch is
    /// empty or `q` is outside `[0, 1]`.
    ///
    /// The value of rank `⌊q · (count − 1)⌋` in sorted order (the lower-rank
    /// convention of DDSketch), so `q = 0` estimates the minimum and `q = 1` the
    /// maximum.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * (self.count - 1) as f64;
        let mut seen = 0_u64;
        let mut passes_rank = |count: u64| {
            seen = seen.saturating_add(count);
            seen as f64 > rank
        };
        // Ascending order of value: the largest negative magnitudes come first.
        for &(index, count) in self.negative.0.iter().rev() {
            if passes_rank(count) {
                return Some(-bucket_value(index));
            }
        }
        if passes_rank(self.zero_count) {
            return Some(0.0);
        }
        self.positive
            .0
            .iter()
            .find(|&&(_, count)| passes_rank(count))
            .map(|&(index, _)| bucket_value(index))
    }

    /// Writes the buckets and the zero count into `partial`, replacing any there.
    pub fn write_to(&self, partial: &mut PartialAggregate) {
        self.positive.write_to(
            &mut partial.positive_bucket_index,
            &mut partial.positive_bucket_count,
        );
        self.negative.write_to(
            &mut partial.negative_bucket_index,
            &mut partial.negative_bucket_count,
        );
        partial.zero_count = self.zero_count;
    }

    /// The sketch whose buckets `partial` carries.
    ///
    /// The codec has checked that every bucket index has a count; buckets out of
    /// order, repeated or empty (another producer's encoding) are tolerated.
    pub fn read_from(partial: &PartialAggregate) -> Self {
        let positive = Buckets::read_from(
            &partial.positive_bucket_index,
            &partial.positive_bucket_count,
        );
        let negative = Buckets::read_from(
            &partial.negative_bucket_index,
            &partial.negative_bucket_count,
        );
        let count = positive
            .total()
            .saturating_add(negative.total())
            .saturating_add(partial.zero_count);
        QuantileSketch {
            positive,
            negative,
            zero_count: partial.zero_count,
            count,
        }
    }
}

/// The bucket of a magnitude of at least [`MIN_INDEXABLE`]: `⌈log_γ(magnitude)⌉`.
fn bucket_index(magnitude: f64) -> i32 {
    // Finite magnitudes from 1e-9 to f64::MAX map to about −1040 to 35 500.
    (magnitude.ln() / LN_GAMMA).ceil() as i32
}

/// The magnitude a bucket stands for: `2γ^i / (γ + 1)`, within α of both its
/// bounds.
fn bucket_value(index: i32) -> f64 {
    ((f64::from(index) * LN_GAMMA).exp() * (2.0 / (GAMMA + 1.0))).min(f64::MAX)
}

/// Non-empty buckets as `(index, count)`, sorted by index.
///
/// A sorted vector rather than a map: a window of one series touches a handful of
/// buckets and a group window a few hundred, so a binary search over contiguous
/// memory is the fastest lookup, and merging is a linear pass.
#[derive(Default, Clone, Debug, PartialEq)]
struct Buckets(Vec<(i32, u64)>);

impl Buckets {
    fn add(&mut self, index: i32) {
        match self.0.binary_search_by_key(&index, |&(i, _)| i) {
            Ok(position) => self.0[position].1 = self.0[position].1.saturating_add(1),
            Err(position) => self.0.insert(position, (index, 1)),
        }
    }

    fn merge(&mut self, other: &Buckets) {
        if other.0.is_empty() {
            return;
        }
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        let mut merged = Vec::with_capacity(self.0.len() + other.0.len());
        let mut mine = self.0.iter().copied().peekable();
        let mut theirs = other.0.iter().copied().peekable();
        loop {
            let next = match (mine.peek(), theirs.peek()) {
                (Some(&(a, count_a)), Some(&(b, count_b))) => {
                    if a < b {
                        mine.next()
                    } else if b < a {
                        theirs.next()
                    } else {
                        mine.next();
                        theirs.next();
                        Some((a, count_a.saturating_add(count_b)))
                    }
                }
                (Some(_), None) => mine.next(),
                (None, Some(_)) => theirs.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        self.0 = merged;
    }

    fn total(&self) -> u64 {
        self.0
            .iter()
            .fold(0, |total, &(_, count)| total.saturating_add(count))
    }

    fn write_to(&self, indexes: &mut Vec<i32>, counts: &mut Vec<u64>) {
        indexes.clear();
        counts.clear();
        indexes.extend(self.0.iter().map(|&(index, _)| index));
        counts.extend(self.0.iter().map(|&(_, count)| count));
    }

    fn read_from(indexes: &[i32], counts: &[u64]) -> Self {
        let mut buckets: Vec<(i32, u64)> = indexes
            .iter()
            .copied()
            .zip(counts.iter().copied())
            .filter(|&(_, count)| count > 0)
            .collect();
        buckets.sort_unstable_by_key(|&(index, _)| index);
        buckets.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = kept.1.saturating_add(later.1);
            }
            same
        });
        Buckets(buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const QUANTILES: [f64; 5] = [0.0, 0.5, 0.95, 0.99, 1.0];

    fn sketch_of(values: &[f64]) -> QuantileSketch {
        let mut sketch = QuantileSketch::default();
        for &value in values {
            sketch.add(value);
        }
        sketch
    }

    /// The exact value at the rank the sketch estimates.
    fn exact_quantile(values: &[f64], q: f64) -> f64 {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[(q * (sorted.len() - 1) as f64) as usize]
    }

    /// Within α of `exact`, with room for the rounding of `ln` and `exp` at a
    /// bucket bound.
    fn within_accuracy(estimate: f64, exact: f64) -> bool {
        (estimate - exact).abs() <= ALPHA * exact.abs() * (1.0 + 1e-9)
    }

    /// Magnitudes spread evenly over fifteen orders of magnitude, either sign, and
    /// now and then an exact zero.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            10 => (any::<bool>(), -6.0_f64..9.0).prop_map(|(negative, exponent)| {
                let magnitude = 10_f64.powf(exponent);
                if negative { -magnitude } else { magnitude }
            }),
            1 => Just(0.0),
        ]
    }

    #[test]
    fn ln_gamma_matches_gamma() {
        assert_eq!(LN_GAMMA, GAMMA.ln());
    }

    #[test]
    fn empty_sketch_has_no_quantiles() {
        let sketch = QuantileSketch::default();
        assert_eq!(sketch.count(), 0);
        assert_eq!(sketch.quantile(0.5), None);
    }

    #[test]
    fn quantile_outside_unit_interval_is_none() {
        let sketch = sketch_of(&[1.0, 2.0]);
        assert_eq!(sketch.quantile(-0.1), None);
        assert_eq!(sketch.quantile(1.5), None);
        assert_eq!(sketch.quantile(f64::NAN), None);
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let sketch = sketch_of(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 3.0]);
        assert_eq!(sketch.count(), 1);
        assert!(within_accuracy(sketch.quantile(0.5).unwrap(), 3.0));
    }

    #[test]
    fn uniform_integers_within_one_percent() {
        let values: Vec<f64> = (1..=10_000).map(f64::from).collect();
        let sketch = sketch_of(&values);
        assert_eq!(sketch.count(), 10_000);
        for q in QUANTILES {
            let estimate = sketch.quantile(q).unwrap();
            let exact = exact_quantile(&values, q);
            assert!(
                within_accuracy(estimate, exact),
                "q={q}: {estimate} vs {exact}"
            );
        }
    }

    #[test]
    fn values_around_zero_within_one_percent() {
        let values: Vec<f64> = (-500..=500)
            .map(|i| f64::from(i) * 0.25)
            .chain([1e-12, -1e-12])
            .collect();
        let sketch = sketch_of(&values);
        for q in [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0] {
            let estimate = sketch.quantile(q).unwrap();
            let exact = exact_quantile(&values, q);
            assert!(
                within_accuracy(estimate, exact),
                "q={q}: {estimate} vs {exact}"
            );
        }
        assert_eq!(sketch.quantile(0.5), Some(0.0));
    }

    #[test]
    fn extreme_magnitudes_stay_finite() {
        let sketch = sketch_of(&[f64::MAX, -f64::MAX, f64::MIN_POSITIVE]);
        assert!(within_accuracy(sketch.quantile(0.0).unwrap(), -f64::MAX));
        assert_eq!(sketch.quantile(0.5), Some(0.0));
        assert!(within_accuracy(sketch.quantile(1.0).unwrap(), f64::MAX));
    }

    #[test]
    fn reads_unsorted_and_repeated_buckets() {
        let partial = PartialAggregate {
            positive_bucket_index: vec![5, 3, 5, 4],
            positive_bucket_count: vec![1, 2, 3, 0],
            zero_count: 1,
            ..PartialAggregate::default()
        };
        let sketch = QuantileSketch::read_from(&partial);
        assert_eq!(sketch.positive, Buckets(vec![(3, 2), (5, 4)]));
        assert_eq!(sketch.count(), 7);
    }

    proptest! {
        #[test]
        fn quantiles_within_relative_accuracy(
            values in proptest::collection::vec(value(), 1..2_000),
        ) {
            let sketch = sketch_of(&values);
            for q in QUANTILES {
                let estimate = sketch.quantile(q).unwrap();
                let exact = exact_quantile(&values, q);
                prop_assert!(
                    within_accuracy(estimate, exact),
                    "q={}: {} vs {}", q, estimate, exact
                );
            }
        }

        #[test]
        fn merge_equals_sketch_of_concatenation(
            first in proptest::collection::vec(value(), 0..300),
            second in proptest::collection::vec(value(), 0..300),
        ) {
            let mut merged = sketch_of(&first);
            merged.merge(&sketch_of(&second));
            let all: Vec<f64> = first.iter().chain(&second).copied().collect();
            prop_assert_eq!(merged, sketch_of(&all));
        }

        #[test]
        fn round_trips_through_partial_aggregate(
            values in proptest::collection::vec(value(), 0..300),
        ) {
            let sketch = sketch_of(&values);
            let mut partial = PartialAggregate {
                positive_bucket_index: vec![7],
                positive_bucket_count: vec![7],
                ..PartialAggregate::default()
            };
            sketch.write_to(&mut partial);
            prop_assert_eq!(QuantileSketch::read_from(&partial), sketch);
        }
    }
}
