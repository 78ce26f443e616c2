//! Delivery of one log source's batches to the bus, and the position that follows
//! the acknowledgements: the last step of the log data path inside the agent, for
//! files (their checkpoint) and the journal (its cursor) alike.
//!
//! Several batches are in flight at once, but the checkpoint only moves over a
//! batch once it and every batch before it were acknowledged. A batch the bus
//! failed to take is sent again, with backoff, before anything newer: nothing is
//! skipped and nothing overtakes it. While a failure is outstanding or too many
//! batches are in flight the shipper stops accepting, which stops the reader: the
//! file is the buffer, memory stays bounded.

use super::file::Emitted;
pub(crate) use super::wire::EncodedBatch;
use crate::checkpoint::{CheckpointStore, Position};
use crate::self_metrics::AgentMetrics;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vigil_proto::v1::LogBatch;
use vigil_runtime::{BusError, Publisher};

/// Most batches of one file waiting for their acknowledgement.
pub(crate) const MAX_IN_FLIGHT: usize = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Hands one batch to the bus and resolves with its acknowledgement.
pub(crate) type PublishBatch =
    Arc<dyn Fn(Arc<EncodedBatch>) -> BoxFuture<'static, Result<(), BusError>> + Send + Sync>;

/// Publishes to `topic` of the bus behind `publisher`.
pub(crate) fn publish_to(publisher: Publisher, topic: String) -> PublishBatch {
    Arc::new(move |batch| {
        let publisher = publisher.clone();
        let topic = topic.clone();
        Box::pin(async move {
            publisher
                .publish_encoded::<LogBatch>(&topic, &batch.key, &batch.payload)
                .await
        })
    })
}

/// Where a source's acknowledged batches end: what the shipper moves once a batch
/// and every one before it were acknowledged.
/// Its `Display` names the source in log lines.
pub(crate) trait Progress: std::fmt::Debug + std::fmt::Display + Send {
    /// A position in the source, after a batch or at a mark.
    type Position: std::fmt::Debug + Send;

    /// Records that everything up to `passed` (in source order, the newest last)
    /// was acknowledged; `lines` were in the batches passed.
    fn acknowledged(&mut self, passed: Vec<Self::Position>, lines: u64);
}

/// The checkpoint of one followed path.
#[derive(Debug)]
pub(crate) struct FileProgress {
    path: PathBuf,
    checkpoints: CheckpointStore,
}

impl std::fmt::Display for FileProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())
    }
}

impl Progress for FileProgress {
    type Position = Position;

    /// The last position of every file instance passed, so that a file finished
    /// before the next one was opened keeps its final position.
    fn acknowledged(&mut self, passed: Vec<Position>, _lines: u64) {
        let mut newest: Option<Position> = None;
        for position in passed {
            if let Some(previous) = newest
                && previous.identity.source != position.identity.source
            {
                self.checkpoints.set(&self.path, previous);
            }
            newest = Some(position);
        }
        if let Some(position) = newest {
            self.checkpoints.set(&self.path, position);
        }
    }
}

/// Ships the batches of one path and moves its checkpoint.
pub(crate) type Shipper = Delivery<FileProgress>;

/// A batch on its way, numbered in source order.
#[derive(Debug)]
struct Numbered {
    sequence: u64,
    batch: Arc<EncodedBatch>,
}

/// The outcome of one publish.
#[derive(Debug)]
pub(crate) struct Attempt {
    numbered: Numbered,
    retry: bool,
    result: Result<(), BusError>,
}

/// Something the position must pass over, in source order.
#[derive(Debug)]
struct LedgerEntry<P> {
    sequence: u64,
    end: P,
    lines: u64,
    /// Bytes of the source the lines span.
    bytes: u64,
    acknowledged: bool,
}

/// Ships the batches of one source and moves its position through `progress`.
pub(crate) struct Delivery<P: Progress> {
    progress: P,
    topic: String,
    publish: PublishBatch,
    metrics: AgentMetrics,
    next_sequence: u64,
    ledger: VecDeque<LedgerEntry<P::Position>>,
    /// Read but not handed to the bus yet.
    queued: VecDeque<Numbered>,
    in_flight: FuturesOrdered<BoxFuture<'static, Attempt>>,
    /// Refused by the bus, in source order, waiting to be sent again.
    failed: VecDeque<Numbered>,
    /// A refused batch is being sent again: nothing newer starts until it is taken,
    /// or it would overtake it.
    retrying: bool,
    backoff: Duration,
}

impl<P: Progress> std::fmt::Debug for Delivery<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("source", &self.progress.to_string())
            .field("in_flight", &self.in_flight.len())
            .field("queued", &self.queued.len())
            .field("failed", &self.failed.len())
            .finish_non_exhaustive()
    }
}

impl Shipper {
    pub(crate) fn new(
        path: PathBuf,
        topic: String,
        publish: PublishBatch,
        checkpoints: CheckpointStore,
        metrics: AgentMetrics,
    ) -> Self {
        Delivery::with_progress(FileProgress { path, checkpoints }, topic, publish, metrics)
    }

    /// Takes what the reader produced.
    pub(crate) fn submit(&mut self, emitted: Vec<Emitted>) {
        for item in emitted {
            match item {
                Emitted::Batch(pending) => self.push_batch(pending.batch, pending.end),
                Emitted::Mark(position) => self.push_mark(position),
            }
        }
        self.advance();
        self.launch();
    }
}

impl<P: Progress> Delivery<P> {
    pub(crate) fn with_progress(
        progress: P,
        topic: String,
        publish: PublishBatch,
        metrics: AgentMetrics,
    ) -> Self {
        Self {
            progress,
            topic,
            publish,
            metrics,
            next_sequence: 0,
            ledger: VecDeque::new(),
            queued: VecDeque::new(),
            in_flight: FuturesOrdered::new(),
            failed: VecDeque::new(),
            retrying: false,
            backoff: FIRST_BACKOFF,
        }
    }

    /// How many more full batches the reader may produce now; 0 while the bus
    /// fails or is behind.
    pub(crate) fn room(&self) -> usize {
        if self.failed.is_empty() && self.queued.is_empty() && !self.retrying {
            MAX_IN_FLIGHT - self.in_flight.len()
        } else {
            0
        }
    }

    /// Whether a publish is outstanding (then `next_attempt` will complete).
    pub(crate) fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Whether everything submitted was acknowledged.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.failed.is_empty() && self.queued.is_empty()
    }

    /// Takes `batch`, after which the position moves to `end`, and starts
    /// sending it if there is room.
    pub(crate) fn send(&mut self, batch: EncodedBatch, end: P::Position) {
        self.push_batch(batch, end);
        self.launch();
    }

    /// Moves the position to `end` once everything taken before is acknowledged:
    /// for what the source skipped without shipping.
    pub(crate) fn mark(&mut self, end: P::Position) {
        self.push_mark(end);
        self.advance();
    }

    fn push_batch(&mut self, batch: EncodedBatch, end: P::Position) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.ledger.push_back(LedgerEntry {
            sequence,
            end,
            lines: batch.lines,
            bytes: batch.source_bytes,
            acknowledged: false,
        });
        self.queued.push_back(Numbered {
            sequence,
            batch: Arc::new(batch),
        });
    }

    fn push_mark(&mut self, end: P::Position) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.ledger.push_back(LedgerEntry {
            sequence,
            end,
            lines: 0,
            bytes: 0,
            acknowledged: true,
        });
    }

    /// The next publish outcome; pending forever when nothing is in flight.
    pub(crate) async fn next_attempt(&mut self) -> Attempt {
        match self.in_flight.next().await {
            Some(attempt) => attempt,
            None => std::future::pending().await,
        }
    }

    /// Accounts for a publish outcome and starts what may start next.
    pub(crate) fn on_attempt(&mut self, attempt: Attempt) {
        let Attempt {
            numbered,
            retry,
            result,
        } = attempt;
        if retry {
            self.retrying = false;
        }
        match result {
            Ok(()) => {
                self.metrics.published(&self.topic);
                if let Some(entry) = self
                    .ledger
                    .iter_mut()
                    .find(|entry| entry.sequence == numbered.sequence)
                {
                    entry.acknowledged = true;
                }
                if retry {
                    self.backoff = FIRST_BACKOFF;
                }
                self.advance();
            }
            Err(error) => {
                self.metrics.log_publish_failures.inc();
                tracing::warn!(
                    source = %self.progress,
                    topic = %self.topic,
                    lines = numbered.batch.lines,
                    %error,
                    "log batch not acknowledged; it will be sent again"
                );
                if retry {
                    self.failed.push_front(numbered);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                } else {
                    self.failed.push_back(numbered);
                }
            }
        }
        self.launch();
    }

    /// Waits until everything submitted was acknowledged, retrying as needed.
    pub(crate) async fn drain(&mut self) {
        while !self.is_idle() {
            self.launch();
            let attempt = self.next_attempt().await;
            self.on_attempt(attempt);
        }
    }

    /// Starts publishes: the oldest failed batch alone (after its backoff) once
    /// nothing else is in flight, otherwise queued batches up to the limit.
    fn launch(&mut self) {
        if self.retrying {
            return;
        }
        if !self.failed.is_empty() {
            if self.in_flight.is_empty()
                && let Some(numbered) = self.failed.pop_front()
            {
                let delay = self.backoff;
                self.retrying = true;
                self.publish(numbered, Some(delay));
            }
            return;
        }
        while self.in_flight.len() < MAX_IN_FLIGHT
            && let Some(numbered) = self.queued.pop_front()
        {
            self.publish(numbered, None);
        }
    }

    fn publish(&mut self, numbered: Numbered, retry_after: Option<Duration>) {
        let publish = Arc::clone(&self.publish);
        self.in_flight.push_back(Box::pin(async move {
            if let Some(delay) = retry_after {
                tokio::time::sleep(delay).await;
            }
            let result = publish(Arc::clone(&numbered.batch)).await;
            Attempt {
                numbered,
                retry: retry_after.is_some(),
                result,
            }
        }));
    }

    /// Moves the position over every acknowledged entry at the front.
    fn advance(&mut self) {
        let mut passed = Vec::new();
        let mut lines = 0;
        while self.ledger.front().is_some_and(|entry| entry.acknowledged) {
            if let Some(entry) = self.ledger.pop_front() {
                self.metrics.log_lines_sent.inc_by(entry.lines);
                self.metrics.log_bytes_sent.inc_by(entry.bytes);
                lines += entry.lines;
                passed.push(entry.end);
            }
        }
        if !passed.is_empty() {
            self.progress.acknowledged(passed, lines);
        }
    }
}
