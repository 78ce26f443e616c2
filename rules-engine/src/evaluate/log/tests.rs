//! Tests of the bounds of log-rule state: line times kept as counts per distinct
//! time and merged beyond a cap, keys held under the evaluator's `max_series`,
//! and keys forgotten once their window is empty.

use super::*;
use crate::evaluate::{Evaluator, RuleState};
use crate::rule_set_for_test;
use proptest::prelude::*;
use vigil_proto::labels::label;
use vigil_proto::v1::{AlertStatus, LogBatch, LogLine, LogSource, Resource};

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

/// A batch of lines of `host` at the given event times (nanoseconds), each with
/// the parsed field `field` set to its value when one is given.
fn lines(host: &str, field: &str, lines: &[(i64, &str)]) -> LogBatch {
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
            .map(|(index, (time, value))| LogLine {
                offset: index as u64 * 100,
                length: 100,
                event_time_unix_nano: *time,
                observed_time_unix_nano: *time,
                message: b"ERROR line".to_vec(),
                fields: if value.is_empty() {
                    Vec::new()
                } else {
                    vec![label(field, *value)]
                },
                ..LogLine::default()
            })
            .collect(),
    }
}

/// The state of the first rule of the first group.
fn first_rule(evaluator: &Evaluator) -> &LogState {
    match &evaluator.groups[0].rules[0] {
        RuleState::Log(state) => state,
        RuleState::Metric(_) => panic!("the first rule is a log rule"),
    }
}

/// (status, evaluated at in milliseconds, value) of each event.
fn statuses(events: &[AlertEvent]) -> Vec<(AlertStatus, i64, f64)> {
    events
        .iter()
        .map(|e| (e.status(), e.evaluated_at_unix_nano / MS, e.value))
        .collect()
}

const LOGINS_BY_USER: &str = r#"
groups:
  - name: auth
    interval: 10s
    rules:
      - alert: FailedLogins
        logs: {match: 'message =~ "ERROR"'}
        type: frequency
        threshold: {count: 2, window: 1m}
        group_by: [user.name]
"#;

// Regression: every new `group_by` value made a key, however many came.
#[test]
fn a_flood_of_distinct_keys_stays_at_max_series_and_is_counted_by_rule() {
    let mut evaluator = Evaluator::new(rule_set_for_test(LOGINS_BY_USER));
    evaluator.set_max_series(3);
    let users: Vec<String> = (0..10).map(|n| format!("user-{n}")).collect();
    let flood: Vec<(i64, &str)> = users.iter().map(|u| (S, u.as_str())).collect();
    evaluator.observe_logs(&lines("web-1", "user.name", &flood));
    assert_eq!(evaluator.log_keys(), 3);
    assert_eq!(first_rule(&evaluator).keys.len(), 3);
    let refused = evaluator.take_refused_series();
    assert_eq!(
        refused.by_rule,
        BTreeMap::from([("FailedLogins".to_owned(), 7)])
    );
    assert!(refused.metrics.is_empty());
    assert!(evaluator.take_refused_series().is_empty());

    // A held key goes on counting and fires; a refused one is still refused.
    let events = evaluator.observe_logs(&lines(
        "web-1",
        "user.name",
        &[(2 * S, "user-0"), (2 * S, "user-9")],
    ));
    assert_eq!(statuses(&events), [(AlertStatus::Firing, 2_000, 2.0)]);
    assert_eq!(
        evaluator.take_refused_series().by_rule,
        BTreeMap::from([("FailedLogins".to_owned(), 1)])
    );
}

#[test]
fn metric_series_and_log_keys_share_max_series() {
    let yaml = format!(
        "{LOGINS_BY_USER}      - alert: HighLoad\n        metric: host.load.1m\n        \
         condition: value > 4\n"
    );
    let mut evaluator = Evaluator::new(rule_set_for_test(&yaml));
    evaluator.set_max_series(2);
    evaluator.observe_logs(&lines("web-1", "user.name", &[(S, "alice"), (S, "bob")]));
    assert_eq!(evaluator.log_keys(), 2);
    let batch = vigil_proto::v1::MetricBatch {
        resource: Some(Resource {
            id: "web-1".into(),
            host_name: "web-1".into(),
            ..Resource::default()
        }),
        samples: vec![vigil_proto::v1::Sample {
            name: "host.load.1m".into(),
            time_unix_nano: 2 * S,
            value: Some(vigil_proto::v1::sample::Value::Gauge(8.0)),
            ..vigil_proto::v1::Sample::default()
        }],
        producer: "test".into(),
    };
    assert!(evaluator.observe_metrics(&batch).is_empty());
    assert_eq!(evaluator.series(), 0);
    let refused = evaluator.take_refused_series();
    assert_eq!(
        refused.by_rule,
        BTreeMap::from([("HighLoad".to_owned(), 1)])
    );

    // Once the log window is empty, the keys are forgotten and their room is free.
    evaluator.advance_to(70 * S);
    assert_eq!(evaluator.log_keys(), 0);
    let mut batch = batch;
    batch.samples[0].time_unix_nano = 71 * S;
    assert_eq!(evaluator.observe_metrics(&batch).len(), 1);
    assert_eq!(evaluator.series(), 1);
}

/// Rules of every type that keeps keys, each grouped by host.
const EVERY_TYPE: &str = r#"
groups:
  - name: logs
    interval: 10s
    rules:
      - alert: Burst
        logs: {match: 'message =~ "ERROR"'}
        type: frequency
        threshold: {count: 5, window: 1m}
        group_by: [host.name]
      - alert: Seen
        logs: {match: 'message =~ "ERROR"'}
        type: any
        threshold: {window: 30s}
        group_by: [host.name]
      - alert: Spike
        logs: {match: 'message =~ "ERROR"'}
        type: spike
        spike: {window: 1m, baseline: 2m, ratio: 3, min_count: 2}
        group_by: [host.name]
      - alert: NewUser
        logs: {match: 'message =~ "ERROR"'}
        type: new_value
        new_value: {field: user.name, lookback: 2m, window: 1m, learn: 0s}
        group_by: [host.name]
      - alert: ManyUsers
        logs: {match: 'message =~ "ERROR"'}
        type: cardinality
        cardinality: {field: user.name, max: 1, window: 1m}
        group_by: [host.name]
"#;

#[test]
fn keys_whose_window_emptied_are_forgotten_and_free_their_room() {
    let mut evaluator = Evaluator::new(rule_set_for_test(EVERY_TYPE));
    let users = ["alice", "bob", "carol"];
    for (n, host) in ["web-1", "web-2", "web-3"].iter().enumerate() {
        let batch: Vec<(i64, &str)> = users.iter().map(|u| ((10 + n as i64) * S, *u)).collect();
        evaluator.observe_logs(&lines(host, "user.name", &batch));
    }
    evaluator.advance_to(15 * S);
    assert!(evaluator.log_keys() > 0);
    // Longer than every window and lookback, and a tick past it.
    evaluator.advance_to(400 * S);
    assert_eq!(evaluator.log_keys(), 0, "{:#?}", evaluator.groups[0].rules);
    for rule in &evaluator.groups[0].rules {
        let RuleState::Log(state) = rule else {
            panic!("log rules only");
        };
        assert!(
            state.keys.is_empty() && state.values.is_empty(),
            "{state:#?}"
        );
        assert!(state.arrivals.is_empty(), "{state:#?}");
    }
    // The room they held takes new keys.
    evaluator.set_max_series(2);
    evaluator.observe_logs(&lines("web-4", "user.name", &[(401 * S, "dave")]));
    assert_eq!(evaluator.log_keys(), 2);
    let refused = ["Spike", "NewUser", "ManyUsers"].map(|rule| (rule.to_owned(), 1));
    assert_eq!(
        evaluator.take_refused_series().by_rule,
        BTreeMap::from(refused)
    );
}

// Regression: a key held the time of every line in its window.
#[test]
fn a_flood_of_one_key_keeps_bounded_times_and_fires_and_resolves_at_the_exact_count() {
    let yaml = r#"
groups:
  - name: auth
    interval: 10s
    rules:
      - alert: Flood
        logs: {match: 'message =~ "ERROR"'}
        type: frequency
        threshold: {count: 10000, window: 1m}
"#;
    let mut evaluator = Evaluator::new(rule_set_for_test(yaml));
    // 20,000 lines a millisecond apart, from 1s; then 1,000 lines of each time
    // at 30s: a flood of distinct times, then of one.
    let flood: Vec<(i64, &str)> = (0..20_000).map(|n| (S + n * MS, "")).collect();
    let mut events = evaluator.observe_logs(&lines("web-1", "", &flood));
    assert!(first_rule(&evaluator).keys[&BaseLabels::new()].times.len() <= MAX_LINE_TIMES);
    let same_time: Vec<(i64, &str)> = (0..1_000).map(|_| (30 * S, "")).collect();
    events.extend(evaluator.observe_logs(&lines("web-1", "", &same_time)));
    let key = &first_rule(&evaluator).keys[&BaseLabels::new()];
    assert!(key.times.len() <= MAX_LINE_TIMES, "{}", key.times.len());
    events.extend(evaluator.advance_to(100 * S));
    // As without a bound: fires at the 10,000th line (at 10.999s); the window
    // (t - 60s, t] holds fewer than 10,000 once t - 60s passes the line at
    // 12s (8,999 of the flood and the 1,000 at 30s left): at the 80s tick, with
    // the 1,999 lines of (20s, 80s].
    assert_eq!(
        statuses(&events),
        [
            (AlertStatus::Firing, 10_999, 10_000.0),
            (AlertStatus::Resolved, 80_000, 1_999.0),
        ]
    );
    // 20,000 distinct times and one more at 30s: 10,001 merged beyond the cap.
    assert_eq!(
        evaluator.take_merged_log_times(),
        BTreeMap::from([("Flood".to_owned(), 10_001)])
    );
}

/// One step of a line sequence offered to a key: a line at `at + offset`
/// (offset negative for a late line), or an evaluation `step` later.
#[derive(Debug, Clone)]
enum TimesOp {
    Line { offset: i64 },
    Evaluate { step: i64 },
}

fn times_op() -> impl Strategy<Value = TimesOp> {
    prop_oneof![
        3 => (-30i64..30).prop_map(|offset| TimesOp::Line { offset }),
        1 => (0i64..20).prop_map(|step| TimesOp::Evaluate { step }),
    ]
}

/// The lines of a key as the unbounded model keeps them: every time.
fn naive_count(times: &[i64], from: i64, to: i64) -> u64 {
    times.iter().filter(|t| **t > from && **t <= to).count() as u64
}

#[test]
fn line_times_merge_equal_times_and_count_late_lines_where_they_belong() {
    let mut times = LineTimes::default();
    for _ in 0..1_000 {
        times.insert(10);
    }
    times.insert(20);
    times.insert(15);
    times.insert(15);
    times.insert(5);
    assert_eq!(times.len(), 4);
    assert_eq!(times.count(0, 20), 1_004);
    assert_eq!(times.count(10, 15), 2);
    assert_eq!(times.count(5, 10), 1_000);
    times.forget_until(10);
    assert_eq!(times.count(i64::MIN, i64::MAX), 3);
    // Beyond a capacity of one, 15 merges into 20: its lines count there.
    assert_eq!(times.merge_oldest(20, 1), 1);
    assert_eq!((times.len(), times.count(15, 20)), (1, 3));
}

proptest! {
    /// Below the cap, the counts of the runs are those of every line kept.
    #[test]
    fn line_times_count_as_the_unbounded_model(
        ops in proptest::collection::vec(times_op(), 1..200),
        windows in proptest::collection::vec((0i64..200, 0i64..200), 1..10),
    ) {
        let (mut times, mut naive, mut at) = (LineTimes::default(), Vec::new(), 100);
        for op in ops {
            match op {
                TimesOp::Line { offset } => {
                    times.insert(at + offset);
                    naive.push(at + offset);
                }
                TimesOp::Evaluate { step } => {
                    at += step;
                    times.forget_until(at - 50);
                    naive.retain(|t| *t > at - 50);
                    prop_assert_eq!(times.merge_oldest(at, MAX_LINE_TIMES), 0);
                }
            }
            for &(from, length) in &windows {
                let (from, to) = (at - 100 + from, at - 100 + from + length);
                prop_assert_eq!(times.count(from, to), naive_count(&naive, from, to));
            }
        }
    }

    /// With a cap of `capacity` distinct times, merged at each evaluation as a
    /// rule does, whether a window holds at least `threshold <= capacity` lines
    /// (frequency) or fewer (flatline) is what the unbounded model says.
    #[test]
    fn merged_line_times_judge_a_threshold_as_the_unbounded_model(
        ops in proptest::collection::vec(times_op(), 1..300),
        capacity in 1usize..6,
        threshold in 1u64..6,
        window in 1i64..60,
    ) {
        let threshold = threshold.min(capacity as u64);
        let (mut times, mut naive, mut at) = (LineTimes::default(), Vec::new(), 100);
        for op in ops {
            match op {
                TimesOp::Line { offset } => {
                    times.insert(at + offset);
                    naive.push(at + offset);
                }
                TimesOp::Evaluate { step } => {
                    at += step;
                    let bounded = times.count(at - window, at);
                    let unbounded = naive_count(&naive, at - window, at);
                    prop_assert_eq!(
                        bounded >= threshold,
                        unbounded >= threshold,
                        "at {}: {} bounded, {} unbounded", at, bounded, unbounded
                    );
                    times.forget_until(at - window);
                    times.merge_oldest(at, capacity);
                    prop_assert!(times.runs.iter().filter(|(t, _)| *t <= at).count() <= capacity);
                }
            }
        }
    }
}
