//! Tests of reading rule files: the rule set built from valid files, and the
//! located message of every kind of problem.

use super::group::DEFAULT_INTERVAL;
use super::load_dir;
use super::log::DEFAULT_ANY_WINDOW;
use crate::error::RuleError;
use crate::model::{Group, LogTrigger, RuleKind, RuleSet};
use crate::rule_set_for_test;
use std::collections::BTreeMap;
use std::time::Duration;

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
        ["network.yaml:4:3: while parsing a block collection, did not find expected '-' indicator"]
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
