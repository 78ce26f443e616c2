//! Tests of the rule-test runner, including the run of the rule tests shipped in
//! `rules/` at the repository root.

use super::*;
use crate::load_dir;

fn repo_rules() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")
}

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn error_messages(result: Result<TestReport, RuleErrors>, dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    result
        .unwrap_err()
        .0
        .iter()
        .map(|error| error.to_string().replace(&prefix, ""))
        .collect()
}

#[test]
fn the_shipped_rules_pass_their_tests() {
    let dir = repo_rules();
    let report = run_rule_tests(&dir).unwrap_or_else(|errors| panic!("{errors}"));
    assert!(report.passed(), "{report}");
    assert!(report.tests >= 12, "{report}");

    // Every rule file has a test file, and every alert is expected to fire in it.
    let rules = load_dir(&dir).unwrap_or_else(|errors| panic!("{errors:?}"));
    assert!(rules.rule_count() >= 8);
    for (group, rule) in rules.rules() {
        let test_file = dir.join(group.file().replace(".yaml", ".test.yaml"));
        let tests = std::fs::read_to_string(&test_file)
            .unwrap_or_else(|error| panic!("{}: {error}", test_file.display()));
        assert!(
            tests.contains(&format!("alert: {}", rule.alert())),
            "{} is not expected to fire in {}",
            rule.alert(),
            test_file.display()
        );
    }
}

const RULES: &str = r#"
groups:
  - name: g
    interval: 30s
    rules:
      - alert: High
        metric: m
        condition: value > 1
        labels: {severity: page}
        annotations: {summary: "{{ $labels.host }} at {{ $value }}"}
"#;

#[test]
fn failures_show_a_diff_of_the_firing_alerts() {
    let test = r#"
rule_files: [g.yaml]
tests:
  - name: wrong expectations
    input:
      - series: 'm{host="h1"}'
        values: '0 5 5'
      - series: 'm{host="h2"}'
        values: '5 5 5'
    expect:
      - at: 1m
        firing:
          - {alert: High, labels: {host: h2}}
          - {alert: Low}
      - at: 2m
        firing:
          - {alert: High, labels: {host: h2}}
          - {alert: High, annotations: {summary: "h1 at 6"}}
  - name: right expectations
    input:
      - series: 'm{host="h1"}'
        values: '5'
    expect:
      - at: 0s
        firing: [{alert: High, labels: {host: h1, severity: page}, annotations: {summary: "h1 at 5"}}]
"#;
    let dir = folder(&[("g.yaml", RULES), ("g.test.yaml", test)]);
    let report = run_rule_tests(dir.path()).unwrap();
    let file = dir.path().join("g.test.yaml").display().to_string();
    assert_eq!(report.tests, 2);
    assert_eq!(
        report.failures,
        [
            TestFailure {
                file: file.clone(),
                test: "wrong expectations".into(),
                message: "at 1m: firing alerts differ (- expected, + actual):\n    \
                          High{host=\"h2\"}\n  - Low{}\n  + High{host=\"h1\", severity=\"page\"} \
                          {summary=\"h1 at 5\"}"
                    .into(),
            },
            TestFailure {
                file: file.clone(),
                test: "wrong expectations".into(),
                message: "at 2m: firing alerts differ (- expected, + actual):\n    \
                          High{host=\"h2\"}\n  - High{} {summary=\"h1 at 6\"}\n  + \
                          High{host=\"h1\", severity=\"page\"} {summary=\"h1 at 5\"}"
                    .into(),
            },
        ]
    );
    assert!(!report.passed());
    assert!(
        report.to_string().ends_with("2 tests, 1 failed"),
        "{report}"
    );
}

#[test]
fn a_single_test_file_can_be_run() {
    let test = "rule_files: [g.yaml]\ntests:\n  - name: nothing fires\n    expect:\n      - {at: 5m, firing: []}\n";
    let dir = folder(&[("g.yaml", RULES), ("g.test.yaml", test)]);
    let report = run_rule_tests(&dir.path().join("g.test.yaml")).unwrap();
    assert!(report.passed() && report.tests == 1, "{report}");
}

#[test]
fn broken_test_files_are_located() {
    let test = r#"rule_files: [g.yaml, missing.yaml]
tests:
  - name: t
    input:
      - series: 'm{host=h1}'
        values: '1 2'
      - series: 'm'
        values: '1 two'
      - series: 'm'
        values: '1.5'
        kind: counter
    logs:
      - {at: 5, message: x}
    expect:
      - {at: 1m, firing: [], pending: []}
"#;
    let dir = folder(&[("g.yaml", RULES), ("g.test.yaml", test)]);
    assert_eq!(
        error_messages(run_rule_tests(dir.path()), dir.path()),
        ["g.test.yaml:15:30: unknown field `pending`, expected one of at, firing"]
    );
    let test = test.replace(", pending: []", "");
    let dir = folder(&[("g.yaml", RULES), ("g.test.yaml", &test)]);
    assert_eq!(
        error_messages(run_rule_tests(dir.path()), dir.path()),
        [
            "g.test.yaml:1:22: rule file `missing.yaml`: No such file or directory (os error 2)",
            "g.test.yaml:5:17: test `t`: series `m{host=h1}`: labels are written `name=\"value\"`, separated by commas",
            "g.test.yaml:8:17: test `t`: values: `two`: `two` is not a number",
            "g.test.yaml:10:17: test `t`: counter value `1.5` is not a non-negative integer",
            "g.test.yaml:13:14: test `t`: `at`: invalid duration `5`: missing unit (ms, s, m, h, d, w)",
        ]
    );
}

#[test]
fn rule_file_errors_name_the_rule_file() {
    let test = "rule_files: [g.yaml]\ntests: []\n";
    let dir = folder(&[
        (
            "g.yaml",
            "groups:\n  - name: g\n    rules:\n      - alert: X\n        metric: m\n        condition: value >\n",
        ),
        ("g.test.yaml", test),
    ]);
    assert_eq!(
        error_messages(run_rule_tests(dir.path()), dir.path()),
        ["g.yaml:6:20: rule `X`: invalid condition `value >`: expected a number at the end"]
    );
}
