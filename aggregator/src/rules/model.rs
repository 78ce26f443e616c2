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
use vigil_runtime::duration::format_duration;

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
    pub(crate) fn matches(&self, value: &str) -> bool {
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

    /// The window counted over, for either trigger.
    pub(crate) fn window(&self) -> Duration {
        match self.trigger {
            LogTrigger::Frequency { window, .. } | LogTrigger::Any { window } => window,
        }
    }

    /// Number of lines in the window that makes the condition true.
    pub(crate) fn threshold(&self) -> u64 {
        match self.trigger {
            LogTrigger::Frequency { count, .. } => count,
            LogTrigger::Any { .. } => 1,
        }
    }
}

/// When a log rule's condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTrigger {
    /// At least `count` matching lines within `window`.
    Frequency { count: u64, window: Duration },
    /// Any matching line within `window`: `frequency` with a count of 1; the
    /// window says how long the alert stays active after the last such line.
    Any { window: Duration },
}

impl fmt::Display for LogTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTrigger::Frequency { count, window } => {
                write!(f, "count >= {count} in {}", format_duration(*window))
            }
            LogTrigger::Any { window } => write!(f, "any in {}", format_duration(*window)),
        }
    }
}
