//! Tests of the documents the index stage builds from bus batches: their ECS fields,
//! deterministic ids, and turning a refused document back into its record.

use super::*;
use serde_json::{Value, json};
use vigil_proto::labels::label;
use vigil_proto::v1::{
    AlertEvent, AlertStatus, LogBatch, LogLine, LogSource, MetricBatch, MetricKind, Sample, sample,
};

/// 2024-05-01T10:00:00Z
const T0: i64 = 1_714_557_600_000_000_000;
const INGESTED: &str = "2024-05-01T10:00:02Z";

fn resource() -> Resource {
    Resource {
        id: "dev-7".into(),
        kind: ResourceKind::Device.into(),
        host_name: "core-sw-1".into(),
        attributes: vec![label("site", "fra1"), label("role", "switch")],
    }
}

fn line(offset: u64, text: &[u8]) -> LogLine {
    LogLine {
        offset,
        event_time_unix_nano: T0 + 123_456_789,
        observed_time_unix_nano: T0 + 500_000_000,
        message: text.to_vec(),
        length: text.len() as u64 + 1,
        ..LogLine::default()
    }
}

fn log_batch(lines: Vec<LogLine>) -> LogBatch {
    LogBatch {
        resource: Some(resource()),
        source: Some(LogSource {
            path: "/var/log/syslog".into(),
            source_id: "2049:131".into(),
            dataset: String::new(),
            ..LogSource::default()
        }),
        lines,
    }
}

fn json(document: &Document) -> Value {
    serde_json::from_slice(&document.body).unwrap()
}

fn counter(name: &str, labels: Vec<Label>, time: i64, value: u64) -> Sample {
    Sample {
        name: name.into(),
        labels,
        kind: MetricKind::Counter.into(),
        time_unix_nano: time,
        value: Some(sample::Value::Counter(value)),
        metric_set: "if".into(),
        ..Sample::default()
    }
}

fn metric_batch(samples: Vec<Sample>) -> MetricBatch {
    MetricBatch {
        resource: Some(resource()),
        samples,
        producer: "test".into(),
    }
}

#[test]
fn a_log_line_becomes_an_ecs_document() {
    let mut flagged = line(17, b"caf\xe9 overflow");
    flagged.truncated = true;
    flagged.invalid_utf8 = true;
    flagged.fields = vec![label("level", "warn")];
    let documents = log_documents(
        &log_batch(vec![line(0, b"hello"), flagged]),
        "logs",
        4,
        INGESTED,
    );

    assert_eq!(documents.len(), 2);
    assert_eq!(documents[0].index, "logs");
    assert_eq!(documents[0].origin, 4);
    assert_eq!(
        json(&documents[0]),
        json!({
            "@timestamp": "2024-05-01T10:00:00.123456789Z",
            "message": "hello",
            "event": {
                "kind": "event",
                "dataset": "generic",
                "created": "2024-05-01T10:00:00.500Z",
                "ingested": INGESTED,
            },
            "host": {"name": "core-sw-1"},
            "log": {"file": {"path": "/var/log/syslog"}, "offset": 0},
            "labels": {"role": "switch", "site": "fra1"},
            "vigil": {"resource": {"id": "dev-7", "kind": "device"}},
        })
    );
    let second = json(&documents[1]);
    assert_eq!(second["message"], "caf\u{fffd} overflow");
    assert_eq!(second["tags"], json!(["truncated", "invalid_utf8"]));
    assert_eq!(second["fields"], json!({"level": "warn"}));
    assert_eq!(second["log"]["offset"], 17);
    assert_eq!((documents[0].record, documents[1].record), (0, 1));
}

#[test]
fn log_ids_are_deterministic_and_distinct_per_offset() {
    let batch = log_batch(vec![line(0, b"a"), line(2, b"b")]);
    let first = log_documents(&batch, "logs", 0, INGESTED);
    let again = log_documents(&batch, "logs", 9, "2030-01-01T00:00:00Z");
    assert_eq!(first[0].id, again[0].id);
    assert_eq!(first[1].id, again[1].id);
    assert_ne!(first[0].id, first[1].id);
    assert_eq!(first[0].id, log_document_id("dev-7", "2049:131", 0));
    assert_eq!(first[0].id.len(), 32);
    // Another file instance at the same offset is another line.
    assert_ne!(
        log_document_id("dev-7", "2049:131", 0),
        log_document_id("dev-7", "2049:132", 0)
    );
}

#[test]
fn a_line_without_event_time_is_stamped_with_its_observed_time() {
    let mut undated = line(0, b"x");
    undated.event_time_unix_nano = 0;
    let document = json(&log_documents(&log_batch(vec![undated]), "logs", 0, INGESTED)[0]);
    assert_eq!(document["@timestamp"], "2024-05-01T10:00:00.500Z");
}

#[test]
fn samples_of_one_set_label_set_and_timestamp_share_a_document() {
    let lo = || vec![label("ifName", "lo"), label("ifIndex", "1")];
    let lo_reordered = vec![label("ifIndex", "1"), label("ifName", "lo")];
    let eth0 = vec![label("ifName", "eth0"), label("ifIndex", "2")];
    let batch = metric_batch(vec![
        counter("if.in.octets", lo(), T0, 123),
        counter("if.out.octets", lo_reordered, T0, 456),
        counter("if.in.octets", eth0, T0, 7),
        counter("if.in.octets", lo(), T0 + 1_000_000_000, 124),
    ]);
    let documents = metric_documents(&batch, MetricStream::Raw, "metrics", 1, INGESTED);
    assert_eq!(documents.len(), 3);
    assert_eq!(
        json(&documents[0]),
        json!({
            "@timestamp": "2024-05-01T10:00:00Z",
            "event": {"kind": "metric", "dataset": "if", "ingested": INGESTED},
            "metricset": {"name": "if"},
            "host": {"name": "core-sw-1"},
            "labels": {"ifIndex": "1", "ifName": "lo", "role": "switch", "site": "fra1"},
            "metrics": {"if.in.octets": 123, "if.out.octets": 456},
            "vigil": {"resource": {"id": "dev-7", "kind": "device"}},
        })
    );
    assert_eq!(
        documents[0].id,
        metric_document_id("dev-7", MetricStream::Raw, "if", &lo(), T0)
    );
    let ids: std::collections::HashSet<_> = documents.iter().map(|d| &d.id).collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn derived_samples_do_not_collide_with_raw_ones() {
    let batch = metric_batch(vec![counter("if.in.octets", vec![], T0, 1)]);
    let raw = metric_documents(&batch, MetricStream::Raw, "metrics", 0, INGESTED);
    let derived = metric_documents(&batch, MetricStream::Derived, "metrics", 0, INGESTED);
    assert_ne!(raw[0].id, derived[0].id);
    assert_eq!(json(&derived[0])["vigil"]["derived"], true);
    assert_eq!(json(&raw[0])["vigil"].get("derived"), None);
}

#[test]
fn counters_above_2_pow_53_stay_exact_and_gauges_stay_floats() {
    let huge = (1u64 << 53) + 1;
    let mut gauge = counter("if.speed", vec![], T0, 0);
    gauge.value = Some(sample::Value::Gauge(1000.0));
    let batch = metric_batch(vec![
        counter("if.in.octets", vec![], T0, huge),
        counter("if.out.octets", vec![], T0, u64::MAX),
        gauge,
    ]);
    let documents = metric_documents(&batch, MetricStream::Raw, "metrics", 0, INGESTED);
    let body = String::from_utf8(documents[0].body.clone()).unwrap();
    assert!(
        body.contains(r#""if.in.octets":9007199254740993"#),
        "{body}"
    );
    assert!(
        body.contains(r#""if.out.octets":18446744073709551615"#),
        "{body}"
    );
    assert!(body.contains(r#""if.speed":1000.0"#), "{body}");
}

#[test]
fn float_counters_are_floats_and_staleness_markers_make_no_document() {
    let mut float_counter = counter("http_requests_total", vec![], T0, 0);
    float_counter.value = Some(sample::Value::FloatCounter(1027.0));
    let mut marker = counter("http_requests_total", vec![], T0 + 15, 0);
    marker.value = Some(sample::Value::FloatCounter(
        vigil_proto::staleness::stale_marker(),
    ));
    let mut gauge_marker = counter("up", vec![label("job", "node")], T0 + 15, 0);
    gauge_marker.value = Some(sample::Value::Gauge(vigil_proto::staleness::stale_marker()));
    let batch = metric_batch(vec![float_counter, marker, gauge_marker]);
    let documents = metric_documents(&batch, MetricStream::Raw, "metrics", 0, INGESTED);
    assert_eq!(documents.len(), 1);
    assert_eq!(
        json(&documents[0])["metrics"]["http_requests_total"],
        json!(1027.0)
    );
    let body = String::from_utf8(documents[0].body.clone()).unwrap();
    assert!(body.contains(r#""http_requests_total":1027.0"#), "{body}");
}

#[test]
fn an_alert_event_becomes_an_alert_document() {
    let event = AlertEvent {
        group: "network".into(),
        alert: "InterfaceDown".into(),
        labels: vec![
            label("ifName", "eth0"),
            label("host", "core-sw-1"),
            label("severity", "page"),
        ],
        annotations: vec![label("summary", "eth0 is down")],
        status: AlertStatus::Firing.into(),
        starts_at_unix_nano: T0,
        ends_at_unix_nano: 0,
        value: 0.0,
        fingerprint: "3f2a".into(),
        evaluated_at_unix_nano: T0 + 60_000_000_000,
    };
    let document = alert_document(&event, "alerts", 2, INGESTED);
    assert_eq!(
        json(&document),
        json!({
            "@timestamp": "2024-05-01T10:01:00Z",
            "event": {"kind": "alert", "start": "2024-05-01T10:00:00Z", "ingested": INGESTED},
            "host": {"name": "core-sw-1"},
            "rule": {"name": "InterfaceDown", "ruleset": "network"},
            "labels": {"host": "core-sw-1", "ifName": "eth0", "severity": "page"},
            "vigil": {"alert": {
                "status": "firing",
                "fingerprint": "3f2a",
                "value": 0.0,
                "annotations": {"summary": "eth0 is down"},
            }},
        })
    );
    let resolved = AlertEvent {
        status: AlertStatus::Resolved.into(),
        ends_at_unix_nano: T0 + 120_000_000_000,
        ..event.clone()
    };
    let resolved_document = alert_document(&resolved, "alerts", 2, INGESTED);
    assert_ne!(resolved_document.id, document.id);
    assert_eq!(
        json(&resolved_document)["event"]["end"],
        "2024-05-01T10:02:00Z"
    );
    assert_eq!(
        alert_document(&event, "alerts", 0, INGESTED).id,
        document.id
    );
}

#[test]
fn a_rejected_document_can_be_turned_back_into_its_record() {
    let batch = log_batch(vec![line(0, b"a"), line(2, b"b")]);
    let record = log_record(&batch, 1);
    assert_eq!(record.lines, vec![line(2, b"b")]);
    assert_eq!(record.source, batch.source);
    assert_eq!(
        log_documents(&record, "logs", 0, INGESTED)[0].id,
        log_documents(&batch, "logs", 0, INGESTED)[1].id
    );

    let lo = vec![label("ifName", "lo")];
    let eth0 = vec![label("ifName", "eth0")];
    let batch = metric_batch(vec![
        counter("if.in.octets", lo.clone(), T0, 1),
        counter("if.in.octets", eth0.clone(), T0, 2),
        counter("if.out.octets", lo.clone(), T0, 3),
    ]);
    let documents = metric_documents(&batch, MetricStream::Raw, "metrics", 0, INGESTED);
    assert_eq!(documents[0].record, 0);
    assert_eq!(documents[1].record, 1);
    let record = metric_record(&batch, documents[0].record);
    assert_eq!(
        record.samples,
        vec![
            counter("if.in.octets", lo.clone(), T0, 1),
            counter("if.out.octets", lo, T0, 3),
        ]
    );
    let again = metric_documents(&record, MetricStream::Raw, "metrics", 0, INGESTED);
    assert_eq!(again, vec![documents[0].clone()]);
}

#[test]
fn duplicate_and_unnamed_labels_do_not_break_the_json_object() {
    let labels = [label("a", "1"), label("", "x"), label("a", "2")];
    assert_eq!(label_object(&labels), BTreeMap::from([("a", "2")]));
}

#[test]
fn index_names_elasticsearch_would_refuse_are_rejected() {
    assert_eq!(IndexNames::default().validate(), Ok(()));
    let bad = IndexNames {
        metrics: "Vigil-Metrics".into(),
        ..IndexNames::default()
    };
    assert_eq!(
        bad.validate().unwrap_err().to_string(),
        "index name `Vigil-Metrics` for metrics is invalid: it must be lowercase"
    );
    for name in ["", "..", "_logs", "a/b", "a b", "a,b"] {
        assert!(index_name_problem(name).is_some(), "{name}");
    }
}
