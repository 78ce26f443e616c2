//! The YAML mapping of rule files, the first step of reading them: serde structs
//! that keep each value's location and reject unknown keys, validated into the
//! runtime rule set by the rest of `parse`.

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;

/// A rule file: `groups: [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) groups: Vec<Spanned<RawGroup>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    /// Unique across all rule files; with the alert name it identifies a rule's
    /// state across reloads.
    pub(super) name: Spanned<String>,
    /// Evaluation cadence in event time; 30s when absent.
    #[serde(default)]
    pub(super) interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rules: Vec<Spanned<RawRule>>,
}

/// A metric rule (`metric` + `condition`) or a log rule (`logs` + `type`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) alert: Spanned<String>,
    /// Metric rules: the sample name.
    #[serde(default)]
    pub(super) metric: Option<Spanned<String>>,
    /// Metric rules: label conditions, `value`, `"=~regex"`, `"!~regex"`, `"!=value"`.
    #[serde(default, rename = "match")]
    pub(super) matchers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Metric rules: `value > 4` or `avg(5m) > 4`.
    #[serde(default)]
    pub(super) condition: Option<Spanned<String>>,
    /// Metric rules: labels whose series combine into one alert per group.
    #[serde(default)]
    pub(super) by: Option<Spanned<Vec<Spanned<String>>>>,
    /// Metric rules: how the series combine, `sum` (default with `by`), `avg`,
    /// `min`, `max` or `count`.
    #[serde(default)]
    pub(super) aggregate: Option<Spanned<String>>,
    /// Log rules: which lines count.
    #[serde(default)]
    pub(super) logs: Option<Spanned<RawLogs>>,
    /// Log rules: `frequency` (default), `any`, `spike`, `flatline`, `new_value`
    /// or `cardinality`.
    #[serde(default, rename = "type")]
    pub(super) trigger: Option<Spanned<String>>,
    /// Log rules of type `frequency`, `any` and `flatline`: `{count, window}`.
    #[serde(default)]
    pub(super) threshold: Option<Spanned<RawThreshold>>,
    /// Log rules of type `spike`: `{window, baseline, ratio, min_count}`.
    #[serde(default)]
    pub(super) spike: Option<Spanned<RawSpike>>,
    /// Log rules of type `new_value`: `{field, lookback, window, learn}`.
    #[serde(default)]
    pub(super) new_value: Option<Spanned<RawNewValue>>,
    /// Log rules of type `cardinality`: `{field, max, window}`.
    #[serde(default)]
    pub(super) cardinality: Option<Spanned<RawCardinality>>,
    /// Log rules: fields that split the count into one alert per value.
    #[serde(default)]
    pub(super) group_by: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default, rename = "for")]
    pub(super) for_duration: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) keep_firing_for: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub(super) annotations: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogs {
    /// Only lines of this dataset (`event.dataset`) count.
    #[serde(default)]
    pub(super) dataset: Option<Spanned<String>>,
    /// Only lines passing this filter count: `message =~ "ERROR" and ...`.
    #[serde(default, rename = "match")]
    pub(super) filter: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThreshold {
    #[serde(default)]
    pub(super) count: Option<Spanned<u64>>,
    #[serde(default)]
    pub(super) window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpike {
    /// The recent window whose lines are counted.
    #[serde(default)]
    pub(super) window: Option<Spanned<String>>,
    /// The window just before it whose rate is the norm.
    #[serde(default)]
    pub(super) baseline: Option<Spanned<String>>,
    /// How many times the baseline rate the recent rate must reach.
    #[serde(default)]
    pub(super) ratio: Option<Spanned<f64>>,
    /// Fewest lines in the recent window that can be a spike (default 1).
    #[serde(default)]
    pub(super) min_count: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNewValue {
    /// The field whose values are remembered.
    #[serde(default)]
    pub(super) field: Option<Spanned<String>>,
    /// How long a value is remembered after it was last seen.
    #[serde(default)]
    pub(super) lookback: Option<Spanned<String>>,
    /// How long the alert of a new value stays active (default 5m).
    #[serde(default)]
    pub(super) window: Option<Spanned<String>>,
    /// How long after the evaluator starts values are only learned (default:
    /// `lookback`).
    #[serde(default)]
    pub(super) learn: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCardinality {
    /// The field whose distinct values are counted.
    #[serde(default)]
    pub(super) field: Option<Spanned<String>>,
    /// Most distinct values that do not fire.
    #[serde(default)]
    pub(super) max: Option<Spanned<u64>>,
    /// The window the values are counted in.
    #[serde(default)]
    pub(super) window: Option<Spanned<String>>,
}

/// The fields of a raw rule that say when a log rule fires.
#[derive(Debug)]
pub(super) struct RawTrigger {
    pub(super) name: Option<Spanned<String>>,
    pub(super) threshold: Option<Spanned<RawThreshold>>,
    pub(super) spike: Option<Spanned<RawSpike>>,
    pub(super) new_value: Option<Spanned<RawNewValue>>,
    pub(super) cardinality: Option<Spanned<RawCardinality>>,
}

impl RawTrigger {
    /// The parameter blocks that were given, by key, with their locations.
    pub(super) fn blocks(&self) -> [(&'static str, Option<Location>); 4] {
        [
            ("threshold", self.threshold.as_ref().map(|t| t.referenced)),
            ("spike", self.spike.as_ref().map(|t| t.referenced)),
            ("new_value", self.new_value.as_ref().map(|t| t.referenced)),
            (
                "cardinality",
                self.cardinality.as_ref().map(|t| t.referenced),
            ),
        ]
    }
}
