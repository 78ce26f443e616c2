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
//! in Elasticsearch or was handed to the dead-letter topic (a message that does
//! not decode is dropped, with an error logged, if even that topic refuses it). A
//! crash redelivers what was not committed, and deterministic document ids turn
//! the redelivery into 409s instead of duplicates.
//!
//! The stage runs in the loop every stage shares (`crate::stage`), which
//! consumes, dead-letters what does not decode and waits without fetching while
//! every write is busy. This module holds what is the index stage's own:
//! `batch` gathers messages into documents, `write` writes a batch and
//! `dead_letter` publishes the records Elasticsearch refused, `positions` tracks
//! what may be committed, and `metrics` counts.

mod batch;
mod dead_letter;
mod metrics;
mod positions;
mod write;

use super::document_sink::DocumentSink;
use super::documents::{Document, IndexNames, InvalidIndexName};
use crate::stage::{
    self, CommitPoint, DeadLetterKey, Intake, NoWatchedSet, Rejection, Stage, StageError,
};
use batch::{Batch, documents_of};
use metrics::IndexMetrics;
use positions::Positions;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigil_runtime::{Bus, BusError, Message, Publisher, SelfMetrics, Subscription};
use write::{WriteOutcome, write_batch};

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

/// Topic names the stage reads.
#[derive(Debug)]
struct StageTopics {
    logs: String,
    metrics_raw: String,
    metrics_derived: String,
    alert_events: String,
}

/// Writes everything on the data topics to a document sink.
#[derive(Debug)]
pub struct IndexStage {
    intake: Intake,
    /// What the writes in flight share.
    shared: Arc<Shared>,
    config: IndexStageConfig,
}

/// What every write of the stage needs.
#[derive(Debug)]
struct Shared {
    publisher: Publisher,
    topics: StageTopics,
    /// Where refused records go.
    dead_letter_topic: String,
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
        let bus_topics = bus.topics();
        let topics = StageTopics {
            logs: bus_topics.logs_raw(),
            metrics_raw: bus_topics.metrics_raw(),
            metrics_derived: bus_topics.metrics_derived(),
            alert_events: bus_topics.alert_events(),
        };
        let inputs = [
            topics.logs.clone(),
            topics.metrics_raw.clone(),
            topics.metrics_derived.clone(),
            topics.alert_events.clone(),
        ];
        let intake = Intake::new::<Indexing>(bus, &config.group, &inputs, metrics)?;
        let metrics = IndexMetrics::register(metrics, &sink, intake.dead_lettered().clone());
        Ok(Self {
            shared: Arc::new(Shared {
                publisher: intake.publisher().clone(),
                topics,
                dead_letter_topic: bus_topics.dead_letter(Indexing::NAME),
                sink,
                names,
                metrics,
            }),
            intake,
            config,
        })
    }

    /// Indexes until `shutdown` (or until the in-process bus closes), then writes the
    /// batch in hand, waits for the writes in flight and commits what they finished.
    /// Returns an error only when the sink refuses writes for good.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StageError> {
        let max_writes = self.shared.sink.max_writes_in_flight();
        tracing::info!(
            sink = %self.shared.sink,
            group = %self.config.group,
            max_writes,
            "index stage running"
        );
        let (done_sender, done) = mpsc::channel(max_writes);
        let indexing = Indexing {
            shared: self.shared,
            config: self.config,
            positions: Positions::default(),
            batch: Batch::default(),
            writes: 0,
            max_writes,
            done_sender,
            done,
            shutdown: shutdown.clone(),
        };
        let ended = stage::run(indexing, self.intake, NoWatchedSet, shutdown).await;
        tracing::info!("index stage stopped");
        ended
    }
}

/// What the index stage does with its messages: batches, writes in flight, and
/// the positions they allow to commit.
#[derive(Debug)]
struct Indexing {
    shared: Arc<Shared>,
    config: IndexStageConfig,
    positions: Positions,
    /// The batch being gathered.
    batch: Batch,
    /// Writes in flight, and how many may be.
    writes: usize,
    max_writes: usize,
    /// Where the writes say they ended.
    done_sender: mpsc::Sender<Written>,
    done: mpsc::Receiver<Written>,
    /// Stops the retries of writes in flight.
    shutdown: CancellationToken,
}

/// What the index stage waits for besides messages.
#[derive(Debug)]
enum IndexEvent {
    /// A write ended.
    Written(Written),
    /// The linger of the batch being gathered is over.
    Lingered,
}

impl Stage for Indexing {
    const NAME: &'static str = "index";
    const DEAD_LETTERS_BY: DeadLetterKey = DeadLetterKey::Reason;
    type Batch<'m> = Vec<Document>;
    type Event = IndexEvent;

    fn decode(&self, message: &Message) -> Result<Vec<Document>, Rejection> {
        let origin = self.batch.messages.len();
        documents_of(message, origin, &self.shared.topics, &self.shared.names)
    }

    /// Everything is indexed, whatever its time.
    fn latest_event_time(_documents: &Vec<Document>) -> Option<i64> {
        None
    }

    async fn process(&mut self, message: &Message, documents: Vec<Document>) {
        self.positions.received(message);
        let linger = self.config.linger;
        self.batch
            .deadline
            .get_or_insert_with(|| Instant::now() + linger);
        self.batch.add(message.clone(), documents);
        self.dispatch_ready();
    }

    async fn next_event(&mut self) -> IndexEvent {
        let linger = self.batch.deadline.filter(|_| !self.batch.lingered);
        tokio::select! {
            biased;
            Some(written) = self.done.recv(), if self.writes > 0 => IndexEvent::Written(written),
            () = sleep_until(linger), if linger.is_some() => IndexEvent::Lingered,
            else => std::future::pending().await,
        }
    }

    async fn handle(&mut self, event: IndexEvent) -> Result<(), StageError> {
        match event {
            IndexEvent::Written(written) => {
                self.writes -= 1;
                self.finish(written)?;
            }
            IndexEvent::Lingered => self.batch.lingered = true,
        }
        self.dispatch_ready();
        Ok(())
    }

    /// A full batch waits for a write to be free; meanwhile nothing is fetched.
    fn accepts_messages(&self) -> bool {
        !self.batch.is_full(&self.config)
    }

    /// Commits, per partition, up to the first message not finished: a
    /// dead-lettered message is finished at once, the others when their write is.
    fn commit(&mut self, subscription: &Subscription, point: CommitPoint<'_>) {
        match point {
            CommitPoint::Consumed {
                message,
                dead_lettered: true,
            } => {
                self.positions.received(message);
                self.positions
                    .completed(&message.topic, message.partition, message.offset);
            }
            CommitPoint::Consumed { .. } | CommitPoint::Ticked => return,
            CommitPoint::EventHandled | CommitPoint::Stopped => {}
        }
        for (topic, partition, next) in self.positions.take_moved() {
            // A partition taken away by a rebalance cannot be committed here; its new
            // owner consumes the messages again and the ids make that harmless.
            if let Err(error) = subscription.commit_position(&topic, partition, next) {
                tracing::warn!(
                    %topic,
                    partition,
                    offset = next,
                    %error,
                    "position could not be committed"
                );
            }
        }
    }

    /// Writes the batch in hand (unless the stage failed) and waits for every
    /// write in flight.
    async fn drain(&mut self, failed: bool) -> Result<(), StageError> {
        let mut outcome = Ok(());
        if !failed && !self.batch.messages.is_empty() {
            if self.writes >= self.max_writes {
                outcome = self.finish_next().await;
            }
            if outcome.is_ok() {
                let batch = std::mem::take(&mut self.batch);
                self.dispatch(batch);
            }
        }
        while self.writes > 0 {
            let finished = self.finish_next().await;
            outcome = outcome.and(finished);
        }
        outcome
    }
}

impl Indexing {
    /// Starts writing the batch being gathered if it is ready and a write is free.
    fn dispatch_ready(&mut self) {
        if self.writes < self.max_writes && self.batch.is_ready(&self.config) {
            let batch = std::mem::take(&mut self.batch);
            self.dispatch(batch);
        }
    }

    /// Starts writing `batch`; its end comes back on `done`.
    fn dispatch(&mut self, batch: Batch) {
        let shared = Arc::clone(&self.shared);
        let done = self.done_sender.clone();
        let shutdown = self.shutdown.clone();
        self.writes += 1;
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

    /// Waits for the next write to end and takes it into account.
    async fn finish_next(&mut self) -> Result<(), StageError> {
        // The stage holds a sender, so the channel stays open.
        let Some(written) = self.done.recv().await else {
            return Ok(());
        };
        self.writes -= 1;
        self.finish(written)
    }

    /// Takes a finished write into account: its messages may be committed.
    fn finish(&mut self, written: Written) -> Result<(), StageError> {
        match written.outcome {
            WriteOutcome::Done => {}
            WriteOutcome::Abandoned => return Ok(()),
            WriteOutcome::Failed(error) => return Err(error),
        }
        for (topic, partition, offset) in &written.positions {
            self.positions.completed(topic, *partition, *offset);
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
#[derive(Debug)]
struct Written {
    positions: Vec<(String, i32, i64)>,
    outcome: WriteOutcome,
}

#[cfg(test)]
mod tests;
