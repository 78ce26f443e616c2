//! A group's tick for the metric rules that judge each series on its own: series
//! by series rather than rule by rule, so that a series' readings are read from
//! memory once for all the rules of the group that select it (five or more, in a
//! fleet's rule set), and one window function is computed once for the rules
//! that compare it to different thresholds.

use super::RuleState;
use super::alert::{RuleRef, StateJournal};
use super::metric::{evaluated_on_arrival, evaluated_series_by_series, label_order};
use super::series::{SeriesStore, Slot};
use crate::condition::Subject;
use crate::model::{Group, RuleKind};
use vigil_proto::v1::AlertEvent;

/// The order a group's series pass visits its rules' series in, kept until the
/// series of one of those rules change.
#[derive(Debug, Default)]
pub(super) struct SeriesPass {
    /// (series, rule index, the series' place among the rule's), by series.
    visits: Vec<(Slot, u32, u32)>,
    /// The generation of the series of each rule the visits were planned from;
    /// `None` for rules not in the pass.
    planned_from: Vec<Option<u64>>,
    /// Window functions measured on the series being visited.
    measured: Vec<(Subject, Option<f64>)>,
}

impl SeriesPass {
    /// Evaluates at tick `at` the rules of `group` that are
    /// [`evaluated_series_by_series`]; returns their events by rule index, each
    /// rule's in label order, as the rule-by-rule evaluation gives them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn evaluate(
        &mut self,
        group: &Group,
        states: &mut [RuleState],
        at: i64,
        stale_after: i64,
        store: &SeriesStore,
        journal: &StateJournal,
    ) -> Vec<(usize, AlertEvent)> {
        self.plan(group, states);
        for (state, planned) in states.iter_mut().zip(&self.planned_from) {
            if let (RuleState::Metric(state), Some(_)) = (state, planned) {
                state.prepare_attention();
            }
        }
        let mut events = Vec::new();
        let mut tagged = Vec::new();
        let mut visiting = None;
        for &(slot, rule_index, index) in &self.visits {
            let (rule_index, index) = (rule_index as usize, index as usize);
            let (rule, RuleState::Metric(state)) =
                (&group.rules[rule_index], &mut states[rule_index])
            else {
                continue;
            };
            let RuleKind::Metric(metric) = &rule.kind else {
                continue;
            };
            if !state.due_at_tick(index, evaluated_on_arrival(metric)) {
                continue;
            }
            if visiting != Some(slot) {
                visiting = Some(slot);
                self.measured.clear();
            }
            let Some(series) = store.get(slot) else {
                continue;
            };
            let condition = &metric.condition;
            let subject = condition.subject;
            let value = match self.measured.iter().find(|(done, _)| *done == subject) {
                Some(&(_, value)) => value,
                None => {
                    let value = series.measure(subject, at, stale_after);
                    self.measured.push((subject, value));
                    value
                }
            };
            let holds = value.is_some_and(|v| condition.comparison.holds(v, condition.threshold));
            // Most series hold no alert and do not meet the condition.
            if !holds && !state.needs_attention(index) {
                continue;
            }
            let rule_ref = RuleRef {
                group: &group.name,
                rule,
                journal,
            };
            state.step_series(index, series, rule_ref, at, value, holds, &mut events);
            tagged.extend(events.drain(..).map(|event| (rule_index, event)));
        }
        tagged.sort_by(|(a_rule, a), (b_rule, b)| {
            a_rule
                .cmp(b_rule)
                .then_with(|| label_order(&a.labels, &b.labels))
        });
        tagged
    }

    /// Plans the visits anew if the series of a rule in the pass changed.
    fn plan(&mut self, group: &Group, states: &[RuleState]) {
        let generations: Vec<Option<u64>> = group
            .rules
            .iter()
            .zip(states)
            .map(|(rule, state)| match (&rule.kind, state) {
                (RuleKind::Metric(metric), RuleState::Metric(state))
                    if evaluated_series_by_series(metric) =>
                {
                    Some(state.generation())
                }
                _ => None,
            })
            .collect();
        if generations == self.planned_from {
            return;
        }
        self.visits.clear();
        for (rule_index, state) in states.iter().enumerate() {
            if let (Some(_), RuleState::Metric(state)) = (generations[rule_index], state) {
                self.visits.extend(
                    state
                        .member_slots()
                        .map(|(index, slot)| (slot, rule_index as u32, index as u32)),
                );
            }
        }
        self.visits.sort_unstable();
        self.planned_from = generations;
    }
}
