//! Derive definitions: what the `derive` stage computes, as YAML kept in git. The
//! built-in set (rates and KPIs of the IF-MIB, host, UCD-SNMP and container
//! metrics) ships inside the binary; user files add windowed and cross-host
//! aggregates, or replace a built-in definition by using its name. Files come from
//! etcd (`<prefix>/derive/`) or a watched folder, exactly like rule files, and are
//! validated with errors that name the file, line, column and field.
//!
//! ```yaml
//! definitions:
//!   - name: if.in.bits_per_second
//!     function: rate            # per-second rate of a counter, wraps and resets handled
//!     input: if.in.octets
//!     scale: 8
//!     max_rate: if.speed.bits_per_second / 8
//!   - name: if.in.utilisation_percent
//!     function: ratio           # numerator / denominator of the same labels
//!     numerator: if.in.bits_per_second
//!     denominator: if.speed.bits_per_second
//!     scale: 100
//!   - name: site.if.in.bits_per_second.p95
//!     function: p95             # avg, min, max, sum, count, p50, p95, p99
//!     input: if.in.bits_per_second
//!     windows: [1m, 5m]
//!     group_by: [site]
//! ```

use super::window::Aggregate;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_config::duration::parse_duration;
use vigil_rules::{Checker, LabelMatcher, RuleError, from_yaml};

/// The built-in definitions, always loaded before user files.
pub const BUILT_IN: (&str, &str) = ("built-in.yaml", include_str!("built-in.yaml"));

/// Windows of an aggregate that names none.
pub const DEFAULT_WINDOWS: [Duration; 2] = [Duration::from_secs(60), Duration::from_secs(300)];

/// Every value `function` may take, for error messages.
const FUNCTIONS: &str = "rate, ratio, share, avg, min, max, sum, count, p50, p95, p99";

/// A definition file: `definitions: [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    definitions: Vec<Spanned<RawDefinition>>,
}

/// One definition as written; which fields apply depends on `function`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: Spanned<String>,
    function: Spanned<String>,
    #[serde(default)]
    input: Option<Spanned<String>>,
    #[serde(default)]
    numerator: Option<Spanned<String>>,
    #[serde(default)]
    denominator: Option<Spanned<String>>,
    #[serde(default)]
    max_rate: Option<Spanned<String>>,
    #[serde(default)]
    label: Option<Spanned<String>>,
    #[serde(default)]
    values: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    complement: Option<Spanned<bool>>,
    #[serde(default)]
    scale: Option<Spanned<f64>>,
    #[serde(default)]
    unit: Option<Spanned<String>>,
    #[serde(default, rename = "match")]
    matchers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    windows: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    group_by: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A metric a definition reads: a sample (raw or derived earlier) by name, or the
/// per-second rate of a counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operand {
    /// The value of the sample of that name with the same labels.
    Value(String),
    /// `rate(name)`: the per-second rate of that counter, not emitted by itself.
    Rate(String),
}

impl Operand {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let operand = match text.strip_prefix("rate(").and_then(|t| t.strip_suffix(')')) {
            Some(inner) => Self::Rate(inner.trim().to_owned()),
            None => Self::Value(text.to_owned()),
        };
        match &operand {
            Self::Value(name) | Self::Rate(name) if valid_metric_name(name) => Ok(operand),
            _ => Err(format!(
                "`{text}` is neither a metric name nor `rate(<metric name>)`"
            )),
        }
    }

    /// The metric name read.
    pub fn metric(&self) -> &str {
        match self {
            Self::Value(name) | Self::Rate(name) => name,
        }
    }
}

/// A bound on a counter's rate, from a gauge with the same labels: `metric`, or
/// `metric / number`, or `metric * number`.
#[derive(Debug, Clone, PartialEq)]
pub struct MaxRate {
    pub metric: String,
    pub factor: f64,
}

impl MaxRate {
    fn parse(text: &str) -> Result<Self, String> {
        let problem = || {
            format!(
                "`{text}` is not `<gauge metric>`, `<gauge metric> / <number>` or `<gauge metric> * <number>`"
            )
        };
        let (metric, factor) = match text.split_once(['/', '*']) {
            None => (text.trim(), 1.0),
            Some((metric, number)) => {
                let number: f64 = number.trim().parse().map_err(|_| problem())?;
                let dividing = text.contains('/');
                if !number.is_finite() || number == 0.0 {
                    return Err(problem());
                }
                (metric.trim(), if dividing { 1.0 / number } else { number })
            }
        };
        if !valid_metric_name(metric) {
            return Err(problem());
        }
        Ok(Self {
            metric: metric.to_owned(),
            factor,
        })
    }
}

/// What a definition computes.
#[derive(Debug, Clone)]
pub enum Function {
    /// Per-second rate of a counter times `scale`.
    Rate {
        input: String,
        scale: f64,
        max_rate: Option<MaxRate>,
    },
    /// `scale × numerator / denominator` (or `scale × (1 − n / d)` with
    /// `complement`), for samples of the same labels.
    Ratio {
        numerator: Operand,
        denominator: Operand,
        complement: bool,
        scale: f64,
    },
    /// The share of a counter's rate carried by the series whose `label` is one of
    /// `values`, among all series that differ only in that label (CPU time by mode).
    Share {
        input: String,
        label: String,
        values: Vec<String>,
        complement: bool,
        scale: f64,
    },
    /// An aggregate over tumbling windows, per series or per group.
    Aggregate {
        aggregate: Aggregate,
        input: String,
        windows: Vec<Duration>,
        group_by: Vec<String>,
    },
}

/// One validated definition.
#[derive(Debug, Clone)]
pub struct Definition {
    /// Name of the metric it produces.
    pub name: String,
    /// `file:line:column` of the definition, for logs.
    pub origin: String,
    pub function: Function,
    /// Conditions on the input samples' labels.
    pub matchers: Vec<LabelMatcher>,
    /// Unit of the output; empty when not given.
    pub unit: String,
}

/// The definitions in force: the built-ins, then user definitions in file order;
/// a user definition with a built-in's name takes its place.
#[derive(Debug, Clone, Default)]
pub struct DefinitionSet {
    pub definitions: Vec<Definition>,
}

impl DefinitionSet {
    /// The built-in definitions alone.
    pub fn built_in() -> Self {
        Self::from_files(&BTreeMap::new()).unwrap_or_else(|errors| {
            panic!("the built-in derive definitions are invalid: {errors:?}")
        })
    }

    /// Validates user `files` (name → YAML text) on top of the built-ins. Either all
    /// are valid, or every error found is returned, each naming its file, line,
    /// column and field.
    pub fn from_files(files: &BTreeMap<String, String>) -> Result<Self, Vec<RuleError>> {
        let mut checker = Checker::default();
        let mut definitions: Vec<Definition> = Vec::new();
        let mut places: BTreeMap<String, (String, bool)> = BTreeMap::new();
        let sources = std::iter::once((BUILT_IN.0, BUILT_IN.1, true))
            .chain(files.iter().map(|(f, t)| (f.as_str(), t.as_str(), false)));
        for (file, text, built_in) in sources {
            checker.start_file(file);
            let raw: RawFile = match from_yaml(file, text) {
                Ok(Some(raw)) => raw,
                Ok(None) => continue,
                Err(error) => {
                    checker.report(error);
                    continue;
                }
            };
            for raw_definition in raw.definitions {
                let location = raw_definition.referenced;
                let name = raw_definition.value.name.value.clone();
                let here = format!("{file}:{}:{}", location.line(), location.column());
                match places.get(&name) {
                    Some((place, true)) if !built_in => {
                        tracing::info!(definition = %name, replaces = %place, at = %here, "a user definition replaces a built-in one");
                        definitions.retain(|d| d.name != name);
                    }
                    Some((place, _)) => {
                        checker.fail::<()>(
                            raw_definition.value.name.referenced,
                            format!("definition `{name}` is already defined at {place}"),
                        );
                        continue;
                    }
                    None => {}
                }
                places.insert(name, (here.clone(), built_in));
                if let Some(definition) = definition(&mut checker, raw_definition.value, here) {
                    definitions.push(definition);
                }
            }
        }
        checker.finish(Self { definitions })
    }

    /// How many definitions are in force.
    pub fn len(&self) -> usize {
        self.definitions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }
}

fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

/// Fields by the functions they apply to; anything else is an error naming it.
fn field_applies(field: &str, function: &str) -> bool {
    let aggregate = Aggregate::parse(function).is_some();
    match field {
        "input" => function != "ratio",
        "numerator" | "denominator" => function == "ratio",
        "max_rate" => function == "rate",
        "label" | "values" => function == "share",
        "complement" => matches!(function, "ratio" | "share"),
        "scale" => !aggregate,
        "windows" | "group_by" => aggregate,
        _ => true,
    }
}

fn definition(checker: &mut Checker, raw: RawDefinition, origin: String) -> Option<Definition> {
    let name = raw.name.value.clone();
    let context = format!("definition `{name}`: ");
    if !valid_metric_name(&name) {
        return checker.fail(
            raw.name.referenced,
            format!("`name`: `{name}` is not a metric name (letters, digits, `.`, `_`, `-`, `:`)"),
        );
    }
    let function = raw.function.value.as_str();
    let known =
        matches!(function, "rate" | "ratio" | "share") || Aggregate::parse(function).is_some();
    if !known {
        return checker.fail(
            raw.function.referenced,
            format!(
                "{context}`function`: unknown function `{function}`; expected one of {FUNCTIONS}"
            ),
        );
    }
    let present: [(&str, Option<Location>); 10] = [
        ("input", raw.input.as_ref().map(|v| v.referenced)),
        ("numerator", raw.numerator.as_ref().map(|v| v.referenced)),
        (
            "denominator",
            raw.denominator.as_ref().map(|v| v.referenced),
        ),
        ("max_rate", raw.max_rate.as_ref().map(|v| v.referenced)),
        ("label", raw.label.as_ref().map(|v| v.referenced)),
        ("values", raw.values.as_ref().map(|v| v.referenced)),
        ("complement", raw.complement.as_ref().map(|v| v.referenced)),
        ("scale", raw.scale.as_ref().map(|v| v.referenced)),
        ("windows", raw.windows.as_ref().map(|v| v.referenced)),
        ("group_by", raw.group_by.as_ref().map(|v| v.referenced)),
    ];
    let mut valid = true;
    for (field, location) in present {
        if let Some(location) = location
            && !field_applies(field, function)
        {
            valid = false;
            checker.fail::<()>(
                location,
                format!("{context}`{field}` does not apply to function `{function}`"),
            );
        }
    }
    let scale = match raw.scale {
        Some(scale) if !scale.value.is_finite() => {
            valid = false;
            checker.fail::<f64>(
                scale.referenced,
                format!("{context}`scale` must be a finite number"),
            )
        }
        Some(scale) => Some(scale.value),
        None => Some(1.0),
    }?;
    let complement = raw.complement.is_some_and(|c| c.value);
    let matchers = checker.label_matchers(&context, raw.matchers);
    let location = raw.name.referenced;
    let mut required = |field: &str, value: Option<Spanned<String>>| -> Option<Spanned<String>> {
        if value.is_none() {
            checker.fail::<()>(
                location,
                format!("{context}function `{function}` needs `{field}`"),
            );
        }
        value
    };
    let function = match function {
        "rate" => {
            let input = required("input", raw.input)?;
            let max_rate = match raw.max_rate {
                None => None,
                Some(text) => match MaxRate::parse(&text.value) {
                    Ok(max_rate) => Some(max_rate),
                    Err(problem) => {
                        return checker
                            .fail(text.referenced, format!("{context}`max_rate`: {problem}"));
                    }
                },
            };
            Function::Rate {
                input: metric_name(checker, &context, "input", input)?,
                scale,
                max_rate,
            }
        }
        "ratio" => {
            let numerator = required("numerator", raw.numerator);
            let denominator = required("denominator", raw.denominator);
            let (numerator, denominator) = (numerator?, denominator?);
            let operand = |checker: &mut Checker, field: &str, text: Spanned<String>| {
                Operand::parse(&text.value).or_else(|problem| {
                    checker
                        .fail(text.referenced, format!("{context}`{field}`: {problem}"))
                        .ok_or(())
                })
            };
            let numerator = operand(checker, "numerator", numerator).ok();
            let denominator = operand(checker, "denominator", denominator).ok();
            Function::Ratio {
                numerator: numerator?,
                denominator: denominator?,
                complement,
                scale,
            }
        }
        "share" => {
            let input = required("input", raw.input);
            let label = required("label", raw.label);
            let (input, label) = (input?, label?);
            let Some(values) = raw.values.filter(|v| !v.value.is_empty()) else {
                return checker.fail(location, format!("{context}function `share` needs `values`, the label values whose share is computed"));
            };
            Function::Share {
                input: metric_name(checker, &context, "input", input)?,
                label: label.value,
                values: values.value,
                complement,
                scale,
            }
        }
        aggregate => {
            let input = required("input", raw.input)?;
            let windows = match raw.windows {
                None => DEFAULT_WINDOWS.to_vec(),
                Some(windows) => {
                    let mut parsed = Vec::new();
                    for (position, window) in windows.value.iter().enumerate() {
                        match parse_duration(&window.value) {
                            Ok(duration) if duration >= Duration::from_secs(1) => {
                                parsed.push(duration)
                            }
                            Ok(_) => {
                                checker.fail::<()>(window.referenced, format!("{context}`windows[{position}]`: a window must be at least 1s"));
                            }
                            Err(error) => {
                                checker.fail::<()>(
                                    window.referenced,
                                    format!("{context}`windows[{position}]`: {error}"),
                                );
                            }
                        }
                    }
                    if parsed.len() != windows.value.len() {
                        return None;
                    }
                    if parsed.is_empty() {
                        return checker.fail(
                            windows.referenced,
                            format!("{context}`windows` must not be empty"),
                        );
                    }
                    parsed
                }
            };
            let mut group_by = Vec::new();
            for (position, label) in raw
                .group_by
                .map(|g| g.value)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                if label.value.trim().is_empty() {
                    return checker.fail(
                        label.referenced,
                        format!("{context}`group_by[{position}]` must not be empty"),
                    );
                }
                group_by.push(label.value);
            }
            Function::Aggregate {
                aggregate: Aggregate::parse(aggregate)?,
                input: metric_name(checker, &context, "input", input)?,
                windows,
                group_by,
            }
        }
    };
    valid.then_some(Definition {
        name,
        origin,
        function,
        matchers,
        unit: raw.unit.map(|u| u.value).unwrap_or_default(),
    })
}

fn metric_name(
    checker: &mut Checker,
    context: &str,
    field: &str,
    value: Spanned<String>,
) -> Option<String> {
    if valid_metric_name(&value.value) {
        Some(value.value)
    } else {
        checker.fail(
            value.referenced,
            format!("{context}`{field}`: `{}` is not a metric name", value.value),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let files = BTreeMap::from([("site.yaml".to_owned(), text.to_owned())]);
        DefinitionSet::from_files(&files)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_built_in_definitions_are_valid() {
        let set = DefinitionSet::built_in();
        let names: Vec<&str> = set.definitions.iter().map(|d| d.name.as_str()).collect();
        for expected in [
            "if.in.bits_per_second",
            "if.out.utilisation_percent",
            "if.in.errors_per_second",
            "host.cpu.utilisation_percent",
            "host.memory.used_percent",
            "host.swap.used_percent",
            "host.fs.used_percent",
            "container.cpu.utilisation_percent",
            "container.memory.used_percent",
            "container.cpu.throttled_percent",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn user_definitions_add_to_and_replace_built_ins() {
        let text = "definitions:\n  - {name: if.in.bits_per_second, function: rate, input: if.in.octets, scale: 8}\n  - {name: site.cpu.p95, function: p95, input: host.cpu.utilisation_percent, windows: [30s], group_by: [site]}\n";
        let files = BTreeMap::from([("site.yaml".to_owned(), text.to_owned())]);
        let set = DefinitionSet::from_files(&files).unwrap();
        let replaced: Vec<&Definition> = set
            .definitions
            .iter()
            .filter(|d| d.name == "if.in.bits_per_second")
            .collect();
        assert_eq!(replaced.len(), 1);
        assert!(replaced[0].origin.starts_with("site.yaml:2:"));
        assert!(matches!(
            &replaced[0].function,
            Function::Rate { max_rate: None, .. }
        ));
        let aggregate = set.definitions.last().unwrap();
        assert!(matches!(
            &aggregate.function,
            Function::Aggregate { aggregate: Aggregate::P95, windows, group_by, .. }
                if windows == &[Duration::from_secs(30)] && group_by == &["site"]
        ));
    }

    #[test]
    fn an_unknown_function_is_named_with_file_line_and_field() {
        assert_eq!(
            errors("definitions:\n  - name: x\n    function: median\n    input: y\n"),
            [
                "site.yaml:3:15: definition `x`: `function`: unknown function `median`; expected one of rate, ratio, share, avg, min, max, sum, count, p50, p95, p99"
            ]
        );
    }

    #[test]
    fn an_unknown_field_is_named_with_file_and_line() {
        let found = errors(
            "definitions:\n  - name: x\n    function: avg\n    input: y\n    windoes: [1m]\n",
        );
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("site.yaml:5:5: unknown field `windoes`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_window_that_is_not_a_duration_is_named() {
        let found = errors(
            "definitions:\n  - name: x\n    function: max\n    input: y\n    windows: [1m, five minutes]\n",
        );
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("site.yaml:5:19: definition `x`: `windows[1]`: "),
            "{found:?}"
        );
        assert!(found[0].contains("five minutes"), "{found:?}");
    }

    #[test]
    fn fields_of_other_functions_and_missing_fields_are_named() {
        let found = errors(
            "definitions:\n  - name: x\n    function: rate\n    input: y\n    group_by: [site]\n  - name: z\n    function: ratio\n    numerator: a\n",
        );
        assert_eq!(
            found,
            [
                "site.yaml:5:15: definition `x`: `group_by` does not apply to function `rate`",
                "site.yaml:6:11: definition `z`: function `ratio` needs `denominator`",
            ]
        );
    }

    #[test]
    fn operands_and_rate_bounds_are_parsed() {
        assert_eq!(
            Operand::parse("rate(container.cpu.periods)").unwrap(),
            Operand::Rate("container.cpu.periods".into())
        );
        assert_eq!(
            Operand::parse("host.memory.total_bytes").unwrap(),
            Operand::Value("host.memory.total_bytes".into())
        );
        assert!(Operand::parse("a + b").is_err());
        let bound = MaxRate::parse("if.speed.bits_per_second / 8").unwrap();
        assert_eq!(bound.metric, "if.speed.bits_per_second");
        assert_eq!(bound.factor, 0.125);
        assert!(MaxRate::parse("if.speed / 0").is_err());
        let found = errors(
            "definitions:\n  - {name: x, function: rate, input: y, max_rate: speed / fast}\n",
        );
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("`max_rate`: `speed / fast` is not"),
            "{found:?}"
        );
    }

    #[test]
    fn a_name_defined_twice_by_users_points_at_the_first() {
        let found = errors(
            "definitions:\n  - {name: x, function: avg, input: y}\n  - {name: x, function: max, input: y}\n",
        );
        assert_eq!(
            found,
            ["site.yaml:3:12: definition `x` is already defined at site.yaml:2:5"]
        );
    }
}
