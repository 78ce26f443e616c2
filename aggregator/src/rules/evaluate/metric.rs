//! Per-series state of one metric rule: the recent samples of every series the rule
//! selects, the condition computed over them at each evaluation tick, and each
//! series' alert (or each group's, for a rule with `by`/`aggregate`; or each
//! silent series', for `absent`).

use super::alert::{ActiveAlert, BaseLabels, RuleRef, Source, resolve, step};
use crate::rules::condition::{Subject, WindowFunction};
use crate::rules::model::{Aggregation, LabelTest, MetricRule, RuleKind};
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
    /// Where the series' latest sample arrived.
    source: Source,
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
    /// Alerts of the groups of a rule with `by`/`aggregate`, by the group's
    /// labels.
    aggregates: BTreeMap<BaseLabels, Aggregate>,
    /// The first tick the rule was evaluated at: `absent` without any series
    /// counts the silence from there.
    started: Option<i64>,
}

/// The alert of one group of series.
#[derive(Debug, Default)]
struct Aggregate {
    alert: Option<ActiveAlert>,
    /// Where the latest sample of one of its series arrived.
    source: Source,
}

impl MetricState {
    /// Takes in a sample of the series `labels`, arrived from `source`; says
    /// whether the series is new.
    pub(crate) fn observe(
        &mut self,
        labels: &BaseLabels,
        reading: Reading,
        source: &Source,
    ) -> bool {
        match self.series.get_mut(labels) {
            Some(series) => {
                series.insert(reading);
                if series.source != *source {
                    series.source = source.clone();
                }
                false
            }
            None => {
                let mut series = Series {
                    source: source.clone(),
                    ..Series::default()
                };
                series.insert(reading);
                self.series.insert(labels.clone(), series);
                true
            }
        }
    }

    /// Gives the series `labels` an alert restored from the state topic.
    pub(crate) fn install(&mut self, labels: &BaseLabels, alert: ActiveAlert) {
        if let Some(series) = self.series.get_mut(labels) {
            series.alert = Some(alert);
        }
    }

    /// Forgets the series (and their alerts, without an event) whose data no
    /// longer arrives here: their partition moved to another consumer.
    pub(crate) fn release(&mut self, owned: &dyn Fn(&Source) -> bool) {
        self.series.retain(|_, series| owned(&series.source));
        self.aggregates
            .retain(|_, aggregate| owned(&aggregate.source));
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
        let started = *self.started.get_or_insert(at);
        let condition = &metric.condition;
        if let Subject::Absent(silence) = condition.subject {
            self.evaluate_absent(rule, metric, at, nanos(silence), started, out);
            return;
        }
        let retention = nanos(condition.window()).max(stale_after);
        let mut groups: BTreeMap<BaseLabels, (Vec<f64>, Source)> = BTreeMap::new();
        self.series.retain(|labels, series| {
            let value = measure(&series.readings, condition.subject, at, stale_after);
            match &metric.aggregation {
                Some(aggregation) => {
                    if let Some(value) = value {
                        let (values, source) = groups
                            .entry(group_labels(aggregation, labels))
                            .or_insert_with(|| (Vec::new(), series.source.clone()));
                        values.push(value);
                        source.clone_from(&series.source);
                    }
                }
                None => {
                    let holds =
                        value.is_some_and(|v| condition.comparison.holds(v, condition.threshold));
                    step(
                        &mut series.alert,
                        rule,
                        labels,
                        &series.source,
                        at,
                        value,
                        holds,
                        out,
                    );
                }
            }
            let horizon = at.saturating_sub(retention);
            while series.readings.front().is_some_and(|r| r.time <= horizon) {
                series.readings.pop_front();
            }
            let newest = series.readings.back().map_or(i64::MIN, |r| r.time);
            series.alert.is_some() || newest > at.saturating_sub(stale_after)
        });
        if let Some(aggregation) = &metric.aggregation {
            for labels in groups.keys() {
                self.aggregates.entry(labels.clone()).or_default();
            }
            self.aggregates.retain(|labels, aggregate| {
                let value = groups.get(labels).and_then(|(values, source)| {
                    aggregate.source.clone_from(source);
                    aggregation.function.apply(values)
                });
                let holds =
                    value.is_some_and(|v| condition.comparison.holds(v, condition.threshold));
                step(
                    &mut aggregate.alert,
                    rule,
                    labels,
                    &aggregate.source,
                    at,
                    value,
                    holds,
                    out,
                );
                aggregate.alert.is_some()
            });
        }
    }

    /// Evaluates `absent`: a series holds once it has had no sample for
    /// `silence`, and its value is the seconds since its last sample. Series are
    /// kept while silent, with only their latest sample. Before the rule has seen
    /// any series, one alert keyed by the `match` equalities counts the silence
    /// from the rule's first tick; it resolves once a series shows up.
    fn evaluate_absent(
        &mut self,
        rule: RuleRef<'_>,
        metric: &MetricRule,
        at: i64,
        silence: i64,
        started: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let any_series = self.series.values().any(|s| !s.readings.is_empty());
        if !any_series {
            self.series.entry(selector_labels(metric)).or_default();
        }
        self.series.retain(|labels, series| {
            let end = series.readings.partition_point(|r| r.time <= at);
            let last_heard = match end.checked_sub(1) {
                Some(latest) => Some(series.readings[latest].time),
                // Only samples after `at`: the series reports.
                None if !series.readings.is_empty() => None,
                None if any_series => None,
                None => Some(started),
            };
            let silent = last_heard.map_or(0, |time| at.saturating_sub(time));
            let value = Some(silent as f64 / 1e9);
            let holds = last_heard.is_some() && silent >= silence;
            step(
                &mut series.alert,
                rule,
                labels,
                &series.source,
                at,
                value,
                holds,
                out,
            );
            series.readings.drain(..end.saturating_sub(1));
            !series.readings.is_empty() || series.alert.is_some() || !any_series
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
        let before = match &old.rule.kind {
            RuleKind::Metric(before) => before.aggregation.as_ref(),
            RuleKind::Log(_) => None,
        };
        if before.map(|a| &a.by) == metric.aggregation.as_ref().map(|a| &a.by) {
            for (labels, aggregate) in &mut self.aggregates {
                relabel(&mut aggregate.alert, old, new, labels, at, out);
            }
        } else {
            // The groups mean something else now.
            for alert in self.aggregates.values().filter_map(|a| a.alert.as_ref()) {
                resolve(alert, old, at, out);
            }
            self.aggregates.clear();
        }
        self.aggregates
            .retain(|_, aggregate| aggregate.alert.is_some());
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
        for alert in self.alerts() {
            resolve(alert, rule, at, out);
        }
    }

    pub(crate) fn alerts(&self) -> impl Iterator<Item = &ActiveAlert> {
        let series = self.series.values().filter_map(|s| s.alert.as_ref());
        series.chain(self.aggregates.values().filter_map(|a| a.alert.as_ref()))
    }
}

/// The labels of the group a series belongs to: its `by` labels that it has.
fn group_labels(aggregation: &Aggregation, labels: &BaseLabels) -> BaseLabels {
    labels
        .iter()
        .filter(|(name, value)| !value.is_empty() && aggregation.by.contains(name))
        .cloned()
        .collect()
}

/// The labels of `absent` before any series: the rule's `match` equalities, as
/// Prometheus' `absent()` takes them from the selector.
fn selector_labels(metric: &MetricRule) -> BaseLabels {
    let labels: BTreeMap<String, String> = metric
        .matchers
        .iter()
        .filter_map(|matcher| match &matcher.test {
            LabelTest::Equal(value) if !value.is_empty() => {
                Some((matcher.name.clone(), value.clone()))
            }
            _ => None,
        })
        .collect();
    labels.into_iter().collect()
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
        Subject::Absent(_) => return None,
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
        WindowFunction::Delta => match samples.as_slice() {
            [first, .., last] => Some(last.value - first.value),
            _ => None,
        },
        WindowFunction::Deriv => slope(&samples),
        WindowFunction::Quantile(phi) => quantile(phi, values.collect()),
    }
    .filter(|_| !samples.is_empty())
}

/// The per-second slope of the least-squares line through the samples; `None`
/// with fewer than two. Times count from the first sample, so that nanosecond
/// timestamps keep their precision in the sums.
fn slope(samples: &[Reading]) -> Option<f64> {
    let first = samples.first()?.time;
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let points = samples
        .iter()
        .map(|r| ((r.time - first) as f64 / 1e9, r.value));
    let (mut sum_x, mut sum_y, mut sum_xy, mut sum_xx) = (0.0, 0.0, 0.0, 0.0);
    for (x, y) in points {
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
