//! Batching in the index stage: messages from the bus become the documents of one
//! bulk write, until the batch is full or its linger ends; a message that does not
//! decode is kept aside for the dead-letter topic.

use super::{IndexStageConfig, Shared, StageTopics};
use crate::index::documents::{
    Document, IndexNames, MetricStream, alert_document, ingested_now, log_documents,
    metric_documents,
};
use tokio::time::Instant;
use vigil_proto::v1::{AlertEvent, LogBatch, MetricBatch};
use vigil_proto::{DecodeError, Payload};
use vigil_runtime::Message;

/// Bytes a bulk action line adds to each document, for the batch size estimate.
const ACTION_LINE_BYTES: usize = 40;

/// Messages received for one bulk write, and what they became.
#[derive(Debug, Default)]
pub(super) struct Batch {
    pub(super) messages: Vec<Message>,
    pub(super) documents: Vec<Document>,
    /// Estimated size of the bulk request, plus the payloads of undecodable messages
    /// (they are held until the batch is written).
    bytes: usize,
    pub(super) undecodable: Vec<Undecodable>,
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

    pub(super) fn add(&mut self, message: Message, shared: &Shared) {
        let origin = self.messages.len();
        shared
            .metrics
            .messages_consumed
            .get_or_create(&[("topic", message.topic.clone())])
            .inc();
        match documents_of(&message, origin, &shared.topics, &shared.names) {
            Ok(documents) => {
                self.bytes += documents
                    .iter()
                    .map(|d| d.body.len() + d.index.len() + d.id.len() + ACTION_LINE_BYTES)
                    .sum::<usize>();
                self.documents.extend(documents);
            }
            Err(mut undecodable) => {
                self.bytes += message.payload.len();
                tracing::warn!(
                    topic = %message.topic,
                    partition = message.partition,
                    offset = message.offset,
                    reason = %undecodable.reason,
                    "message dead-lettered"
                );
                undecodable.origin = origin;
                self.undecodable.push(undecodable);
            }
        }
        self.messages.push(message);
    }
}

/// Why a message has no documents.
#[derive(Debug)]
pub(super) struct Undecodable {
    /// Position of the message in the batch.
    pub(super) origin: usize,
    /// Label of the `index_dead_lettered` counter.
    pub(super) kind: &'static str,
    pub(super) reason: String,
}

impl From<DecodeError> for Undecodable {
    fn from(error: DecodeError) -> Self {
        Self {
            origin: 0,
            kind: match error {
                DecodeError::Protobuf { .. } | DecodeError::Malformed { .. } => "not_protobuf",
                DecodeError::Invalid { .. } => "invalid_batch",
            },
            reason: error.to_string(),
        }
    }
}

fn documents_of(
    message: &Message,
    origin: usize,
    topics: &StageTopics,
    names: &IndexNames,
) -> Result<Vec<Document>, Undecodable> {
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
        Err(Undecodable {
            origin,
            kind: "unexpected_topic",
            reason: format!("the index stage does not read topic {topic}"),
        })
    }
}
