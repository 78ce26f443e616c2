//! Log documents: each line of a log batch from the bus becomes one Elastic Common
//! Schema document for the logs index, with an id derived from where the line was read.

use super::{
    Document, GENERIC_DATASET, Host, ResourceVigil, Shared, label_object, non_empty_or, rfc3339,
    serialize,
};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use vigil_proto::labels::ContentId;
use vigil_proto::v1::{LogBatch, LogSource, Resource};

/// Id of the document of the line at `offset` of source `source_id` of a resource.
pub fn log_document_id(resource_id: &str, source_id: &str, offset: u64) -> String {
    ContentId::new()
        .part(resource_id)
        .part(source_id)
        .part(offset.to_string())
        .finish()
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
