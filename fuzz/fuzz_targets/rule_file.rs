//! Fuzzes the rule file parser and checker (`RuleSet::from_files`): any text
//! gives a rule set or errors that each name the file, never a panic. An
//! accepted rule set is then evaluated over samples of the metrics and a line
//! of the datasets its rules watch, and every alert event and state it makes
//! must be one the alert and index stages accept from the wire.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use vigil_proto::Payload;
use vigil_proto::v1::{LogBatch, LogLine, LogSource, MetricBatch, Resource, Sample, sample};
use vigil_rules::{Evaluator, RuleKind, RuleSet};

const FILE: &str = "rules.yaml";
const MINUTE: i64 = 60_000_000_000;
/// 2024-01-01, in nanoseconds since the Unix epoch.
const START: i64 = 1_704_067_200_000_000_000;

fn resource() -> Resource {
    Resource {
        id: "web-1".into(),
        host_name: "web-1".into(),
        ..Resource::default()
    }
}

fn metrics(rules: &RuleSet, time: i64, value: f64) -> MetricBatch {
    let samples = rules
        .rules()
        .filter_map(|(_, rule)| match rule.kind() {
            RuleKind::Metric(metric) => Some(Sample {
                name: metric.metric().to_owned(),
                time_unix_nano: time,
                value: Some(sample::Value::Gauge(value)),
                ..Sample::default()
            }),
            RuleKind::Log(_) => None,
        })
        .collect();
    MetricBatch {
        resource: Some(resource()),
        samples,
        producer: "fuzz".into(),
    }
}

fn logs(dataset: &str, time: i64) -> LogBatch {
    LogBatch {
        resource: Some(resource()),
        source: Some(LogSource {
            path: "/var/log/app.log".into(),
            source_id: "1:2".into(),
            dataset: dataset.to_owned(),
            ..LogSource::default()
        }),
        lines: vec![LogLine {
            offset: 0,
            length: 6,
            event_time_unix_nano: time,
            observed_time_unix_nano: time,
            message: b"error".to_vec(),
            ..LogLine::default()
        }],
    }
}

fn evaluate(rules: RuleSet) {
    let datasets: Vec<String> = rules
        .rules()
        .filter_map(|(_, rule)| match rule.kind() {
            RuleKind::Log(log) => Some(log.dataset().unwrap_or("app").to_owned()),
            RuleKind::Metric(_) => None,
        })
        .collect();
    let metric_batches = [
        metrics(&rules, START, 1e9),
        metrics(&rules, START + MINUTE, 0.0),
    ];
    let mut evaluator = Evaluator::new(rules);
    let mut events = Vec::new();
    for batch in &metric_batches {
        if !batch.samples.is_empty() {
            events.extend(evaluator.observe_metrics(batch));
        }
    }
    for dataset in &datasets {
        events.extend(evaluator.observe_logs(&logs(dataset, START + MINUTE)));
    }
    events.extend(evaluator.advance_to(START + 60 * MINUTE));
    for event in events {
        if let Err(reason) = event.check() {
            panic!("the rules made an alert event the wire refuses: {reason}\n{event:?}");
        }
    }
    for state in evaluator.take_state_changes() {
        if let Err(reason) = state.check() {
            panic!("the rules made an alert state the wire refuses: {reason}\n{state:?}");
        }
    }
}

fuzz_target!(|text: &str| {
    let files = BTreeMap::from([(FILE.to_owned(), text.to_owned())]);
    match RuleSet::from_files(&files) {
        Ok(rules) => evaluate(rules),
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error");
            for error in errors {
                assert_eq!(error.file(), FILE, "{error}");
                assert!(error.to_string().starts_with(FILE), "{error}");
            }
        }
    }
});
