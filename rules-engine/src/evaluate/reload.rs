//! Hot reload of the rules engine: a new rule set replaces the old one, and the
//! state of each rule (pending timers, firing alerts, the series it selects)
//! carries over by group and alert name, or resolves when its rule went away.

use super::alert::RuleRef;
use super::series::SeriesStore;
use super::series_pass::SeriesPass;
use super::{Evaluator, GroupState, RuleState};
use crate::model::{Rule, RuleKind, RuleSet};
use std::collections::HashMap;
use vigil_proto::v1::AlertEvent;

impl RuleState {
    /// This state, carried over from `old` to the changed rule `new` of the same
    /// group and alert name; a fresh state when the old one cannot apply.
    fn adopt(
        mut self,
        old: RuleRef<'_>,
        new: RuleRef<'_>,
        store: &SeriesStore,
        at: i64,
        out: &mut Vec<AlertEvent>,
    ) -> Self {
        match (&mut self, &old.rule.kind, &new.rule.kind) {
            (RuleState::Metric(state), RuleKind::Metric(before), RuleKind::Metric(after))
                if before.metric == after.metric =>
            {
                state.adopt(old, new, after, store, at, out);
                self
            }
            (RuleState::Log(state), RuleKind::Log(before), RuleKind::Log(after))
                if before.group_by == after.group_by =>
            {
                state.adopt(old, new, at, out);
                self
            }
            _ => {
                self.resolve_all(old, at, out);
                RuleState::new(new.rule)
            }
        }
    }
}

impl Evaluator {
    /// Replaces the rules (hot reload), keeping state by group and alert name:
    /// pending timers and firing alerts of rules that stay carry over, as in
    /// Prometheus' `CopyState`, also when the rule changed. Returns the
    /// `RESOLVED` events of firing alerts that went away: those of removed rules,
    /// of series a changed rule no longer selects, and those whose labels changed.
    pub fn replace_rules(&mut self, rules: RuleSet) -> Vec<AlertEvent> {
        let at = self.clock.unwrap_or(0);
        let mut out = Vec::new();
        let old_rules = std::mem::replace(&mut self.rules, rules);
        let mut old_states: HashMap<(&str, &str), (&Rule, RuleState)> = HashMap::new();
        let mut old_groups: HashMap<&str, (Option<i64>, Option<i64>)> = HashMap::new();
        for (group, state) in old_rules
            .groups
            .iter()
            .zip(std::mem::take(&mut self.groups))
        {
            old_groups.insert(&group.name, (state.last_tick, state.evaluated_to));
            for (rule, rule_state) in group.rules.iter().zip(state.rules) {
                old_states.insert((&group.name, &rule.alert), (rule, rule_state));
            }
        }
        for group in &self.rules.groups {
            let (last_tick, evaluated_to) =
                old_groups.remove(group.name.as_str()).unwrap_or_default();
            let rules = group
                .rules
                .iter()
                .map(|rule| {
                    let new = RuleRef {
                        group: &group.name,
                        rule,
                        journal: &self.journal,
                    };
                    match old_states.remove(&(group.name.as_str(), rule.alert.as_str())) {
                        Some((old_rule, state)) => {
                            let old = RuleRef {
                                group: &group.name,
                                rule: old_rule,
                                journal: &self.journal,
                            };
                            state.adopt(old, new, &self.store, at, &mut out)
                        }
                        None => RuleState::new(rule),
                    }
                })
                .collect();
            self.groups.push(GroupState {
                last_tick,
                evaluated_to,
                rules,
                series_pass: SeriesPass::default(),
            });
        }
        // What is left belongs to removed rules, in a stable order.
        let mut removed: Vec<_> = old_states.into_iter().collect();
        removed.sort_by(|a, b| a.0.cmp(&b.0));
        for ((group, _), (rule, state)) in removed {
            let rule = RuleRef {
                group,
                rule,
                journal: &self.journal,
            };
            state.resolve_all(rule, at, &mut out);
        }
        self.index();
        out
    }
}
