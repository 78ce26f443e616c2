//! The index stage: the consumer at the end of the data path that reads log batches,
//! raw and derived metric batches and alert events from the bus and bulk-writes them
//! as documents to Elasticsearch (or NDJSON files in the all-in-one mode).
//!
//! Messages are gathered into batches of documents (up to a number of documents, a
//! number of bytes, or a short linger after the first message), and several batches
//! are written at once, as many as the sink's writes in flight allow; when all are
//! busy, the consumer keeps polling without fetching so it stays in its group. A
//! message that does not decode goes to the `index` dead-letter topic with the
//! reason; a document Elasticsearch refuses for good (a mapping or parse error) goes
//! there as its own record, a batch of one line or one sample group, with the reason,
//! while the rest of its message is indexed.
//!
//! Writes finish in any order, but a partition's position is committed only up to
//! the first message not yet finished: every record before a committed position is
//! in Elasticsearch or in the dead-letter topic. A crash redelivers what was not
//! committed, and deterministic document ids turn the redelivery into 409s instead
//! of duplicates.

use super::documents::{
    Document, IndexNames, InvalidIndexName, MetricStream, alert_document, ingested_now,
    log_documents, log_record, metric_documents, metric_record,
};
use super::sink::{DocumentSink, Outcome, SinkError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigil_proto::v1::{AlertEvent, LogBatch, MetricBatch};
use vigil_proto::{DecodeError, Payload};
use vigil_runtime::bus::{REASON_HEADER, SCHEMA_HEADER};
use vigil_runtime::{Bus, BusError, Message, Publisher, SelfMetrics, Subscription};

/// Bytes a bulk action line adds to each document, for the batch size estimate.
const ACTION_LINE_BYTES: usize = 40;
/// Pause after a failed receive, so a broken connection does not spin.
const RECEIVE_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// First wait before publishing a dead letter again; it doubles up to the maximum.
const DEAD_LETTER_BACKOFF: Duration = Duration::from_millis(200);
const MAX_DEAD_LETTER_BACKOFF: Duration = Duration::from_secs(10);
/// Header of a dead-lettered document: its id, and the index that refused it.
const DOCUMENT_ID_HEADER: &str = "vigil-document-id";
const INDEX_HEADER: &str = "vigil-index";
/// Header of every dead letter: `<topic>/<partition>/<offset>` of the message it came from.
const ORIGIN_HEADER: &str = "vigil-origin";

/// Settings of the index stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexStageConfig {
    /// Consumer group; indexers of one deployment share it to split the partitions.
    pub group: String,
    /// Documents per bulk write, at most (a message's documents are never split).
    pub max_documents: usize,
    /// Bytes of documents per bulk write, at most (same caveat).
    pub max_bytes: usize,
    /// How long a batch may wait for more messages after its first one.
    pub linger: Duration,
}

impl Default for IndexStageConfig {
    fn default() -> Self {
        Self {
            group: "vigil-index".to_owned(),
            max_documents: 5_000,
            max_bytes: 5 * 1024 * 1024,
            linger: Duration::from_millis(200),
        }
    }
}

/// The index stage could not start.
#[derive(Debug, Error)]
pub enum IndexStageError {
    #[error(transparent)]
    IndexName(#[from] InvalidIndexName),
    #[error("index stage setting `{field}` must be positive")]
    NotPositive { field: &'static str },
    #[error("index stage setting `group` must not be empty")]
    EmptyGroup,
    #[error("the index stage could not connect to the bus: {0}")]
    Bus(#[from] BusError),
}

/// Topic names the stage reads and writes.
#[derive(Debug)]
struct StageTopics {
    logs: String,
    metrics_raw: String,
    metrics_derived: String,
    alert_events: String,
    dead_letter: String,
}

/// Writes everything on the data topics to a document sink.
#[derive(Debug)]
pub struct IndexStage {
    subscription: Subscription,
    /// What the writes in flight share.
    shared: Arc<Shared>,
    config: IndexStageConfig,
    positions: Positions,
}

/// What every write of the stage needs.
#[derive(Debug)]
struct Shared {
    publisher: Publisher,
    topics: StageTopics,
    sink: DocumentSink,
    names: IndexNames,
    metrics: IndexMetrics,
}

impl IndexStage {
    /// Checks the settings and subscribes; messages published from now on are indexed
    /// once `run` is called.
    pub fn new(
        bus: &Bus,
        sink: DocumentSink,
        names: IndexNames,
        config: IndexStageConfig,
        metrics: &SelfMetrics,
    ) -> Result<Self, IndexStageError> {
        names.validate()?;
        if config.group.is_empty() {
            return Err(IndexStageError::EmptyGroup);
        }
        if config.max_documents == 0 {
            return Err(IndexStageError::NotPositive {
                field: "max_documents",
            });
        }
        if config.max_bytes == 0 {
            return Err(IndexStageError::NotPositive { field: "max_bytes" });
        }
        let topics = bus.topics();
        let topics = StageTopics {
            logs: topics.logs_raw(),
            metrics_raw: topics.metrics_raw(),
            metrics_derived: topics.metrics_derived(),
            alert_events: topics.alert_events(),
            dead_letter: topics.dead_letter("index"),
        };
        let subscription = bus.subscribe(
            &config.group,
            &[
                topics.logs.clone(),
                topics.metrics_raw.clone(),
                topics.metrics_derived.clone(),
                topics.alert_events.clone(),
            ],
        )?;
        let metrics = IndexMetrics::register(metrics, &sink);
        Ok(Self {
            subscription,
            shared: Arc::new(Shared {
                publisher: bus.publisher()?,
                topics,
                sink,
                names,
                metrics,
            }),
            config,
            positions: Positions::default(),
        })
    }

    /// Indexes until `shutdown` (or until the in-process bus closes), then writes the
    /// batch in hand, waits for the writes in flight and commits what they finished.
    /// Returns an error only when the sink refuses writes for good.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let max_writes = self.shared.sink.max_writes_in_flight();
        tracing::info!(
            sink = %self.shared.sink,
            group = %self.config.group,
            max_writes,
            "index stage running"
        );
        let (done_sender, mut done) = mpsc::channel::<Written>(max_writes);
        let mut writes = 0usize;
        let mut batch = Batch::default();
        let mut failure = None;
        loop {
            if writes < max_writes && batch.is_ready(&self.config) {
                self.dispatch(std::mem::take(&mut batch), &done_sender, &shutdown);
                writes += 1;
                continue;
            }
            let full = batch.is_full(&self.config);
            if full && writes >= max_writes {
                // Every write is busy and the batch cannot grow: wait for one to
                // finish while polling the group without fetching.
                let finished = self
                    .subscription
                    .while_busy(async {
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => None,
                            finished = done.recv() => finished,
                        }
                    })
                    .await;
                let Some(finished) = finished else { break };
                writes -= 1;
                if let Err(error) = self.finish(finished) {
                    failure = Some(error);
                    break;
                }
                continue;
            }
            let linger = batch.deadline.filter(|_| !batch.lingered);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(finished) = done.recv(), if writes > 0 => {
                    writes -= 1;
                    if let Err(error) = self.finish(finished) {
                        failure = Some(error);
                        break;
                    }
                }
                () = sleep_until(linger), if linger.is_some() => batch.lingered = true,
                received = self.subscription.recv(), if !full => match received {
                    Ok(message) => {
                        self.positions.received(&message);
                        batch.deadline.get_or_insert_with(|| Instant::now() + self.config.linger);
                        batch.add(message, &self.shared);
                    }
                    Err(BusError::Closed) => {
                        tracing::info!("the in-process bus closed");
                        break;
                    }
                    Err(error) => {
                        self.shared.metrics.receive_errors.inc();
                        tracing::warn!(%error, "receiving from the bus failed");
                        tokio::time::sleep(RECEIVE_RETRY_PAUSE).await;
                    }
                },
            }
        }

        // Stop reading; write what is in hand and let the writes in flight end.
        if failure.is_none() && !batch.messages.is_empty() {
            if writes >= max_writes
                && let Some(finished) = done.recv().await
            {
                writes -= 1;
                failure = self.finish(finished).err();
            }
            if failure.is_none() {
                self.dispatch(batch, &done_sender, &shutdown);
                writes += 1;
            }
        }
        while writes > 0 {
            let Some(finished) = done.recv().await else {
                break;
            };
            writes -= 1;
            if let Err(error) = self.finish(finished)
                && failure.is_none()
            {
                failure = Some(error);
            }
        }
        self.subscription.close();
        tracing::info!("index stage stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Starts writing `batch`; its end comes back on `done`.
    fn dispatch(&self, batch: Batch, done: &mpsc::Sender<Written>, shutdown: &CancellationToken) {
        let shared = Arc::clone(&self.shared);
        let done = done.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let outcome = write_batch(&shared, &batch, &shutdown).await;
            let positions = batch
                .messages
                .iter()
                .map(|message| (message.topic.clone(), message.partition, message.offset))
                .collect();
            // The stage waits for every write it started, so the receiver is there.
            let _ = done.send(Written { positions, outcome }).await;
        });
    }

    /// Takes a finished write into account and commits the positions it allows.
    fn finish(&mut self, written: Written) -> anyhow::Result<()> {
        match written.outcome {
            WriteOutcome::Done => {}
            WriteOutcome::Abandoned => return Ok(()),
            WriteOutcome::Failed(error) => return Err(error),
        }
        let mut touched: Vec<(&str, i32)> = Vec::new();
        for (topic, partition, offset) in &written.positions {
            self.positions.completed(topic, *partition, *offset);
            if !touched.contains(&(topic.as_str(), *partition)) {
                touched.push((topic, *partition));
            }
        }
        for (topic, partition) in touched {
            let Some(next) = self.positions.position_to_commit(topic, partition) else {
                continue;
            };
            // A partition taken away by a rebalance cannot be committed here; its new
            // owner consumes the messages again and the ids make that harmless.
            if let Err(error) = self.subscription.commit_position(topic, partition, next) {
                tracing::warn!(
                    %topic,
                    partition,
                    offset = next,
                    %error,
                    "position could not be committed"
                );
            }
        }
        Ok(())
    }
}

/// `deadline`, or never.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A write that ended, and the positions of its messages.
struct Written {
    positions: Vec<(String, i32, i64)>,
    outcome: WriteOutcome,
}

enum WriteOutcome {
    /// Every record of the batch is in the sink or in the dead-letter topic.
    Done,
    /// Shutdown came first; nothing of the batch may be committed.
    Abandoned,
    /// The sink refused the write for good; the stage stops.
    Failed(anyhow::Error),
}

/// Writes the documents of `batch`, dead-letters what cannot be indexed, and counts.
async fn write_batch(shared: &Shared, batch: &Batch, shutdown: &CancellationToken) -> WriteOutcome {
    let mut dead_letters = Vec::new();
    for undecodable in &batch.undecodable {
        let message = &batch.messages[undecodable.origin];
        dead_letters.push(DeadLetter {
            key: message_key(message),
            payload: message.payload.to_vec(),
            headers: vec![
                (REASON_HEADER, undecodable.reason.clone()),
                (ORIGIN_HEADER, origin_of(message)),
            ],
            kind: undecodable.kind,
        });
    }
    if !batch.documents.is_empty() {
        let started = Instant::now();
        let report = match shared.sink.write(&batch.documents, shutdown).await {
            Ok(report) => report,
            Err(error @ SinkError::Interrupted { .. }) => {
                tracing::warn!(
                    messages = batch.messages.len(),
                    %error,
                    "shut down before the batch was written; its messages stay uncommitted and will be consumed again"
                );
                return WriteOutcome::Abandoned;
            }
            Err(error) => {
                return WriteOutcome::Failed(anyhow::Error::new(error).context(format!(
                    "writing {} documents to {}",
                    batch.documents.len(),
                    shared.sink
                )));
            }
        };
        let metrics = &shared.metrics;
        metrics
            .bulk_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.bulk_retries.inc_by(report.retries);
        metrics.documents_retried.inc_by(report.documents_retried);
        let mut written: HashMap<&str, u64> = HashMap::new();
        let mut duplicates: HashMap<&str, u64> = HashMap::new();
        for (document, outcome) in batch.documents.iter().zip(&report.outcomes) {
            match outcome {
                Outcome::Written => *written.entry(&document.index).or_default() += 1,
                Outcome::Duplicate => *duplicates.entry(&document.index).or_default() += 1,
                Outcome::Rejected { reason } => {
                    dead_letters.push(rejected_record(shared, batch, document, reason));
                }
            }
        }
        for (index, count) in written {
            metrics
                .documents_written
                .get_or_create(&[("index", index.to_owned())])
                .inc_by(count);
        }
        for (index, count) in duplicates {
            metrics
                .documents_duplicate
                .get_or_create(&[("index", index.to_owned())])
                .inc_by(count);
        }
    }
    for dead_letter in dead_letters {
        if !publish_dead_letter(shared, &dead_letter, shutdown).await {
            return WriteOutcome::Abandoned;
        }
        shared
            .metrics
            .dead_lettered
            .get_or_create(&[("reason", dead_letter.kind)])
            .inc();
    }
    WriteOutcome::Done
}

/// The dead letter of a document Elasticsearch refused: its record alone in a batch
/// of the message's type, so it can be published again as it is once the cause is
/// fixed.
fn rejected_record(
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
        kind: "rejected",
    }
}

/// Publishes a dead letter, retrying until the bus takes it; `false` when shutdown
/// came first.
async fn publish_dead_letter(
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
        let topic = &shared.topics.dead_letter;
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
struct DeadLetter {
    key: String,
    payload: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    /// Label of the `index_dead_lettered` counter.
    kind: &'static str,
}

/// Positions of the messages received, per partition, and which are finished: what
/// may be committed.
#[derive(Debug, Default)]
struct Positions {
    partitions: HashMap<(String, i32), PartitionPositions>,
}

#[derive(Debug, Default)]
struct PartitionPositions {
    /// Offsets received and not finished, with how many copies (a rebalance can
    /// deliver a message again while its first copy is still being written).
    pending: BTreeMap<i64, u32>,
    /// The highest offset finished.
    highest_finished: Option<i64>,
    /// The last position committed.
    committed: Option<i64>,
}

impl Positions {
    fn received(&mut self, message: &Message) {
        *self
            .partitions
            .entry((message.topic.clone(), message.partition))
            .or_default()
            .pending
            .entry(message.offset)
            .or_default() += 1;
    }

    fn completed(&mut self, topic: &str, partition: i32, offset: i64) {
        let Some(positions) = self.partitions.get_mut(&(topic.to_owned(), partition)) else {
            return;
        };
        if let Some(copies) = positions.pending.get_mut(&offset) {
            *copies -= 1;
            if *copies == 0 {
                positions.pending.remove(&offset);
            }
        }
        positions.highest_finished = positions.highest_finished.max(Some(offset));
    }

    /// The position to commit for a partition, if it moved: the first offset not
    /// finished, so everything before it is.
    fn position_to_commit(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let positions = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        let after_finished = positions.highest_finished? + 1;
        let next = match positions.pending.first_key_value() {
            Some((&first_pending, _)) => first_pending.min(after_finished),
            None => after_finished,
        };
        if positions.committed == Some(next) {
            return None;
        }
        positions.committed = Some(next);
        Some(next)
    }
}

/// Messages received for one bulk write, and what they became.
#[derive(Debug, Default)]
struct Batch {
    messages: Vec<Message>,
    documents: Vec<Document>,
    /// Estimated size of the bulk request, plus the payloads of undecodable messages
    /// (they are held until the batch is written).
    bytes: usize,
    undecodable: Vec<Undecodable>,
    /// When the linger of the first message ends.
    deadline: Option<Instant>,
    /// The linger is over: the batch goes out as soon as a write is free.
    lingered: bool,
}

impl Batch {
    fn is_full(&self, config: &IndexStageConfig) -> bool {
        self.documents.len() >= config.max_documents || self.bytes >= config.max_bytes
    }

    fn is_ready(&self, config: &IndexStageConfig) -> bool {
        !self.messages.is_empty() && (self.lingered || self.is_full(config))
    }

    fn add(&mut self, message: Message, shared: &Shared) {
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
struct Undecodable {
    /// Position of the message in the batch.
    origin: usize,
    /// Label of the `index_dead_lettered` counter.
    kind: &'static str,
    reason: String,
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

type ByLabel = Family<[(&'static str, String); 1], Counter>;

/// The stage's self-metrics.
#[derive(Debug)]
struct IndexMetrics {
    messages_consumed: ByLabel,
    documents_written: ByLabel,
    documents_duplicate: ByLabel,
    dead_lettered: Family<[(&'static str, &'static str); 1], Counter>,
    bulk_retries: Counter,
    documents_retried: Counter,
    receive_errors: Counter,
    bulk_duration: Histogram,
}

impl IndexMetrics {
    fn register(metrics: &SelfMetrics, sink: &DocumentSink) -> Self {
        if let DocumentSink::Elasticsearch(client) = sink {
            let concurrency = client.concurrency().metrics();
            metrics.register(
                "index_bulk_concurrency_limit",
                "Bulk requests the index stage may have in flight now (adaptive: halves when Elasticsearch pushes back, grows while it keeps up)",
                concurrency.limit.clone(),
            );
            metrics.register(
                "index_bulk_requests_in_flight",
                "Bulk requests waiting for Elasticsearch's answer",
                concurrency.in_flight.clone(),
            );
            metrics.register(
                "index_bulk_concurrency_decreases",
                "Pushbacks from Elasticsearch that halved the bulk concurrency limit (or held it at one), by cause: throttled, server_error, unreachable, latency",
                concurrency.decreases.clone(),
            );
        }
        Self {
            messages_consumed: metrics.register(
                "index_messages_consumed",
                "Messages the index stage consumed, by topic",
                ByLabel::default(),
            ),
            documents_written: metrics.register(
                "index_documents_written",
                "Documents the index stage stored, by index",
                ByLabel::default(),
            ),
            documents_duplicate: metrics.register(
                "index_documents_duplicate",
                "Documents that were already stored (redeliveries answered with 409), by index",
                ByLabel::default(),
            ),
            dead_lettered: metrics.register(
                "index_dead_lettered",
                "Messages and refused records the index stage sent to its dead-letter topic, by reason",
                Family::default(),
            ),
            bulk_retries: metrics.register(
                "index_bulk_retries",
                "Bulk requests sent again after a transient failure",
                Counter::default(),
            ),
            documents_retried: metrics.register(
                "index_documents_retried",
                "Documents sent again after a 429, a 5xx or a failed request",
                Counter::default(),
            ),
            receive_errors: metrics.register(
                "index_receive_errors",
                "Errors consuming from the bus (broker unreachable, poll interval exceeded)",
                Counter::default(),
            ),
            bulk_duration: metrics.register(
                "index_bulk_duration_seconds",
                "Time to write one batch, retries included",
                Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::elasticsearch::{BulkClient, BulkClientConfig};
    use crate::index::fake_elasticsearch::{FakeElasticsearch, bulk_response};
    use crate::index::ndjson::NdjsonSink;
    use serde_json::Value;
    use std::path::Path;
    use vigil_proto::labels::label;
    use vigil_proto::v1::{AlertStatus, LogLine, LogSource, Resource, Sample, sample};

    const T0: i64 = 1_714_557_600_000_000_000;

    fn log_batch(first_offset: u64, texts: &[&str]) -> LogBatch {
        let mut offset = first_offset;
        let lines = texts
            .iter()
            .map(|text| {
                let line = LogLine {
                    offset,
                    event_time_unix_nano: T0,
                    observed_time_unix_nano: T0,
                    message: text.as_bytes().to_vec(),
                    length: text.len() as u64 + 1,
                    ..LogLine::default()
                };
                offset += line.length;
                line
            })
            .collect();
        LogBatch {
            resource: Some(Resource {
                id: "web-1".into(),
                host_name: "web-1".into(),
                ..Resource::default()
            }),
            source: Some(LogSource {
                path: "/var/log/app.log".into(),
                source_id: "1:2".into(),
                dataset: "app".into(),
                ..LogSource::default()
            }),
            lines,
        }
    }

    fn quick_config() -> IndexStageConfig {
        IndexStageConfig {
            linger: Duration::from_millis(10),
            ..IndexStageConfig::default()
        }
    }

    fn read_lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// A stage writing to `sink`, running on a fresh in-memory bus, and a
    /// subscription to its dead-letter topic.
    fn start_stage(
        sink: DocumentSink,
        config: IndexStageConfig,
    ) -> (
        Bus,
        Subscription,
        SelfMetrics,
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let bus = Bus::in_memory();
        let self_metrics = SelfMetrics::default();
        let stage =
            IndexStage::new(&bus, sink, IndexNames::default(), config, &self_metrics).unwrap();
        let dead_letters = bus
            .subscribe("test", &[bus.topics().dead_letter("index")])
            .unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(stage.run(shutdown.clone()));
        (bus, dead_letters, self_metrics, shutdown, running)
    }

    async fn wait_for(mut done: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("condition not reached within 10 s");
    }

    #[tokio::test]
    async fn garbage_is_dead_lettered_and_the_batches_around_it_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DocumentSink::Ndjson(NdjsonSink::new(dir.path()).unwrap());
        let (bus, mut dead_letters, self_metrics, shutdown, running) =
            start_stage(sink, quick_config());
        let topics = bus.topics();

        let publisher = bus.publisher().unwrap();
        publisher
            .publish_batch(
                &topics.logs_raw(),
                &log_batch(0, &["before one", "before two"]),
            )
            .await
            .unwrap();
        publisher
            .publish(
                &topics.logs_raw(),
                "web-1",
                b"this is not protobuf at all\n",
                &[],
            )
            .await
            .unwrap();
        publisher
            .publish_batch(&topics.logs_raw(), &log_batch(22, &["after"]))
            .await
            .unwrap();
        let metrics_batch = MetricBatch {
            resource: Some(Resource {
                id: "web-1".into(),
                ..Resource::default()
            }),
            samples: vec![Sample {
                name: "host.cpu.ticks".into(),
                labels: vec![label("mode", "user")],
                time_unix_nano: T0,
                value: Some(sample::Value::Counter(42)),
                metric_set: "host.cpu".into(),
                ..Sample::default()
            }],
            producer: "test".into(),
        };
        publisher
            .publish_batch(&topics.metrics_raw(), &metrics_batch)
            .await
            .unwrap();
        let event = AlertEvent {
            alert: "HighCpu".into(),
            fingerprint: "f1".into(),
            status: AlertStatus::Firing.into(),
            starts_at_unix_nano: T0,
            evaluated_at_unix_nano: T0,
            ..AlertEvent::default()
        };
        publisher
            .publish_batch(&topics.alert_events(), &event)
            .await
            .unwrap();

        let dead = tokio::time::timeout(Duration::from_secs(10), dead_letters.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&dead.payload[..], b"this is not protobuf at all\n");
        let reason = dead.header(REASON_HEADER).unwrap();
        assert!(
            reason.starts_with("not a protobuf vigil.v1.LogBatch")
                || reason.starts_with("invalid vigil.v1.LogBatch"),
            "{reason}"
        );
        let logs = dir.path().join("vigil-logs.ndjson");
        wait_for(|| read_lines(&logs).len() == 3).await;
        wait_for(|| read_lines(&dir.path().join("vigil-alerts.ndjson")).len() == 1).await;
        shutdown.cancel();
        running.await.unwrap().unwrap();

        let messages: Vec<_> = read_lines(&logs)
            .iter()
            .map(|line| line["message"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(messages, ["before one", "before two", "after"]);
        let metrics = read_lines(&dir.path().join("vigil-metrics.ndjson"));
        assert_eq!(metrics[0]["metrics"]["host.cpu.ticks"], 42);
        assert_eq!(metrics[0]["labels"]["mode"], "user");

        let exposed = self_metrics.encode();
        assert!(
            exposed.contains(r#"vigil_index_documents_written_total{index="vigil-logs"} 3"#),
            "{exposed}"
        );
        assert!(
            exposed.contains(r#"vigil_index_dead_lettered_total{reason="not_protobuf"} 1"#)
                || exposed.contains(r#"vigil_index_dead_lettered_total{reason="invalid_batch"} 1"#),
            "{exposed}"
        );
        assert!(
            exposed.contains(r#"vigil_index_messages_consumed_total{topic="vigil.logs.raw"} 3"#),
            "{exposed}"
        );
    }

    #[tokio::test]
    async fn a_message_with_a_rejected_document_is_dead_lettered_with_the_reason() {
        // The second document of every bulk request is refused with a mapping error.
        let server = FakeElasticsearch::start(|request| {
            let mut statuses = vec![201; request.documents()];
            if let Some(second) = statuses.get_mut(1) {
                *second = 400;
            }
            (200, bulk_response(&statuses))
        })
        .await;
        let sink = DocumentSink::Elasticsearch(
            BulkClient::new(BulkClientConfig::new(&server.url)).unwrap(),
        );
        let config = IndexStageConfig {
            max_documents: 1,
            ..quick_config()
        };
        let (bus, mut dead_letters, self_metrics, shutdown, running) = start_stage(sink, config);
        let topics = bus.topics();

        let publisher = bus.publisher().unwrap();
        publisher
            .publish_batch(
                &topics.logs_raw(),
                &log_batch(0, &["fine", "refused", "fine"]),
            )
            .await
            .unwrap();
        let dead = tokio::time::timeout(Duration::from_secs(10), dead_letters.recv())
            .await
            .unwrap()
            .unwrap();
        let batch = log_batch(0, &["fine", "refused", "fine"]);
        let refused_id = crate::index::documents::log_document_id("web-1", "1:2", 5);
        assert_eq!(
            dead.header(REASON_HEADER).unwrap(),
            format!(
                "Elasticsearch refused document {refused_id} for index vigil-logs: \
                 400 Bad Request: mapper_parsing_exception: failed to parse field [log.offset] of type [long]"
            )
        );
        assert_eq!(
            dead.header("vigil-origin").unwrap(),
            format!("{}/0/0", topics.logs_raw())
        );
        assert_eq!(dead.header(DOCUMENT_ID_HEADER).unwrap(), refused_id);
        assert_eq!(dead.header(SCHEMA_HEADER).unwrap(), LogBatch::KIND);
        // The record alone, ready to be published to the logs topic again.
        let record = LogBatch::from_payload(&dead.payload).unwrap();
        assert_eq!(record.lines, vec![batch.lines[1].clone()]);
        assert_eq!(record.resource, batch.resource);
        shutdown.cancel();
        running.await.unwrap().unwrap();
        let exposed = self_metrics.encode();
        assert!(
            exposed.contains(r#"vigil_index_documents_written_total{index="vigil-logs"} 2"#),
            "{exposed}"
        );
        assert!(
            exposed.contains(r#"vigil_index_dead_lettered_total{reason="rejected"} 1"#),
            "{exposed}"
        );
    }

    fn message(topic: &str, partition: i32, offset: i64) -> Message {
        Message {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            payload: Default::default(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_position_is_committed_only_once_everything_before_it_is_finished() {
        let mut positions = Positions::default();
        for offset in 10..15 {
            positions.received(&message("t", 0, offset));
        }
        positions.received(&message("t", 1, 7));
        // Later batches finish first: nothing before them may be committed.
        positions.completed("t", 0, 13);
        positions.completed("t", 0, 14);
        assert_eq!(positions.position_to_commit("t", 0), Some(10));
        positions.completed("t", 0, 11);
        assert_eq!(
            positions.position_to_commit("t", 0),
            None,
            "10 is still pending"
        );
        positions.completed("t", 0, 10);
        assert_eq!(positions.position_to_commit("t", 0), Some(12));
        positions.completed("t", 0, 12);
        assert_eq!(positions.position_to_commit("t", 0), Some(15));
        assert_eq!(
            positions.position_to_commit("t", 1),
            None,
            "nothing finished there"
        );
        positions.completed("t", 1, 7);
        assert_eq!(positions.position_to_commit("t", 1), Some(8));
    }

    #[test]
    fn a_message_delivered_again_while_its_first_copy_is_written_holds_the_position() {
        let mut positions = Positions::default();
        for offset in 0..3 {
            positions.received(&message("t", 0, offset));
        }
        // A rebalance hands the partition back from its committed position.
        positions.received(&message("t", 0, 1));
        positions.completed("t", 0, 0);
        positions.completed("t", 0, 1);
        positions.completed("t", 0, 2);
        assert_eq!(
            positions.position_to_commit("t", 0),
            Some(1),
            "the second copy of 1 is not written yet"
        );
        positions.completed("t", 0, 1);
        assert_eq!(positions.position_to_commit("t", 0), Some(3));
    }

    // The scripted server answers on blocking threads, so the stage needs a free one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 6)]
    async fn batches_are_written_several_at_a_time() {
        // Every answer waits until three requests are in flight together.
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (now, highest) = (in_flight.clone(), peak.clone());
        let server = FakeElasticsearch::start(move |request| {
            let current = now.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            highest.fetch_max(current, std::sync::atomic::Ordering::SeqCst);
            let started = std::time::Instant::now();
            while highest.load(std::sync::atomic::Ordering::SeqCst) < 3
                && started.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            (200, bulk_response(&vec![201; request.documents()]))
        })
        .await;
        let sink = DocumentSink::Elasticsearch(
            BulkClient::new(BulkClientConfig {
                concurrency: crate::index::ConcurrencySettings {
                    initial: 3,
                    max: 3,
                    latency_factor: 1000.0,
                },
                ..BulkClientConfig::new(&server.url)
            })
            .unwrap(),
        );
        let config = IndexStageConfig {
            max_documents: 1,
            ..quick_config()
        };
        let (bus, _dead_letters, self_metrics, shutdown, running) = start_stage(sink, config);
        let publisher = bus.publisher().unwrap();
        for number in 0..6u64 {
            publisher
                .publish_batch(&bus.topics().logs_raw(), &log_batch(number * 10, &["line"]))
                .await
                .unwrap();
        }
        wait_for(|| {
            self_metrics
                .encode()
                .contains(r#"vigil_index_documents_written_total{index="vigil-logs"} 6"#)
        })
        .await;
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
        shutdown.cancel();
        running.await.unwrap().unwrap();
        let exposed = self_metrics.encode();
        assert!(
            exposed.contains("vigil_index_bulk_concurrency_limit 3"),
            "{exposed}"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let bus = Bus::in_memory();
        let dir = tempfile::tempdir().unwrap();
        let sink = || DocumentSink::Ndjson(NdjsonSink::new(dir.path()).unwrap());
        let error = IndexStage::new(
            &bus,
            sink(),
            IndexNames::default(),
            IndexStageConfig {
                max_documents: 0,
                ..IndexStageConfig::default()
            },
            &SelfMetrics::default(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "index stage setting `max_documents` must be positive"
        );
        let error = IndexStage::new(
            &bus,
            sink(),
            IndexNames {
                logs: "Logs".into(),
                ..IndexNames::default()
            },
            IndexStageConfig::default(),
            &SelfMetrics::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains("must be lowercase"), "{error}");
    }
}
