//! Tests of the evaluator: the alert state machine, log windows, hot reload, and
//! a model-based property test of the events receivers rely on.

use super::*;
use crate::rule_set_for_test;
use proptest::prelude::*;
use vigil_proto::labels::{ContentId, find, label};
use vigil_proto::v1::{AlertStatus, LogLine, Sample, sample};

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

/// A condition on the latest value and one over a window, in a group
/// evaluated every minute.
const ONCE_A_MINUTE: &str = r#"
groups:
  - name: host
    interval: 1m
    rules:
      - alert: LoadNow
        metric: host.load.1m
        condition: value > 4
      - alert: LoadAverage
        metric: host.load.1m
        condition: avg(1m) > 4
"#;

#[test]
fn a_condition_on_the_latest_value_is_evaluated_when_its_sample_arrives() {
    let mut evaluator = Evaluator::new(rule_set_for_test(ONCE_A_MINUTE));
    assert!(evaluator.observe_metrics(&load("web-1", 0, 1.0)).is_empty());
    // Between ticks: the latest value fires at once, the window waits for the
    // tick at 60 s.
    let events = evaluator.observe_metrics(&load("web-1", 25, 9.0));
    assert_eq!(
        summary(&events),
        [event("LoadNow", "web-1", AlertStatus::Firing, 25)]
    );
    let events = evaluator.observe_metrics(&load("web-1", 40, 1.0));
    assert_eq!(
        summary(&events),
        [event("LoadNow", "web-1", AlertStatus::Resolved, 40)]
    );
    let events = evaluator.observe_metrics(&load("web-1", 60, 9.0));
    assert_eq!(
        summary(&events),
        [
            event("LoadAverage", "web-1", AlertStatus::Firing, 60),
            event("LoadNow", "web-1", AlertStatus::Firing, 60),
        ]
    );
}

#[test]
fn a_changed_condition_on_the_latest_value_judges_the_series_again_at_the_next_tick() {
    let mut evaluator = Evaluator::new(rule_set_for_test(ONCE_A_MINUTE));
    assert!(evaluator.observe_metrics(&load("web-1", 0, 3.0)).is_empty());
    assert!(evaluator.advance_to(60 * S).is_empty());
    // No new sample comes: the series' latest value is judged by the new rule.
    let lower = ONCE_A_MINUTE.replace("value > 4", "value > 2");
    assert!(
        evaluator
            .replace_rules(rule_set_for_test(&lower))
            .is_empty()
    );
    assert_eq!(
        summary(&evaluator.advance_to(120 * S)),
        [event("LoadNow", "web-1", AlertStatus::Firing, 120)]
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
fn a_staleness_marker_resolves_at_once_what_the_latest_value_fired() {
    let mut evaluator = Evaluator::new(rule_set_for_test(ONCE_A_MINUTE));
    let events = evaluator.observe_metrics(&load("web-1", 25, 9.0));
    assert_eq!(
        summary(&events),
        [event("LoadNow", "web-1", AlertStatus::Firing, 25)]
    );
    // The target went away: no value from the marker on, without waiting the
    // five minutes a silent series is held.
    let marker = vigil_proto::staleness::stale_marker();
    let events = evaluator.observe_metrics(&load("web-1", 40, marker));
    assert_eq!(
        summary(&events),
        [event("LoadNow", "web-1", AlertStatus::Resolved, 40)]
    );
    assert!(
        evaluator
            .advance_to(60 * S)
            .iter()
            .all(|e| e.alert != "LoadNow")
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
fn series_are_held_until_stale_then_forgotten_and_evaluated_again_when_they_return() {
    let yaml = r#"
groups:
  - name: network
    interval: 10s
    rules:
      - alert: Errors
        metric: if.errors
        match: {ifName: "=~eth.*"}
        condition: value > 0
"#;
    let mut evaluator = Evaluator::new(rule_set_for_test(yaml));
    for interface in ["eth0", "lo"] {
        evaluator.observe_metrics(&gauge("r1", "if.errors", &[("ifName", interface)], 0, 0.0));
    }
    evaluator.observe_metrics(&gauge("r1", "if.octets", &[("ifName", "eth0")], 0, 0.0));
    // Both interfaces of the watched metric, the one no rule selects too (so
    // that its samples are not matched again); not the unwatched metric.
    assert_eq!(evaluator.series(), 2);
    assert!(evaluator.advance_to(290 * S).is_empty());
    assert_eq!(evaluator.series(), 2);
    // Evaluated a last time at 300 s, five minutes after the sample, then stale.
    assert!(evaluator.advance_to(300 * S).is_empty());
    assert_eq!(evaluator.series(), 0, "stale series are forgotten");
    let events =
        evaluator.observe_metrics(&gauge("r1", "if.errors", &[("ifName", "eth0")], 320, 3.0));
    assert_eq!(evaluator.series(), 1);
    assert_eq!(
        summary(&events),
        [event("Errors", "r1", AlertStatus::Firing, 320)]
    );
}

#[test]
fn a_firing_series_is_held_past_stale_until_it_resolves() {
    let mut evaluator = Evaluator::new(rule_set_for_test(
        &HIGH_LOAD.replace("for: 1m", "for: 0s\n        keep_firing_for: 30s"),
    ));
    evaluator.observe_metrics(&load("web-1", 0, 8.0));
    assert_eq!(evaluator.alerts().len(), 1);
    assert!(evaluator.advance_to(330 * S).is_empty());
    assert_eq!(evaluator.series(), 1, "held while its alert keeps firing");
    let events = evaluator.advance_to(340 * S);
    assert_eq!(
        summary(&events),
        [event("HighLoad", "web-1", AlertStatus::Resolved, 340)]
    );
    assert_eq!(evaluator.series(), 0);
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

/// A batch of lines of `host` with the parsed field `field` set to each value.
fn field_logs(host: &str, field: &str, lines: &[(i64, &str)]) -> LogBatch {
    let mut batch = logs(
        host,
        &lines.iter().map(|(t, _)| (*t, "line")).collect::<Vec<_>>(),
    );
    for (line, (_, value)) in batch.lines.iter_mut().zip(lines) {
        line.fields = vec![label(field, *value)];
    }
    batch
}

const LOGIN_SPIKE: &str = r#"
groups:
  - name: auth
    interval: 10s
    rules:
      - alert: LoginErrorSpike
        logs: {match: 'message =~ "ERROR"'}
        type: spike
        spike: {window: 1m, baseline: 5m, ratio: 4, min_count: 5}
"#;

/// One ERROR line every 30s from 0s to 600s: 2 a minute.
fn steady_errors(evaluator: &mut Evaluator, until: i64) -> Vec<AlertEvent> {
    let lines: Vec<(i64, &str)> = (0..=until).step_by(30).map(|t| (t, "ERROR")).collect();
    evaluator.observe_logs(&logs("web-1", &lines))
}

#[test]
fn log_spike_fires_on_a_rate_jump_over_the_baseline_and_resolves() {
    let mut evaluator = Evaluator::new(rule_set_for_test(LOGIN_SPIKE));
    let mut events = steady_errors(&mut evaluator, 450);
    assert!(events.is_empty(), "a steady rate is no spike: {events:?}");
    // 12 more at 455s: 14 in (395s, 455s] against 10 in the 5 minutes before,
    // 7 times the baseline rate.
    events.extend(evaluator.observe_logs(&logs("web-1", &[(455, "ERROR"); 12])));
    events.extend(evaluator.advance_to(600 * S));
    assert_eq!(
        summary(&events),
        [
            event("LoginErrorSpike", "", AlertStatus::Firing, 455),
            event("LoginErrorSpike", "", AlertStatus::Resolved, 520),
        ]
    );
    assert!((events[0].value - 7.0).abs() < 1e-9, "{}", events[0].value);
}

#[test]
fn log_spike_waits_until_it_has_watched_the_whole_baseline() {
    let mut evaluator = Evaluator::new(rule_set_for_test(LOGIN_SPIKE));
    let mut events = steady_errors(&mut evaluator, 90);
    // A burst 100s after the start: the 5 minutes before the window were not
    // watched, so there is nothing to compare with.
    events.extend(evaluator.observe_logs(&logs("web-1", &[(100, "ERROR"); 30])));
    events.extend(evaluator.advance_to(200 * S));
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn log_spike_counts_late_lines_in_their_own_window() {
    let mut evaluator = Evaluator::new(rule_set_for_test(LOGIN_SPIKE));
    let mut events = steady_errors(&mut evaluator, 450);
    events.extend(evaluator.advance_to(458 * S));
    // The burst of 455s arrives after the clock passed it: it still belongs to
    // the window ending at the clock.
    events.extend(evaluator.observe_logs(&logs("web-1", &[(455, "ERROR"); 12])));
    assert_eq!(
        summary(&events),
        [event("LoginErrorSpike", "", AlertStatus::Firing, 458)]
    );
}

const HEARTBEAT: &str = r#"
groups:
  - name: app
    interval: 10s
    rules:
      - alert: HeartbeatMissing
        logs: {match: 'message =~ "heartbeat"'}
        type: flatline
        threshold: {window: 1m}
        group_by: [host.name]
"#;

fn heartbeats(evaluator: &mut Evaluator, host: &str, from: i64, to: i64) -> Vec<AlertEvent> {
    let lines: Vec<(i64, &str)> = (from..=to).step_by(10).map(|t| (t, "heartbeat")).collect();
    evaluator.observe_logs(&logs(host, &lines))
}

#[test]
fn log_flatline_fires_for_a_key_that_went_silent_and_resolves_when_it_returns() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HEARTBEAT));
    let mut events = heartbeats(&mut evaluator, "web-2", 0, 100);
    events.extend(heartbeats(&mut evaluator, "web-1", 0, 300));
    // web-2's last line is at 100s: (100s, 160s] holds none.
    assert_eq!(
        summary(&events),
        [event("HeartbeatMissing", "web-2", AlertStatus::Firing, 160)]
    );
    assert_eq!(events[0].value, 0.0);
    let events = heartbeats(&mut evaluator, "web-2", 305, 305);
    assert_eq!(
        summary(&events),
        [event(
            "HeartbeatMissing",
            "web-2",
            AlertStatus::Resolved,
            305
        )]
    );
}

#[test]
fn log_flatline_does_not_page_before_a_whole_window_was_watched() {
    let yaml = HEARTBEAT.replace("        group_by: [host.name]\n", "");
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    // No lines at all since the start at 30s: fires one window later, not before.
    let mut events = evaluator.advance_to(30 * S);
    events.extend(evaluator.advance_to(89 * S));
    assert!(events.is_empty(), "{events:?}");
    events.extend(evaluator.advance_to(90 * S));
    assert_eq!(
        summary(&events),
        [event("HeartbeatMissing", "", AlertStatus::Firing, 90)]
    );
}

#[test]
fn log_flatline_counts_a_late_line_in_the_window_it_belongs_to() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HEARTBEAT));
    let mut events = heartbeats(&mut evaluator, "web-2", 0, 100);
    events.extend(evaluator.advance_to(158 * S));
    // The line of 150s arrives late, after the clock passed it.
    events.extend(heartbeats(&mut evaluator, "web-2", 150, 150));
    events.extend(evaluator.advance_to(200 * S));
    // (100s, 160s] holds the late line: silent only from 210s on.
    assert!(events.is_empty(), "{events:?}");
    let events = evaluator.advance_to(210 * S);
    assert_eq!(
        summary(&events),
        [event("HeartbeatMissing", "web-2", AlertStatus::Firing, 210)]
    );
}

const NEW_USER: &str = r#"
groups:
  - name: security
    interval: 30s
    rules:
      - alert: NewSudoUser
        logs: {match: 'message =~ "line"'}
        type: new_value
        new_value: {field: user.name, lookback: 10m, window: 1m, learn: 1m}
        group_by: [host.name]
        annotations: {summary: "{{ $labels.user.name }} used sudo on {{ $labels.host }}"}
"#;

#[test]
fn log_new_value_fires_once_per_unseen_value_and_forgets_after_the_lookback() {
    let mut evaluator = Evaluator::new(rule_set_for_test(NEW_USER));
    // The first minute is learned.
    let mut events = evaluator.observe_logs(&field_logs(
        "db-1",
        "user.name",
        &[(0, "alice"), (50, "carol")],
    ));
    events.extend(evaluator.observe_logs(&field_logs(
        "db-1",
        "user.name",
        &[(90, "bob"), (100, "bob"), (120, "alice"), (130, "carol")],
    )));
    // Another host has its own memory.
    events.extend(evaluator.observe_logs(&field_logs("db-2", "user.name", &[(140, "bob")])));
    events.extend(evaluator.advance_to(300 * S));
    assert_eq!(
        summary(&events),
        [
            event("NewSudoUser", "db-1", AlertStatus::Firing, 90),
            event("NewSudoUser", "db-2", AlertStatus::Firing, 140),
            event("NewSudoUser", "db-1", AlertStatus::Resolved, 150),
            event("NewSudoUser", "db-2", AlertStatus::Resolved, 210),
        ]
    );
    assert_eq!(find(&events[0].labels, "user.name"), Some("bob"));
    assert_eq!(
        events[0].annotations,
        [label("summary", "bob used sudo on db-1")]
    );
    // alice was last seen at 120s: more than 10 minutes later she is new again.
    let events = evaluator.observe_logs(&field_logs("db-1", "user.name", &[(721, "alice")]));
    assert_eq!(
        summary(&events),
        [event("NewSudoUser", "db-1", AlertStatus::Firing, 721)]
    );
    assert_eq!(find(&events[0].labels, "user.name"), Some("alice"));
}

#[test]
fn log_new_value_judges_a_late_line_at_its_event_time() {
    let mut evaluator = Evaluator::new(rule_set_for_test(NEW_USER));
    let mut events = evaluator.observe_logs(&field_logs("db-1", "user.name", &[(0, "alice")]));
    events.extend(evaluator.advance_to(800 * S));
    // dave at 790s arrives late: new, and within the minute the alert lasts.
    events.extend(evaluator.observe_logs(&field_logs("db-1", "user.name", &[(790, "dave")])));
    // A line later than the lookback cannot be judged: what came before it is
    // forgotten.
    events.extend(evaluator.observe_logs(&field_logs("db-1", "user.name", &[(100, "erin")])));
    assert_eq!(
        summary(&events),
        [event("NewSudoUser", "db-1", AlertStatus::Firing, 800)]
    );
    assert_eq!(find(&events[0].labels, "user.name"), Some("dave"));
}

#[test]
fn log_new_value_memory_is_bounded_per_key() {
    let yaml = NEW_USER.replace("lookback: 10m", "lookback: 1w");
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    let values: Vec<String> = (0..crate::MAX_REMEMBERED_VALUES)
        .map(|n| format!("user-{n}"))
        .collect();
    let lines: Vec<(i64, &str)> = values.iter().map(|v| (0, v.as_str())).collect();
    evaluator.observe_logs(&field_logs("db-1", "user.name", &lines));
    // One more value: the least recently seen one goes to make room.
    evaluator.observe_logs(&field_logs("db-1", "user.name", &[(1, "zoe")]));
    let events = evaluator.observe_logs(&field_logs(
        "db-1",
        "user.name",
        &[(100, "user-0"), (100, "zoe")],
    ));
    assert_eq!(
        summary(&events),
        [event("NewSudoUser", "db-1", AlertStatus::Firing, 100)]
    );
    assert_eq!(find(&events[0].labels, "user.name"), Some("user-0"));
}

const SCAN: &str = r#"
groups:
  - name: web
    interval: 30s
    rules:
      - alert: ManyClients
        logs: {match: 'message =~ "line"'}
        type: cardinality
        cardinality: {field: source.ip, max: 3, window: 1m}
        group_by: [host.name]
"#;

#[test]
fn log_cardinality_fires_above_max_distinct_values_in_the_window() {
    let mut evaluator = Evaluator::new(rule_set_for_test(SCAN));
    let ips = [
        (0, "10.0.0.1"),
        (10, "10.0.0.2"),
        (20, "10.0.0.1"),
        (30, "10.0.0.3"),
    ];
    let mut events = evaluator.observe_logs(&field_logs("web-1", "source.ip", &ips));
    // Three distinct: not more than 3. The fourth fires at once.
    events.extend(evaluator.observe_logs(&field_logs("web-1", "source.ip", &[(40, "10.0.0.4")])));
    assert_eq!(
        summary(&events),
        [event("ManyClients", "web-1", AlertStatus::Firing, 40)]
    );
    assert_eq!(events[0].value, 4.0);
    // At 90s, (30s, 90s] holds only 10.0.0.4.
    let events = evaluator.advance_to(90 * S);
    assert_eq!(
        summary(&events),
        [event("ManyClients", "web-1", AlertStatus::Resolved, 90)]
    );
    assert_eq!(events[0].value, 1.0);
}

#[test]
fn log_cardinality_counts_a_late_value_in_its_window() {
    let mut evaluator = Evaluator::new(rule_set_for_test(SCAN));
    let ips = [(0, "10.0.0.1"), (10, "10.0.0.2"), (20, "10.0.0.3")];
    let mut events = evaluator.observe_logs(&field_logs("web-1", "source.ip", &ips));
    events.extend(evaluator.advance_to(50 * S));
    events.extend(evaluator.observe_logs(&field_logs("web-1", "source.ip", &[(25, "10.0.0.4")])));
    assert_eq!(
        summary(&events),
        [event("ManyClients", "web-1", AlertStatus::Firing, 50)]
    );
}

const DEVICE_SILENT: &str = r#"
groups:
  - name: network
    interval: 30s
    rules:
      - alert: DeviceSilent
        metric: snmp.up
        match: {role: core}
        condition: absent(2m)
        annotations: {summary: "{{ $labels.host }} silent for {{ $value | humanizeDuration }}"}
"#;

#[test]
fn absent_fires_for_a_series_that_stopped_and_resolves_when_it_returns() {
    let mut evaluator = Evaluator::new(rule_set_for_test(DEVICE_SILENT));
    let mut events = Vec::new();
    for seconds in (0..=630).step_by(30) {
        events.extend(evaluator.observe_metrics(&gauge(
            "sw1",
            "snmp.up",
            &[("role", "core")],
            seconds,
            1.0,
        )));
        if seconds <= 60 || seconds == 630 {
            events.extend(evaluator.observe_metrics(&gauge(
                "sw2",
                "snmp.up",
                &[("role", "core")],
                seconds,
                1.0,
            )));
        }
    }
    events.extend(evaluator.advance_to(660 * S));
    // Silent from 60s: fires after 2 minutes, and stays firing long after a
    // series would have gone stale, until samples return.
    assert_eq!(
        summary(&events),
        [
            event("DeviceSilent", "sw2", AlertStatus::Firing, 180),
            event("DeviceSilent", "sw2", AlertStatus::Resolved, 660),
        ]
    );
    assert_eq!(
        events[0].annotations,
        [label("summary", "sw2 silent for 2m 0s")]
    );
}

#[test]
fn absent_without_any_series_fires_once_with_the_selector_labels() {
    let yaml = DEVICE_SILENT.replace(
        "match: {role: core}",
        "match: {role: core, host: sw9, ifName: \"=~Te.*\"}",
    );
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    let mut events = evaluator.advance_to(0);
    events.extend(evaluator.advance_to(120 * S));
    assert_eq!(
        summary(&events),
        [event("DeviceSilent", "sw9", AlertStatus::Firing, 120)]
    );
    assert_eq!(
        events[0].labels,
        [
            label("alertname", "DeviceSilent"),
            label("host", "sw9"),
            label("role", "core")
        ]
    );
    let events = evaluator.observe_metrics(&gauge(
        "sw9",
        "snmp.up",
        &[("role", "core"), ("ifName", "Te1")],
        150,
        1.0,
    ));
    assert_eq!(
        summary(&events),
        [event("DeviceSilent", "sw9", AlertStatus::Resolved, 150)]
    );
}

#[test]
fn aggregated_rules_fire_once_per_group_of_series() {
    let yaml = r#"
groups:
  - name: network
    interval: 10s
    rules:
      - alert: HostTrafficHigh
        metric: if.in.bits
        condition: value > 100
        by: [host]
        aggregate: sum
"#;
    let mut evaluator = Evaluator::new(rule_set_for_test(yaml));
    let mut events = Vec::new();
    let bits = |host, interface, seconds, value| {
        gauge(host, "if.in.bits", &[("ifName", interface)], seconds, value)
    };
    for (host, interface, value) in [
        ("sw1", "eth0", 60.0),
        ("sw1", "eth1", 60.0),
        ("sw2", "eth0", 60.0),
        ("sw2", "eth1", 30.0),
    ] {
        events.extend(evaluator.observe_metrics(&bits(host, interface, 0, value)));
    }
    events.extend(evaluator.advance_to(10 * S));
    events.extend(evaluator.observe_metrics(&bits("sw1", "eth1", 20, 10.0)));
    // sw1 sums to 120 at 10s, 70 at 20s; sw2 never passes 100.
    assert_eq!(
        summary(&events),
        [
            event("HostTrafficHigh", "sw1", AlertStatus::Firing, 10),
            event("HostTrafficHigh", "sw1", AlertStatus::Resolved, 20),
        ]
    );
    assert_eq!(events[0].value, 120.0);
    assert_eq!(
        events[0].labels,
        [label("alertname", "HostTrafficHigh"), label("host", "sw1")]
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

// Regression: every new series was held, however many label values came.
#[test]
fn series_beyond_max_series_are_refused_counted_by_rule_and_the_others_still_alert() {
    let mut evaluator = Evaluator::new(rule_set_for_test(HIGH_LOAD));
    evaluator.set_max_series(2);
    let mut events = Vec::new();
    for host in ["web-1", "web-2", "web-3"] {
        events.extend(evaluator.observe_metrics(&load(host, 0, 8.0)));
    }
    assert_eq!(evaluator.series(), 2);
    assert_eq!(
        summary(&events),
        [
            event("HighLoad", "web-1", AlertStatus::Pending, 0),
            event("HighLoad", "web-2", AlertStatus::Pending, 0),
        ]
    );
    let refused = evaluator.take_refused_series();
    assert_eq!(
        refused.by_rule,
        BTreeMap::from([("HighLoad".to_owned(), 1)])
    );
    assert_eq!(refused.metrics, BTreeSet::from(["host.load.1m".to_owned()]));
    assert!(evaluator.take_refused_series().is_empty());

    evaluator.observe_metrics(&load("web-1", 10, 8.0));
    assert!(
        evaluator.take_refused_series().is_empty(),
        "held series go on"
    );
}
