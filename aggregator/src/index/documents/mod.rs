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
//!
//! One module per kind of document: `logs`, `metrics` and `alerts`; what they share
//! (index names, the resource fields, timestamps and labels) is here.

mod alerts;
mod logs;
mod metrics;

pub use alerts::{alert_document, alert_document_id};
pub use logs::{log_document_id, log_documents, log_record};
pub use metrics::{MetricStream, metric_document_id, metric_documents, metric_record};

use chrono::{DateTime, SecondsFormat};
use serde::Serialize;
use std::collections::BTreeMap;
use thiserror::Error;
use vigil_proto::v1::{Label, Resource, ResourceKind};

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

/// `event.dataset` of log lines whose source names no dataset, and metric set of
/// samples that name none.
const GENERIC_DATASET: &str = "generic";

/// `event.ingested` for documents built now.
pub fn ingested_now() -> String {
    rfc3339(
        chrono::Utc::now()
            .timestamp_nanos_opt()
            .expect("the clock reads a time between 1677 and 2262"),
    )
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

#[cfg(test)]
mod tests;
