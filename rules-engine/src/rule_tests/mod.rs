//! Rule unit tests (`*.test.yaml` beside the rule files), in the spirit of
//! `promtool test rules`: input series and log lines in event time, run through
//! the real [`Evaluator`], and the alerts expected to fire at given times. Run by
//! `vigil-aggregator rules test` in CI before rules are pushed to etcd.
//!
//! ```yaml
//! rule_files: [network.yaml]          # relative to the test file
//! tests:
//!   - name: saturation fires and resolves
//!     interval: 1m                    # step between input values (default 1m)
//!     input:
//!       - series: 'if.in.octets{host="r1",ifName="eth0"}'
//!         values: '0+1e9x30 _x20'     # promtool notation, one value per step
//!         kind: counter               # or gauge (default)
//!     logs:
//!       - {at: 30s, host: web-1, dataset: app, message: "ERROR x", repeat: 3, every: 1s}
//!       - {at: 2m, path: /var/log/app.log, fields: {level: ERROR}, message: "x"}
//!     expect:
//!       - at: 10m
//!         firing:
//!           - alert: InterfaceSaturated
//!             labels: {host: r1}                      # a subset of the labels
//!             annotations: {summary: "r1 eth0 busy"}  # a subset, as rendered
//!       - at: 30m
//!         firing: []
//! ```
//!
//! Test time starts at the Unix epoch. At each time, the samples of that time go in
//! as one batch, then the log lines, then the expectations of that time are
//! checked after the clock is advanced to it. An expectation passes when the
//! firing alerts and the expected ones pair up one to one, by alert name and with
//! the expected labels and annotations a subset of the alert's.

mod series;

use super::error::{RuleError, RuleErrors};
use super::evaluate::Evaluator;
use super::model::RuleSet;
use super::parse::{Checker, from_yaml};
use serde::Deserialize;
use serde_saphyr::Spanned;
use series::{expand_values, parse_series};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;
use vigil_config::duration::{format_duration, nanos};
use vigil_proto::labels::label;
use vigil_proto::v1::{
    AlertStatus, LogBatch, LogLine, LogSource, MetricBatch, MetricKind, Resource, Sample, sample,
};

/// Step between input values when a test does not set `interval`.
const DEFAULT_STEP: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestFile {
    /// Rule files under test, relative to the test file.
    rule_files: Vec<Spanned<String>>,
    #[serde(default)]
    tests: Vec<RawTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    name: String,
    /// Step between the values of input series.
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    input: Vec<RawSeries>,
    #[serde(default)]
    logs: Vec<RawLogInput>,
    #[serde(default)]
    expect: Vec<RawExpectation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeries {
    series: Spanned<String>,
    values: Spanned<String>,
    /// `gauge` (default) or `counter`.
    #[serde(default)]
    kind: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogInput {
    at: Spanned<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    path: Option<String>,
    message: String,
    /// Parsed fields of the line.
    #[serde(default)]
    fields: BTreeMap<String, String>,
    /// Number of copies of the line (default 1).
    #[serde(default)]
    repeat: Option<Spanned<u64>>,
    /// Time between copies (default 0s: all at `at`).
    #[serde(default)]
    every: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpectation {
    at: Spanned<String>,
    firing: Vec<RawAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlert {
    alert: String,
    /// A subset of the alert's labels.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// A subset of the alert's annotations, as rendered.
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// The outcome of a rule-test run.
#[derive(Debug, Default)]
pub struct TestReport {
    /// Number of tests run.
    pub tests: usize,
    /// Every expectation that did not hold.
    pub failures: Vec<TestFailure>,
}

impl TestReport {
    /// Whether every test passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for failure in &self.failures {
            writeln!(f, "{failure}")?;
        }
        let mut failed: Vec<(&str, &str)> = self
            .failures
            .iter()
            .map(|failure| (failure.file.as_str(), failure.test.as_str()))
            .collect();
        failed.dedup();
        write!(f, "{} tests, {} failed", self.tests, failed.len())
    }
}

/// One expectation of one test that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestFailure {
    pub file: String,
    pub test: String,
    pub message: String,
}

impl fmt::Display for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: test `{}`: {}", self.file, self.test, self.message)
    }
}

/// Runs the rule tests of a folder (every `*.test.yaml` and `*.test.yml` in it), or
/// of one test file. Errors are test or rule files that cannot be read (all of
/// them, each with its file, line and column); failing expectations are in the
/// report.
pub fn run_rule_tests(path: &Path) -> Result<TestReport, RuleErrors> {
    let io_error = |path: &Path, source| {
        RuleErrors(vec![RuleError::Io {
            file: path.display().to_string(),
            source,
        }])
    };
    let files = if path.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| io_error(path, e))? {
            let file = entry.map_err(|e| io_error(path, e))?.path();
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if (name.ends_with(".test.yaml") || name.ends_with(".test.yml")) && file.is_file() {
                files.push(file);
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut report = TestReport::default();
    let mut errors = Vec::new();
    for file in files {
        match run_file(&file) {
            Ok(file_report) => {
                report.tests += file_report.tests;
                report.failures.extend(file_report.failures);
            }
            Err(file_errors) => errors.extend(file_errors),
        }
    }
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(RuleErrors(errors))
    }
}

/// One test, ready to run: input batches and expectations by event time.
#[derive(Debug, Default)]
struct Test {
    name: String,
    samples: BTreeMap<i64, Vec<Sample>>,
    logs: BTreeMap<i64, Vec<LogBatch>>,
    expectations: BTreeMap<i64, Vec<Vec<RawAlert>>>,
}

fn run_file(path: &Path) -> Result<TestReport, Vec<RuleError>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| {
        vec![RuleError::Io {
            file: name.clone(),
            source,
        }]
    })?;
    let Some(raw) = from_yaml::<RawTestFile>(&name, &text).map_err(|error| vec![error])? else {
        return Ok(TestReport::default());
    };
    let mut checker = Checker {
        file: name.clone(),
        errors: Vec::new(),
    };
    let directory = path.parent().unwrap_or(Path::new("."));
    let mut rule_files = BTreeMap::new();
    for rule_file in &raw.rule_files {
        match std::fs::read_to_string(directory.join(&rule_file.value)) {
            Ok(text) => {
                rule_files.insert(rule_file.value.clone(), text);
            }
            Err(error) => {
                checker.fail::<()>(
                    rule_file.referenced,
                    format!("rule file `{}`: {error}", rule_file.value),
                );
            }
        }
    }
    let tests: Vec<Test> = raw
        .tests
        .into_iter()
        .filter_map(|test| build_test(&mut checker, test))
        .collect();
    if !checker.errors.is_empty() {
        return Err(checker.errors);
    }
    // Rule file errors name the rule file as the test file wrote it.
    let rules = RuleSet::from_files(&rule_files)?;
    let mut report = TestReport::default();
    for test in &tests {
        report.tests += 1;
        for message in run_test(&rules, test) {
            report.failures.push(TestFailure {
                file: name.clone(),
                test: test.name.clone(),
                message,
            });
        }
    }
    Ok(report)
}

fn build_test(checker: &mut Checker, raw: RawTest) -> Option<Test> {
    let context = format!("test `{}`: ", raw.name);
    let errors_before = checker.errors.len();
    let step =
        nanos(checker.duration(&context, "interval", raw.interval.as_ref(), DEFAULT_STEP)?);
    let mut test = Test {
        name: raw.name,
        ..Test::default()
    };
    for input in raw.input {
        let (metric, mut labels) = match parse_series(&input.series.value) {
            Ok(parsed) => parsed,
            Err(error) => {
                checker.fail::<()>(input.series.referenced, format!("{context}{error}"));
                continue;
            }
        };
        let values = match expand_values(&input.values.value) {
            Ok(values) => values,
            Err(error) => {
                checker.fail::<()>(input.values.referenced, format!("{context}{error}"));
                continue;
            }
        };
        let counter = match input.kind.as_ref().map(|k| k.value.as_str()) {
            None | Some("gauge") => false,
            Some("counter") => true,
            Some(other) => {
                let location = input
                    .kind
                    .as_ref()
                    .map(|k| k.referenced)
                    .unwrap_or(input.series.referenced);
                checker.fail::<()>(
                    location,
                    format!("{context}unknown kind `{other}` (expected gauge or counter)"),
                );
                continue;
            }
        };
        // The series' `host` label travels as a sample label, which wins over the
        // (empty) resource host name, so all series of one time fit in one batch.
        labels.entry("host".to_owned()).or_default();
        for (index, value) in values.into_iter().enumerate() {
            let Some(value) = value else { continue };
            let value = if counter {
                if value < 0.0 || value.fract() != 0.0 || value >= u64::MAX as f64 {
                    checker.fail::<()>(
                        input.values.referenced,
                        format!("{context}counter value `{value}` is not a non-negative integer"),
                    );
                    break;
                }
                sample::Value::Counter(value as u64)
            } else {
                sample::Value::Gauge(value)
            };
            let time = step.saturating_mul(index as i64);
            test.samples.entry(time).or_default().push(Sample {
                name: metric.clone(),
                labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
                kind: if counter {
                    MetricKind::Counter
                } else {
                    MetricKind::Gauge
                } as i32,
                time_unix_nano: time,
                value: Some(value),
                ..Sample::default()
            });
        }
    }
    for line in raw.logs {
        let at = checker.duration(&context, "at", Some(&line.at), Duration::ZERO)?;
        let every = checker.duration(&context, "every", line.every.as_ref(), Duration::ZERO)?;
        let repeat = line.repeat.as_ref().map_or(1, |r| r.value);
        let host = line.host.clone().unwrap_or_else(|| "localhost".to_owned());
        let path = line
            .path
            .clone()
            .unwrap_or_else(|| "/var/log/test.log".to_owned());
        let dataset = line.dataset.clone().unwrap_or_default();
        for copy in 0..repeat {
            let time = nanos(at).saturating_add(nanos(every).saturating_mul(copy as i64));
            let batches = test.logs.entry(time).or_default();
            let batch = match batches.iter().position(|b| {
                b.resource.as_ref().is_some_and(|r| r.host_name == host)
                    && b.source
                        .as_ref()
                        .is_some_and(|s| s.path == path && s.dataset == dataset)
            }) {
                Some(index) => &mut batches[index],
                None => {
                    batches.push(LogBatch {
                        resource: Some(Resource {
                            id: host.clone(),
                            host_name: host.clone(),
                            ..Resource::default()
                        }),
                        source: Some(LogSource {
                            path: path.clone(),
                            source_id: path.clone(),
                            dataset: dataset.clone(),
                            ..LogSource::default()
                        }),
                        lines: Vec::new(),
                    });
                    batches.last_mut()?
                }
            };
            let offset = batch.lines.last().map_or(0, |l| l.offset + l.length);
            batch.lines.push(LogLine {
                offset,
                event_time_unix_nano: time,
                observed_time_unix_nano: time,
                message: line.message.clone().into_bytes(),
                fields: line.fields.iter().map(|(n, v)| label(n, v)).collect(),
                length: line.message.len() as u64 + 1,
                ..LogLine::default()
            });
        }
    }
    for expectation in raw.expect {
        let at = checker.duration(&context, "at", Some(&expectation.at), Duration::ZERO)?;
        test.expectations
            .entry(nanos(at))
            .or_default()
            .push(expectation.firing);
    }
    (checker.errors.len() == errors_before).then_some(test)
}

/// Runs one test; returns a message for every expectation that did not hold.
fn run_test(rules: &RuleSet, test: &Test) -> Vec<String> {
    let mut evaluator = Evaluator::new(rules.clone());
    let mut times: Vec<i64> = test
        .samples
        .keys()
        .chain(test.logs.keys())
        .chain(test.expectations.keys())
        .copied()
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut failures = Vec::new();
    for time in times {
        if let Some(samples) = test.samples.get(&time) {
            evaluator.observe_metrics(&MetricBatch {
                resource: Some(Resource {
                    id: "rule-test".to_owned(),
                    ..Resource::default()
                }),
                samples: samples.clone(),
                producer: "rule-test".to_owned(),
            });
        }
        for batch in test.logs.get(&time).into_iter().flatten() {
            evaluator.observe_logs(batch);
        }
        for expected in test.expectations.get(&time).into_iter().flatten() {
            evaluator.advance_to(time);
            let firing: Vec<Firing> = evaluator
                .alerts()
                .into_iter()
                .filter(|event| event.status() == AlertStatus::Firing)
                .map(|event| Firing {
                    labels: event
                        .labels
                        .into_iter()
                        .map(|l| (l.name, l.value))
                        .collect(),
                    annotations: event
                        .annotations
                        .into_iter()
                        .map(|l| (l.name, l.value))
                        .collect(),
                })
                .collect();
            if let Some(diff) = compare(expected, &firing) {
                let at = format_duration(Duration::from_nanos(time.max(0) as u64));
                failures.push(format!(
                    "at {at}: firing alerts differ (- expected, + actual):\n{diff}"
                ));
            }
        }
    }
    failures
}

/// A firing alert as the test sees it.
#[derive(Debug)]
struct Firing {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl Firing {
    fn satisfies(&self, expected: &RawAlert) -> bool {
        let subset = |wanted: &BTreeMap<String, String>, have: &BTreeMap<String, String>| {
            wanted
                .iter()
                .all(|(name, value)| have.get(name) == Some(value))
        };
        self.labels.get("alertname") == Some(&expected.alert)
            && subset(&expected.labels, &self.labels)
            && subset(&expected.annotations, &self.annotations)
    }
}

/// Pairs expected and firing alerts; `None` when they pair up one to one, else a
/// diff: paired alerts with four spaces, missing ones with `-`, unexpected with `+`.
fn compare(expected: &[RawAlert], firing: &[Firing]) -> Option<String> {
    let mut unmatched: Vec<&Firing> = firing.iter().collect();
    let mut lines = Vec::new();
    let mut differ = false;
    // Most specific expectations first, so a vague one cannot take their alert.
    let mut ordered: Vec<&RawAlert> = expected.iter().collect();
    ordered.sort_by_key(|alert| std::cmp::Reverse(alert.labels.len() + alert.annotations.len()));
    for alert in ordered {
        let described = describe(&alert.alert, &alert.labels, &alert.annotations);
        match unmatched.iter().position(|firing| firing.satisfies(alert)) {
            Some(index) => {
                unmatched.remove(index);
                lines.push(format!("    {described}"));
            }
            None => {
                differ = true;
                lines.push(format!("  - {described}"));
            }
        }
    }
    for firing in unmatched {
        differ = true;
        let mut labels = firing.labels.clone();
        let name = labels.remove("alertname").unwrap_or_default();
        lines.push(format!(
            "  + {}",
            describe(&name, &labels, &firing.annotations)
        ));
    }
    differ.then(|| lines.join("\n"))
}

/// `Alert{name="value", ...}`, then the annotations if any: ` {summary="..."}`.
fn describe(
    alert: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> String {
    let list = |map: &BTreeMap<String, String>| {
        map.iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if annotations.is_empty() {
        format!("{alert}{{{}}}", list(labels))
    } else {
        format!("{alert}{{{}}} {{{}}}", list(labels), list(annotations))
    }
}

#[cfg(test)]
mod tests;
