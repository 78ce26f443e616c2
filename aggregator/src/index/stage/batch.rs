//! Batching in the index stage: messages from the bus become the documents of one
//! bulk write, until the batch is full or its linger ends; a message that does not
//! decode is refused, for the stage loop to dead-letter.

use super::{IndexStageConfig, StageTopics};
use crate::index::documents::{
    Document, IndexNames, MetricStream, alert_document, ingested_now, log_documents,
    metric_documents,
};
use crate::stage::Rejection;
use tokio::time::Instant;
use vigil_proto::Payload;
use vigil_proto::v1::{AlertEvent, LogBatch, MetricBatch};
use vigil_runtime::Message;

/// Bytes a bulk action line adds to each document, for the batch size estimate.
const ACTION_LINE_BYTES: usize = 40;

/// Messages received for one bulk write, and what they became.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) messages: Vec<Message>,
    pub(super) documents: Vec<Document>,
    /// Estimated size of the bulk request.
    bytes: usize,
    /// When the linger of the first message ends.
    pub(super) deadline: Option<Instant>,
    /// The linger is over: the batch goes out as soon as a write is free.
    pub(super) lingered: bool,
}

impl Batch {
    pub(super) fn is_full(&self, config: &IndexStageConfig) -> bool {
        self.documents.len() >= config.max_documents || self.bytes >= config.max_bytes
    }

    pub(super) fn is_ready(&self, config: &IndexStageConfig) -> bool {
        !self.messages.is_empty() && (self.lingered || self.is_full(config))
    }

    /// Adds `message` and the documents it became.
    pub(super) fn add(&mut self, message: Message, documents: Vec<Document>) {
        self.bytes += documents
            .iter()
            .map(|d| d.body.len() + d.index.len() + d.id.len() + ACTION_LINE_BYTES)
            .sum::<usize>();
        self.documents.extend(documents);
        self.messages.push(message);
    }
}

/// The documents of `message`, the `origin`-th of its batch.
pub(super) fn documents_of(
    message: &Message,
    origin: usize,
    topics: &StageTopics,
    names: &IndexNames,
) -> Result<Vec<Document>, Rejection> {
    let topic = message.topic.as_str();
    let payload = &message.payload[..];
    let ingested = ingested_now();
    if topic == topics.logs {
        let batch = LogBatch::from_payload(payload)?;
        Ok(log_documents(&batch, &names.logs, origin, &ingested))
    } else if topic == topics.metrics_raw || topic == topics.metrics_derived {
        let stream = if topic == topics.metrics_raw {
            MetricStream::Raw
        } else {
            MetricStream::Derived
        };
        let batch = MetricBatch::from_payload(payload)?;
        Ok(metric_documents(
            &batch,
            stream,
            &names.metrics,
            origin,
            &ingested,
        ))
    } else if topic == topics.alert_events {
        let event = AlertEvent::from_payload(payload)?;
        Ok(vec![alert_document(
            &event,
            &names.alerts,
            origin,
            &ingested,
        )])
    } else {
        Err(Rejection {
            kind: "unexpected_topic",
            reason: format!("the index stage does not read topic {topic}"),
        })
    }
}
