//! Per-rule state of one metric rule: which of the stored series it selects, the
//! condition computed over their samples at each evaluation tick (and, for a
//! condition on the latest value, when a sample arrives), and each series' alert
//! (or each group's, for a rule with `by`/`aggregate`; or, for `absent`, each
//! silent series' and the one of a metric never seen).

use super::alert::{ActiveAlert, BaseLabels, RuleRef, Source, resolve, step};
use super::dormant::Dormant;
use super::series::{Reading, SeriesStore, Slot, StoredSeries, ValueKind, label_value};
use crate::rules::condition::{Subject, WindowFunction};
use crate::rules::model::{Aggregation, LabelTest, MetricRule, RuleKind};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use vigil_proto::v1::{AlertEvent, Label};
use vigil_runtime::duration::nanos;

/// The series one metric rule selects and their alerts.
#[derive(Debug, Default)]
pub(crate) struct MetricState {
    /// The stored series the rule selects, sorted by slot, with their alerts.
    members: Vec<Member>,
    /// Alerts of the groups of a rule with `by`/`aggregate`, by the group's
    /// labels.
    aggregates: BTreeMap<BaseLabels, Aggregate>,
    /// `absent` before the rule has seen any series: one alert keyed by the
    /// `match` equalities.
    unseen: Option<ActiveAlert>,
    /// The first tick the rule was evaluated at: `absent` without any series
    /// counts the silence from there.
    started: Option<i64>,
    /// Changes whenever `members` gains or loses a series (not when an alert
    /// changes): the group's series pass plans anew then.
    generation: u64,
    /// Bit `i` is set when member `i` holds an alert or is unevaluated: what a
    /// tick must look at even when the condition does not hold. Made by the
    /// series pass, so that it decides without reading the members, which lie
    /// far apart in memory; `None` once members were added or removed.
    attention: Option<Vec<u64>>,
}

/// A series of the rule and its pending or firing alert.
#[derive(Debug)]
struct Member {
    slot: Slot,
    alert: Option<Box<ActiveAlert>>,
    /// Not evaluated by this version of the rule yet: a rule evaluated on
    /// arrival skips, at its ticks, the series it has evaluated and that hold no
    /// alert, but not these.
    unevaluated: bool,
}

/// The alert of one group of series.
#[derive(Debug, Default)]
struct Aggregate {
    alert: Option<ActiveAlert>,
    /// Where the latest sample of one of its series arrived.
    source: Source,
}

impl MetricState {
    fn member(&self, slot: Slot) -> Result<usize, usize> {
        self.members
            .binary_search_by_key(&slot, |member| member.slot)
    }

    /// Makes the stored series in `slot` one of the rule's; says whether it was
    /// new to the rule.
    pub(crate) fn join(&mut self, slot: Slot) -> bool {
        match self.member(slot) {
            Ok(_) => false,
            Err(position) => {
                self.members_changed();
                self.members.insert(
                    position,
                    Member {
                        slot,
                        alert: None,
                        unevaluated: true,
                    },
                );
                true
            }
        }
    }

    /// Gives the series in `slot` an alert restored from the state topic.
    pub(crate) fn install(&mut self, slot: Slot, alert: ActiveAlert) {
        if let Ok(position) = self.member(slot) {
            self.members[position].alert = Some(Box::new(alert));
            self.attention = None;
        }
    }

    /// Whether the series in `slot` has a pending or firing alert.
    pub(crate) fn holds_alert(&self, slot: Slot) -> bool {
        self.member(slot)
            .is_ok_and(|position| self.members[position].alert.is_some())
    }

    /// Forgets the series in `slot` and its alert, without an event: it went
    /// stale without an alert, or its partition moved to another consumer.
    pub(crate) fn forget(&mut self, slot: Slot) {
        if let Ok(position) = self.member(slot) {
            self.members_changed();
            self.members.remove(position);
        }
    }

    fn members_changed(&mut self) {
        self.generation += 1;
        self.attention = None;
    }

    /// See the field.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The slot of each series of the rule, with its place among them.
    pub(crate) fn member_slots(&self) -> impl Iterator<Item = (usize, Slot)> + '_ {
        self.members
            .iter()
            .enumerate()
            .map(|(index, member)| (index, member.slot))
    }

    /// Makes the `attention` bits if members changed since they were made; the
    /// series pass calls it before it visits the rule's series.
    pub(crate) fn prepare_attention(&mut self) {
        if self.attention.is_none() {
            let mut bits = vec![0u64; self.members.len().div_ceil(64)];
            for (index, member) in self.members.iter().enumerate() {
                if member.alert.is_some() || member.unevaluated {
                    bits[index / 64] |= 1 << (index % 64);
                }
            }
            self.attention = Some(bits);
        }
    }

    /// Whether the series at `index` (of [`member_slots`](Self::member_slots))
    /// holds an alert or is unevaluated; after
    /// [`prepare_attention`](Self::prepare_attention).
    pub(crate) fn needs_attention(&self, index: usize) -> bool {
        self.attention
            .as_ref()
            .is_none_or(|bits| bits[index / 64] & (1 << (index % 64)) != 0)
    }

    /// Whether the series at `index` needs evaluating at a tick: not when the
    /// rule is evaluated on arrival, has judged the series' latest sample and
    /// holds no alert for it.
    pub(crate) fn due_at_tick(&self, index: usize, on_arrival: bool) -> bool {
        !on_arrival || self.needs_attention(index)
    }

    /// Steps the alert of the series at `index`, whose condition measured
    /// `value` at `at` (`holds` says whether it is true).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step_series(
        &mut self,
        index: usize,
        series: &StoredSeries,
        rule: RuleRef<'_>,
        at: i64,
        value: Option<f64>,
        holds: bool,
        out: &mut Vec<AlertEvent>,
    ) {
        let member = &mut self.members[index];
        member.unevaluated = false;
        step_member(member, series, rule, at, value, holds, out);
        let alerting = member.alert.is_some();
        if let Some(bits) = &mut self.attention {
            let bit = 1 << (index % 64);
            if alerting {
                bits[index / 64] |= bit;
            } else {
                bits[index / 64] &= !bit;
            }
        }
    }

    /// Forgets the groups (and their alerts, without an event) whose data no
    /// longer arrives here: their partition moved to another consumer.
    pub(crate) fn release(&mut self, owned: &dyn Fn(&Source) -> bool) {
        self.aggregates
            .retain(|_, aggregate| owned(&aggregate.source));
    }

    /// Evaluates at tick `at` a rule that is not [`evaluated_series_by_series`]:
    /// `absent`, or one with `by`/`aggregate`. A series whose newest sample is
    /// older than `stale_after` has no value, so its alert resolves.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn evaluate(
        &mut self,
        rule: RuleRef<'_>,
        metric: &MetricRule,
        at: i64,
        stale_after: i64,
        store: &SeriesStore,
        dormant: &mut Dormant,
        out: &mut Vec<AlertEvent>,
    ) {
        let started = *self.started.get_or_insert(at);
        let first_event = out.len();
        let condition = &metric.condition;
        match (&metric.aggregation, condition.subject) {
            (_, Subject::Absent(silence)) => {
                self.evaluate_absent(rule, metric, at, nanos(silence), started, store, out);
            }
            (Some(aggregation), subject) => {
                let mut groups: BTreeMap<BaseLabels, (Vec<f64>, Source)> = BTreeMap::new();
                for series in self.members.iter().filter_map(|m| store.get(m.slot)) {
                    if let Some(value) =
                        measure(series.readings(), series.kind(), subject, at, stale_after)
                    {
                        let (values, source) = groups
                            .entry(group_labels(aggregation, &series.labels))
                            .or_insert_with(|| (Vec::new(), series.source.clone()));
                        values.push(value);
                        source.clone_from(&series.source);
                    }
                }
                self.evaluate_groups(rule, metric, aggregation, groups, at, dormant, out);
            }
            // The group's series pass evaluates the others.
            (None, _) => {}
        }
        // Series are kept by slot: present their events in label order.
        out[first_event..].sort_by(|a, b| label_order(&a.labels, &b.labels));
    }

    /// Evaluates the series in `slot` at `at`, after a sample of it arrived: for
    /// a rule [`evaluated_on_arrival`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn evaluate_arrival(
        &mut self,
        rule: RuleRef<'_>,
        metric: &MetricRule,
        slot: Slot,
        at: i64,
        stale_after: i64,
        store: &SeriesStore,
        out: &mut Vec<AlertEvent>,
    ) {
        if let (Ok(position), Some(series)) = (self.member(slot), store.get(slot)) {
            let condition = &metric.condition;
            let value = measure(
                series.readings(),
                series.kind(),
                condition.subject,
                at,
                stale_after,
            );
            let holds = value.is_some_and(|v| condition.comparison.holds(v, condition.threshold));
            self.step_series(position, series, rule, at, value, holds, out);
        }
    }

    /// Steps the alerts of the groups of a rule with `by`/`aggregate`, given the
    /// values of the series of each group.
    #[allow(clippy::too_many_arguments)]
    fn evaluate_groups(
        &mut self,
        rule: RuleRef<'_>,
        metric: &MetricRule,
        aggregation: &Aggregation,
        groups: BTreeMap<BaseLabels, (Vec<f64>, Source)>,
        at: i64,
        dormant: &mut Dormant,
        out: &mut Vec<AlertEvent>,
    ) {
        let condition = &metric.condition;
        for (labels, (_, source)) in &groups {
            if !self.aggregates.contains_key(labels) {
                // A group seen for the first time here: its alert may have been
                // pending or firing before a restart or a rebalance.
                let aggregate = Aggregate {
                    alert: dormant.resume(rule, labels, source),
                    source: source.clone(),
                };
                self.aggregates.insert(labels.clone(), aggregate);
            }
        }
        self.aggregates.retain(|labels, aggregate| {
            let value = groups.get(labels).and_then(|(values, source)| {
                aggregate.source.clone_from(source);
                aggregation.function.apply(values)
            });
            let holds = value.is_some_and(|v| condition.comparison.holds(v, condition.threshold));
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

    /// Evaluates `absent`: a series holds once it has had no sample for
    /// `silence`, and its value is the seconds since its last sample. Before the
    /// rule has seen any series, one alert keyed by the `match` equalities counts
    /// the silence from the rule's first tick; it resolves once a series shows up.
    #[allow(clippy::too_many_arguments)]
    fn evaluate_absent(
        &mut self,
        rule: RuleRef<'_>,
        metric: &MetricRule,
        at: i64,
        silence: i64,
        started: i64,
        store: &SeriesStore,
        out: &mut Vec<AlertEvent>,
    ) {
        if self.members.is_empty() || self.unseen.is_some() {
            let silent = if self.members.is_empty() {
                at.saturating_sub(started)
            } else {
                0
            };
            let holds = self.members.is_empty() && silent >= silence;
            step(
                &mut self.unseen,
                rule,
                &selector_labels(metric),
                &Source::default(),
                at,
                Some(silent as f64 / 1e9),
                holds,
                out,
            );
        }
        for member in &mut self.members {
            let Some(series) = store.get(member.slot) else {
                continue;
            };
            let readings = series.readings();
            let end = readings_until(readings, at);
            // Only samples after `at`: the series reports.
            let last_heard = end.checked_sub(1).map(|latest| readings[latest].time);
            let silent = last_heard.map_or(0, |time| at.saturating_sub(time));
            let holds = last_heard.is_some() && silent >= silence;
            let value = Some(silent as f64 / 1e9);
            step_member(member, series, rule, at, value, holds, out);
        }
    }

    /// Carries the state over to a changed rule: series the new rule no longer
    /// selects are dropped (their firing alerts resolve), alerts whose labels
    /// changed are resolved under the old labels and start over.
    pub(crate) fn adopt(
        &mut self,
        old: RuleRef<'_>,
        new: RuleRef<'_>,
        metric: &MetricRule,
        store: &SeriesStore,
        at: i64,
        out: &mut Vec<AlertEvent>,
    ) {
        let before = match &old.rule.kind {
            RuleKind::Metric(before) => before,
            RuleKind::Log(_) => return self.resolve_all(old, at, out),
        };
        if before.aggregation.as_ref().map(|a| &a.by) == metric.aggregation.as_ref().map(|a| &a.by)
        {
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
        self.members_changed();
        relabel(
            &mut self.unseen,
            old,
            new,
            &selector_labels(before),
            at,
            out,
        );
        self.members.retain_mut(|member| {
            let Some(series) = store.get(member.slot) else {
                return false;
            };
            // The new version of the rule may judge the series' latest value
            // differently.
            member.unevaluated = true;
            if !selects(metric, &series.labels) {
                if let Some(alert) = &member.alert {
                    resolve(alert, old, at, out);
                }
                return false;
            }
            let mut alert = member.alert.take().map(|alert| *alert);
            relabel(&mut alert, old, new, &series.labels, at, out);
            member.alert = alert.map(Box::new);
            true
        });
    }

    pub(crate) fn resolve_all(&self, rule: RuleRef<'_>, at: i64, out: &mut Vec<AlertEvent>) {
        for alert in self.alerts() {
            resolve(alert, rule, at, out);
        }
    }

    /// The pending and firing alerts, in label order.
    pub(crate) fn alerts(&self) -> impl Iterator<Item = &ActiveAlert> {
        let mut series: Vec<&ActiveAlert> = self
            .members
            .iter()
            .filter_map(|member| member.alert.as_deref())
            .collect();
        series.sort_by(|a, b| label_order(&a.labels, &b.labels));
        series
            .into_iter()
            .chain(self.aggregates.values().filter_map(|a| a.alert.as_ref()))
            .chain(self.unseen.as_ref())
    }
}

/// The order of alerts by their labels (sorted by name), value by value.
pub(crate) fn label_order(a: &[Label], b: &[Label]) -> Ordering {
    let pairs = |labels: &[Label]| {
        labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect::<Vec<_>>()
    };
    pairs(a).cmp(&pairs(b))
}

/// Whether `metric` selects the series with `labels`.
pub(crate) fn selects(metric: &MetricRule, labels: &BaseLabels) -> bool {
    metric
        .matchers
        .iter()
        .all(|matcher| matcher.matches(label_value(labels, &matcher.name)))
}

/// Whether `metric` is evaluated for a series when one of its samples arrives,
/// besides the ticks of its group: a condition on the latest value of each
/// series, which only a new sample can change (or the series going stale, which
/// matters only to an alert, and alerts are evaluated at every tick). Conditions
/// over windows, aggregations and `absent` are evaluated at the ticks only.
pub(crate) fn evaluated_on_arrival(metric: &MetricRule) -> bool {
    metric.aggregation.is_none() && metric.condition.subject == Subject::Value
}

/// Whether `metric` judges each series on its own (no `by`/`aggregate`, not
/// `absent`): its group's ticks evaluate such rules series by series (see
/// `SeriesPass`), the others rule by rule with [`MetricState::evaluate`].
pub(crate) fn evaluated_series_by_series(metric: &MetricRule) -> bool {
    metric.aggregation.is_none() && !matches!(metric.condition.subject, Subject::Absent(_))
}

/// One evaluation of the alert of a series; skips the work when there is no
/// alert and the condition does not hold.
fn step_member(
    member: &mut Member,
    series: &StoredSeries,
    rule: RuleRef<'_>,
    at: i64,
    value: Option<f64>,
    holds: bool,
    out: &mut Vec<AlertEvent>,
) {
    if !holds && member.alert.is_none() {
        return;
    }
    let mut slot = member.alert.take().map(|alert| *alert);
    step(
        &mut slot,
        rule,
        &series.labels,
        &series.source,
        at,
        value,
        holds,
        out,
    );
    member.alert = slot.map(Box::new);
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
fn readings_until(readings: &[Reading], at: i64) -> usize {
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
