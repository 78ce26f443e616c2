//! Per-series state of one metric rule: the recent samples of every series the rule
//! selects, the condition computed over them at each evaluation tick, and each
//! series' alert.

use super::alert::{ActiveAlert, BaseLabels, RuleRef, resolve, step};
use crate::rules::condition::{Subject, WindowFunction};
use crate::rules::model::MetricRule;
use std::collections::{BTreeMap, VecDeque};
use vigil_proto::v1::AlertEvent;
use vigil_runtime::duration::nanos;

/// One sample of a series. Counters keep their exact integer so that increases
/// stay exact past 2^53.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    pub(crate) time: i64,
    pub(crate) value: f64,
    pub(crate) counter: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Series {
    /// Sorted by time, one reading per timestamp.
    readings: VecDeque<Reading>,
    alert: Option<ActiveAlert>,
}

impl Series {
    fn insert(&mut self, reading: Reading) {
        let position = self.readings.partition_point(|r| r.time < reading.time);
        match self.readings.get_mut(position) {
            Some(existing) if existing.time == reading.time => *existing = reading,
            _ => self.readings.insert(position, reading),
        }
    }
}

/// The series of one metric rule, keyed by their labels.
#[derive(Debug, Default)]
pub(crate) struct MetricState {
    pub(crate) series: BTreeMap<BaseLabels, Series>,
}

impl MetricState {
    pub(crate) fn observe(&mut self, labels: &BaseLabels, reading: Reading) {
        match self.series.get_mut(labels) {
            Some(series) => series.insert(reading),
            None => {
                let mut series = Series::default();
                series.insert(reading);
                self.series.insert(labels.clone(), series);
            }
        }
    }

    /// Evaluates every series at tick `at`. A series whose newest sample is older
    /// than `stale_after` has no value (so its alert resolves) and is forgotten
    /// once it has no alert.
    pub(crate) fn evaluate(
        &mut self,
        rule: RuleRef<'_>,
        metric: &MetricRule,
        at: i64,
        stale_after: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let condition = &metric.condition;
        let retention = nanos(condition.window()).max(stale_after);
        self.series.retain(|labels, series| {
            let value = measure(&series.readings, condition.subject, at, stale_after);
            let holds = value.is_some_and(|v| condition.comparison.holds(v, condition.threshold));
            step(&mut series.alert, rule, labels, at, value, holds, out);
            let horizon = at.saturating_sub(retention);
            while series.readings.front().is_some_and(|r| r.time <= horizon) {
                series.readings.pop_front();
            }
            let newest = series.readings.back().map_or(i64::MIN, |r| r.time);
            series.alert.is_some() || newest > at.saturating_sub(stale_after)
        });
    }

    /// Carries the state over to a changed rule: series the new rule no longer
    /// selects are dropped (their firing alerts resolve), alerts whose labels
    /// changed are resolved under the old labels and start over.
    pub(crate) fn adopt(
        &mut self,
        old: RuleRef<'_>,
        new: RuleRef<'_>,
        metric: &MetricRule,
        at: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        self.series.retain(|labels, series| {
            let selected = metric.matchers.iter().all(|matcher| {
                let value = labels
                    .iter()
                    .find(|(name, _)| *name == matcher.name)
                    .map_or("", |(_, value)| value.as_str());
                matcher.matches(value)
            });
            if !selected {
                if let Some(alert) = &series.alert {
                    resolve(alert, old, at, out);
                }
                return false;
            }
            relabel(&mut series.alert, old, new, labels, at, out);
            true
        });
    }

    pub(crate) fn resolve_all(&self, rule: RuleRef<'_>, at: i64, out: &mut Vec<AlertEvent>) {
        for alert in self.series.values().filter_map(|s| s.alert.as_ref()) {
            resolve(alert, rule, at, out);
        }
    }

    pub(crate) fn alerts(&self) -> impl Iterator<Item = &ActiveAlert> {
        self.series.values().filter_map(|s| s.alert.as_ref())
    }
}

/// Gives an alert the labels of the new rule; a firing alert whose labels change
/// is a different alert to receivers, so it resolves and its series starts over.
pub(crate) fn relabel(
    slot: &mut Option<ActiveAlert>,
    old: RuleRef<'_>,
    new: RuleRef<'_>,
    base: &BaseLabels,
    at: i64,
    out: &mut Vec<AlertEvent>,
) {
    let Some(alert) = slot else { return };
    let labels = new.labels(base);
    if labels == alert.labels {
        return;
    }
    if alert.is_firing() {
        resolve(alert, old, at, out);
        *slot = None;
    } else {
        alert.relabel(new.rule, labels);
    }
}

/// The value the condition compares at `at`: the latest sample, or a function of
/// the samples in `(at - window, at]`; `None` without (fresh enough) samples.
pub(crate) fn measure(
    readings: &VecDeque<Reading>,
    subject: Subject,
    at: i64,
    stale_after: i64,
) -> Option<f64> {
    let end = readings.partition_point(|r| r.time <= at);
    let latest = readings.get(end.checked_sub(1)?)?;
    if at - latest.time > stale_after {
        return None;
    }
    let (function, window) = match subject {
        Subject::Value => return Some(latest.value),
        Subject::Window(function, window) => (function, nanos(window)),
    };
    let start = readings.partition_point(|r| r.time <= at.saturating_sub(window));
    let samples: Vec<Reading> = readings.range(start..end).copied().collect();
    let values = samples.iter().map(|r| r.value);
    match function {
        WindowFunction::Avg => Some(values.sum::<f64>() / samples.len() as f64),
        WindowFunction::Min => values.reduce(f64::min),
        WindowFunction::Max => values.reduce(f64::max),
        WindowFunction::Sum => Some(values.sum()),
        WindowFunction::Count => Some(samples.len() as f64),
        WindowFunction::Last => samples.last().map(|r| r.value),
        WindowFunction::Increase => increase(&samples),
        WindowFunction::Rate => {
            let (first, last) = (samples.first()?, samples.last()?);
            let seconds = (last.time - first.time) as f64 / 1e9;
            increase(&samples).map(|increase| increase / seconds)
        }
    }
    .filter(|_| !samples.is_empty())
}

/// The increase of a counter over consecutive samples; a decrease is a reset (the
/// counter restarted from zero), as in Prometheus. No extrapolation to the window
/// edges. `None` with fewer than two samples.
fn increase(samples: &[Reading]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let total = samples
        .windows(2)
        .map(|pair| match (pair[0].counter, pair[1].counter) {
            (Some(before), Some(after)) => {
                if after >= before {
                    (after - before) as f64
                } else {
                    after as f64
                }
            }
            _ if pair[1].value >= pair[0].value => pair[1].value - pair[0].value,
            _ => pair[1].value,
        })
        .sum();
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: i64 = 1_000_000_000;

    fn readings(points: &[(i64, f64)]) -> VecDeque<Reading> {
        points
            .iter()
            .map(|&(time, value)| Reading {
                time: time * S,
                value,
                counter: None,
            })
            .collect()
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
        let data: VecDeque<Reading> = [(0, big), (10, big + 100), (20, 50), (30, 150)]
            .iter()
            .map(|&(time, counter)| Reading {
                time: time * S,
                value: counter as f64,
                counter: Some(counter),
            })
            .collect();
        // 100, then a reset to 50 (counted as 50), then 100.
        let at = 30 * S;
        assert_eq!(
            measure(&data, window(WindowFunction::Increase, 60), at, 300 * S),
            Some(250.0)
        );
        assert_eq!(
            measure(&data, window(WindowFunction::Rate, 60), at, 300 * S),
            Some(250.0 / 30.0)
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
    fn out_of_order_and_repeated_samples_stay_sorted() {
        let mut series = Series::default();
        for (time, value) in [(20, 2.0), (10, 1.0), (30, 3.0), (20, 9.0)] {
            series.insert(Reading {
                time,
                value,
                counter: None,
            });
        }
        let times: Vec<(i64, f64)> = series.readings.iter().map(|r| (r.time, r.value)).collect();
        assert_eq!(times, [(10, 1.0), (20, 9.0), (30, 3.0)]);
    }
}
