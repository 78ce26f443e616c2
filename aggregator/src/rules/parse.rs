//! Reading rule files: YAML into raw serde structs that reject unknown keys, then a
//! validation step that builds the runtime [`RuleSet`] and reports every problem
//! with its file, line and column. Rule files come from a local folder (`rules/`,
//! all-in-one mode, CI) or from etcd (pushed by the rules CLI, watched by the alert
//! stage); both go through [`RuleSet::from_files`].

use super::condition::Condition;
use super::error::RuleError;
use super::log_filter::{FilterError, LogField, LogFilter, compile_regex};
use super::model::{
    AggregateFunction, Aggregation, Group, LabelMatcher, LabelTest, LogRule, LogTrigger,
    MAX_REMEMBERED_VALUES, MetricRule, Rule, RuleKind, RuleSet,
};
use super::template::Template;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use vigil_runtime::duration::parse_duration;

/// Group evaluation cadence when `interval` is not given.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// How long a `type: any` log alert stays active after the last matching line
/// when `threshold.window` is not given.
const DEFAULT_ANY_WINDOW: Duration = Duration::from_secs(300);

/// A rule file: `groups: [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    groups: Vec<Spanned<RawGroup>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    /// Unique across all rule files; with the alert name it identifies a rule's
    /// state across reloads.
    name: Spanned<String>,
    /// Evaluation cadence in event time; 30s when absent.
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

/// A metric rule (`metric` + `condition`) or a log rule (`logs` + `type`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    alert: Spanned<String>,
    /// Metric rules: the sample name.
    #[serde(default)]
    metric: Option<Spanned<String>>,
    /// Metric rules: label conditions, `value`, `"=~regex"`, `"!~regex"`, `"!=value"`.
    #[serde(default, rename = "match")]
    matchers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// Metric rules: `value > 4` or `avg(5m) > 4`.
    #[serde(default)]
    condition: Option<Spanned<String>>,
    /// Metric rules: labels whose series combine into one alert per group.
    #[serde(default)]
    by: Option<Spanned<Vec<Spanned<String>>>>,
    /// Metric rules: how the series combine, `sum` (default with `by`), `avg`,
    /// `min`, `max` or `count`.
    #[serde(default)]
    aggregate: Option<Spanned<String>>,
    /// Log rules: which lines count.
    #[serde(default)]
    logs: Option<Spanned<RawLogs>>,
    /// Log rules: `frequency` (default), `any`, `spike`, `flatline`, `new_value`
    /// or `cardinality`.
    #[serde(default, rename = "type")]
    trigger: Option<Spanned<String>>,
    /// Log rules of type `frequency`, `any` and `flatline`: `{count, window}`.
    #[serde(default)]
    threshold: Option<Spanned<RawThreshold>>,
    /// Log rules of type `spike`: `{window, baseline, ratio, min_count}`.
    #[serde(default)]
    spike: Option<Spanned<RawSpike>>,
    /// Log rules of type `new_value`: `{field, lookback, window, learn}`.
    #[serde(default)]
    new_value: Option<Spanned<RawNewValue>>,
    /// Log rules of type `cardinality`: `{field, max, window}`.
    #[serde(default)]
    cardinality: Option<Spanned<RawCardinality>>,
    /// Log rules: fields that split the count into one alert per value.
    #[serde(default)]
    group_by: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default, rename = "for")]
    for_duration: Option<Spanned<String>>,
    #[serde(default)]
    keep_firing_for: Option<Spanned<String>>,
    #[serde(default)]
    labels: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    annotations: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    /// Only lines of this dataset (`event.dataset`) count.
    #[serde(default)]
    dataset: Option<Spanned<String>>,
    /// Only lines passing this filter count: `message =~ "ERROR" and ...`.
    #[serde(default, rename = "match")]
    filter: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    #[serde(default)]
    count: Option<Spanned<u64>>,
    #[serde(default)]
    window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpike {
    /// The recent window whose lines are counted.
    #[serde(default)]
    window: Option<Spanned<String>>,
    /// The window just before it whose rate is the norm.
    #[serde(default)]
    baseline: Option<Spanned<String>>,
    /// How many times the baseline rate the recent rate must reach.
    #[serde(default)]
    ratio: Option<Spanned<f64>>,
    /// Fewest lines in the recent window that can be a spike (default 1).
    #[serde(default)]
    min_count: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNewValue {
    /// The field whose values are remembered.
    #[serde(default)]
    field: Option<Spanned<String>>,
    /// How long a value is remembered after it was last seen.
    #[serde(default)]
    lookback: Option<Spanned<String>>,
    /// How long the alert of a new value stays active (default 5m).
    #[serde(default)]
    window: Option<Spanned<String>>,
    /// How long after the evaluator starts values are only learned (default:
    /// `lookback`).
    #[serde(default)]
    learn: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCardinality {
    /// The field whose distinct values are counted.
    #[serde(default)]
    field: Option<Spanned<String>>,
    /// Most distinct values that do not fire.
    #[serde(default)]
    max: Option<Spanned<u64>>,
    /// The window the values are counted in.
    #[serde(default)]
    window: Option<Spanned<String>>,
}

/// The fields of a raw rule that say when a log rule fires.
#[derive(Debug)]
struct RawTrigger {
    name: Option<Spanned<String>>,
    threshold: Option<Spanned<RawThreshold>>,
    spike: Option<Spanned<RawSpike>>,
    new_value: Option<Spanned<RawNewValue>>,
    cardinality: Option<Spanned<RawCardinality>>,
}

impl RawTrigger {
    /// The parameter blocks that were given, by key, with their locations.
    fn blocks(&self) -> [(&'static str, Option<Location>); 4] {
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

/// Log rule types, as written in `type:`.
const LOG_TYPES: &str = "frequency, any, spike, flatline, new_value or cardinality";

impl RuleSet {
    /// Parses and validates rule files given as file name -> YAML text. Either every
    /// file is valid, or all errors found are returned (each naming its file, line
    /// and column), so a bad push never half-applies.
    pub fn from_files(files: &BTreeMap<String, String>) -> Result<RuleSet, Vec<RuleError>> {
        let mut checker = Checker::default();
        let mut groups: Vec<Group> = Vec::new();
        let mut group_places: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in files {
            checker.file.clone_from(file);
            let raw: RawFile = match from_yaml(file, text) {
                Ok(Some(raw)) => raw,
                Ok(None) => continue,
                Err(error) => {
                    checker.errors.push(error);
                    continue;
                }
            };
            for raw_group in raw.groups {
                let location = raw_group.referenced;
                let name = raw_group.value.name.value.clone();
                if let Some(place) = group_places.get(&name) {
                    checker.fail::<()>(
                        raw_group.value.name.referenced,
                        format!("group `{name}` is already defined at {place}"),
                    );
                    continue;
                }
                group_places.insert(name, place(file, location));
                if let Some(group) = checker.group(raw_group.value) {
                    groups.push(group);
                }
            }
        }
        if checker.errors.is_empty() {
            Ok(RuleSet { groups })
        } else {
            Err(checker.errors)
        }
    }
}

/// Loads every rule file of a folder: `*.yaml` and `*.yml`, except rule-test files
/// (`*.test.yaml`, `*.test.yml`); each is named by its file name.
pub fn load_dir(dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
    let io_error = |source| {
        vec![RuleError::Io {
            file: dir.display().to_string(),
            source,
        }]
    };
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if !is_rule_file(name) || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| {
            vec![RuleError::Io {
                file: path.display().to_string(),
                source,
            }]
        })?;
        files.insert(name.to_owned(), text);
    }
    RuleSet::from_files(&files)
}

fn is_rule_file(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(".test.yaml")
        && !name.ends_with(".test.yml")
}

/// Deserializes a YAML document, or `None` when the text holds no document at all
/// (only blank lines and comments).
pub(crate) fn from_yaml<T: DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<Option<T>, RuleError> {
    let blank = text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    });
    if blank {
        return Ok(None);
    }
    serde_saphyr::from_str(text)
        .map(Some)
        .map_err(|error| RuleError::yaml(file, &error))
}

/// `file:line:column`, to point at an earlier definition.
pub(crate) fn place(file: &str, location: Location) -> String {
    format!("{file}:{}:{}", location.line(), location.column())
}

/// Validation of one file's raw structs, collecting errors instead of stopping at
/// the first.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    pub(crate) file: String,
    pub(crate) errors: Vec<RuleError>,
}

impl Checker {
    pub(crate) fn fail<T>(&mut self, location: Location, message: impl Into<String>) -> Option<T> {
        self.errors
            .push(RuleError::at(&self.file, location, message));
        None
    }

    /// A duration field, or `default` when absent.
    pub(crate) fn duration(
        &mut self,
        context: &str,
        field: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Option<Duration> {
        match value {
            None => Some(default),
            Some(value) => match parse_duration(&value.value) {
                Ok(duration) => Some(duration),
                Err(error) => self.fail(value.referenced, format!("{context}`{field}`: {error}")),
            },
        }
    }

    fn group(&mut self, raw: RawGroup) -> Option<Group> {
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

    fn labels(
        &mut self,
        context: &str,
        raw: BTreeMap<String, Spanned<String>>,
    ) -> Option<BTreeMap<String, String>> {
        let mut labels = BTreeMap::new();
        let mut valid = true;
        for (name, value) in raw {
            if name == "alertname" {
                valid = false;
                self.fail::<()>(
                    value.referenced,
                    format!(
                        "{context}label `alertname` is set from `alert` and cannot be overridden"
                    ),
                );
            } else if !is_label_name(&name) {
                valid = false;
                self.fail::<()>(
                    value.referenced,
                    format!(
                        "{context}invalid label name `{name}` (letters, digits, `_` and `.`, \
                         not starting with a digit)"
                    ),
                );
            } else {
                labels.insert(name, value.value);
            }
        }
        valid.then_some(labels)
    }

    fn annotations(
        &mut self,
        context: &str,
        raw: BTreeMap<String, Spanned<String>>,
    ) -> Option<BTreeMap<String, Template>> {
        let mut annotations = BTreeMap::new();
        let mut valid = true;
        for (name, value) in raw {
            match Template::parse(&value.value) {
                Ok(template) => {
                    annotations.insert(name, template);
                }
                Err(error) => {
                    valid = false;
                    self.fail::<()>(
                        value.referenced,
                        format!("{context}annotation `{name}`: {error}"),
                    );
                }
            }
        }
        valid.then_some(annotations)
    }

    /// Label conditions as written under `match:`: `value`, `"!=value"`,
    /// `"=~regex"`, `"!~regex"` (regexes anchored, as in Prometheus).
    pub(crate) fn label_matchers(
        &mut self,
        context: &str,
        matchers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    ) -> Vec<LabelMatcher> {
        let mut parsed_matchers = Vec::new();
        for (name, value) in matchers.map(|m| m.value).unwrap_or_default() {
            let text = value.value.as_str();
            let (test, regex_text) = if let Some(pattern) = text.strip_prefix("=~") {
                (None, Some((pattern, true)))
            } else if let Some(pattern) = text.strip_prefix("!~") {
                (None, Some((pattern, false)))
            } else if let Some(other) = text.strip_prefix("!=") {
                (Some(LabelTest::NotEqual(other.to_owned())), None)
            } else {
                (Some(LabelTest::Equal(text.to_owned())), None)
            };
            let test = match (test, regex_text) {
                (Some(test), _) => test,
                (None, Some((pattern, positive))) => {
                    // Compiled alone first so the error talks about the regex as written.
                    if let Err(reason) = compile_regex(pattern) {
                        self.fail::<()>(
                            value.referenced,
                            format!("{context}invalid regex `{pattern}`: {reason}"),
                        );
                        continue;
                    }
                    let Ok(anchored) = compile_regex(&format!("^(?:{pattern})$")) else {
                        continue;
                    };
                    if positive {
                        LabelTest::Matches(anchored)
                    } else {
                        LabelTest::NotMatches(anchored)
                    }
                }
                (None, None) => continue,
            };
            parsed_matchers.push(LabelMatcher { name, test });
        }
        parsed_matchers
    }

    fn metric_rule(
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
    fn aggregation(
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

    fn log_rule(
        &mut self,
        context: &str,
        location: Location,
        logs: Spanned<RawLogs>,
        trigger: RawTrigger,
        group_by: Option<Spanned<Vec<Spanned<String>>>>,
    ) -> Option<LogRule> {
        let RawLogs { dataset, filter } = logs.value;
        let filter = match filter {
            None => None,
            Some(text) => match LogFilter::parse(&text.value) {
                Ok(filter) => Some(filter),
                Err(FilterError::Regex { pattern, reason }) => {
                    return self.fail(
                        text.referenced,
                        format!("{context}invalid regex `{pattern}`: {reason}"),
                    );
                }
                Err(FilterError::Syntax(error)) => {
                    return self.fail(
                        text.referenced,
                        format!("{context}invalid log match `{}`: {error}", text.value),
                    );
                }
            },
        };
        let trigger = self.log_trigger(context, location, trigger)?;
        let mut fields = Vec::new();
        for field in group_by.map(|g| g.value).unwrap_or_default() {
            if field.value.trim().is_empty() {
                return self.fail(
                    field.referenced,
                    format!("{context}empty field name in `group_by`"),
                );
            }
            fields.push(LogField::from_name(&field.value));
        }
        Some(LogRule {
            dataset: dataset.map(|d| d.value),
            filter,
            trigger,
            group_by: fields,
        })
    }

    /// The `type` of a log rule with its parameter block: `threshold` for
    /// `frequency`, `any` and `flatline`, a block named after the type for the
    /// others. A block that does not belong to the type is an error, so a typo in
    /// `type` does not silently drop the parameters.
    fn log_trigger(
        &mut self,
        context: &str,
        location: Location,
        raw: RawTrigger,
    ) -> Option<LogTrigger> {
        let name = raw.name.as_ref().map_or("frequency", |t| t.value.as_str());
        let name_location = raw.name.as_ref().map_or(location, |t| t.referenced);
        let expected_block = match name {
            "frequency" | "any" | "flatline" => "threshold",
            "spike" | "new_value" | "cardinality" => name,
            unknown => {
                return self.fail(
                    name_location,
                    format!("{context}unknown type `{unknown}` (expected {LOG_TYPES})"),
                );
            }
        };
        let mut misplaced = false;
        for (block, block_location) in raw.blocks() {
            if let Some(block_location) = block_location.filter(|_| block != expected_block) {
                misplaced = true;
                self.fail::<()>(
                    block_location,
                    format!(
                        "{context}`{block}` does not apply to type `{name}` (it takes \
                         `{expected_block}`)"
                    ),
                );
            }
        }
        if misplaced {
            return None;
        }
        match name {
            "frequency" | "any" | "flatline" => {
                self.threshold_trigger(context, name, location, raw.threshold)
            }
            "spike" => self.spike_trigger(context, name_location, raw.spike),
            "new_value" => self.new_value_trigger(context, name_location, raw.new_value),
            _ => self.cardinality_trigger(context, name_location, raw.cardinality),
        }
    }

    /// A positive duration at `block.field`; `None` (after an error) when absent
    /// and required, or when zero or malformed.
    fn window_field(
        &mut self,
        context: &str,
        block: &str,
        field: &str,
        value: Option<&Spanned<String>>,
        block_location: Location,
        default: Option<Duration>,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return default.or_else(|| {
                self.fail(
                    block_location,
                    format!("{context}`{block}.{field}` is required (a duration such as `5m`)"),
                )
            });
        };
        let parsed = self.duration(
            context,
            &format!("{block}.{field}"),
            Some(value),
            Duration::ZERO,
        )?;
        if parsed.is_zero() {
            return self.fail(
                value.referenced,
                format!("{context}`{block}.{field}` must be longer than 0s"),
            );
        }
        Some(parsed)
    }

    /// The field name at `block.field`, required and not empty.
    fn field_name(
        &mut self,
        context: &str,
        block: &str,
        value: Option<Spanned<String>>,
        block_location: Location,
    ) -> Option<LogField> {
        match value {
            None => self.fail(
                block_location,
                format!("{context}`{block}.field` is required (a field such as `user.name`)"),
            ),
            Some(field) if field.value.trim().is_empty() => self.fail(
                field.referenced,
                format!("{context}`{block}.field` must not be empty"),
            ),
            Some(field) => Some(LogField::from_name(&field.value)),
        }
    }

    fn threshold_trigger(
        &mut self,
        context: &str,
        name: &str,
        location: Location,
        threshold: Option<Spanned<RawThreshold>>,
    ) -> Option<LogTrigger> {
        let threshold_location = threshold.as_ref().map_or(location, |t| t.referenced);
        let (count, window) = match threshold {
            Some(threshold) => (threshold.value.count, threshold.value.window),
            None => (None, None),
        };
        let default_window = (name == "any").then_some(DEFAULT_ANY_WINDOW);
        if name == "frequency" && (count.is_none() || window.is_none()) {
            return self.fail(
                threshold_location,
                format!(
                    "{context}type `frequency` needs `threshold: {{count: N, window: DURATION}}`"
                ),
            );
        }
        if name == "flatline" && window.is_none() {
            return self.fail(
                threshold_location,
                format!(
                    "{context}type `flatline` needs `threshold: {{window: DURATION}}` (and \
                     optionally `count`, 1 by default)"
                ),
            );
        }
        let window = self.window_field(
            context,
            "threshold",
            "window",
            window.as_ref(),
            threshold_location,
            default_window,
        )?;
        match name {
            "any" => {
                if let Some(count) = count.as_ref().filter(|count| count.value != 1) {
                    return self.fail(
                        count.referenced,
                        format!(
                            "{context}type `any` fires on one line; set only `threshold.window`, \
                             or use type `frequency`"
                        ),
                    );
                }
                Some(LogTrigger::Any { window })
            }
            _ => {
                if let Some(count) = count.as_ref().filter(|count| count.value == 0) {
                    return self.fail(
                        count.referenced,
                        format!("{context}`threshold.count` must be at least 1"),
                    );
                }
                let count = count.map_or(1, |c| c.value);
                if name == "flatline" {
                    Some(LogTrigger::Flatline { count, window })
                } else {
                    Some(LogTrigger::Frequency { count, window })
                }
            }
        }
    }

    fn spike_trigger(
        &mut self,
        context: &str,
        location: Location,
        spike: Option<Spanned<RawSpike>>,
    ) -> Option<LogTrigger> {
        let Some(spike) = spike else {
            return self.fail(
                location,
                format!(
                    "{context}type `spike` needs `spike: {{window: DURATION, baseline: DURATION, \
                     ratio: N, min_count: N}}`"
                ),
            );
        };
        let block_location = spike.referenced;
        let raw = spike.value;
        let window = self.window_field(
            context,
            "spike",
            "window",
            raw.window.as_ref(),
            block_location,
            None,
        );
        let baseline = self.window_field(
            context,
            "spike",
            "baseline",
            raw.baseline.as_ref(),
            block_location,
            None,
        );
        let ratio = match raw.ratio {
            None => self.fail(
                block_location,
                format!("{context}`spike.ratio` is required (how many times the baseline rate)"),
            ),
            Some(ratio) if !(ratio.value.is_finite() && ratio.value > 1.0) => self.fail(
                ratio.referenced,
                format!(
                    "{context}`spike.ratio` must be a number greater than 1, not {}",
                    ratio.value
                ),
            ),
            Some(ratio) => Some(ratio.value),
        };
        let min_count = match raw.min_count {
            Some(min_count) if min_count.value == 0 => self.fail(
                min_count.referenced,
                format!("{context}`spike.min_count` must be at least 1"),
            ),
            min_count => Some(min_count.map_or(1, |m| m.value)),
        };
        Some(LogTrigger::Spike {
            window: window?,
            baseline: baseline?,
            ratio: ratio?,
            min_count: min_count?,
        })
    }

    fn new_value_trigger(
        &mut self,
        context: &str,
        location: Location,
        new_value: Option<Spanned<RawNewValue>>,
    ) -> Option<LogTrigger> {
        let Some(new_value) = new_value else {
            return self.fail(
                location,
                format!(
                    "{context}type `new_value` needs `new_value: {{field: NAME, lookback: \
                     DURATION}}`"
                ),
            );
        };
        let block_location = new_value.referenced;
        let raw = new_value.value;
        let field = self.field_name(context, "new_value", raw.field, block_location);
        let lookback = self.window_field(
            context,
            "new_value",
            "lookback",
            raw.lookback.as_ref(),
            block_location,
            None,
        );
        let window = self.window_field(
            context,
            "new_value",
            "window",
            raw.window.as_ref(),
            block_location,
            Some(DEFAULT_ANY_WINDOW),
        );
        let learn = match &raw.learn {
            None => lookback,
            Some(learn) => self.duration(context, "new_value.learn", Some(learn), Duration::ZERO),
        };
        Some(LogTrigger::NewValue {
            field: field?,
            lookback: lookback?,
            window: window?,
            learn: learn?,
        })
    }

    fn cardinality_trigger(
        &mut self,
        context: &str,
        location: Location,
        cardinality: Option<Spanned<RawCardinality>>,
    ) -> Option<LogTrigger> {
        let Some(cardinality) = cardinality else {
            return self.fail(
                location,
                format!(
                    "{context}type `cardinality` needs `cardinality: {{field: NAME, max: N, \
                     window: DURATION}}`"
                ),
            );
        };
        let block_location = cardinality.referenced;
        let raw = cardinality.value;
        let field = self.field_name(context, "cardinality", raw.field, block_location);
        let window = self.window_field(
            context,
            "cardinality",
            "window",
            raw.window.as_ref(),
            block_location,
            None,
        );
        let max = match raw.max {
            None => self.fail(
                block_location,
                format!(
                    "{context}`cardinality.max` is required (most distinct values that do not fire)"
                ),
            ),
            Some(max) if max.value >= MAX_REMEMBERED_VALUES as u64 => self.fail(
                max.referenced,
                format!(
                    "{context}`cardinality.max` must be below {MAX_REMEMBERED_VALUES}, the most \
                     values remembered per key"
                ),
            ),
            Some(max) => Some(max.value),
        };
        Some(LogTrigger::Cardinality {
            field: field?,
            max: max?,
            window: window?,
        })
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::rule_set_for_test;

    fn errors(file: &str, text: &str) -> Vec<String> {
        let files = BTreeMap::from([(file.to_owned(), text.to_owned())]);
        RuleSet::from_files(&files)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const EXAMPLE: &str = r#"
groups:
  - name: network
    interval: 1m
    rules:
      - alert: InterfaceSaturated
        metric: if.in.octets
        match: {role: core, ifName: "=~Te.*", ifDescr: "!~.*loopback.*", site: "!=lab"}
        condition: rate(5m) > 0.9 * 1e9 / 8
        for: 10m
        keep_firing_for: 5m
        labels: {severity: page, team: netops}
        annotations:
          summary: "{{ .labels.host }} {{ .labels.ifName }} at {{ .value | humanize }}B/s"
  - name: payments-logs
    rules:
      - alert: OutOfMemoryBurst
        logs:
          dataset: payments.app
          match: 'message =~ "java.lang.OutOfMemoryError" and host.name != "test"'
        type: frequency
        threshold: {count: 5, window: 1m}
        group_by: [host.name, log.file.path]
        labels: {severity: page}
      - alert: AnyPanic
        logs: {match: 'message =~ "panic"'}
        type: any
"#;

    #[test]
    fn reads_metric_and_log_rules() {
        let rules = rule_set_for_test(EXAMPLE);
        assert_eq!(rules.rule_count(), 3);
        let groups = rules.groups();
        assert_eq!(groups[0].name(), "network");
        assert_eq!(groups[0].file(), "test.yaml");
        assert_eq!(groups[0].interval(), Duration::from_secs(60));
        assert_eq!(groups[1].interval(), DEFAULT_INTERVAL);
        let rule = &groups[0].rules()[0];
        assert_eq!(rule.alert(), "InterfaceSaturated");
        assert_eq!(rule.for_duration(), Duration::from_secs(600));
        assert_eq!(rule.keep_firing_for(), Duration::from_secs(300));
        assert_eq!(rule.labels()["team"], "netops");
        assert_eq!(rule.location(), (6, 9));
        assert_eq!(
            rule.to_string(),
            r#"InterfaceSaturated: if.in.octets{ifDescr!~".*loopback.*",ifName=~"Te.*",role="core",site!="lab"} rate(5m) > 0.9 * 1e9 / 8 for 10m keep_firing_for 5m"#
        );
        let RuleKind::Metric(metric) = rule.kind() else {
            panic!("not a metric rule")
        };
        let matcher = |name: &str| metric.matchers().iter().find(|m| m.name == name).unwrap();
        assert!(matcher("ifName").matches("Te1/1") && !matcher("ifName").matches("xTe1/1"));
        assert!(matcher("ifDescr").matches("eth0") && !matcher("ifDescr").matches("a loopback"));
        assert!(matcher("site").matches("prod") && !matcher("site").matches("lab"));
        assert!(matcher("role").matches("core") && !matcher("role").matches("edge"));
        assert_eq!(metric.condition().canonical(), "rate(5m) > 112500000");

        let rule = &groups[1].rules()[0];
        assert_eq!(
            rule.to_string(),
            r#"OutOfMemoryBurst: logs of payments.app where message =~ "java.lang.OutOfMemoryError" and host.name != "test" count >= 5 in 1m by host.name, log.file.path"#
        );
        let any = &groups[1].rules()[1];
        let RuleKind::Log(log) = any.kind() else {
            panic!("not a log rule")
        };
        assert_eq!(
            log.trigger(),
            &LogTrigger::Any {
                window: DEFAULT_ANY_WINDOW
            }
        );
        assert_eq!(log.group_by().count(), 0);
    }

    #[test]
    fn yaml_syntax_errors_name_file_line_and_column() {
        assert_eq!(
            errors(
                "network.yaml",
                "groups:\n  - name: network\n    rules:\n      - alert: \"Unclosed\n"
            ),
            ["network.yaml:4:16: unclosed quote"]
        );
        assert_eq!(
            errors("network.yaml", "groups:\n - name: x\n   rules: []\n  bad\n"),
            [
                "network.yaml:4:3: while parsing a block collection, did not find expected '-' indicator"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_eq!(
            errors(
                "host.yaml",
                "groups:\n  - name: host\n    rules:\n      - alert: X\n        metric: m\n        condition: value > 1\n        severity: page\n"
            ),
            [
                "host.yaml:7:9: unknown field `severity`, expected one of alert, metric, match, condition, by, aggregate, logs, type, threshold, spike, new_value, cardinality, group_by, for, keep_firing_for, labels, annotations"
            ]
        );
        assert_eq!(
            errors("host.yaml", "group:\n  - name: host\n"),
            ["host.yaml:1:1: unknown field `group`, expected one of groups"]
        );
    }

    #[test]
    fn invalid_regexes_name_the_rule_and_the_regex() {
        let text = r#"groups:
  - name: payments-logs
    rules:
      - alert: OutOfMemoryBurst
        logs:
          dataset: payments.app
          match: 'message =~ "java.lang.(OutOfMemory"'
        threshold: {count: 5, window: 1m}
      - alert: Saturated
        metric: if.in.octets
        match: {ifName: "=~Te(1"}
        condition: value > 1
"#;
        assert_eq!(
            errors("network.yaml", text),
            [
                "network.yaml:7:18: rule `OutOfMemoryBurst`: invalid regex `java.lang.(OutOfMemory`: unclosed group",
                "network.yaml:11:25: rule `Saturated`: invalid regex `Te(1`: unclosed group",
            ]
        );
    }

    #[test]
    fn bad_durations_and_conditions_are_located() {
        let text = "groups:\n  - name: host\n    interval: 0s\n    rules:\n      - alert: X\n        metric: m\n        condition: avg(5) > 1\n        for: 10\n        keep_firing_for: 1x\n";
        assert_eq!(
            errors("host.yaml", text),
            [
                "host.yaml:3:15: group `host`: `interval` must be longer than 0s",
                "host.yaml:8:14: rule `X`: `for`: invalid duration `10`: missing unit (ms, s, m, h, d, w)",
                "host.yaml:9:26: rule `X`: `keep_firing_for`: invalid duration `1x`: unknown unit (expected ms, s, m, h, d or w)",
                "host.yaml:7:20: rule `X`: invalid condition `avg(5) > 1`: invalid duration `5`: missing unit (ms, s, m, h, d, w) at `5) > 1`",
            ]
        );
    }

    #[test]
    fn semantic_errors_are_reported() {
        let text = r#"groups:
  - name: g
    rules:
      - alert: Dup
        metric: m
        condition: value > 1
      - alert: Dup
        metric: m
        condition: value > 2
      - alert: NoCondition
        metric: m
      - alert: Neither
        labels: {alertname: x, 1bad: y}
      - alert: Both
        metric: m
        logs: {match: 'message =~ "x"'}
      - alert: Spike
        logs: {match: 'message =~ "x"'}
        type: spike
      - alert: Weird
        logs: {}
        type: sometimes
      - alert: NoThreshold
        logs: {}
      - alert: Mixed
        metric: m
        condition: value > 1
        group_by: [host.name]
      - alert: MixedLog
        logs: {}
        type: any
        condition: value > 1
      - alert: BadTemplate
        metric: m
        condition: value > 1
        annotations: {summary: "{{ .Value }}"}
      - alert: BadFilter
        logs: {match: 'message = "x"'}
        type: any
  - name: g
"#;
        assert_eq!(
            errors("g.yaml", text),
            [
                "g.yaml:7:16: group `g`: alert `Dup` is defined twice in the group (first at 4:9)",
                "g.yaml:10:9: rule `NoCondition`: a metric rule needs a `condition` such as `value > 0`",
                "g.yaml:13:38: rule `Neither`: invalid label name `1bad` (letters, digits, `_` and `.`, not starting with a digit)",
                "g.yaml:13:29: rule `Neither`: label `alertname` is set from `alert` and cannot be overridden",
                "g.yaml:12:9: rule `Neither`: needs `metric` (a metric rule) or `logs` (a log rule)",
                "g.yaml:16:15: rule `Both`: a rule has either `metric` or `logs`, not both",
                "g.yaml:19:15: rule `Spike`: type `spike` needs `spike: {window: DURATION, baseline: DURATION, ratio: N, min_count: N}`",
                "g.yaml:22:15: rule `Weird`: unknown type `sometimes` (expected frequency, any, spike, flatline, new_value or cardinality)",
                "g.yaml:23:9: rule `NoThreshold`: type `frequency` needs `threshold: {count: N, window: DURATION}`",
                "g.yaml:28:19: rule `Mixed`: `group_by` is only for log rules (with `logs`)",
                "g.yaml:32:20: rule `MixedLog`: `condition` is only for metric rules (log rules use `logs.match`, `type`, `threshold` and `group_by`)",
                "g.yaml:36:32: rule `BadTemplate`: annotation `summary`: unknown template reference `{{ .Value }}` (expected .labels.NAME, $labels.NAME, .value or $value)",
                "g.yaml:38:23: rule `BadFilter`: invalid log match `message = \"x\"`: unexpected character `=` at `= \"x\"`",
                "g.yaml:40:11: group `g` is already defined at g.yaml:2:5",
            ]
        );
    }

    const LOG_TYPES_EXAMPLE: &str = r#"
groups:
  - name: app-logs
    rules:
      - alert: LoginErrorSpike
        logs: {dataset: auth.api, match: 'level == "ERROR"'}
        type: spike
        spike: {window: 5m, baseline: 1h, ratio: 4, min_count: 20}
      - alert: HeartbeatMissing
        logs: {match: 'message =~ "heartbeat"'}
        type: flatline
        threshold: {window: 10m}
        group_by: [host.name]
      - alert: NewSudoUser
        logs: {match: 'message =~ "sudo"'}
        type: new_value
        new_value: {field: user.name, lookback: 7d}
        group_by: [host.name]
      - alert: ScannedByManyAddresses
        logs: {dataset: nginx.access}
        type: cardinality
        cardinality: {field: source.ip, max: 500, window: 5m}
  - name: host
    rules:
      - alert: BusiestCpu
        metric: host.cpu.utilisation_percent
        condition: avg(5m) > 90
        by: [host]
        aggregate: max
      - alert: SnmpSilent
        metric: snmp.up
        match: {role: core}
        condition: absent(3m)
"#;

    #[test]
    fn reads_every_log_type_and_metric_aggregation() {
        let rules = rule_set_for_test(LOG_TYPES_EXAMPLE);
        let lines: Vec<String> = rules.rules().map(|(_, rule)| rule.to_string()).collect();
        assert_eq!(
            lines,
            [
                r#"LoginErrorSpike: logs of auth.api where level == "ERROR" spike: count >= 20 in 5m at >= 4x the rate of the 1h before"#,
                r#"HeartbeatMissing: logs where message =~ "heartbeat" flatline: count < 1 in 10m by host.name"#,
                r#"NewSudoUser: logs where message =~ "sudo" new value of user.name unseen for 1w (active 5m, learning 1w) by host.name"#,
                "ScannedByManyAddresses: logs of nginx.access distinct source.ip > 500 in 5m",
                "BusiestCpu: host.cpu.utilisation_percent max by (host) of avg(5m) > 90",
                r#"SnmpSilent: snmp.up{role="core"} absent(3m)"#,
            ]
        );
        let (_, spike) = rules.rules().next().unwrap();
        let RuleKind::Log(log) = spike.kind() else {
            panic!("not a log rule")
        };
        assert_eq!(
            log.trigger(),
            &LogTrigger::Spike {
                window: Duration::from_secs(300),
                baseline: Duration::from_secs(3600),
                ratio: 4.0,
                min_count: 20,
            }
        );
    }

    #[test]
    fn log_type_parameters_are_validated_with_their_field() {
        let text = r#"groups:
  - name: g
    rules:
      - alert: NoBaseline
        logs: {}
        type: spike
        spike: {window: 5m, ratio: 0.5, min_count: 0}
      - alert: WrongBlock
        logs: {}
        type: flatline
        threshold: {window: 10m}
        spike: {window: 5m}
      - alert: FlatlineWithoutWindow
        logs: {}
        type: flatline
        threshold: {count: 3}
      - alert: NoField
        logs: {}
        type: new_value
        new_value: {lookback: 0s}
      - alert: TooMany
        logs: {}
        type: cardinality
        cardinality: {field: source.ip, max: 1000000, window: 5}
      - alert: NoBlock
        logs: {}
        type: cardinality
      - alert: AbsentSum
        metric: m
        condition: absent(5m)
        by: [host]
      - alert: BadAggregate
        metric: m
        condition: value > 1
        aggregate: median
        by: [1host]
      - alert: LogBy
        logs: {}
        type: any
        by: [host]
"#;
        assert_eq!(
            errors("g.yaml", text),
            [
                "g.yaml:7:16: rule `NoBaseline`: `spike.baseline` is required (a duration such as `5m`)",
                "g.yaml:7:36: rule `NoBaseline`: `spike.ratio` must be a number greater than 1, not 0.5",
                "g.yaml:7:52: rule `NoBaseline`: `spike.min_count` must be at least 1",
                "g.yaml:12:16: rule `WrongBlock`: `spike` does not apply to type `flatline` (it takes `threshold`)",
                "g.yaml:16:20: rule `FlatlineWithoutWindow`: type `flatline` needs `threshold: {window: DURATION}` (and optionally `count`, 1 by default)",
                "g.yaml:20:20: rule `NoField`: `new_value.field` is required (a field such as `user.name`)",
                "g.yaml:20:31: rule `NoField`: `new_value.lookback` must be longer than 0s",
                "g.yaml:24:63: rule `TooMany`: `cardinality.window`: invalid duration `5`: missing unit (ms, s, m, h, d, w)",
                "g.yaml:24:46: rule `TooMany`: `cardinality.max` must be below 10000, the most values remembered per key",
                "g.yaml:27:15: rule `NoBlock`: type `cardinality` needs `cardinality: {field: NAME, max: N, window: DURATION}`",
                "g.yaml:31:13: rule `AbsentSum`: `absent` watches each series: it cannot be combined with `by` or `aggregate`",
                "g.yaml:35:20: rule `BadAggregate`: unknown `aggregate` `median` (expected sum, avg, min, max or count)",
                "g.yaml:40:13: rule `LogBy`: `by` is only for metric rules (log rules use `logs.match`, `type`, `threshold` and `group_by`)",
            ]
        );
    }

    #[test]
    fn empty_files_have_no_groups() {
        assert_eq!(rule_set_for_test("# nothing yet\n\n").rule_count(), 0);
        assert_eq!(rule_set_for_test("groups: []\n").rule_count(), 0);
    }

    #[test]
    fn group_names_are_unique_across_files() {
        let files = BTreeMap::from([
            ("a.yaml".to_owned(), "groups:\n  - name: host\n".to_owned()),
            ("b.yaml".to_owned(), "groups:\n  - name: host\n".to_owned()),
        ]);
        let errors: Vec<String> = RuleSet::from_files(&files)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            ["b.yaml:2:11: group `host` is already defined at a.yaml:2:5"]
        );
    }

    #[test]
    fn load_dir_reads_rule_files_but_not_tests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "groups:\n  - name: a\n").unwrap();
        std::fs::write(dir.path().join("b.yml"), "groups:\n  - name: b\n").unwrap();
        std::fs::write(dir.path().join("a.test.yaml"), "not: [a rule file\n").unwrap();
        std::fs::write(dir.path().join("README.md"), "# rules\n").unwrap();
        let rules = load_dir(dir.path()).unwrap();
        let names: Vec<&str> = rules.groups().iter().map(Group::name).collect();
        assert_eq!(names, ["a", "b"]);

        let missing = load_dir(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing[0], RuleError::Io { .. }), "{:?}", missing);
    }
}
