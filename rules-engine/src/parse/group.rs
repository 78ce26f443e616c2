//! Validation of a rule file's groups and of the fields every rule has (`alert`,
//! `for`, `keep_firing_for`, `labels`, `annotations`), after the YAML mapping;
//! each rule's own fields go on to the metric or log rule checks.

use super::checker::Checker;
use super::raw::{RawGroup, RawRule, RawTrigger};
use crate::model::{Group, MetricRule, Rule, RuleKind};
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::time::Duration;

/// Group evaluation cadence when `interval` is not given.
pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

impl Checker {
    pub(super) fn group(&mut self, raw: RawGroup) -> Option<Group> {
        let name = raw.name.value;
        if name.trim().is_empty() {
            return self.fail(raw.name.referenced, "a group needs a `name`");
        }
        let context = format!("group `{name}`: ");
        let interval = self.duration(
            &context,
            "interval",
            raw.interval.as_ref(),
            DEFAULT_INTERVAL,
        );
        if interval == Some(Duration::ZERO) {
            let location = raw
                .interval
                .as_ref()
                .map_or(Location::UNKNOWN, |i| i.referenced);
            self.fail::<()>(
                location,
                format!("{context}`interval` must be longer than 0s"),
            );
        }
        let mut rules: Vec<Rule> = Vec::new();
        let mut seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for raw_rule in raw.rules {
            let alert = raw_rule.value.alert.value.clone();
            if let Some((line, column)) = seen.get(&alert) {
                self.fail::<()>(
                    raw_rule.value.alert.referenced,
                    format!(
                        "{context}alert `{alert}` is defined twice in the group (first at \
                         {line}:{column})"
                    ),
                );
                continue;
            }
            let location = raw_rule.referenced;
            seen.insert(alert, (location.line(), location.column()));
            if let Some(rule) = self.rule(raw_rule) {
                rules.push(rule);
            }
        }
        Some(Group {
            name,
            file: self.file.clone(),
            interval: interval.filter(|i| !i.is_zero())?,
            rules,
        })
    }

    fn rule(&mut self, raw: Spanned<RawRule>) -> Option<Rule> {
        let location = raw.referenced;
        let raw = raw.value;
        let alert = raw.alert.value.clone();
        if alert.trim().is_empty() || alert.trim() != alert {
            return self.fail(
                raw.alert.referenced,
                format!("alert name `{alert}` must not be empty or start or end with spaces"),
            );
        }
        let context = format!("rule `{alert}`: ");
        let errors_before = self.errors.len();
        let for_duration =
            self.duration(&context, "for", raw.for_duration.as_ref(), Duration::ZERO);
        let keep_firing_for = self.duration(
            &context,
            "keep_firing_for",
            raw.keep_firing_for.as_ref(),
            Duration::ZERO,
        );
        let labels = self.labels(&context, raw.labels);
        let annotations = self.annotations(&context, raw.annotations);
        let kind = match (raw.metric, raw.logs) {
            (Some(metric), None) => {
                for (field, location) in [
                    ("type", raw.trigger.as_ref().map(|t| t.referenced)),
                    ("threshold", raw.threshold.as_ref().map(|t| t.referenced)),
                    ("spike", raw.spike.as_ref().map(|t| t.referenced)),
                    ("new_value", raw.new_value.as_ref().map(|t| t.referenced)),
                    (
                        "cardinality",
                        raw.cardinality.as_ref().map(|t| t.referenced),
                    ),
                    ("group_by", raw.group_by.as_ref().map(|g| g.referenced)),
                ] {
                    if let Some(location) = location {
                        self.fail::<()>(
                            location,
                            format!("{context}`{field}` is only for log rules (with `logs`)"),
                        );
                    }
                }
                let aggregate_location = raw
                    .by
                    .as_ref()
                    .map(|b| b.referenced)
                    .or(raw.aggregate.as_ref().map(|a| a.referenced));
                let aggregation = self.aggregation(&context, raw.by, raw.aggregate);
                self.metric_rule(
                    &context,
                    location,
                    metric,
                    raw.matchers,
                    raw.condition,
                    aggregate_location,
                )
                .zip(aggregation)
                .map(|(rule, aggregation)| {
                    RuleKind::Metric(MetricRule {
                        aggregation,
                        ..rule
                    })
                })
            }
            (None, Some(logs)) => {
                for (field, location) in [
                    ("condition", raw.condition.as_ref().map(|c| c.referenced)),
                    ("match", raw.matchers.as_ref().map(|m| m.referenced)),
                    ("by", raw.by.as_ref().map(|b| b.referenced)),
                    ("aggregate", raw.aggregate.as_ref().map(|a| a.referenced)),
                ] {
                    if let Some(location) = location {
                        self.fail::<()>(
                            location,
                            format!(
                                "{context}`{field}` is only for metric rules (log rules use \
                                 `logs.match`, `type`, `threshold` and `group_by`)"
                            ),
                        );
                    }
                }
                let trigger = RawTrigger {
                    name: raw.trigger,
                    threshold: raw.threshold,
                    spike: raw.spike,
                    new_value: raw.new_value,
                    cardinality: raw.cardinality,
                };
                self.log_rule(&context, location, logs, trigger, raw.group_by)
                    .map(RuleKind::Log)
            }
            (Some(_), Some(logs)) => self.fail(
                logs.referenced,
                format!("{context}a rule has either `metric` or `logs`, not both"),
            ),
            (None, None) => self.fail(
                location,
                format!("{context}needs `metric` (a metric rule) or `logs` (a log rule)"),
            ),
        };
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Rule {
            alert,
            kind: kind?,
            for_duration: for_duration?,
            keep_firing_for: keep_firing_for?,
            labels: labels?,
            annotations: annotations?,
            location: (location.line(), location.column()),
        })
    }
}
