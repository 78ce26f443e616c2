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
//!
//! This module holds the consume loop and the commits; `batch` gathers messages into
//! documents, `write` writes a batch and `dead_letter` publishes what cannot be
//! indexed, `positions` tracks what may be committed, and `metrics` counts.

mod batch;
mod dead_letter;
mod metrics;
mod positions;
mod write;

use super::document_sink::DocumentSink;
use super::documents::{IndexNames, InvalidIndexName};
use batch::Batch;
use metrics::IndexMetrics;
use positions::Positions;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigil_runtime::{Bus, BusError, Publisher, SelfMetrics, Subscription};
use write::{WriteOutcome, write_batch};

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

#[cfg(test)]
mod tests;
