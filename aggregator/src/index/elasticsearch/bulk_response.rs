//! Reading Elasticsearch's answer to a bulk request, the last step of a write: what
//! became of each document, and what a failed request says about retrying and about
//! the cluster's load.

use crate::index::concurrency::Signal;
use crate::index::http_client::snippet;
use crate::index::sink::{ElasticsearchError, Outcome};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

impl ElasticsearchError {
    /// What the failure says about the cluster's load.
    pub(super) fn signal(&self) -> Signal {
        match self {
            Self::Transport { .. } => Signal::Unreachable,
            Self::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                Signal::Throttled
            }
            Self::Status { status, .. } if !status.is_server_error() => Signal::Healthy,
            Self::Status { .. }
            | Self::Malformed { .. }
            | Self::ItemCount { .. }
            | Self::DocumentsToRetry { .. } => Signal::ServerError,
        }
    }

    /// Whether sending the same request again can succeed.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => is_retryable_status(*status),
            Self::Transport { .. }
            | Self::Malformed { .. }
            | Self::ItemCount { .. }
            | Self::DocumentsToRetry { .. } => true,
        }
    }
}

/// What became of one document of a bulk request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ItemResult {
    Final(Outcome),
    /// Failed in a way that may pass (429, 5xx); the reason is for logs.
    Retry {
        reason: String,
        throttled: bool,
    },
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<BulkItemEntry>,
}

/// One item of a bulk response: `{"create": {...}}` (or the item of another action).
#[derive(Deserialize)]
struct BulkItemEntry {
    #[serde(alias = "index", alias = "update", alias = "delete")]
    create: Option<BulkItem>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// Reads a bulk response: one result per document sent, in order.
pub(super) fn parse_bulk_response(
    url: &str,
    status: StatusCode,
    body: &[u8],
    sent: usize,
) -> Result<Vec<ItemResult>, ElasticsearchError> {
    if !status.is_success() {
        return Err(ElasticsearchError::Status {
            url: url.to_owned(),
            status,
            snippet: snippet(body),
        });
    }
    let malformed = |reason: String| ElasticsearchError::Malformed {
        url: url.to_owned(),
        status,
        reason,
        snippet: snippet(body),
    };
    let response: BulkResponse =
        serde_json::from_slice(body).map_err(|error| malformed(error.to_string()))?;
    if response.items.len() != sent {
        return Err(ElasticsearchError::ItemCount {
            url: url.to_owned(),
            sent,
            received: response.items.len(),
        });
    }
    response
        .items
        .into_iter()
        .map(|item| {
            let item = item
                .create
                .ok_or_else(|| malformed("an item names no action".into()))?;
            Ok(item_result(&item))
        })
        .collect()
}

fn item_result(item: &BulkItem) -> ItemResult {
    let status = StatusCode::from_u16(item.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_success() {
        return ItemResult::Final(Outcome::Written);
    }
    if status == StatusCode::CONFLICT {
        return ItemResult::Final(Outcome::Duplicate);
    }
    let reason = match &item.error {
        Some(error) => format!("{status}: {}", describe_error(error)),
        None => status.to_string(),
    };
    if is_retryable_status(status) {
        ItemResult::Retry {
            reason,
            throttled: status == StatusCode::TOO_MANY_REQUESTS,
        }
    } else {
        ItemResult::Final(Outcome::Rejected { reason })
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// `type: reason; caused by type: reason` from an Elasticsearch error object.
fn describe_error(error: &Value) -> String {
    let mut parts = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current.take() {
        match error {
            Value::Object(fields) => {
                let kind = fields.get("type").and_then(Value::as_str);
                let reason = fields.get("reason").and_then(Value::as_str);
                parts.push(match (kind, reason) {
                    (Some(kind), Some(reason)) => format!("{kind}: {reason}"),
                    (Some(text), None) | (None, Some(text)) => text.to_owned(),
                    (None, None) => error.to_string(),
                });
                current = fields.get("caused_by");
            }
            Value::String(text) => parts.push(text.clone()),
            other => parts.push(other.to_string()),
        }
    }
    parts.join("; caused by ")
}
