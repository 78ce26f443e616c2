//! Documents: how batches from the bus become Elasticsearch documents in Elastic
//! Common Schema, the step between decoding a message and the bulk write.
//!
//! Every document id is a content hash of what the document is (resource, source and
//! offset; resource, metric set, labels and timestamp; alert fingerprint, status and
//! start), never of when it was sent, so a redelivered message lands on the same ids
//! and Elasticsearch answers 409 instead of storing a duplicate.
//!
//! Bodies are serialized once, here, from borrowed structs: the bulk request and the
//! NDJSON files only copy bytes. `event.ingested` (when the index stage built the
//! document) is the only field not taken from the record; a redelivered record keeps
//! its first copy, ingestion time included.
//!
//! Field names follow Elastic Common Schema; the mappings they are written for are
//! the component templates in `dashboards/component-templates`.

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;
use vigil_proto::labels::ContentId;
use vigil_proto::v1::{
    AlertEvent, AlertStatus, Label, LogBatch, LogSource, MetricBatch, Resource, ResourceKind,
    sample,
};

/// The index each kind of document is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexNames {
    /// Log lines.
    pub logs: String,
    /// Raw and derived metrics.
    pub metrics: String,
    /// Alert state changes.
    pub alerts: String,
}

impl Default for IndexNames {
    fn default() -> Self {
        Self {
            logs: "vigil-logs".to_owned(),
            metrics: "vigil-metrics".to_owned(),
            alerts: "vigil-alerts".to_owned(),
        }
    }
}

/// An index name Elasticsearch would refuse, which would reject every document.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("index name `{name}` for {role} is invalid: {reason}")]
pub struct InvalidIndexName {
    role: &'static str,
    name: String,
    reason: &'static str,
}

impl IndexNames {
    /// Checks every name against Elasticsearch's rules for index names.
    pub fn validate(&self) -> Result<(), InvalidIndexName> {
        for (role, name) in [
            ("logs", &self.logs),
            ("metrics", &self.metrics),
            ("alerts", &self.alerts),
        ] {
            if let Some(reason) = index_name_problem(name) {
                return Err(InvalidIndexName {
                    role,
                    name: name.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

fn index_name_problem(name: &str) -> Option<&'static str> {
    const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];
    if name.is_empty() || name == "." || name == ".." {
        Some("it must be a non-empty name other than `.` and `..`")
    } else if name.len() > 255 {
        Some("it must be at most 255 bytes long")
    } else if name.starts_with(['-', '_', '+']) {
        Some("it must not start with `-`, `_` or `+`")
    } else if name.chars().any(|c| c.is_uppercase()) {
        Some("it must be lowercase")
    } else if name.contains(FORBIDDEN) {
        Some("it must not contain spaces or any of \\ / * ? \" < > | , # :")
    } else {
        None
    }
}

/// One document, serialized and ready for the bulk API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub index: String,
    /// Content hash, 32 hex digits: the same record always gets the same id.
    pub id: String,
    /// The document as a serialized JSON object.
    pub body: Vec<u8>,
    /// Position of the bus message this document came from in the stage's batch, so a
    /// rejected document can send its record to the dead-letter topic.
    pub origin: usize,
    /// Position of the document among those of its message: the line of a log batch,
    /// the sample group of a metric batch (see [`log_record`], [`metric_record`]).
    pub record: u32,
}

/// Which metrics topic a batch came from; raw and derived samples of one resource,
/// set, label set and timestamp are different documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricStream {
    Raw,
    Derived,
}

impl MetricStream {
    fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Derived => "derived",
        }
    }
}

/// `event.dataset` of log lines whose source names no dataset, and metric set of
/// samples that name none.
const GENERIC_DATASET: &str = "generic";

/// Id of the document of the line at `offset` of source `source_id` of a resource.
pub fn log_document_id(resource_id: &str, source_id: &str, offset: u64) -> String {
    ContentId::new()
        .part(resource_id)
        .part(source_id)
        .part(offset.to_string())
        .finish()
}

/// Id of the document holding the samples of one resource, stream, metric set, label
/// set (in any order) and timestamp.
pub fn metric_document_id(
    resource_id: &str,
    stream: MetricStream,
    metric_set: &str,
    labels: &[Label],
    time_unix_nano: i64,
) -> String {
    ContentId::new()
        .part(resource_id)
        .part(stream.name())
        .part(metric_set)
        .labels(labels)
        .part(time_unix_nano.to_string())
        .finish()
}

/// Id of the document of one alert state change.
pub fn alert_document_id(
    fingerprint: &str,
    status: AlertStatus,
    starts_at_unix_nano: i64,
) -> String {
    ContentId::new()
        .part(fingerprint)
        .part(status.as_str_name())
        .part(starts_at_unix_nano.to_string())
        .finish()
}

/// `event.ingested` for documents built now.
pub fn ingested_now() -> String {
    rfc3339(
        chrono::Utc::now()
            .timestamp_nanos_opt()
            .expect("the clock reads a time between 1677 and 2262"),
    )
}

/// One document per log line; `ingested` is the `event.ingested` of all of them.
pub fn log_documents(
    batch: &LogBatch,
    index: &str,
    origin: usize,
    ingested: &str,
) -> Vec<Document> {
    let default_resource = Resource::default();
    let resource = batch.resource.as_ref().unwrap_or(&default_resource);
    let default_source = LogSource::default();
    let source = batch.source.as_ref().unwrap_or(&default_source);
    let shared = Shared::of(resource);
    let dataset = non_empty_or(&source.dataset, GENERIC_DATASET);
    batch
        .lines
        .iter()
        .zip(0u32..)
        .map(|(line, record)| {
            let event_time = if line.event_time_unix_nano != 0 {
                line.event_time_unix_nano
            } else {
                line.observed_time_unix_nano
            };
            let mut tags = Vec::new();
            if line.truncated {
                tags.push("truncated");
            }
            if line.invalid_utf8 {
                tags.push("invalid_utf8");
            }
            let document = LogDocument {
                timestamp: rfc3339(event_time),
                message: String::from_utf8_lossy(&line.message),
                event: LogEvent {
                    kind: "event",
                    dataset,
                    created: rfc3339(line.observed_time_unix_nano),
                    ingested,
                },
                host: shared.host,
                log: Log {
                    file: (!source.path.is_empty()).then_some(LogFile { path: &source.path }),
                    offset: line.offset,
                },
                labels: &shared.attributes,
                fields: label_object(&line.fields),
                tags,
                vigil: shared.vigil,
            };
            Document {
                index: index.to_owned(),
                id: log_document_id(&resource.id, &source.source_id, line.offset),
                body: serialize(&document),
                origin,
                record,
            }
        })
        .collect()
}

/// Metric set, sorted sample labels and timestamp: what makes samples one document.
type GroupKey<'a> = (&'a str, Vec<(&'a str, &'a str)>, i64);

/// The samples of one metric document: positions in the batch's `samples`, in order.
struct SampleGroup<'a> {
    metric_set: &'a str,
    labels: &'a [Label],
    time_unix_nano: i64,
    samples: Vec<usize>,
}

/// Groups the samples of `batch` that have a value by metric set, label set (in any
/// order) and timestamp, in order of first appearance: group `n` is document `n`.
fn sample_groups(batch: &MetricBatch) -> Vec<SampleGroup<'_>> {
    let mut groups: Vec<SampleGroup<'_>> = Vec::new();
    let mut group_of: HashMap<GroupKey<'_>, usize> = HashMap::new();
    for (position, sample) in batch.samples.iter().enumerate() {
        if sample.value.is_none() {
            continue;
        }
        let metric_set = non_empty_or(&sample.metric_set, GENERIC_DATASET);
        let mut label_key: Vec<(&str, &str)> = sample
            .labels
            .iter()
            .map(|label| (label.name.as_str(), label.value.as_str()))
            .collect();
        label_key.sort_unstable();
        let group = *group_of
            .entry((metric_set, label_key, sample.time_unix_nano))
            .or_insert_with(|| {
                groups.push(SampleGroup {
                    metric_set,
                    labels: &sample.labels,
                    time_unix_nano: sample.time_unix_nano,
                    samples: Vec::new(),
                });
                groups.len() - 1
            });
        groups[group].samples.push(position);
    }
    groups
}

/// One document per metric set, sample label set and timestamp, holding all their
/// samples under `metrics.<name>`, as Metricbeat does.
///
/// `labels` merges the resource attributes with the sample labels (the sample label
/// wins a name clash), so a filter such as `labels.site` works on logs and metrics.
pub fn metric_documents(
    batch: &MetricBatch,
    stream: MetricStream,
    index: &str,
    origin: usize,
    ingested: &str,
) -> Vec<Document> {
    let default_resource = Resource::default();
    let resource = batch.resource.as_ref().unwrap_or(&default_resource);
    let shared = Shared::of(resource);
    sample_groups(batch)
        .into_iter()
        .zip(0u32..)
        .map(|(group, record)| {
            let metrics: BTreeMap<&str, MetricValue> = group
                .samples
                .iter()
                .filter_map(|&position| {
                    let sample = &batch.samples[position];
                    let value = match sample.value? {
                        sample::Value::Counter(counter) => MetricValue::Counter(counter),
                        sample::Value::Gauge(gauge) => MetricValue::Gauge(gauge),
                    };
                    Some((sample.name.as_str(), value))
                })
                .collect();
            let mut labels = shared.attributes.clone();
            labels.extend(label_object(group.labels));
            let document = MetricDocument {
                timestamp: rfc3339(group.time_unix_nano),
                event: MetricEvent {
                    kind: "metric",
                    dataset: group.metric_set,
                    ingested,
                },
                metricset: MetricSet {
                    name: group.metric_set,
                },
                host: shared.host,
                labels,
                metrics,
                vigil: MetricVigil {
                    resource: shared.vigil.resource,
                    derived: stream == MetricStream::Derived,
                },
            };
            Document {
                index: index.to_owned(),
                id: metric_document_id(
                    &resource.id,
                    stream,
                    group.metric_set,
                    group.labels,
                    group.time_unix_nano,
                ),
                body: serialize(&document),
                origin,
                record,
            }
        })
        .collect()
}

/// The log line of document `record` of `batch`, alone in a batch of its own: what
/// the dead-letter topic gets when Elasticsearch refuses that document, ready to be
/// published to the logs topic again once the cause is fixed.
pub fn log_record(batch: &LogBatch, record: u32) -> LogBatch {
    LogBatch {
        resource: batch.resource.clone(),
        source: batch.source.clone(),
        lines: batch
            .lines
            .get(record as usize)
            .cloned()
            .into_iter()
            .collect(),
    }
}

/// The samples of document `record` of `batch`, alone in a batch of their own; see
/// [`log_record`].
pub fn metric_record(batch: &MetricBatch, record: u32) -> MetricBatch {
    let samples = sample_groups(batch)
        .into_iter()
        .nth(record as usize)
        .map(|group| {
            group
                .samples
                .iter()
                .map(|&position| batch.samples[position].clone())
                .collect()
        })
        .unwrap_or_default();
    MetricBatch {
        resource: batch.resource.clone(),
        samples,
        producer: batch.producer.clone(),
    }
}

/// The document of one alert state change.
///
/// The alert's `host` label, when it has one, is also its `host.name`, so one filter
/// on a host finds its logs, metrics and alerts.
pub fn alert_document(event: &AlertEvent, index: &str, origin: usize, ingested: &str) -> Document {
    let status = event.status();
    let labels = label_object(&event.labels);
    let document = AlertDocument {
        timestamp: rfc3339(event.evaluated_at_unix_nano),
        event: AlertEventFields {
            kind: "alert",
            start: (event.starts_at_unix_nano != 0).then(|| rfc3339(event.starts_at_unix_nano)),
            end: (event.ends_at_unix_nano != 0).then(|| rfc3339(event.ends_at_unix_nano)),
            ingested,
        },
        host: labels.get("host").map(|&name| Host { name }),
        rule: Rule {
            name: &event.alert,
            ruleset: &event.group,
        },
        labels,
        vigil: AlertVigil {
            alert: AlertFields {
                status: match status {
                    AlertStatus::Unspecified => "unspecified",
                    AlertStatus::Pending => "pending",
                    AlertStatus::Firing => "firing",
                    AlertStatus::Resolved => "resolved",
                },
                fingerprint: &event.fingerprint,
                value: event.value,
                annotations: label_object(&event.annotations),
            },
        },
    };
    Document {
        index: index.to_owned(),
        id: alert_document_id(&event.fingerprint, status, event.starts_at_unix_nano),
        body: serialize(&document),
        origin,
        record: 0,
    }
}

/// Nanoseconds since the epoch as RFC 3339 in UTC, with as many fraction digits as
/// needed (0, 3, 6 or 9).
fn rfc3339(unix_nano: i64) -> String {
    DateTime::from_timestamp_nanos(unix_nano).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn non_empty_or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

/// Labels as a JSON object: sorted, the last of duplicate names wins, and labels
/// without a name (which Elasticsearch refuses as field names) are left out.
fn label_object(labels: &[Label]) -> BTreeMap<&str, &str> {
    labels
        .iter()
        .filter(|label| !label.name.is_empty())
        .map(|label| (label.name.as_str(), label.value.as_str()))
        .collect()
}

fn serialize(document: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(document).expect(
        "documents hold only strings, numbers and string-keyed maps, which always serialize",
    )
}

/// The fields every document of one batch shares, computed once per batch.
struct Shared<'a> {
    host: Option<Host<'a>>,
    attributes: BTreeMap<&'a str, &'a str>,
    vigil: ResourceVigil<'a>,
}

impl<'a> Shared<'a> {
    fn of(resource: &'a Resource) -> Self {
        let kind = match resource.kind() {
            ResourceKind::Unspecified => None,
            ResourceKind::Host => Some("host"),
            ResourceKind::Device => Some("device"),
            ResourceKind::Container => Some("container"),
        };
        Self {
            host: (!resource.host_name.is_empty()).then_some(Host {
                name: &resource.host_name,
            }),
            attributes: label_object(&resource.attributes),
            vigil: ResourceVigil {
                resource: ResourceFields {
                    id: &resource.id,
                    kind,
                },
            },
        }
    }
}

#[derive(Serialize, Clone, Copy)]
struct Host<'a> {
    name: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct ResourceVigil<'a> {
    resource: ResourceFields<'a>,
}

#[derive(Serialize, Clone, Copy)]
struct ResourceFields<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

#[derive(Serialize)]
struct LogDocument<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    message: Cow<'a, str>,
    event: LogEvent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<Host<'a>>,
    log: Log<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<&'a str, &'a str>,
    /// Fields the agent parsed out of the line, as Filebeat's `fields`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    fields: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<&'static str>,
    vigil: ResourceVigil<'a>,
}

#[derive(Serialize)]
struct LogEvent<'a> {
    kind: &'static str,
    dataset: &'a str,
    /// When the agent read the line.
    created: String,
    /// When the index stage built the document.
    ingested: &'a str,
}

#[derive(Serialize)]
struct Log<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<LogFile<'a>>,
    offset: u64,
}

#[derive(Serialize)]
struct LogFile<'a> {
    path: &'a str,
}

#[derive(Serialize)]
struct MetricDocument<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    event: MetricEvent<'a>,
    metricset: MetricSet<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<Host<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
    metrics: BTreeMap<&'a str, MetricValue>,
    vigil: MetricVigil<'a>,
}

#[derive(Serialize)]
struct MetricEvent<'a> {
    kind: &'static str,
    dataset: &'a str,
    ingested: &'a str,
}

#[derive(Serialize)]
struct MetricSet<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct MetricVigil<'a> {
    resource: ResourceFields<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    derived: bool,
}

/// A sample value as JSON: counters as exact integers (serde_json writes every u64
/// digit), gauges as floats (always with a fraction, so dynamic mapping sees a double).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(untagged)]
enum MetricValue {
    Counter(u64),
    Gauge(f64),
}

#[derive(Serialize)]
struct AlertDocument<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    event: AlertEventFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<Host<'a>>,
    rule: Rule<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
    vigil: AlertVigil<'a>,
}

#[derive(Serialize)]
struct AlertEventFields<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    ingested: &'a str,
}

#[derive(Serialize)]
struct Rule<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    ruleset: &'a str,
}

#[derive(Serialize)]
struct AlertVigil<'a> {
    alert: AlertFields<'a>,
}

#[derive(Serialize)]
struct AlertFields<'a> {
    status: &'static str,
    fingerprint: &'a str,
    value: f64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, &'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use vigil_proto::labels::label;
    use vigil_proto::v1::{LogLine, MetricKind, Sample};

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
}
