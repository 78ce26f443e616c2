//! The index stage: the consumer at the end of the data path that reads log batches,
//! raw and derived metric batches and alert events from the bus and bulk-writes them
//! as documents to Elasticsearch (or NDJSON files in the all-in-one mode).
//!
//! Messages are gathered into one bulk write (up to a number of documents, a number of
//! bytes, or a short linger). A message that does not decode, or whose documents
//! Elasticsearch refuses for good, goes to the `index` dead-letter topic with the
//! reason, and the rest of the batch goes on. Positions are committed only after the
//! sink acknowledged the batch and its dead letters were published, so a crash
//! redelivers instead of losing, and deterministic document ids turn the redelivery
//! into 409s instead of duplicates.

use super::documents::{
    Document, IndexNames, InvalidIndexName, MetricStream, alert_document, log_documents,
    metric_documents,
};
use super::sink::{DocumentSink, Outcome, SinkError};
use anyhow::Context as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use std::collections::HashMap;
use std::time::Duration;
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigil_proto::v1::{AlertEvent, LogBatch, MetricBatch};
use vigil_proto::{DecodeError, Payload};
use vigil_runtime::{Bus, BusError, Message, Publisher, SelfMetrics, Subscription};

/// Bytes a bulk action line adds to each document, for the batch size estimate.
const ACTION_LINE_BYTES: usize = 40;
/// Pause after a failed receive, so a broken connection does not spin.
const RECEIVE_RETRY_PAUSE: Duration = Duration::from_millis(200);

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
    publisher: Publisher,
    topics: StageTopics,
    sink: DocumentSink,
    names: IndexNames,
    config: IndexStageConfig,
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
        Ok(Self {
            subscription,
            publisher: bus.publisher()?,
            topics,
            sink,
            names,
            config,
            metrics: IndexMetrics::register(metrics),
        })
    }

    /// Indexes until `shutdown`, then writes and commits the batch in hand and closes
    /// the subscription. Returns an error only when the sink refuses writes for good
    /// or dead letters cannot be published.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(sink = %self.sink, group = %self.config.group, "index stage running");
        loop {
            let (batch, next) = self.collect(&shutdown).await;
            let flushed = self.flush(batch, &shutdown).await?;
            if next == Next::Stop || flushed == Flushed::Abandoned {
                break;
            }
        }
        self.subscription.close();
        tracing::info!("index stage stopped");
        Ok(())
    }

    /// Receives messages until the batch is full, the linger is over, or shutdown.
    async fn collect(&mut self, shutdown: &CancellationToken) -> (Batch, Next) {
        let mut batch = Batch::default();
        let mut deadline = None;
        loop {
            if batch.documents.len() >= self.config.max_documents
                || batch.bytes >= self.config.max_bytes
            {
                return (batch, Next::Continue);
            }
            let linger_over = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return (batch, Next::Stop),
                () = linger_over => return (batch, Next::Continue),
                received = self.subscription.recv() => match received {
                    Ok(message) => {
                        deadline.get_or_insert_with(|| Instant::now() + self.config.linger);
                        batch.add(message, &self.topics, &self.names, &self.metrics);
                    }
                    Err(BusError::Closed) => {
                        tracing::info!("the in-process bus closed");
                        return (batch, Next::Stop);
                    }
                    Err(error) => {
                        self.metrics.receive_errors.inc();
                        tracing::warn!(%error, "receiving from the bus failed");
                        tokio::time::sleep(RECEIVE_RETRY_PAUSE).await;
                    }
                },
            }
        }
    }

    /// Writes the batch, dead-letters what cannot be indexed, and commits.
    async fn flush(
        &mut self,
        mut batch: Batch,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Flushed> {
        if batch.messages.is_empty() {
            return Ok(Flushed::Committed);
        }
        let mut dead_letters = std::mem::take(&mut batch.undecodable);
        if !batch.documents.is_empty() {
            let started = Instant::now();
            let write = self.sink.write(&batch.documents, shutdown);
            let report = match self.subscription.while_busy(write).await {
                Ok(report) => report,
                Err(error @ SinkError::Interrupted { .. }) => {
                    tracing::warn!(
                        messages = batch.messages.len(),
                        %error,
                        "shut down before the batch was written; its messages stay uncommitted and will be consumed again"
                    );
                    return Ok(Flushed::Abandoned);
                }
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!(
                            "writing {} documents to {}",
                            batch.documents.len(),
                            self.sink
                        )
                    });
                }
            };
            self.metrics
                .bulk_duration
                .observe(started.elapsed().as_secs_f64());
            self.metrics.bulk_retries.inc_by(report.retries);
            dead_letters.extend(self.count_outcomes(&batch, &report.outcomes));
        }

        for dead_letter in &dead_letters {
            let message = &batch.messages[dead_letter.origin];
            self.publisher
                .dead_letter(&self.topics.dead_letter, message, &dead_letter.reason)
                .await
                .with_context(|| {
                    format!(
                        "publishing {}/{}/{} to the dead-letter topic {}",
                        message.topic, message.partition, message.offset, self.topics.dead_letter
                    )
                })?;
            self.metrics
                .dead_lettered
                .get_or_create(&[("reason", dead_letter.kind)])
                .inc();
        }
        for message in &batch.messages {
            // A partition taken away by a rebalance cannot be committed here; its new
            // owner consumes the message again and the ids make that harmless.
            if let Err(error) = self.subscription.commit(message) {
                tracing::warn!(
                    topic = %message.topic,
                    partition = message.partition,
                    offset = message.offset,
                    %error,
                    "position could not be committed"
                );
            }
        }
        Ok(Flushed::Committed)
    }

    /// Counts written and duplicate documents, and turns rejected ones into one dead
    /// letter per message they came from.
    fn count_outcomes(&self, batch: &Batch, outcomes: &[Outcome]) -> Vec<DeadLetter> {
        let mut written: HashMap<&str, u64> = HashMap::new();
        let mut duplicates: HashMap<&str, u64> = HashMap::new();
        let mut documents_per_message = vec![0usize; batch.messages.len()];
        // Per message: documents rejected and the first reason.
        let mut rejected: HashMap<usize, (usize, String)> = HashMap::new();
        for (document, outcome) in batch.documents.iter().zip(outcomes) {
            documents_per_message[document.origin] += 1;
            match outcome {
                Outcome::Written => *written.entry(&document.index).or_default() += 1,
                Outcome::Duplicate => *duplicates.entry(&document.index).or_default() += 1,
                Outcome::Rejected { reason } => {
                    rejected
                        .entry(document.origin)
                        .or_insert_with(|| (0, reason.clone()))
                        .0 += 1;
                }
            }
        }
        for (index, count) in written {
            self.metrics
                .documents_written
                .get_or_create(&[("index", index.to_owned())])
                .inc_by(count);
        }
        for (index, count) in duplicates {
            self.metrics
                .documents_duplicate
                .get_or_create(&[("index", index.to_owned())])
                .inc_by(count);
        }
        let mut dead_letters: Vec<DeadLetter> = rejected
            .into_iter()
            .map(|(origin, (count, first_reason))| {
                let total = documents_per_message[origin];
                let message = &batch.messages[origin];
                let reason = format!(
                    "Elasticsearch rejected {count} of the {total} documents of this message; the first because of {first_reason}"
                );
                tracing::warn!(
                    topic = %message.topic,
                    partition = message.partition,
                    offset = message.offset,
                    %reason,
                    "message dead-lettered"
                );
                DeadLetter {
                    origin,
                    kind: "rejected",
                    reason,
                }
            })
            .collect();
        dead_letters.sort_by_key(|dead_letter| dead_letter.origin);
        dead_letters
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flushed {
    Committed,
    /// Shutdown interrupted the write; nothing of the batch was committed.
    Abandoned,
}

/// Messages received for one bulk write, and what they became.
#[derive(Debug, Default)]
struct Batch {
    messages: Vec<Message>,
    documents: Vec<Document>,
    /// Estimated size of the bulk request, plus the payloads of undecodable messages
    /// (they are held until the batch is committed).
    bytes: usize,
    undecodable: Vec<DeadLetter>,
}

/// A message to send to the dead-letter topic.
#[derive(Debug)]
struct DeadLetter {
    /// Position of the message in the batch.
    origin: usize,
    /// Label of the `index_dead_lettered` counter.
    kind: &'static str,
    reason: String,
}

impl Batch {
    fn add(
        &mut self,
        message: Message,
        topics: &StageTopics,
        names: &IndexNames,
        metrics: &IndexMetrics,
    ) {
        let origin = self.messages.len();
        metrics
            .messages_consumed
            .get_or_create(&[("topic", message.topic.clone())])
            .inc();
        match documents_of(&message, origin, topics, names) {
            Ok(documents) => {
                self.bytes += documents
                    .iter()
                    .map(|d| d.body.len() + d.index.len() + d.id.len() + ACTION_LINE_BYTES)
                    .sum::<usize>();
                self.documents.extend(documents);
            }
            Err(undecodable) => {
                self.bytes += message.payload.len();
                tracing::warn!(
                    topic = %message.topic,
                    partition = message.partition,
                    offset = message.offset,
                    reason = %undecodable.reason,
                    "message dead-lettered"
                );
                self.undecodable.push(DeadLetter {
                    origin,
                    kind: undecodable.kind,
                    reason: undecodable.reason,
                });
            }
        }
        self.messages.push(message);
    }
}

/// Why a message has no documents.
struct Undecodable {
    kind: &'static str,
    reason: String,
}

impl From<DecodeError> for Undecodable {
    fn from(error: DecodeError) -> Self {
        Self {
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
    if topic == topics.logs {
        let batch = LogBatch::from_payload(payload)?;
        Ok(log_documents(&batch, &names.logs, origin))
    } else if topic == topics.metrics_raw || topic == topics.metrics_derived {
        let stream = if topic == topics.metrics_raw {
            MetricStream::Raw
        } else {
            MetricStream::Derived
        };
        let batch = MetricBatch::from_payload(payload)?;
        Ok(metric_documents(&batch, stream, &names.metrics, origin))
    } else if topic == topics.alert_events {
        let event = AlertEvent::from_payload(payload)?;
        Ok(vec![alert_document(&event, &names.alerts, origin)])
    } else {
        Err(Undecodable {
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
    receive_errors: Counter,
    bulk_duration: Histogram,
}

impl IndexMetrics {
    fn register(metrics: &SelfMetrics) -> Self {
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
                "Messages the index stage sent to its dead-letter topic, by reason",
                Family::default(),
            ),
            bulk_retries: metrics.register(
                "index_bulk_retries",
                "Bulk requests sent again after a transient failure",
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
    use vigil_runtime::bus::REASON_HEADER;

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
        assert_eq!(
            dead.header(REASON_HEADER).unwrap(),
            "Elasticsearch rejected 1 of the 3 documents of this message; the first because of \
             400 Bad Request: mapper_parsing_exception: failed to parse field [log.offset] of type [long]"
        );
        assert_eq!(
            dead.header("vigil-origin").unwrap(),
            format!("{}/0/0", topics.logs_raw())
        );
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
