//! Delivery of one file's batches to the bus, and the checkpoint that follows the
//! acknowledgements: the last step of the log data path inside the agent.
//!
//! Several batches are in flight at once, but the checkpoint only moves over a
//! batch once it and every batch before it were acknowledged. A batch the bus
//! failed to take is sent again, with backoff, before anything newer: nothing is
//! skipped and nothing overtakes it. While a failure is outstanding or too many
//! batches are in flight the shipper stops accepting, which stops the reader: the
//! file is the buffer, memory stays bounded.

use super::file::Emitted;
use super::wire::EncodedBatch;
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

/// A batch on its way, numbered in file order.
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

/// Something the checkpoint must pass over, in file order.
#[derive(Debug)]
struct LedgerEntry {
    sequence: u64,
    end: Position,
    lines: u64,
    /// Bytes of the file the lines span.
    bytes: u64,
    acknowledged: bool,
}

/// Ships the batches of one path and moves its checkpoint.
pub(crate) struct Shipper {
    path: PathBuf,
    topic: String,
    publish: PublishBatch,
    checkpoints: CheckpointStore,
    metrics: AgentMetrics,
    next_sequence: u64,
    ledger: VecDeque<LedgerEntry>,
    /// Read but not handed to the bus yet.
    queued: VecDeque<Numbered>,
    in_flight: FuturesOrdered<BoxFuture<'static, Attempt>>,
    /// Refused by the bus, in file order, waiting to be sent again.
    failed: VecDeque<Numbered>,
    /// A refused batch is being sent again: nothing newer starts until it is taken,
    /// or it would overtake it.
    retrying: bool,
    backoff: Duration,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("path", &self.path)
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
        Self {
            path,
            topic,
            publish,
            checkpoints,
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

    /// Takes what the reader produced.
    pub(crate) fn submit(&mut self, emitted: Vec<Emitted>) {
        for item in emitted {
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            match item {
                Emitted::Batch(pending) => {
                    self.ledger.push_back(LedgerEntry {
                        sequence,
                        end: pending.end,
                        lines: pending.batch.lines,
                        bytes: pending.batch.source_bytes,
                        acknowledged: false,
                    });
                    self.queued.push_back(Numbered {
                        sequence,
                        batch: Arc::new(pending.batch),
                    });
                }
                Emitted::Mark(position) => self.ledger.push_back(LedgerEntry {
                    sequence,
                    end: position,
                    lines: 0,
                    bytes: 0,
                    acknowledged: true,
                }),
            }
        }
        self.advance();
        self.launch();
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
                    path = %self.path.display(),
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

    /// Moves the checkpoint over every acknowledged entry at the front: the last
    /// position of every file instance passed, so that a file finished before the
    /// next one was opened keeps its final position.
    fn advance(&mut self) {
        let mut newest: Option<Position> = None;
        while self.ledger.front().is_some_and(|entry| entry.acknowledged) {
            if let Some(entry) = self.ledger.pop_front() {
                self.metrics.log_lines_sent.inc_by(entry.lines);
                self.metrics.log_bytes_sent.inc_by(entry.bytes);
                if let Some(previous) = newest
                    && previous.identity.source != entry.end.identity.source
                {
                    self.checkpoints.set(&self.path, previous);
                }
                newest = Some(entry.end);
            }
        }
        if let Some(position) = newest {
            self.checkpoints.set(&self.path, position);
        }
    }
}
