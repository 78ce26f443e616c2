//! Tests of the evaluator: the alert state machine, log windows, hot reload, and
//! a model-based property test of the events receivers rely on.

use super::*;
use crate::rules::rule_set_for_test;
use proptest::prelude::*;
use vigil_proto::labels::{ContentId, find, label};
use vigil_proto::v1::{AlertStatus, LogLine, Sample};

const S: i64 = 1_000_000_000;

fn gauge(host: &str, name: &str, labels: &[(&str, &str)], seconds: i64, value: f64) -> MetricBatch {
    MetricBatch {
        resource: Some(Resource {
            id: host.into(),
            host_name: host.into(),
            attributes: vec![label("site", "par1")],
            ..Resource::default()
        }),
        samples: vec![Sample {
            name: name.into(),
            labels: labels.iter().map(|(n, v)| label(*n, *v)).collect(),
            time_unix_nano: seconds * S,
            value: Some(sample::Value::Gauge(value)),
            ..Sample::default()
        }],
        producer: "test".into(),
    }
}

fn load(host: &str, seconds: i64, value: f64) -> MetricBatch {
    gauge(host, "host.load.1m", &[], seconds, value)
}

fn logs(host: &str, lines: &[(i64, &str)]) -> LogBatch {
    LogBatch {
        resource: Some(Resource {
            id: host.into(),
            host_name: host.into(),
            ..Resource::default()
        }),
        source: Some(LogSource {
            path: "/var/log/app.log".into(),
            source_id: "1:1".into(),
            dataset: "app".into(),
            ..LogSource::default()
        }),
        lines: lines
            .iter()
            .enumerate()
            .map(|(index, (seconds, message))| LogLine {
                offset: index as u64 * 100,
                length: 100,
                event_time_unix_nano: seconds * S,
                observed_time_unix_nano: seconds * S,
                message: message.as_bytes().to_vec(),
                ..LogLine::default()
            })
            .collect(),
    }
}

/// (alert, host label, status, evaluated at in seconds) of each event.
fn summary(events: &[AlertEvent]) -> Vec<(String, String, AlertStatus, i64)> {
    events
        .iter()
        .map(|event| {
            (
                event.alert.clone(),
                find(&event.labels, "host").unwrap_or("").to_owned(),
                event.status(),
                event.evaluated_at_unix_nano / S,
            )
        })
        .collect()
}

fn event(
    alert: &str,
    host: &str,
    status: AlertStatus,
    seconds: i64,
) -> (String, String, AlertStatus, i64) {
    (alert.to_owned(), host.to_owned(), status, seconds)
}

const HIGH_LOAD: &str = r#"
groups:
  - name: host
    interval: 10s
    rules:
      - alert: HighLoad
        metric: host.load.1m
        condition: value > 4
        for: 1m
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.host }} load {{ $value }}"
"#;

#[test]
fn pending_fires_after_for_then_resolves() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HIGH_LOAD));
    let mut events = Vec::new();
    for seconds in (0..=60).step_by(10) {
        events.extend(evaluator.observe_metrics(&load("web-1", seconds, 8.0)));
    }
    events.extend(evaluator.observe_metrics(&load("web-1", 70, 1.0)));
    assert_eq!(
        summary(&events),
        [
            event("HighLoad", "web-1", AlertStatus::Pending, 0),
            event("HighLoad", "web-1", AlertStatus::Firing, 60),
            event("HighLoad", "web-1", AlertStatus::Resolved, 70),
        ]
    );
    let firing = &events[1];
    assert_eq!(firing.starts_at_unix_nano, 60 * S);
    assert_eq!(firing.ends_at_unix_nano, 0);
    assert_eq!(firing.value, 8.0);
    let resolved = &events[2];
    assert_eq!(resolved.starts_at_unix_nano, 60 * S);
    assert_eq!(resolved.ends_at_unix_nano, 70 * S);
    assert_eq!(resolved.value, 1.0);
    assert_eq!(resolved.fingerprint, firing.fingerprint);
    assert_eq!(events[0].starts_at_unix_nano, 0);
    assert!(evaluator.alerts().is_empty());
}

#[test]
fn events_carry_labels_annotations_and_a_stable_fingerprint() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HIGH_LOAD));
    let events = evaluator.observe_metrics(&gauge(
        "web-1",
        "host.load.1m",
        &[("site", "ams1"), ("cpu", "all")],
        0,
        8.5,
    ));
    let pending = &events[0];
    assert_eq!(pending.group, "host");
    assert_eq!(pending.alert, "HighLoad");
    // Resource attributes, `host`, sample labels (which win), rule labels,
    // `alertname`; sorted by name.
    assert_eq!(
        pending.labels,
        [
            label("alertname", "HighLoad"),
            label("cpu", "all"),
            label("host", "web-1"),
            label("severity", "warning"),
            label("site", "ams1"),
        ]
    );
    assert_eq!(pending.annotations, [label("summary", "web-1 load 8.5")]);
    assert_eq!(
        pending.fingerprint,
        ContentId::new()
            .part("HighLoad")
            .labels(&pending.labels)
            .finish()
    );
    assert_eq!(pending.evaluated_at_unix_nano, 0);
}

#[test]
fn for_zero_fires_at_once() {
    let mut evaluator = Evaluator::new(rule_set_for_test(&HIGH_LOAD.replace("for: 1m", "for: 0s")));
    let events = evaluator.observe_metrics(&load("web-1", 0, 8.0));
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Firing, 0)]
    );
}

#[test]
fn pending_that_clears_goes_back_silently() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HIGH_LOAD));
    assert_eq!(evaluator.observe_metrics(&load("web-1", 0, 8.0)).len(), 1);
    assert_eq!(evaluator.alerts()[0].status(), AlertStatus::Pending);
    assert!(
        evaluator
            .observe_metrics(&load("web-1", 10, 1.0))
            .is_empty()
    );
    assert!(evaluator.alerts().is_empty());
    // The timer starts over.
    let events = evaluator.observe_metrics(&load("web-1", 20, 8.0));
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Pending, 20)]
    );
}

#[test]
fn keep_firing_for_holds_the_alert_after_the_condition_clears() {
    let yaml = HIGH_LOAD.replace("for: 1m", "for: 0s\n        keep_firing_for: 30s");
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    let mut events = evaluator.observe_metrics(&load("web-1", 0, 8.0));
    // False at 10s and 20s, true again at 30s: the keep_firing_for timer restarts.
    for (seconds, value) in [
        (10, 1.0),
        (20, 1.0),
        (30, 8.0),
        (40, 1.0),
        (50, 1.0),
        (60, 1.0),
    ] {
        events.extend(evaluator.observe_metrics(&load("web-1", seconds, value)));
    }
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Firing, 0)]
    );
    events.extend(evaluator.observe_metrics(&load("web-1", 70, 1.0)));
    assert_eq!(
        summary(&events),
        [
            event("HighLoad", "web-1", AlertStatus::Firing, 0),
            event("HighLoad", "web-1", AlertStatus::Resolved, 70),
        ]
    );
}

#[test]
fn series_that_stop_reporting_resolve() {
    let mut evaluator = Evaluator::new(rule_set_for_test(&HIGH_LOAD.replace("for: 1m", "for: 0s")));
    evaluator.observe_metrics(&load("web-1", 0, 8.0));
    // Still within 5 minutes of the last sample.
    assert!(evaluator.advance_to(300 * S).is_empty());
    let events = evaluator.advance_to(400 * S);
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Resolved, 310)]
    );
    assert_eq!(events[0].ends_at_unix_nano, 310 * S);
    assert_eq!(events[0].value, 8.0);
}

#[test]
fn windowed_conditions_and_matchers_select_series() {
    let yaml = r#"
groups:
  - name: network
    interval: 10s
    rules:
      - alert: Busy
        metric: if.util
        match: {ifName: "=~eth.*", role: "!=lab"}
        condition: avg(30s) > 0.5
"#;
    let mut evaluator = Evaluator::new(rule_set_for_test(yaml));
    let mut events = Vec::new();
    for (seconds, value) in [(0, 0.0), (10, 0.0), (20, 1.0), (30, 1.0), (40, 1.0)] {
        for (interface, role) in [("eth0", "core"), ("lo", "core"), ("eth1", "lab")] {
            events.extend(evaluator.observe_metrics(&gauge(
                "r1",
                "if.util",
                &[("ifName", interface), ("role", role)],
                seconds,
                value,
            )));
        }
    }
    // avg over (0s, 30s] is 2/3 at 30s; (0s, 20s] at 20s is 0.5, not above.
    assert_eq!(
        summary(&events),
        [event("Busy", "r1", AlertStatus::Firing, 30)]
    );
    assert_eq!(find(&events[0].labels, "ifName"), Some("eth0"));
}

#[test]
fn ticks_are_caught_up_when_the_clock_jumps() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HIGH_LOAD));
    evaluator.observe_metrics(&load("web-1", 0, 8.0));
    // One batch 60s later: the ticks at 10s..50s see the old sample, and the
    // timer completes at the 60s tick, with the new sample.
    let events = evaluator.observe_metrics(&load("web-1", 65, 8.0));
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Firing, 60)]
    );
}

#[test]
fn the_clock_never_goes_back() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HIGH_LOAD));
    evaluator.observe_metrics(&load("web-1", 100, 8.0));
    assert_eq!(evaluator.now(), Some(100 * S));
    assert!(evaluator.advance_to(50 * S).is_empty());
    assert_eq!(evaluator.now(), Some(100 * S));
    // A late sample counts from the next tick; it does not rewind anything.
    assert!(
        evaluator
            .observe_metrics(&load("web-1", 95, 8.0))
            .is_empty()
    );
    assert_eq!(evaluator.now(), Some(100 * S));
}

const ERROR_BURST: &str = r#"
groups:
  - name: app-logs
    interval: 30s
    rules:
      - alert: ErrorBurst
        logs: {dataset: app, match: 'message =~ "ERROR"'}
        type: frequency
        threshold: {count: 3, window: 1m}
        group_by: [host.name]
        annotations: {summary: "{{ $value }} errors on {{ $labels.host }}"}
"#;

#[test]
fn log_frequency_fires_on_the_burst_and_resolves_as_the_window_slides() {
    let mut evaluator = Evaluator::new(rule_set_for_test(ERROR_BURST));
    let mut events = evaluator.observe_logs(&logs(
        "web-1",
        &[(25, "ERROR a"), (26, "INFO ok"), (40, "ERROR b")],
    ));
    events.extend(evaluator.observe_logs(&logs("web-2", &[(41, "ERROR elsewhere")])));
    assert!(events.is_empty(), "{events:?}");
    // The third ERROR of web-1 within a minute, between two ticks: fires at once.
    events.extend(evaluator.observe_logs(&logs("web-1", &[(80, "ERROR c")])));
    assert_eq!(
        summary(&events),
        [event("ErrorBurst", "web-1", AlertStatus::Firing, 80)]
    );
    assert_eq!(events[0].value, 3.0);
    assert_eq!(
        events[0].annotations,
        [label("summary", "3 errors on web-1")]
    );
    assert_eq!(
        events[0].labels,
        [label("alertname", "ErrorBurst"), label("host", "web-1")]
    );
    // At the 90s tick the window (30s, 90s] holds two lines: resolved.
    let events = evaluator.advance_to(95 * S);
    assert_eq!(
        summary(&events),
        [event("ErrorBurst", "web-1", AlertStatus::Resolved, 90)]
    );
    assert_eq!(events[0].value, 2.0);
}

#[test]
fn log_rules_filter_by_dataset() {
    let mut evaluator = Evaluator::new(rule_set_for_test(ERROR_BURST));
    let mut batch = logs("web-1", &[(1, "ERROR"), (2, "ERROR"), (3, "ERROR")]);
    batch.source.as_mut().unwrap().dataset = "other".into();
    assert!(evaluator.observe_logs(&batch).is_empty());
    let batch = logs("web-1", &[(4, "ERROR"), (5, "ERROR"), (6, "ERROR")]);
    assert_eq!(evaluator.observe_logs(&batch).len(), 1);
}

#[test]
fn log_any_fires_on_one_line_and_honours_for() {
    let yaml = r#"
groups:
  - name: kernel
    interval: 10s
    rules:
      - alert: OomKill
        logs: {match: 'message =~ "Out of memory"'}
        type: any
        threshold: {window: 1m}
        for: 20s
"#;
    let mut evaluator = Evaluator::new(rule_set_for_test(yaml));
    let mut events = evaluator.observe_logs(&logs("web-1", &[(5, "Out of memory: Killed")]));
    events.extend(evaluator.advance_to(200 * S));
    // No group_by: one alert for all hosts, without a host label.
    assert_eq!(
        summary(&events),
        [
            event("OomKill", "", AlertStatus::Pending, 5),
            event("OomKill", "", AlertStatus::Firing, 30),
            event("OomKill", "", AlertStatus::Resolved, 70),
        ]
    );
}

#[test]
fn hot_reload_keeps_a_pending_timer() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HIGH_LOAD));
    let mut events = Vec::new();
    for seconds in (0..=30).step_by(10) {
        events.extend(evaluator.observe_metrics(&load("web-1", seconds, 8.0)));
    }
    // Same rule with a new annotation and another rule added.
    let changed = HIGH_LOAD.replace("load {{ $value }}", "is busy").to_owned()
        + "      - alert: Other\n        metric: host.load.5m\n        condition: value > 1\n";
    assert!(
        evaluator
            .replace_rules(rule_set_for_test(&changed))
            .is_empty()
    );
    for seconds in (40..=60).step_by(10) {
        events.extend(evaluator.observe_metrics(&load("web-1", seconds, 8.0)));
    }
    assert_eq!(
        summary(&events),
        [
            event("HighLoad", "web-1", AlertStatus::Pending, 0),
            event("HighLoad", "web-1", AlertStatus::Firing, 60),
        ]
    );
    assert_eq!(events[1].annotations, [label("summary", "web-1 is busy")]);
}

#[test]
fn hot_reload_keeps_log_windows() {
    let mut evaluator = Evaluator::new(rule_set_for_test(ERROR_BURST));
    evaluator.observe_logs(&logs("web-1", &[(1, "ERROR"), (2, "ERROR")]));
    assert!(
        evaluator
            .replace_rules(rule_set_for_test(ERROR_BURST))
            .is_empty()
    );
    let events = evaluator.observe_logs(&logs("web-1", &[(3, "ERROR")]));
    assert_eq!(
        summary(&events),
        [event("ErrorBurst", "web-1", AlertStatus::Firing, 3)]
    );
}

#[test]
fn removed_rules_resolve_their_firing_alerts() {
    let yaml = HIGH_LOAD.replace("for: 1m", "for: 0s");
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    let firing = evaluator.observe_metrics(&load("web-1", 0, 8.0));
    evaluator.observe_metrics(&load("web-1", 25, 8.0));
    let events = evaluator.replace_rules(RuleSet::default());
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Resolved, 25)]
    );
    assert_eq!(events[0].fingerprint, firing[0].fingerprint);
    assert_eq!(events[0].ends_at_unix_nano, 25 * S);
    assert!(evaluator.alerts().is_empty());
    assert!(
        evaluator
            .observe_metrics(&load("web-1", 30, 8.0))
            .is_empty()
    );
}

#[test]
fn changed_labels_resolve_the_old_alert() {
    let yaml = HIGH_LOAD.replace("for: 1m", "for: 0s");
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    let firing = evaluator.observe_metrics(&load("web-1", 0, 8.0));
    let events = evaluator.replace_rules(rule_set_for_test(
        &yaml.replace("severity: warning", "severity: page"),
    ));
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Resolved, 0)]
    );
    assert_eq!(events[0].fingerprint, firing[0].fingerprint);
    assert_eq!(find(&events[0].labels, "severity"), Some("warning"));
    // The series is still selected: it fires again under the new labels.
    let events = evaluator.observe_metrics(&load("web-1", 10, 8.0));
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Firing, 10)]
    );
    assert_eq!(find(&events[0].labels, "severity"), Some("page"));
    assert_ne!(events[0].fingerprint, firing[0].fingerprint);
}

#[test]
fn series_a_changed_rule_no_longer_selects_resolve() {
    let yaml = HIGH_LOAD.replace("for: 1m", "for: 0s");
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    evaluator.observe_metrics(&load("web-1", 0, 8.0));
    // After the tick at 0s: evaluated from the next tick on, at 10s.
    evaluator.observe_metrics(&load("web-2", 0, 8.0));
    evaluator.observe_metrics(&load("web-1", 10, 8.0));
    assert_eq!(evaluator.alerts().len(), 2);
    let narrowed = yaml.replace(
        "metric: host.load.1m",
        "metric: host.load.1m\n        match: {host: web-2}",
    );
    let events = evaluator.replace_rules(rule_set_for_test(&narrowed));
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Resolved, 10)]
    );
    assert_eq!(evaluator.alerts().len(), 1);
    assert_eq!(find(&evaluator.alerts()[0].labels, "host"), Some("web-2"));
}

#[test]
fn a_rule_that_changes_kind_starts_over() {
    let yaml = HIGH_LOAD.replace("for: 1m", "for: 0s");
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    evaluator.observe_metrics(&load("web-1", 0, 8.0));
    let as_log = r#"
groups:
  - name: host
    rules:
      - alert: HighLoad
        logs: {match: 'message =~ "load"'}
        type: any
"#;
    let events = evaluator.replace_rules(rule_set_for_test(as_log));
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Resolved, 0)]
    );
    assert!(evaluator.alerts().is_empty());
}

/// Operations of the model-based property test.
#[derive(Debug, Clone)]
enum Op {
    Sample { host: usize, step: i64, value: f64 },
    Line { host: usize, step: i64, error: bool },
    Advance { step: i64 },
    Reload { variant: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, 0..40i64, 0.0..10.0f64).prop_map(|(host, step, value)| Op::Sample {
            host,
            step,
            value
        }),
        (0..2usize, 0..40i64, any::<bool>()).prop_map(|(host, step, error)| Op::Line {
            host,
            step,
            error
        }),
        (0..60i64).prop_map(|step| Op::Advance { step }),
        (0..3usize).prop_map(|variant| Op::Reload { variant }),
    ]
}

fn variant(index: usize) -> RuleSet {
    let base = HIGH_LOAD.replace("for: 1m", "for: 20s\n        keep_firing_for: 10s");
    match index {
        0 => rule_set_for_test(&format!("{base}{}", ERROR_BURST.replace("groups:\n", ""))),
        1 => rule_set_for_test(&base.replace("severity: warning", "severity: page")),
        _ => rule_set_for_test(ERROR_BURST),
    }
}

proptest! {
    /// Receivers rely on this: an alert resolves only after it fired, and fires
    /// at most once until it resolves.
    #[test]
    fn resolved_only_follows_firing(ops in proptest::collection::vec(op(), 1..80)) {
        let mut evaluator = Evaluator::new(variant(0));
        let mut firing: BTreeMap<String, bool> = BTreeMap::new();
        for op in ops {
            let clock = evaluator.now().unwrap_or(0) / S;
            let events = match op {
                Op::Sample { host, step, value } => evaluator.observe_metrics(
                    &load(["web-1", "web-2"][host], clock + step - 10, value),
                ),
                Op::Line { host, step, error } => evaluator.observe_logs(&logs(
                    ["web-1", "web-2"][host],
                    &[(clock + step - 10, if error { "ERROR" } else { "ok" })],
                )),
                Op::Advance { step } => evaluator.advance_to((clock + step) * S),
                Op::Reload { variant: index } => evaluator.replace_rules(variant(index)),
            };
            for event in events {
                let is_firing = firing.entry(event.fingerprint.clone()).or_default();
                match event.status() {
                    AlertStatus::Firing => {
                        prop_assert!(!*is_firing, "fired twice: {event:?}");
                        *is_firing = true;
                    }
                    AlertStatus::Resolved => {
                        prop_assert!(*is_firing, "resolved without firing: {event:?}");
                        prop_assert!(event.ends_at_unix_nano >= event.starts_at_unix_nano);
                        *is_firing = false;
                    }
                    AlertStatus::Pending => prop_assert!(!*is_firing, "pending while firing: {event:?}"),
                    AlertStatus::Unspecified => prop_assert!(false, "unspecified status"),
                }
            }
            // The snapshot agrees with the events seen so far.
            let snapshot: BTreeMap<String, bool> = evaluator
                .alerts()
                .into_iter()
                .filter(|a| a.status() == AlertStatus::Firing)
                .map(|a| (a.fingerprint, true))
                .collect();
            let from_events: BTreeMap<String, bool> =
                firing.iter().filter(|(_, f)| **f).map(|(k, _)| (k.clone(), true)).collect();
            prop_assert_eq!(snapshot, from_events);
        }
    }
}
