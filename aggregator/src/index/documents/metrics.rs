//! Metric documents: the samples of a raw or derived metric batch from the bus,
//! grouped by metric set, labels and timestamp into one document each for the metrics
//! index, as Metricbeat does.

use super::{
    Document, GENERIC_DATASET, Host, ResourceFields, Shared, label_object, non_empty_or, rfc3339,
    serialize,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use vigil_proto::labels::ContentId;
use vigil_proto::v1::{Label, MetricBatch, Resource, sample};

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
/// A staleness marker is no value: it only says that its series ended.
fn sample_groups(batch: &MetricBatch) -> Vec<SampleGroup<'_>> {
    let mut groups: Vec<SampleGroup<'_>> = Vec::new();
    let mut group_of: HashMap<GroupKey<'_>, usize> = HashMap::new();
    for (position, sample) in batch.samples.iter().enumerate() {
        if sample.value.is_none_or(|value| value.is_stale_marker()) {
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
                        sample::Value::FloatCounter(counter) => MetricValue::FloatCounter(counter),
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
/// digit), gauges and float counters as floats (always with a fraction, so dynamic
/// mapping sees a double).
#[derive(Serialize, Clone, Copy, Debug, PartialEq)]
#[serde(untagged)]
enum MetricValue {
    Counter(u64),
    Gauge(f64),
    FloatCounter(f64),
}
