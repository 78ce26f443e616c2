//! The alert stage's way out to the bus: alert events (to the events topic) and
//! alert state records (to the compacted state topic) wait in one bounded queue
//! and are published in order by a task of their own, and whatever Kafka does
//! not acknowledge is sent again after a backoff. An outage therefore neither
//! stalls evaluation and paging nor loses records silently: while the queue is
//! full the oldest record is dropped, and every drop is counted
//! (`vigil_alert_publish_dropped_total{record}`) and logged.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use vigil_proto::Topics;
use vigil_proto::v1::{AlertEvent, AlertState};
use vigil_runtime::{Bus, BusError, Publisher, SelfMetrics};

/// How many records may wait for Kafka; at about a kilobyte each, a few MiB.
pub(crate) const QUEUE_CAPACITY: usize = 10_000;
/// How many records are published at once; Kafka keeps their order.
const WINDOW: usize = 256;
/// Wait before publishing again after a failure; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One record on its way to the bus.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    Event(AlertEvent),
    State(AlertState),
    /// The alert with this fingerprint ended: its state record is deleted.
    Tombstone(String),
}

impl Outgoing {
    /// The `record` label of the counters.
    fn kind(&self) -> &'static str {
        match self {
            Self::Event(_) => "event",
            Self::State(_) | Self::Tombstone(_) => "state",
        }
    }

    /// The key of a state record: a later record with the same key replaces it.
    fn state_key(&self) -> Option<&str> {
        match self {
            Self::Event(_) => None,
            Self::State(state) => Some(&state.fingerprint),
            Self::Tombstone(fingerprint) => Some(fingerprint),
        }
    }

    async fn publish(&self, publisher: &Publisher, topics: &Topics) -> Result<(), BusError> {
        match self {
            Self::Event(event) => publisher.publish_batch(&topics.alert_events(), event).await,
            Self::State(state) => publisher.publish_batch(&topics.alert_state(), state).await,
            Self::Tombstone(fingerprint) => {
                publisher
                    .publish_tombstone(&topics.alert_state(), fingerprint)
                    .await
            }
        }
    }
}

/// A record in the queue, and who waits for its acknowledgement.
#[derive(Debug)]
struct Queued {
    record: Outgoing,
    acknowledged: Option<oneshot::Sender<()>>,
}

/// Resolves once Kafka acknowledged the record; fails if the record was dropped.
pub(crate) type Acknowledgement = oneshot::Receiver<()>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    record: &'static str,
}

#[derive(Debug, Clone)]
struct OutboxMetrics {
    dropped: Family<RecordLabels, Counter>,
    retried: Family<RecordLabels, Counter>,
    queued: Gauge,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Queued>,
    /// The kinds of the records being published now.
    in_flight: Vec<&'static str>,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Wakes the publishing task when a record arrives.
    arrived: Notify,
    /// Wakes [`Outbox::flush`] when a window was published.
    published: Notify,
    /// Whether the last publish failed and the task is backing off.
    failing: AtomicBool,
    /// Set when [`Outbox::flush`] gave up: what is left was counted as dropped,
    /// and the task stops.
    closed: AtomicBool,
    metrics: OutboxMetrics,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_dropped(&self, kind: &'static str, count: u64, why: &str) {
        if count == 0 {
            return;
        }
        self.metrics
            .dropped
            .get_or_create(&RecordLabels { record: kind })
            .inc_by(count);
        tracing::error!(record = kind, count, why, "alert records dropped");
    }

    fn update_gauge(&self, queue: &Queue) {
        self.metrics
            .queued
            .set((queue.waiting.len() + queue.in_flight.len()) as i64);
    }
}

/// The queue of records for the bus, and the task that publishes it.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

impl Outbox {
    /// Starts the task publishing to `topics` through a producer of `bus`; at
    /// most `capacity` records wait.
    pub(crate) fn start(
        bus: Bus,
        topics: Topics,
        capacity: usize,
        metrics: &SelfMetrics,
    ) -> Result<Self, BusError> {
        let publisher = bus.publisher()?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            capacity,
            arrived: Notify::new(),
            published: Notify::new(),
            failing: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            metrics: OutboxMetrics {
                dropped: metrics.register(
                    "alert_publish_dropped",
                    "Alert records (event or state) dropped unpublished: the queue was full while Kafka did not acknowledge, or the stage stopped first",
                    Family::default(),
                ),
                retried: metrics.register(
                    "alert_publish_retries",
                    "Alert records Kafka did not acknowledge, published again after a backoff",
                    Family::default(),
                ),
                queued: metrics.register(
                    "alert_publish_queue",
                    "Alert records waiting to be published or acknowledged",
                    Gauge::default(),
                ),
            },
        });
        tokio::spawn(publish_forever(shared.clone(), bus, publisher, topics));
        Ok(Self { shared })
    }

    /// Queues `record` without waiting; when the queue is full the oldest waiting
    /// record makes room and is counted as dropped.
    pub(crate) fn send(&self, record: Outgoing) {
        self.enqueue(record, None);
    }

    /// Like [`send`](Self::send), and says when Kafka acknowledged the record.
    pub(crate) fn send_acknowledged(&self, record: Outgoing) -> Acknowledgement {
        let (acknowledged, acknowledgement) = oneshot::channel();
        self.enqueue(record, Some(acknowledged));
        acknowledgement
    }

    fn enqueue(&self, record: Outgoing, acknowledged: Option<oneshot::Sender<()>>) {
        let dropped = {
            let mut queue = self.shared.lock();
            let mut dropped = None;
            if queue.waiting.len() + queue.in_flight.len() >= self.shared.capacity {
                dropped = queue.waiting.pop_front().map(|oldest| oldest.record.kind());
            }
            queue.waiting.push_back(Queued {
                record,
                acknowledged,
            });
            self.shared.update_gauge(&queue);
            dropped
        };
        if let Some(kind) = dropped {
            self.shared
                .count_dropped(kind, 1, "the publish queue is full");
        }
        self.shared.arrived.notify_one();
    }

    /// Whether the last publish failed, so the task is waiting to try again.
    pub(crate) fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Relaxed)
    }

    /// Waits up to `deadline` for every queued record to be acknowledged; what is
    /// still waiting then is dropped, counted and logged.
    pub(crate) async fn flush(&self, deadline: Duration) {
        let emptied = tokio::time::timeout(deadline, async {
            loop {
                let published = self.shared.published.notified();
                tokio::pin!(published);
                published.as_mut().enable();
                {
                    let queue = self.shared.lock();
                    if queue.waiting.is_empty() && queue.in_flight.is_empty() {
                        return;
                    }
                }
                published.await;
            }
        })
        .await;
        if emptied.is_ok() {
            return;
        }
        let left: Vec<&'static str> = {
            let mut queue = self.shared.lock();
            self.shared.closed.store(true, Ordering::Relaxed);
            let mut left: Vec<&'static str> = queue.in_flight.drain(..).collect();
            left.extend(queue.waiting.drain(..).map(|queued| queued.record.kind()));
            self.shared.update_gauge(&queue);
            left
        };
        for kind in ["event", "state"] {
            let count = left.iter().filter(|left| **left == kind).count() as u64;
            self.shared
                .count_dropped(kind, count, "not acknowledged before the stage stopped");
        }
    }
}

/// Publishes the queue window by window, in order, until the process ends;
/// records that fail go back to the front and are tried again after a backoff.
async fn publish_forever(shared: Arc<Shared>, bus: Bus, mut publisher: Publisher, topics: Topics) {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let arrived = shared.arrived.notified();
        let window: Vec<Queued> = {
            let mut queue = shared.lock();
            let take = queue.waiting.len().min(WINDOW);
            let window: Vec<Queued> = queue.waiting.drain(..take).collect();
            queue.in_flight = window.iter().map(|queued| queued.record.kind()).collect();
            window
        };
        if window.is_empty() {
            arrived.await;
            continue;
        }
        let results = futures::future::join_all(
            window
                .iter()
                .map(|queued| queued.record.publish(&publisher, &topics)),
        )
        .await;
        let failed = settle(&shared, window, results);
        shared.published.notify_waiters();
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        if failed {
            shared.failing.store(true, Ordering::Relaxed);
            publisher = bus.renewed_publisher(publisher);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            shared.failing.store(false, Ordering::Relaxed);
            backoff = INITIAL_BACKOFF;
        }
    }
}

/// Acknowledges what was published and puts back, in order, what failed,
/// except state records a later record of the window with the same key
/// replaced. Says whether anything failed.
fn settle(shared: &Shared, window: Vec<Queued>, results: Vec<Result<(), BusError>>) -> bool {
    let published_keys: Vec<Option<(usize, String)>> = window
        .iter()
        .zip(&results)
        .enumerate()
        .map(|(position, (queued, result))| {
            let key = queued.record.state_key()?;
            result.is_ok().then(|| (position, key.to_owned()))
        })
        .collect();
    let replaced = |position: usize, key: &str| {
        published_keys
            .iter()
            .flatten()
            .any(|(later, published)| *later > position && published == key)
    };
    let mut retry = Vec::new();
    let mut first_error = None;
    for (position, (mut queued, result)) in window.into_iter().zip(results).enumerate() {
        match result {
            Ok(()) => {
                if let Some(acknowledged) = queued.acknowledged.take() {
                    // Whoever waited may have stopped waiting.
                    let _ = acknowledged.send(());
                }
            }
            Err(error) => {
                if queued
                    .record
                    .state_key()
                    .is_some_and(|key| replaced(position, key))
                {
                    continue;
                }
                shared
                    .metrics
                    .retried
                    .get_or_create(&RecordLabels {
                        record: queued.record.kind(),
                    })
                    .inc();
                first_error.get_or_insert(error);
                retry.push(queued);
            }
        }
    }
    let mut queue = shared.lock();
    if shared.closed.load(Ordering::Relaxed) {
        // `flush` gave up and counted these already.
        return first_error.is_some();
    }
    queue.in_flight.clear();
    if let Some(error) = &first_error {
        tracing::warn!(%error, records = retry.len(), "alert records not acknowledged; publishing them again");
    }
    for queued in retry.into_iter().rev() {
        queue.waiting.push_front(queued);
    }
    shared.update_gauge(&queue);
    first_error.is_some()
}

#[cfg(test)]
mod tests;
