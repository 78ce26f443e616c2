//! The index stage's own dead letters, where the data path ends for records
//! Elasticsearch refused for good, each with the reason and where it came from
//! (messages that do not decode are dead-lettered by the stage loop).

use super::Shared;
use super::batch::Batch;
use crate::index::documents::{Document, log_record, metric_record};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vigil_proto::Payload;
use vigil_proto::v1::{AlertEvent, LogBatch, MetricBatch};
use vigil_runtime::Message;
use vigil_runtime::bus::{REASON_HEADER, SCHEMA_HEADER};

/// First wait before publishing a dead letter again; it doubles up to the maximum.
const DEAD_LETTER_BACKOFF: Duration = Duration::from_millis(200);
const MAX_DEAD_LETTER_BACKOFF: Duration = Duration::from_secs(10);
/// Header of a dead-lettered document: its id, and the index that refused it.
pub(super) const DOCUMENT_ID_HEADER: &str = "vigil-document-id";
const INDEX_HEADER: &str = "vigil-index";
/// Header of every dead letter: `<topic>/<partition>/<offset>` of the message it came from.
const ORIGIN_HEADER: &str = "vigil-origin";

/// The dead letter of a document Elasticsearch refused: its record alone in a batch
/// of the message's type, so it can be published again as it is once the cause is
/// fixed.
pub(super) fn rejected_record(
    shared: &Shared,
    batch: &Batch,
    document: &Document,
    reason: &str,
) -> DeadLetter {
    let message = &batch.messages[document.origin];
    let topics = &shared.topics;
    let topic = message.topic.as_str();
    // The message decoded when its documents were built, so it decodes again.
    let (payload, schema) = if topic == topics.logs {
        LogBatch::from_payload(&message.payload).map_or_else(
            |_| (message.payload.to_vec(), LogBatch::KIND),
            |decoded| {
                (
                    log_record(&decoded, document.record).to_payload(),
                    LogBatch::KIND,
                )
            },
        )
    } else if topic == topics.metrics_raw || topic == topics.metrics_derived {
        MetricBatch::from_payload(&message.payload).map_or_else(
            |_| (message.payload.to_vec(), MetricBatch::KIND),
            |decoded| {
                (
                    metric_record(&decoded, document.record).to_payload(),
                    MetricBatch::KIND,
                )
            },
        )
    } else {
        (message.payload.to_vec(), AlertEvent::KIND)
    };
    let reason = format!(
        "Elasticsearch refused document {} for index {}: {reason}",
        document.id, document.index
    );
    tracing::warn!(
        topic = %message.topic,
        partition = message.partition,
        offset = message.offset,
        %reason,
        "record dead-lettered"
    );
    DeadLetter {
        key: message_key(message),
        payload,
        headers: vec![
            (REASON_HEADER, reason),
            (ORIGIN_HEADER, origin_of(message)),
            (SCHEMA_HEADER, schema.to_owned()),
            (DOCUMENT_ID_HEADER, document.id.clone()),
            (INDEX_HEADER, document.index.clone()),
        ],
    }
}

/// Publishes a dead letter, retrying until the bus takes it; `false` when shutdown
/// came first.
pub(super) async fn publish_dead_letter(
    shared: &Shared,
    dead_letter: &DeadLetter,
    shutdown: &CancellationToken,
) -> bool {
    let headers: Vec<(&str, &str)> = dead_letter
        .headers
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    let mut backoff = DEAD_LETTER_BACKOFF;
    loop {
        let topic = &shared.dead_letter_topic;
        match shared
            .publisher
            .publish(topic, &dead_letter.key, &dead_letter.payload, &headers)
            .await
        {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%topic, %error, retry_in = ?backoff, "dead letter could not be published; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => return false,
        }
        backoff = (backoff * 2).min(MAX_DEAD_LETTER_BACKOFF);
    }
}

fn message_key(message: &Message) -> String {
    message
        .key
        .as_ref()
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .unwrap_or_default()
}

fn origin_of(message: &Message) -> String {
    format!("{}/{}/{}", message.topic, message.partition, message.offset)
}

/// A record for the dead-letter topic.
#[derive(Debug)]
pub(super) struct DeadLetter {
    pub(super) key: String,
    pub(super) payload: Vec<u8>,
    pub(super) headers: Vec<(&'static str, String)>,
}
