//! Alert rules: the rule format kept in git (`rules/*.yaml`), its parser and
//! validator, the event-time rules engine the `alert` stage runs over metric and
//! log batches, and the rule unit tests CI runs before rules are pushed to etcd.
//! The derive stage's definition files share its parser and label matchers.
//!
//! ```text
//! rules/*.yaml ─► RuleSet::from_files / load_dir ─► Evaluator ◄─ MetricBatch, LogBatch
//!                                                      │
//!                                                      └─► AlertEvent ─► alerts topic, pagers
//! ```
//!
//! Everything here is pure and deterministic: no I/O except reading rule and test
//! files, no clocks (time is the event time of the data), so the same batches
//! always give the same alerts.

mod condition;
mod error;
mod evaluate;
mod lexer;
mod log_filter;
mod model;
mod parse;
mod rule_tests;
mod template;

pub use condition::Condition;
pub use error::{RuleError, RuleErrors};
pub use evaluate::{Evaluator, MAX_CATCH_UP_TICKS, RefusedSeries, STALE_AFTER, Source};
pub use log_filter::{LogField, LogFilter};
pub use model::{
    AggregateFunction, Aggregation, Group, LabelMatcher, LogRule, LogTrigger, MAX_LINE_TIMES,
    MAX_REMEMBERED_VALUES, MetricRule, Rule, RuleKind, RuleSet,
};
pub use parse::load_dir;
pub use parse::{Checker, from_yaml};
pub use rule_tests::{TestFailure, TestReport, run_rule_tests};
pub use template::Template;
pub use vigil_config::duration::{DurationError, format_duration, parse_duration};

/// The rule set of one YAML text, for tests; panics with every error.
#[cfg(test)]
pub(crate) fn rule_set_for_test(yaml: &str) -> RuleSet {
    let files = std::collections::BTreeMap::from([("test.yaml".to_owned(), yaml.to_owned())]);
    RuleSet::from_files(&files).unwrap_or_else(|errors| {
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("{}", messages.join("\n"))
    })
}
