//! Validation of a metric rule's own fields (`metric`, `match`, `condition`, `by`,
//! `aggregate`) into the [`MetricRule`] the evaluator selects series with.

use super::checker::{Checker, is_label_name};
use crate::condition::Condition;
use crate::model::{AggregateFunction, Aggregation, MetricRule};
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;

impl Checker {
    pub(super) fn metric_rule(
        &mut self,
        context: &str,
        location: Location,
        metric: Spanned<String>,
        matchers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
        condition: Option<Spanned<String>>,
        aggregate_location: Option<Location>,
    ) -> Option<MetricRule> {
        if metric.value.trim().is_empty() {
            return self.fail(
                metric.referenced,
                format!("{context}`metric` must not be empty"),
            );
        }
        let parsed_matchers = self.label_matchers(context, matchers);
        let Some(condition) = condition else {
            return self.fail(
                location,
                format!("{context}a metric rule needs a `condition` such as `value > 0`"),
            );
        };
        let parsed = match Condition::parse(&condition.value) {
            Ok(parsed) => {
                if let (true, Some(location)) = (parsed.is_absent(), aggregate_location) {
                    return self.fail(
                        location,
                        format!(
                            "{context}`absent` watches each series: it cannot be combined with \
                             `by` or `aggregate`"
                        ),
                    );
                }
                parsed
            }
            Err(error) => {
                return self.fail(
                    condition.referenced,
                    format!("{context}invalid condition `{}`: {error}", condition.value),
                );
            }
        };
        Some(MetricRule {
            metric: metric.value,
            matchers: parsed_matchers,
            condition: parsed,
            aggregation: None,
        })
    }

    /// `by` and `aggregate` of a metric rule: `Some(None)` when neither is given.
    pub(super) fn aggregation(
        &mut self,
        context: &str,
        by: Option<Spanned<Vec<Spanned<String>>>>,
        aggregate: Option<Spanned<String>>,
    ) -> Option<Option<Aggregation>> {
        if by.is_none() && aggregate.is_none() {
            return Some(None);
        }
        let function = match &aggregate {
            None => AggregateFunction::Sum,
            Some(name) => {
                let known = AggregateFunction::ALL
                    .into_iter()
                    .find(|function| function.name() == name.value);
                match known {
                    Some(function) => function,
                    None => {
                        return self.fail(
                            name.referenced,
                            format!(
                                "{context}unknown `aggregate` `{}` (expected sum, avg, min, max \
                                 or count)",
                                name.value
                            ),
                        );
                    }
                }
            }
        };
        let mut labels = Vec::new();
        for label in by.map(|b| b.value).unwrap_or_default() {
            if !is_label_name(&label.value) {
                return self.fail(
                    label.referenced,
                    format!("{context}invalid label name `{}` in `by`", label.value),
                );
            }
            labels.push(label.value);
        }
        labels.sort();
        labels.dedup();
        Some(Some(Aggregation {
            function,
            by: labels,
        }))
    }
}
