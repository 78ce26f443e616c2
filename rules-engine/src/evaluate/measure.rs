//! The value a metric condition compares, in the metric rules' evaluation: the
//! latest sample of a series, or a window function (`avg`, `rate`, `quantile`, ...)
//! over its samples before the evaluation time, as Prometheus computes them.

use super::series::{Reading, ValueKind};
use crate::condition::{Subject, WindowFunction};
use vigil_config::duration::nanos;

/// The value the condition compares at `at`: the latest sample, or a function of
/// the samples in `(at - window, at]`; `None` without (fresh enough) samples.
pub(crate) fn measure(
    readings: &[Reading],
    kind: ValueKind,
    subject: Subject,
    at: i64,
    stale_after: i64,
) -> Option<f64> {
    let end = readings_until(readings, at);
    let latest = readings.get(end.checked_sub(1)?)?;
    if at - latest.time > stale_after {
        return None;
    }
    let (function, window) = match subject {
        Subject::Value => return Some(latest.value(kind)),
        Subject::Window(function, window) => (function, nanos(window)),
        Subject::Absent(_) => return None,
    };
    let horizon = at.saturating_sub(window);
    let samples = &readings[..end];
    // From the newest back: the function reads the window's samples anyway, in
    // the order the cache fetches them, where a binary search would wait for
    // lines far apart.
    let in_window = samples
        .iter()
        .rev()
        .take_while(|r| r.time > horizon)
        .count();
    let samples = &samples[samples.len() - in_window..];
    let (first, count) = (samples.first()?, samples.len() as f64);
    let values = samples.iter().map(|r| r.value(kind));
    match function {
        WindowFunction::Avg => Some(values.sum::<f64>() / count),
        WindowFunction::Min => values.reduce(f64::min),
        WindowFunction::Max => values.reduce(f64::max),
        WindowFunction::Sum => Some(values.sum()),
        WindowFunction::Count => Some(count),
        WindowFunction::Last => Some(latest.value(kind)),
        WindowFunction::Increase => increase(samples, kind),
        WindowFunction::Rate => {
            let seconds = (latest.time - first.time) as f64 / 1e9;
            increase(samples, kind).map(|increase| increase / seconds)
        }
        WindowFunction::Delta => {
            (samples.len() >= 2).then_some(latest.value(kind) - first.value(kind))
        }
        WindowFunction::Deriv => slope(samples, kind),
        WindowFunction::Quantile(phi) => quantile(phi, values.collect()),
    }
}

/// How many readings are at or before `at`: all of them but the few that
/// arrived after the tick, so the count starts from the end.
pub(super) fn readings_until(readings: &[Reading], at: i64) -> usize {
    readings.len() - readings.iter().rev().take_while(|r| r.time > at).count()
}

/// The per-second slope of the least-squares line through the samples; `None`
/// with fewer than two. Times count from the first sample, so that nanosecond
/// timestamps keep their precision in the sums.
fn slope(samples: &[Reading], kind: ValueKind) -> Option<f64> {
    let first = samples.first()?.time;
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let (mut sum_x, mut sum_y, mut sum_xy, mut sum_xx) = (0.0, 0.0, 0.0, 0.0);
    for reading in samples {
        let (x, y) = ((reading.time - first) as f64 / 1e9, reading.value(kind));
        sum_x += x;
        sum_y += y;
        sum_xy += x * y;
        sum_xx += x * x;
    }
    let covariance = n * sum_xy - sum_x * sum_y;
    let variance = n * sum_xx - sum_x * sum_x;
    (variance != 0.0).then(|| covariance / variance)
}

/// The φ-quantile of `values`, interpolated linearly between the nearest ranks
/// (rank `φ × (n − 1)`), as Prometheus' `quantile_over_time`.
fn quantile(phi: f64, mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = phi * (values.len() - 1) as f64;
    let below = rank.floor() as usize;
    let above = rank.ceil() as usize;
    let weight = rank - below as f64;
    Some(values[below] * (1.0 - weight) + values[above] * weight)
}

/// The increase of a counter over consecutive samples; a decrease is a reset (the
/// counter restarted from zero), as in Prometheus. No extrapolation to the window
/// edges. `None` with fewer than two samples.
fn increase(samples: &[Reading], kind: ValueKind) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let pairs = samples.windows(2);
    let total = match kind {
        ValueKind::Counter => pairs
            .map(|pair| {
                let (before, after) = (pair[0].count(), pair[1].count());
                if after >= before {
                    (after - before) as f64
                } else {
                    after as f64
                }
            })
            .sum(),
        ValueKind::Gauge => pairs
            .map(|pair| {
                let (before, after) = (pair[0].value(kind), pair[1].value(kind));
                if after >= before {
                    after - before
                } else {
                    after
                }
            })
            .sum(),
    };
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: i64 = 1_000_000_000;

    fn readings(points: &[(i64, f64)]) -> Vec<Reading> {
        points
            .iter()
            .map(|&(time, value)| Reading::gauge(time * S, value))
            .collect()
    }

    /// [`super::measure`] of gauge readings.
    fn measure(readings: &[Reading], subject: Subject, at: i64, stale: i64) -> Option<f64> {
        super::measure(readings, ValueKind::Gauge, subject, at, stale)
    }

    fn window(function: WindowFunction, seconds: u64) -> Subject {
        Subject::Window(function, Duration::from_secs(seconds))
    }

    #[test]
    fn functions_use_the_window_ending_at_the_evaluation() {
        let data = readings(&[(0, 1.0), (10, 5.0), (20, 3.0), (30, 100.0)]);
        let at = 20 * S;
        let stale = 300 * S;
        // (0s, 20s]: the samples at 10s and 20s; the one at 30s is in the future.
        assert_eq!(
            measure(&data, window(WindowFunction::Avg, 20), at, stale),
            Some(4.0)
        );
        assert_eq!(
            measure(&data, window(WindowFunction::Min, 20), at, stale),
            Some(3.0)
        );
        assert_eq!(
            measure(&data, window(WindowFunction::Max, 20), at, stale),
            Some(5.0)
        );
        assert_eq!(
            measure(&data, window(WindowFunction::Sum, 20), at, stale),
            Some(8.0)
        );
        assert_eq!(
            measure(&data, window(WindowFunction::Count, 20), at, stale),
            Some(2.0)
        );
        assert_eq!(
            measure(&data, window(WindowFunction::Last, 20), at, stale),
            Some(3.0)
        );
        assert_eq!(measure(&data, Subject::Value, at, stale), Some(3.0));
        assert_eq!(measure(&data, Subject::Value, 5 * S, stale), Some(1.0));
    }

    #[test]
    fn stale_or_missing_series_have_no_value() {
        let data = readings(&[(0, 1.0)]);
        assert_eq!(measure(&data, Subject::Value, 300 * S, 300 * S), Some(1.0));
        assert_eq!(measure(&data, Subject::Value, 301 * S, 300 * S), None);
        assert_eq!(measure(&data, Subject::Value, -S, 300 * S), None);
        // The only sample is outside the window.
        assert_eq!(
            measure(&data, window(WindowFunction::Avg, 10), 20 * S, 300 * S),
            None
        );
    }

    #[test]
    fn rate_counts_resets_and_keeps_counters_exact() {
        let big = (1u64 << 60) + 1;
        let data: Vec<Reading> = [(0, big), (10, big + 100), (20, 50), (30, 150)]
            .iter()
            .map(|&(time, counter)| Reading::counter(time * S, counter))
            .collect();
        let counter = |subject, at| super::measure(&data, ValueKind::Counter, subject, at, 300 * S);
        // 100, then a reset to 50 (counted as 50), then 100.
        let at = 30 * S;
        assert_eq!(
            counter(window(WindowFunction::Increase, 60), at),
            Some(250.0)
        );
        assert_eq!(
            counter(window(WindowFunction::Rate, 60), at),
            Some(250.0 / 30.0)
        );
        // Read as floats, the first increase would be lost to rounding.
        assert_eq!(
            counter(window(WindowFunction::Increase, 60), 10 * S),
            Some(100.0)
        );
        let gauge = readings(&[(0, 10.0), (10, 4.0)]);
        assert_eq!(
            measure(
                &gauge,
                window(WindowFunction::Increase, 60),
                10 * S,
                300 * S
            ),
            Some(4.0)
        );
        assert_eq!(
            measure(&gauge, window(WindowFunction::Rate, 5), 10 * S, 300 * S),
            None
        );
    }

    #[test]
    fn delta_deriv_and_quantiles_follow_prometheus() {
        let data = readings(&[(0, 10.0), (10, 4.0), (20, 7.0), (30, 1.0), (40, 13.0)]);
        let (at, stale) = (40 * S, 300 * S);
        assert_eq!(
            measure(&data, window(WindowFunction::Delta, 25), at, stale),
            Some(6.0)
        );
        assert_eq!(
            measure(&data, window(WindowFunction::Delta, 60), at, stale),
            Some(3.0)
        );
        let line = readings(&[(0, 1.0), (10, 3.0), (20, 5.0)]);
        let slope = measure(&line, window(WindowFunction::Deriv, 60), 20 * S, stale).unwrap();
        assert!((slope - 0.2).abs() < 1e-12, "{slope}");
        // Sorted: 1 4 7 10 13; rank 0.9 * 4 = 3.6 lies between 10 and 13.
        let p90 = measure(&data, window(WindowFunction::Quantile(0.9), 60), at, stale).unwrap();
        assert!((p90 - 11.8).abs() < 1e-12, "{p90}");
        assert_eq!(
            measure(&data, window(WindowFunction::Quantile(0.5), 60), at, stale),
            Some(7.0)
        );
        assert_eq!(
            measure(&data, window(WindowFunction::Quantile(0.0), 60), at, stale),
            Some(1.0)
        );
        // One sample has no delta and no slope.
        for function in [WindowFunction::Delta, WindowFunction::Deriv] {
            assert_eq!(measure(&data, window(function, 5), at, stale), None);
        }
    }
}
