//! Log documents: each line of a log batch from the bus becomes one Elastic Common
//! Schema document for the logs index, with an id derived from where the line was read.
//!
//! The fields the agent parsed out of a line that the logs template maps
//! ([`ECS_LOG_FIELDS`](vigil_proto::log_fields::ECS_LOG_FIELDS)) are written at their ECS place (`user.name` as
//! `{"user": {"name": ...}}`, `http.response.status_code` as a number); every
//! other field, and a mapped one whose value does not fit its type (a
//! `source.ip` that is no address), goes under `fields`, so no value makes
//! Elasticsearch refuse the document.

use super::{
    Document, GENERIC_DATASET, Host, ResourceVigil, Shared, non_empty_or, rfc3339, serialize,
};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use vigil_proto::labels::ContentId;
use vigil_proto::log_fields::{EcsType, ecs_type};
use vigil_proto::v1::{Label, LogBatch, LogSource, Resource};

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
            let (ecs, fields) = split_fields(&line.fields);
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
                fields,
                tags,
                vigil: shared.vigil,
            };
            let body = if ecs.is_empty() {
                serialize(&document)
            } else {
                with_ecs_fields(&document, &ecs)
            };
            Document {
                index: index.to_owned(),
                id: log_document_id(&resource.id, &source.source_id, line.offset),
                body,
                origin,
                record,
            }
        })
        .collect()
}

/// A parsed field written at its ECS place: its dotted name, its value, and
/// the type the template maps it to.
type EcsField<'a> = (&'a str, &'a str, EcsType);

/// The fields of a line split into those written at their ECS place (the last
/// of a name wins) and the rest, for `fields`.
fn split_fields(labels: &[Label]) -> (Vec<EcsField<'_>>, BTreeMap<&str, &str>) {
    let mut ecs: Vec<EcsField<'_>> = Vec::new();
    let mut rest = BTreeMap::new();
    for label in labels.iter().filter(|label| !label.name.is_empty()) {
        let (name, value) = (label.name.as_str(), label.value.as_str());
        match ecs_type(name) {
            Some(kind) if kind.fits(value) => {
                ecs.retain(|(other, _, _)| *other != name);
                rest.remove(name);
                ecs.push((name, value, kind));
            }
            _ => {
                ecs.retain(|(other, _, _)| *other != name);
                rest.insert(name, value);
            }
        }
    }
    (ecs, rest)
}

/// `document` serialized with `ecs` merged into its objects: `log.level` goes
/// into the `log` object beside `log.file.path`.
fn with_ecs_fields(document: &LogDocument<'_>, ecs: &[EcsField<'_>]) -> Vec<u8> {
    let Ok(Value::Object(mut root)) = serde_json::to_value(document) else {
        unreachable!("a log document serializes to a JSON object");
    };
    for (name, value, kind) in ecs {
        let value = match kind {
            EcsType::Long => value
                .parse::<i64>()
                .map_or_else(|_| Value::from(*value), Value::from),
            EcsType::Keyword | EcsType::Text | EcsType::Ip => Value::from(*value),
        };
        insert_dotted(&mut root, name, value);
    }
    serialize(&Value::Object(root))
}

/// Sets `value` at the dotted `name` below `object`, making the objects on the
/// way. No mapped name is the parent of another, nor of a field every log
/// document has (tests check the list for both).
fn insert_dotted(object: &mut Map<String, Value>, name: &str, value: Value) {
    match name.split_once('.') {
        None => {
            object.insert(name.to_owned(), value);
        }
        Some((parent, rest)) => {
            let child = object
                .entry(parent)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(child) = child {
                insert_dotted(child, rest, value);
            }
        }
    }
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

#[cfg(test)]
mod tests;
