//! Tests of the alert stage's self-metrics for the rules engine's bounds.

use super::*;
use std::collections::BTreeMap;
use vigil_proto::labels::label;
use vigil_proto::v1::{LogLine, LogSource, Resource};

const FAILED_LOGINS: &str = r#"
groups:
  - name: auth
    interval: 10s
    rules:
      - alert: FailedLogins
        logs: {match: 'message =~ "denied"'}
        type: frequency
        threshold: {count: 5, window: 1m}
        group_by: [user.name]
"#;

fn logins(users: &[&str]) -> LogBatch {
    LogBatch {
        resource: Some(Resource {
            id: "web-1".into(),
            host_name: "web-1".into(),
            ..Resource::default()
        }),
        source: Some(LogSource {
            dataset: "auth".into(),
            ..LogSource::default()
        }),
        lines: users
            .iter()
            .map(|user| LogLine {
                event_time_unix_nano: 1_000_000_000,
                message: b"access denied".to_vec(),
                fields: vec![label("user.name", *user)],
                ..LogLine::default()
            })
            .collect(),
    }
}

// Regression: refusals of log keys alone, which name no metric, were not counted.
#[test]
fn log_lines_of_new_keys_beyond_max_series_are_counted_by_rule() {
    let files = BTreeMap::from([("auth.yaml".to_owned(), FAILED_LOGINS.to_owned())]);
    let rules = RuleSet::from_files(&files).expect("valid rules");
    let mut evaluator = Evaluator::new(rules);
    evaluator.set_max_series(1);
    evaluator.observe_logs(&logins(&["alice", "bob", "carol"]));
    let self_metrics = SelfMetrics::default();
    let mut metrics = AlertMetrics::register(&self_metrics);
    metrics.report_refused_series(evaluator.take_refused_series());
    let text = self_metrics.encode();
    assert!(
        text.contains("vigil_alert_series_refused_total{rule=\"FailedLogins\"} 2"),
        "{text}"
    );
}
