//! Per-rule state of one metric rule: which of the stored series it selects, the
//! condition computed over their samples at each evaluation tick (and, for a
//! condition on the latest value, when a sample arrives), and each series' alert
//! (or each group's, for a rule with `by`/`aggregate`; or, for `absent`, each
//! silent series' and the one of a metric never seen).

use super::alert::{ActiveAlert, BaseLabels, RuleRef, Source, resolve, step};
use super::dormant::Dormant;
use super::measure::readings_until;
use super::series::{SeriesStore, Slot, StoredSeries, label_value};
use crate::condition::Subject;
use crate::model::{Aggregation, LabelTest, MetricRule, RuleKind};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use vigil_config::duration::nanos;
use vigil_proto::v1::{AlertEvent, Label};

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
                    if let Some(value) = series.measure(subject, at, stale_after) {
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
            let value = series.measure(condition.subject, at, stale_after);
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
