//! The metric spool: every metric batch of the host, container and SNMP sources
//! goes through a bounded, checksummed queue on disk under `<data_dir>/spool/`
//! on its way to Kafka, so that batches made while Kafka is unreachable wait there
//! instead of being dropped, and are sent in order once it is back. Logs do not
//! come here: their files are their buffer and their checkpoints say what was sent.
//!
//! One task owns the spool. It appends each batch the sources hand it, and drains
//! the spool from its oldest record with a bounded number of batches in flight,
//! deleting a segment once Kafka acknowledged all its records. When a publish
//! fails (the producer gives up after `message.timeout.ms`), the in-flight batches
//! are waited for and everything not acknowledged is sent again, oldest first.
//!
//! Every batch is written, not only those made during an outage: the spool then
//! keeps the one order of all batches without a hand-over between a direct path
//! and a disk path, and batches in flight survive an agent crash too (they are
//! sent again after the restart; content-derived document ids keep the index free
//! of duplicates). While Kafka keeps up, the spool is one small file that is
//! emptied whenever everything in it was acknowledged.
//!
//! When the spool is full, the oldest segment is dropped and its batches and
//! samples are counted (`vigil_agent_spool_dropped_batches_total{reason="full"}`).

mod segment;
mod store;
#[cfg(test)]
mod tests;

use crate::config::SpoolConfig;
use crate::self_metrics::{AgentMetrics, DropReason};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use segment::Record;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use store::{Dropped, Position, SpoolStore};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use vigil_proto::Payload;
use vigil_proto::v1::MetricBatch;
use vigil_runtime::{Bus, BusError, Publisher};

/// Batches handed to the bus at once, and their bytes: enough to keep a broker
/// busy, and what bounds the producer's own queue while the broker is down.
const MAX_IN_FLIGHT: usize = 256;
const MAX_IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;
/// Batches that may wait between the sources and the spool task.
const QUEUE_CAPACITY: usize = 64;
/// Wait before sending again after a failure; doubled per failure up to the most.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MOST_RETRY: Duration = Duration::from_secs(30);

/// Why the spool could not be used.
#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("metric spool file {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error(
        "a metric batch of {bytes} bytes does not fit in the metric spool of {max_bytes} bytes (`spool.max_bytes`)"
    )]
    Oversized { bytes: u64, max_bytes: u64 },
    #[error("the metric spool has no producer: {0}")]
    Bus(#[from] BusError),
    #[error("metric spool file {path} holds no record at byte {offset}: {damage}")]
    Unreadable {
        path: PathBuf,
        offset: u64,
        damage: String,
    },
}

impl SpoolError {
    fn io(path: &Path, cause: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            cause,
        }
    }
}

/// Where the metric sources hand their batches; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct MetricSpool {
    sender: mpsc::Sender<Record>,
    topic: String,
    metrics: AgentMetrics,
}

impl MetricSpool {
    /// Hands `batch` to the spool task; waits only while that task is busy.
    pub(crate) async fn submit(&self, batch: &MetricBatch) {
        let samples = u32::try_from(batch.samples.len()).unwrap_or(u32::MAX);
        tracing::debug!(
            resource = batch.key(),
            time = batch.samples.first().map_or(0, |s| s.time_unix_nano),
            samples,
            "metric batch spooled"
        );
        let record = Record {
            topic: self.topic.clone(),
            key: batch.key().to_owned(),
            samples,
            payload: batch.to_payload(),
        };
        if self.sender.send(record).await.is_err() {
            self.metrics
                .spool_dropped(DropReason::Stopped, 1, u64::from(samples));
            tracing::error!(
                resource = batch.key(),
                "the metric spool has stopped; a metric batch is dropped"
            );
        }
    }
}

/// The task that owns the spool: appends what the sources hand in and drains it to
/// the bus.
#[derive(Debug)]
pub(crate) struct SpoolTask {
    store: SpoolStore,
    receiver: mpsc::Receiver<Record>,
    bus: Bus,
    publisher: Publisher,
    metrics: AgentMetrics,
    /// Whether the last append failed, so that a failing disk is logged once.
    append_failing: bool,
}

/// The outcome of publishing one spooled batch.
struct Published {
    position: Position,
    topic: String,
    bytes: usize,
    result: Result<(), BusError>,
}

type Publishing = Pin<Box<dyn Future<Output = Published> + Send>>;

/// Opens (verifying) the spool under `data_dir` and returns the handle for the
/// sources, publishing to `topic`, and the task that drains it to `bus`.
pub(crate) fn open(
    data_dir: &Path,
    config: &SpoolConfig,
    topic: String,
    bus: Bus,
    metrics: AgentMetrics,
) -> Result<(MetricSpool, SpoolTask), SpoolError> {
    let publisher = bus.publisher()?;
    let (store, recovered) = SpoolStore::open(&data_dir.join("spool"), config.max_bytes)?;
    for cut in &recovered.cuts {
        metrics.spool_cut_bytes.inc_by(cut.bytes);
    }
    record_dropped(&metrics, DropReason::Full, recovered.dropped);
    if recovered.dropped.batches > 0 {
        tracing::warn!(
            batches = recovered.dropped.batches,
            samples = recovered.dropped.samples,
            max_bytes = config.max_bytes,
            "the metric spool held more than `spool.max_bytes`; its oldest batches were dropped"
        );
    }
    if recovered.batches > 0 {
        tracing::info!(
            batches = recovered.batches,
            bytes = store.bytes(),
            "the metric spool holds batches from before the start; they are sent first"
        );
    }
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let spool = MetricSpool {
        sender,
        topic,
        metrics: metrics.clone(),
    };
    let task = SpoolTask {
        store,
        receiver,
        bus,
        publisher,
        metrics,
        append_failing: false,
    };
    Ok((spool, task))
}

fn record_dropped(metrics: &AgentMetrics, reason: DropReason, dropped: Dropped) {
    if dropped.batches > 0 {
        metrics.spool_dropped(reason, dropped.batches, dropped.samples);
    }
}

impl SpoolTask {
    /// Appends and drains until every [`MetricSpool`] is gone (the sources
    /// stopped), then goes on draining for at most `shutdown_timeout`. What is
    /// not acknowledged by then stays on disk for the next start.
    pub(crate) async fn run(mut self, shutdown_timeout: Duration) {
        let mut in_flight: FuturesOrdered<Publishing> = FuturesOrdered::new();
        let mut in_flight_bytes = 0;
        let mut failed = false;
        let mut outage = false;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = FIRST_RETRY;
        let mut closing_at: Option<Instant> = None;
        loop {
            if !failed && retry_at.is_none() {
                retry_at = self.fill(&mut in_flight, &mut in_flight_bytes);
            }
            self.metrics.spool_bytes.set(gauge(self.store.bytes()));
            self.metrics.spool_batches.set(gauge(self.store.waiting()));
            if closing_at.is_some() && self.store.waiting() == 0 {
                break;
            }
            tokio::select! {
                received = self.receiver.recv(), if closing_at.is_none() => match received {
                    Some(record) => self.append(&record),
                    None => closing_at = Some(Instant::now() + shutdown_timeout),
                },
                Some(published) = in_flight.next(), if !in_flight.is_empty() => {
                    in_flight_bytes -= published.bytes;
                    match published.result {
                        Ok(()) => {
                            self.metrics.published(&published.topic);
                            // After a failure everything from the failed batch on
                            // is sent again; acknowledgements must stay in order.
                            if !failed {
                                self.acknowledge(published.position);
                                backoff = FIRST_RETRY;
                                if outage {
                                    outage = false;
                                    tracing::info!(
                                        waiting = self.store.waiting(),
                                        "the bus takes metric batches again; the spool drains"
                                    );
                                }
                            }
                        }
                        Err(error) => {
                            self.metrics.spool_publish_failures.inc();
                            if !self.store.holds(published.position.segment) {
                                self.metrics.spool_dropped(DropReason::Full, 1, published.position.samples);
                            }
                            failed = true;
                            if !outage {
                                outage = true;
                                tracing::warn!(
                                    %error,
                                    waiting = self.store.waiting(),
                                    "the bus did not take a metric batch; metric batches wait in the spool"
                                );
                            }
                        }
                    }
                    if failed && in_flight.is_empty() {
                        self.publisher = self.bus.renewed_publisher(self.publisher.clone());
                        self.store.rewind();
                        failed = false;
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MOST_RETRY);
                    }
                },
                () = sleep_until(retry_at), if retry_at.is_some() => retry_at = None,
                () = sleep_until(closing_at), if closing_at.is_some() => break,
            }
        }
        if let Err(error) = self.store.sync() {
            tracing::warn!(%error, "the metric spool could not be synced to disk");
        }
        tracing::info!(
            waiting = self.store.waiting(),
            in_flight = in_flight.len(),
            "metric spool stopped; waiting batches are sent after the next start"
        );
    }

    /// Hands the bus the next spooled batches, up to the in-flight bounds; returns
    /// when to try again if the spool could not be read.
    fn fill(
        &mut self,
        in_flight: &mut FuturesOrdered<Publishing>,
        in_flight_bytes: &mut usize,
    ) -> Option<Instant> {
        while in_flight.len() < MAX_IN_FLIGHT && *in_flight_bytes < MAX_IN_FLIGHT_BYTES {
            let (record, position) = match self.store.next_unsent() {
                Ok(Some(next)) => next,
                Ok(None) => return None,
                Err(error @ SpoolError::Unreadable { .. }) => {
                    tracing::error!(%error, "the rest of the metric spool segment is skipped");
                    match self.store.skip_unreadable() {
                        Ok(dropped) => {
                            record_dropped(&self.metrics, DropReason::Unreadable, dropped)
                        }
                        Err(error) => {
                            tracing::error!(%error, "the metric spool cannot be read");
                            return Some(Instant::now() + MOST_RETRY);
                        }
                    }
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "the metric spool cannot be read");
                    return Some(Instant::now() + MOST_RETRY);
                }
            };
            let bytes = record.payload.len();
            *in_flight_bytes += bytes;
            let publisher = self.publisher.clone();
            in_flight.push_back(Box::pin(async move {
                let result = publisher
                    .publish_encoded::<MetricBatch>(&record.topic, &record.key, &record.payload)
                    .await;
                Published {
                    position,
                    topic: record.topic,
                    bytes,
                    result,
                }
            }));
        }
        None
    }

    fn append(&mut self, record: &Record) {
        match self.store.append(record) {
            Ok(dropped) => {
                self.append_failing = false;
                self.metrics.spool_batches_written.inc();
                if dropped.batches > 0 {
                    record_dropped(&self.metrics, DropReason::Full, dropped);
                    tracing::warn!(
                        batches = dropped.batches,
                        samples = dropped.samples,
                        "the metric spool is full; its oldest batches were dropped"
                    );
                }
            }
            Err(error) => {
                let reason = match error {
                    SpoolError::Oversized { .. } => DropReason::Oversized,
                    _ => DropReason::Unwritable,
                };
                self.metrics
                    .spool_dropped(reason, 1, u64::from(record.samples));
                if !self.append_failing {
                    tracing::error!(%error, resource = %record.key, "a metric batch could not be spooled and is dropped");
                }
                self.append_failing = reason == DropReason::Unwritable;
            }
        }
    }

    fn acknowledge(&mut self, position: Position) {
        if let Err(error) = self.store.acknowledge(position) {
            tracing::warn!(%error, "an acknowledged metric spool segment could not be removed");
        }
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Sleeps until `at`; forever when there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
