//! The validated rule set: groups of metric and log rules, as the alert stage runs
//! them and as the rules CLI prints them. Built only by parsing rule files
//! (`RuleSet::from_files`, `load_dir`), so every value here has been checked.

use super::condition::Condition;
use super::log_filter::{LogField, LogFilter};
use super::template::Template;
use regex::Regex;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use vigil_config::duration::format_duration;

/// All rule groups of all rule files, in file-name order then file order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub(crate) groups: Vec<Group>,
}

impl RuleSet {
    /// The groups, in file-name order then in the order of each file.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Number of rules in all groups.
    pub fn rule_count(&self) -> usize {
        self.groups.iter().map(|group| group.rules.len()).sum()
    }

    /// Every rule with its group.
    pub fn rules(&self) -> impl Iterator<Item = (&Group, &Rule)> {
        self.groups
            .iter()
            .flat_map(|group| group.rules.iter().map(move |rule| (group, rule)))
    }

    /// The rule named `alert` in group `group`, with its group.
    pub fn find(&self, group: &str, alert: &str) -> Option<(&Group, &Rule)> {
        let group = self.groups.iter().find(|g| g.name == group)?;
        let rule = group.rules.iter().find(|r| r.alert == alert)?;
        Some((group, rule))
    }
}

/// A named group of rules evaluated at one cadence. Group names are unique in a
/// rule set, so `(group, alert)` names a rule.
#[derive(Debug, Clone)]
pub struct Group {
    pub(crate) name: String,
    pub(crate) file: String,
    pub(crate) interval: Duration,
    pub(crate) rules: Vec<Rule>,
}

impl Group {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The rule file the group is defined in.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Evaluation cadence, in event time.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// One alerting rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) alert: String,
    pub(crate) kind: RuleKind,
    pub(crate) for_duration: Duration,
    pub(crate) keep_firing_for: Duration,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, Template>,
    /// Line and column of the rule in its file.
    pub(crate) location: (u64, u64),
}

impl Rule {
    /// The alert name (`alertname` label of its alerts).
    pub fn alert(&self) -> &str {
        &self.alert
    }

    pub fn kind(&self) -> &RuleKind {
        &self.kind
    }

    /// How long the condition must hold before the alert fires.
    pub fn for_duration(&self) -> Duration {
        self.for_duration
    }

    /// How long the alert keeps firing after the condition stopped holding.
    pub fn keep_firing_for(&self) -> Duration {
        self.keep_firing_for
    }

    /// Labels added to every alert of the rule.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Annotation templates, by annotation name.
    pub fn annotations(&self) -> &BTreeMap<String, Template> {
        &self.annotations
    }

    /// Line and column of the rule in its file.
    pub fn location(&self) -> (u64, u64) {
        self.location
    }
}

/// One line per rule, for `rules check` output:
/// `HostHighLoad: host.load.1m avg(5m) > 8 for 10m`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.alert, self.kind)?;
        if !self.for_duration.is_zero() {
            write!(f, " for {}", format_duration(self.for_duration))?;
        }
        if !self.keep_firing_for.is_zero() {
            write!(
                f,
                " keep_firing_for {}",
                format_duration(self.keep_firing_for)
            )?;
        }
        Ok(())
    }
}

/// What a rule watches.
#[derive(Debug, Clone)]
pub enum RuleKind {
    Metric(MetricRule),
    Log(LogRule),
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleKind::Metric(rule) => {
                f.write_str(&rule.metric)?;
                if !rule.matchers.is_empty() {
                    let matchers: Vec<String> =
                        rule.matchers.iter().map(ToString::to_string).collect();
                    write!(f, "{{{}}}", matchers.join(","))?;
                }
                if let Some(aggregation) = &rule.aggregation {
                    write!(f, " {aggregation} of")?;
                }
                write!(f, " {}", rule.condition)
            }
            RuleKind::Log(rule) => {
                f.write_str("logs")?;
                if let Some(dataset) = &rule.dataset {
                    write!(f, " of {dataset}")?;
                }
                if let Some(filter) = &rule.filter {
                    write!(f, " where {filter}")?;
                }
                write!(f, " {}", rule.trigger)?;
                if !rule.group_by.is_empty() {
                    let names: Vec<&str> = rule.group_by.iter().map(LogField::name).collect();
                    write!(f, " by {}", names.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// A rule on samples of one metric.
#[derive(Debug, Clone)]
pub struct MetricRule {
    pub(crate) metric: String,
    pub(crate) matchers: Vec<LabelMatcher>,
    pub(crate) condition: Condition,
    pub(crate) aggregation: Option<Aggregation>,
}

impl MetricRule {
    /// The sample name the rule watches.
    pub fn metric(&self) -> &str {
        &self.metric
    }

    pub fn matchers(&self) -> &[LabelMatcher] {
        &self.matchers
    }

    pub fn condition(&self) -> &Condition {
        &self.condition
    }

    /// How the values of several series combine into one, when they do.
    pub fn aggregation(&self) -> Option<&Aggregation> {
        self.aggregation.as_ref()
    }
}

/// `by: [host]` and `aggregate: sum` on a metric rule: the condition's left side
/// is computed per series, then combined across the series that share the `by`
/// labels (all series, without `by`), and the comparison applies to each
/// combination, one alert per group, as `sum by (host) (...) > x` in Prometheus.
///
/// The alert stage receives the samples of a resource in one partition, so a
/// group reaches across the series of one resource (interfaces, CPUs, file
/// systems of a host) but not across hosts when the stage runs as several
/// consumers: aggregates across hosts belong in derive definitions, whose
/// output a rule then watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregation {
    pub(crate) function: AggregateFunction,
    /// Labels that identify a group; the alert's labels are these.
    pub(crate) by: Vec<String>,
}

impl Aggregation {
    pub fn function(&self) -> AggregateFunction {
        self.function
    }

    pub fn by(&self) -> &[String] {
        &self.by
    }
}

/// `sum by (host, mountpoint)`.
impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function.name())?;
        if !self.by.is_empty() {
            write!(f, " by ({})", self.by.join(", "))?;
        }
        Ok(())
    }
}

/// How the values of the series of a group combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFunction {
    Sum,
    Avg,
    Min,
    Max,
    /// The number of series with a value.
    Count,
}

impl AggregateFunction {
    pub(crate) const ALL: [AggregateFunction; 5] = [
        AggregateFunction::Sum,
        AggregateFunction::Avg,
        AggregateFunction::Min,
        AggregateFunction::Max,
        AggregateFunction::Count,
    ];

    /// The name written in `aggregate:`.
    pub fn name(self) -> &'static str {
        match self {
            AggregateFunction::Sum => "sum",
            AggregateFunction::Avg => "avg",
            AggregateFunction::Min => "min",
            AggregateFunction::Max => "max",
            AggregateFunction::Count => "count",
        }
    }

    /// The combination of `values`; `None` when there are none.
    pub(crate) fn apply(self, values: &[f64]) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        let iter = values.iter().copied();
        Some(match self {
            AggregateFunction::Sum => iter.sum(),
            AggregateFunction::Avg => iter.sum::<f64>() / values.len() as f64,
            AggregateFunction::Min => iter.fold(f64::INFINITY, f64::min),
            AggregateFunction::Max => iter.fold(f64::NEG_INFINITY, f64::max),
            AggregateFunction::Count => values.len() as f64,
        })
    }
}

/// A condition on one series label, from `match:`. Regexes are anchored at both
/// ends, as in Prometheus; a missing label reads as empty.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pub(crate) name: String,
    pub(crate) test: LabelTest,
}

#[derive(Debug, Clone)]
pub(crate) enum LabelTest {
    Equal(String),
    NotEqual(String),
    Matches(Regex),
    NotMatches(Regex),
}

impl LabelMatcher {
    /// The label it tests.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `value` (empty for a missing label) passes.
    pub fn matches(&self, value: &str) -> bool {
        match &self.test {
            LabelTest::Equal(expected) => value == expected,
            LabelTest::NotEqual(expected) => value != expected,
            LabelTest::Matches(regex) => regex.is_match(value),
            LabelTest::NotMatches(regex) => !regex.is_match(value),
        }
    }
}

/// Prometheus selector notation: `ifName=~"Te.*"`.
impl fmt::Display for LabelMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, value) = match &self.test {
            LabelTest::Equal(value) => ("=", value.as_str()),
            LabelTest::NotEqual(value) => ("!=", value.as_str()),
            LabelTest::Matches(regex) => ("=~", unanchored(regex)),
            LabelTest::NotMatches(regex) => ("!~", unanchored(regex)),
        };
        write!(f, "{}{op}{value:?}", self.name)
    }
}

/// The regex as written, without the anchors added when it was compiled.
fn unanchored(regex: &Regex) -> &str {
    let text = regex.as_str();
    text.strip_prefix("^(?:")
        .and_then(|inner| inner.strip_suffix(")$"))
        .unwrap_or(text)
}

/// A rule on log lines.
#[derive(Debug, Clone)]
pub struct LogRule {
    pub(crate) dataset: Option<String>,
    pub(crate) filter: Option<LogFilter>,
    pub(crate) trigger: LogTrigger,
    pub(crate) group_by: Vec<LogField>,
}

impl LogRule {
    /// Only lines of this dataset count, when set.
    pub fn dataset(&self) -> Option<&str> {
        self.dataset.as_deref()
    }

    /// Only lines that pass this filter count, when set.
    pub fn filter(&self) -> Option<&LogFilter> {
        self.filter.as_ref()
    }

    pub fn trigger(&self) -> &LogTrigger {
        &self.trigger
    }

    /// Field names whose values split the count into one alert each.
    pub fn group_by(&self) -> impl Iterator<Item = &str> {
        self.group_by.iter().map(LogField::name)
    }
}

/// When a log rule's condition holds. Every window is in event time and ends at
/// the evaluation: `(at - window, at]`.
#[derive(Debug, Clone, PartialEq)]
pub enum LogTrigger {
    /// At least `count` matching lines within `window`.
    Frequency { count: u64, window: Duration },
    /// Any matching line within `window`: `frequency` with a count of 1; the
    /// window says how long the alert stays active after the last such line.
    Any { window: Duration },
    /// At least `min_count` lines within `window`, at a rate at least `ratio`
    /// times the rate of the `baseline` just before the window. A baseline without
    /// lines counts as one line, so the ratio stays finite and a burst out of
    /// silence still needs `min_count`. Holds only once the rule has watched the
    /// whole baseline, so a fresh start does not compare against nothing.
    Spike {
        window: Duration,
        baseline: Duration,
        ratio: f64,
        min_count: u64,
    },
    /// Fewer than `count` matching lines within `window`. A key seen once stays
    /// watched, so a source that goes fully silent fires; it holds only once the
    /// rule has watched the key for a whole window (since its first line, or
    /// since the evaluator started), so a fresh start does not page. Without
    /// `group_by` the one key is watched from the start.
    Flatline { count: u64, window: Duration },
    /// A value of `field` not seen in the `lookback` before it: one alert per
    /// group key and new value (the value is an alert label), active for
    /// `window` after the line. Values are remembered with the time they were last
    /// seen, forgotten after `lookback`, and at most
    /// [`MAX_REMEMBERED_VALUES`] per key (the least recently seen goes first and
    /// counts as new if it comes back). For `learn` after the evaluator starts
    /// values are only remembered, since everything would look new.
    NewValue {
        field: LogField,
        lookback: Duration,
        window: Duration,
        learn: Duration,
    },
    /// More than `max` distinct values of `field` within `window`. At most
    /// `max + 1` values are remembered per key, so the value compared (and shown
    /// by `{{ $value }}`) is at most `max + 1`.
    Cardinality {
        field: LogField,
        max: u64,
        window: Duration,
    },
}

/// Most values of `field` a `new_value` rule remembers per group key.
pub const MAX_REMEMBERED_VALUES: usize = 10_000;

/// Most distinct event times of matching lines a log rule keeps per key (lines
/// of one time are kept as one count), or the rule's `count` (`min_count` of a
/// `spike`) when larger. Beyond it the oldest times are merged into the next
/// later one: their lines stay counted, as if they had come at that later time.
/// Whether `frequency`, `any` and `flatline` hold stays exact, since a window
/// with that many distinct times holds at least the threshold; their
/// `{{ $value }}` may then count such merged lines that have left the window,
/// and a `spike`'s baseline keeps them longer than it would.
pub const MAX_LINE_TIMES: usize = 10_000;

impl LogTrigger {
    /// The `type:` name of the trigger.
    pub fn name(&self) -> &'static str {
        match self {
            LogTrigger::Frequency { .. } => "frequency",
            LogTrigger::Any { .. } => "any",
            LogTrigger::Spike { .. } => "spike",
            LogTrigger::Flatline { .. } => "flatline",
            LogTrigger::NewValue { .. } => "new_value",
            LogTrigger::Cardinality { .. } => "cardinality",
        }
    }

    /// The field whose values the trigger remembers, for `new_value` and
    /// `cardinality`.
    pub(crate) fn field(&self) -> Option<&LogField> {
        match self {
            LogTrigger::NewValue { field, .. } | LogTrigger::Cardinality { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }
}

impl fmt::Display for LogTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTrigger::Frequency { count, window } => {
                write!(f, "count >= {count} in {}", format_duration(*window))
            }
            LogTrigger::Any { window } => write!(f, "any in {}", format_duration(*window)),
            LogTrigger::Spike {
                window,
                baseline,
                ratio,
                min_count,
            } => write!(
                f,
                "spike: count >= {min_count} in {} at >= {ratio}x the rate of the {} before",
                format_duration(*window),
                format_duration(*baseline)
            ),
            LogTrigger::Flatline { count, window } => {
                write!(
                    f,
                    "flatline: count < {count} in {}",
                    format_duration(*window)
                )
            }
            LogTrigger::NewValue {
                field,
                lookback,
                window,
                learn,
            } => write!(
                f,
                "new value of {} unseen for {} (active {}, learning {})",
                field.name(),
                format_duration(*lookback),
                format_duration(*window),
                format_duration(*learn)
            ),
            LogTrigger::Cardinality { field, max, window } => write!(
                f,
                "distinct {} > {max} in {}",
                field.name(),
                format_duration(*window)
            ),
        }
    }
}
