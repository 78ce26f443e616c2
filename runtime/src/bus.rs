//! The message bus between stages: Kafka in a deployment, an in-process bus in the
//! all-in-one mode. Stages publish batches and consume them through this interface
//! only, so their code is the same in both.
//!
//! Publishing resolves when the bus acknowledged the message (for Kafka: written to
//! all in-sync replicas), which is what lets log checkpoints move only after
//! delivery. Consuming hands out owned messages; a stage calls `commit` once it is
//! done with one, and only committed positions survive a restart.

use crate::health::Connection;
use crate::kafka::KafkaSettings;
use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil_proto::{Payload, Topics};

mod producer;
pub use producer::KafkaProducer;

/// Header naming the protobuf message type of a payload.
pub const SCHEMA_HEADER: &str = "vigil-schema";
/// Header a dead-lettered message carries: why its stage rejected it.
pub const REASON_HEADER: &str = "vigil-reason";

/// How many messages an in-process subscriber may have queued before publishers wait.
const MEMORY_QUEUE_CAPACITY: usize = 256;

/// A failure of the bus.
#[derive(Debug, Error)]
pub enum BusError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("kafka client configuration: {0}")]
    Config(#[from] crate::kafka::KafkaSettingsError),
    #[error("the task that finds where each partition begins failed: {0}")]
    Assign(#[from] tokio::task::JoinError),
    #[error("the in-process bus is closed")]
    Closed,
    #[error("the discard bus drops every message, so there is nothing to subscribe to")]
    Discard,
}

/// One consumed message, owned.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

impl Message {
    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    }
}

/// Where stages exchange batches.
#[derive(Debug, Clone)]
pub enum Bus {
    /// A Kafka cluster (or a Kafka-compatible broker).
    Kafka(Box<KafkaSettings>),
    /// An in-process bus for the all-in-one mode.
    Memory(MemoryBus),
    /// Acknowledges every publish at once and drops the message: for benchmarks
    /// (the cost of reading, batching and encoding without producing) and dry runs.
    /// Subscriptions never receive anything.
    Discard,
}

impl Bus {
    /// A fresh in-process bus.
    pub fn in_memory() -> Self {
        Self::Memory(MemoryBus::default())
    }

    /// Topic names of this deployment.
    pub fn topics(&self) -> Topics {
        match self {
            Self::Kafka(settings) => settings.topics(),
            Self::Memory(_) | Self::Discard => Topics::default(),
        }
    }

    /// A publisher; cheap to clone and share between tasks.
    pub fn publisher(&self) -> Result<Publisher, BusError> {
        match self {
            Self::Kafka(settings) => {
                let config = settings.producer_config()?;
                Ok(Publisher::Kafka(KafkaProducer::new(&config)?))
            }
            Self::Memory(bus) => Ok(Publisher::Memory(bus.clone())),
            Self::Discard => Ok(Publisher::Discard),
        }
    }

    /// A new publisher in place of `failed`, after a publish it made failed: the
    /// old one's idempotence state (producer id, epoch and sequence numbers) still
    /// counts the records the broker never took, which a broker restarted
    /// meanwhile may refuse. Keeps `failed` when no new one can be made.
    pub fn renewed_publisher(&self, failed: Publisher) -> Publisher {
        match self.publisher() {
            Ok(publisher) => publisher,
            Err(error) => {
                tracing::warn!(%error, "a new producer could not be made; the old one sends again");
                failed
            }
        }
    }

    /// A subscription of consumer group `group` to `topics`.
    pub fn subscribe(&self, group: &str, topics: &[String]) -> Result<Subscription, BusError> {
        match self {
            Self::Kafka(settings) => {
                let config = settings.consumer_config(group)?;
                let consumer: StreamConsumer = config.create()?;
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&names)?;
                Ok(Subscription::Kafka(KafkaSubscription {
                    consumer: Box::new(consumer),
                    held: VecDeque::new(),
                }))
            }
            Self::Memory(bus) => Ok(Subscription::Memory(bus.subscribe(topics))),
            Self::Discard => Err(BusError::Discard),
        }
    }

    /// A reader of every partition of `topic` from its beginning, outside any
    /// consumer group: for a compacted topic that every instance reads whole (the
    /// alert state). It says when it has read what the topic held when it started.
    pub async fn follow(&self, topic: &str) -> Result<Follower, BusError> {
        match self {
            Self::Kafka(settings) => {
                let mut config = settings.consumer_config("vigil-follower")?;
                config.set("enable.auto.commit", "false");
                let consumer: StreamConsumer = config.create()?;
                let topic = topic.to_owned();
                let (consumer, behind) =
                    tokio::task::spawn_blocking(move || assign_from_beginning(consumer, &topic))
                        .await??;
                Ok(Follower::Kafka {
                    consumer: Box::new(consumer),
                    behind,
                    caught_up: false,
                })
            }
            Self::Memory(_) => Ok(Follower::Memory { caught_up: false }),
            Self::Discard => Err(BusError::Discard),
        }
    }

    /// Keeps `connection` saying whether Kafka answers: every
    /// [`PROBE_INTERVAL`] a metadata request for `topic` goes to the cluster, on
    /// a producer of its own, and the connection is up while one is answered
    /// within [`PROBE_TIMEOUT`]. Runs until `shutdown`. The in-process and
    /// discard buses have no connection to lose: they are up at once.
    pub fn watch_connection(
        &self,
        connection: Connection,
        topic: &str,
        shutdown: CancellationToken,
    ) -> Result<(), BusError> {
        let Self::Kafka(settings) = self else {
            connection.set_up();
            return Ok(());
        };
        let producer = KafkaProducer::new(&settings.producer_config()?)?;
        let brokers = settings.brokers.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            loop {
                let client = producer.clone();
                let topic = topic.clone();
                let answered = tokio::task::spawn_blocking(move || {
                    client
                        .client()
                        .fetch_metadata(Some(&topic), PROBE_TIMEOUT)
                        .map(|_| ())
                })
                .await;
                match answered {
                    Ok(Ok(())) => connection.set_up(),
                    Ok(Err(error)) => {
                        connection.set_down(format!("no metadata from {brokers}: {error}"));
                    }
                    Err(error) => connection.set_down(format!("metadata request failed: {error}")),
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(PROBE_INTERVAL) => {}
                }
            }
        });
        Ok(())
    }
}

/// How often [`Bus::watch_connection`] asks Kafka whether it answers.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long Kafka has to answer [`Bus::watch_connection`].
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long metadata and watermark requests of a [`Follower`] may take.
const FOLLOW_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Assigns every partition of `topic` to `consumer` from the beginning; returns
/// the partitions that hold messages, with their end offsets.
fn assign_from_beginning(
    consumer: StreamConsumer,
    topic: &str,
) -> Result<(StreamConsumer, HashMap<i32, i64>), BusError> {
    let metadata = consumer.fetch_metadata(Some(topic), FOLLOW_REQUEST_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut behind = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, FOLLOW_REQUEST_TIMEOUT)?;
        if high > low {
            behind.insert(partition, high);
        }
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok((consumer, behind))
}

/// What a [`Follower`] read next.
#[derive(Debug)]
pub enum Followed {
    Message(Message),
    /// Everything the topic held when the follower started has been read; said
    /// once, after which only new messages follow.
    CaughtUp,
}

/// Reads a whole topic and then follows it (see [`Bus::follow`]).
pub enum Follower {
    Kafka {
        consumer: Box<StreamConsumer>,
        /// Partitions not yet read to the end they had at the start, with that end.
        behind: HashMap<i32, i64>,
        caught_up: bool,
    },
    Memory {
        caught_up: bool,
    },
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kafka { behind, .. } => f
                .debug_struct("Follower::Kafka")
                .field("behind", behind)
                .finish_non_exhaustive(),
            Self::Memory { .. } => f.write_str("Follower::Memory"),
        }
    }
}

impl Follower {
    /// The next message, or [`Followed::CaughtUp`] once. An empty payload is a
    /// tombstone (the key was deleted). The in-process bus keeps no history and
    /// serves one process, so it is caught up at once and nothing follows.
    pub async fn recv(&mut self) -> Result<Followed, BusError> {
        match self {
            Self::Kafka {
                consumer,
                behind,
                caught_up,
            } => {
                if !*caught_up && behind.is_empty() {
                    *caught_up = true;
                    return Ok(Followed::CaughtUp);
                }
                let message = owned(&consumer.recv().await?);
                if behind
                    .get(&message.partition)
                    .is_some_and(|end| message.offset + 1 >= *end)
                {
                    behind.remove(&message.partition);
                }
                Ok(Followed::Message(message))
            }
            Self::Memory { caught_up } => {
                if !*caught_up {
                    *caught_up = true;
                    return Ok(Followed::CaughtUp);
                }
                std::future::pending().await
            }
        }
    }
}

/// Publishes messages and resolves once the bus acknowledged them.
#[derive(Clone)]
pub enum Publisher {
    Kafka(KafkaProducer),
    Memory(MemoryBus),
    /// Drops every message; see [`Bus::Discard`].
    Discard,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kafka(_) => f.write_str("Publisher::Kafka"),
            Self::Memory(_) => f.write_str("Publisher::Memory"),
            Self::Discard => f.write_str("Publisher::Discard"),
        }
    }
}

impl Publisher {
    /// Encodes `batch`, keys it by its resource, and waits for the acknowledgement.
    pub async fn publish_batch<P: Payload>(&self, topic: &str, batch: &P) -> Result<(), BusError> {
        self.publish_encoded::<P>(topic, batch.key(), &batch.to_payload())
            .await
    }

    /// Publishes a `P` its producer encoded itself, keyed by `key` (its resource),
    /// and waits for the acknowledgement.
    pub async fn publish_encoded<P: Payload>(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
    ) -> Result<(), BusError> {
        self.publish(topic, key, payload, &[(SCHEMA_HEADER, P::KIND)])
            .await
    }

    /// Publishes raw bytes with headers and waits for the acknowledgement.
    pub async fn publish(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<(), BusError> {
        match self {
            Self::Kafka(producer) => {
                let mut kafka_headers = OwnedHeaders::new_with_capacity(headers.len());
                for (name, value) in headers {
                    kafka_headers = kafka_headers.insert(Header {
                        key: name,
                        value: Some(value.as_bytes()),
                    });
                }
                producer
                    .send(topic, key, Some(payload), Some(kafka_headers))
                    .await
                    .map_err(BusError::Kafka)
            }
            Self::Memory(bus) => {
                let message = Message {
                    topic: topic.to_owned(),
                    partition: 0,
                    offset: bus.next_offset.fetch_add(1, Ordering::Relaxed),
                    key: Some(Bytes::copy_from_slice(key.as_bytes())),
                    payload: Bytes::copy_from_slice(payload),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
                        .collect(),
                };
                bus.deliver(message).await
            }
            Self::Discard => Ok(()),
        }
    }

    /// Deletes `key` from a compacted topic (a message without a value) and waits
    /// for the acknowledgement. On the in-process bus the message has an empty
    /// payload, which readers treat the same.
    pub async fn publish_tombstone(&self, topic: &str, key: &str) -> Result<(), BusError> {
        match self {
            Self::Kafka(producer) => producer
                .send(topic, key, None, None)
                .await
                .map_err(BusError::Kafka),
            Self::Memory(_) | Self::Discard => self.publish(topic, key, &[], &[]).await,
        }
    }

    /// Skips a consumed message that is not a valid batch: logs why and sends it to
    /// `dead_letter_topic`; if that fails too, says the message is dropped.
    pub async fn skip_invalid(&self, dead_letter_topic: &str, message: &Message, reason: &str) {
        tracing::warn!(
            topic = %message.topic,
            partition = message.partition,
            offset = message.offset,
            %reason,
            "skipping a message that is not a valid batch"
        );
        if let Err(error) = self.dead_letter(dead_letter_topic, message, reason).await {
            tracing::error!(%error, topic = %dead_letter_topic, "dead-letter topic unavailable; the message is dropped");
        }
    }

    /// Sends a message a stage could not process to its dead-letter topic, with the
    /// reason and the original topic in headers.
    pub async fn dead_letter(
        &self,
        dead_letter_topic: &str,
        original: &Message,
        reason: &str,
    ) -> Result<(), BusError> {
        let key = original
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let position = format!(
            "{}/{}/{}",
            original.topic, original.partition, original.offset
        );
        self.publish(
            dead_letter_topic,
            &key,
            &original.payload,
            &[(REASON_HEADER, reason), ("vigil-origin", &position)],
        )
        .await
    }
}

/// A consumer group's view of some topics.
pub enum Subscription {
    Kafka(KafkaSubscription),
    Memory(MemorySubscription),
}

/// A Kafka consumer, and the messages it fetched while its stage was busy.
pub struct KafkaSubscription {
    consumer: Box<StreamConsumer>,
    held: VecDeque<Message>,
}

impl std::fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kafka(_) => f.write_str("Subscription::Kafka"),
            Self::Memory(_) => f.write_str("Subscription::Memory"),
        }
    }
}

impl Subscription {
    /// The next message. Errors are usually transient (the client reconnects);
    /// `BusError::Closed` means the in-process bus is gone.
    pub async fn recv(&mut self) -> Result<Message, BusError> {
        match self {
            Self::Kafka(kafka) => match kafka.held.pop_front() {
                Some(message) => Ok(message),
                None => Ok(owned(&kafka.consumer.recv().await?)),
            },
            Self::Memory(subscription) => {
                subscription.receiver.recv().await.ok_or(BusError::Closed)
            }
        }
    }

    /// Runs `work` (a slow write, say) while keeping this consumer in its group:
    /// fetching is paused and the consumer keeps polling, so work that takes longer
    /// than `max.poll.interval.ms` (an Elasticsearch outage) does not make the group
    /// rebalance and hand the messages to another member. Messages fetched before
    /// the pause took effect are held and returned by the next `recv`.
    pub async fn while_busy<T>(&mut self, work: impl Future<Output = T>) -> T {
        let Self::Kafka(kafka) = self else {
            return work.await;
        };
        let paused = kafka.consumer.assignment().and_then(|assignment| {
            kafka.consumer.pause(&assignment)?;
            Ok(assignment)
        });
        if let Err(error) = &paused {
            tracing::debug!(%error, "partitions could not be paused");
        }
        tokio::pin!(work);
        let output = loop {
            tokio::select! {
                output = &mut work => break output,
                received = kafka.consumer.recv() => match received {
                    Ok(message) => kafka.held.push_back(owned(&message)),
                    Err(error) => tracing::debug!(%error, "polling while busy"),
                },
            }
        };
        if let Ok(assignment) = paused
            && let Err(error) = kafka.consumer.resume(&assignment)
        {
            // Partitions revoked meanwhile cannot be resumed; new ones were never paused.
            tracing::debug!(%error, "partitions could not be resumed");
        }
        output
    }

    /// Marks `message` (and everything before it in its partition) as done; done
    /// positions are committed periodically and on `close`.
    pub fn commit(&self, message: &Message) -> Result<(), BusError> {
        match self {
            Self::Kafka(kafka) => {
                kafka
                    .consumer
                    .store_offset(&message.topic, message.partition, message.offset)?;
                Ok(())
            }
            Self::Memory(_) => Ok(()),
        }
    }

    /// Marks everything of `partition` of `topic` before `next_offset` as done, and
    /// nothing after it: a stage whose state is rebuilt by replaying part of what it
    /// already processed stores the position that replay must start from. A
    /// partition no longer assigned to this consumer is skipped.
    pub fn commit_position(
        &self,
        topic: &str,
        partition: i32,
        next_offset: i64,
    ) -> Result<(), BusError> {
        match self {
            Self::Kafka(kafka) => {
                let mut positions = TopicPartitionList::new();
                positions.add_partition_offset(topic, partition, Offset::Offset(next_offset))?;
                kafka.consumer.store_offsets(&positions)?;
                Ok(())
            }
            Self::Memory(_) => Ok(()),
        }
    }

    /// The partitions this consumer owns now, or `None` when it owns all of them
    /// (the in-process bus). Changes when the group rebalances.
    pub fn assignment(&self) -> Option<Vec<(String, i32)>> {
        match self {
            Self::Kafka(kafka) => Some(
                kafka
                    .consumer
                    .assignment()
                    .map(|list| {
                        list.elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition()))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Self::Memory(_) => None,
        }
    }

    /// Commits the done positions synchronously; call on shutdown.
    pub fn close(&self) {
        if let Self::Kafka(kafka) = self
            && let Err(error) = kafka.consumer.commit_consumer_state(CommitMode::Sync)
        {
            // Nothing consumed yet is reported as an error by librdkafka; harmless.
            tracing::debug!(%error, "final offset commit");
        }
    }
}

/// An owned copy of a consumed Kafka message.
fn owned(message: &rdkafka::message::BorrowedMessage<'_>) -> Message {
    use rdkafka::Message as _;
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        Bytes::copy_from_slice(h.value.unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(Bytes::copy_from_slice),
        payload: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
        headers,
    }
}

/// The in-process bus: every subscription is its own consumer group and gets every
/// message published to its topics after it subscribed. Bounded queues make a slow
/// subscriber slow its publishers down instead of growing memory.
#[derive(Clone, Default)]
pub struct MemoryBus {
    routes: Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Message>>>>>,
    next_offset: Arc<AtomicI64>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus").finish_non_exhaustive()
    }
}

/// The receiving end of an in-process subscription.
#[derive(Debug)]
pub struct MemorySubscription {
    receiver: mpsc::Receiver<Message>,
}

impl MemoryBus {
    fn subscribe(&self, topics: &[String]) -> MemorySubscription {
        let (sender, receiver) = mpsc::channel(MEMORY_QUEUE_CAPACITY);
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for topic in topics {
            routes
                .entry(topic.clone())
                .or_default()
                .push(sender.clone());
        }
        MemorySubscription { receiver }
    }

    async fn deliver(&self, message: Message) -> Result<(), BusError> {
        let senders = {
            let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            let senders = routes.entry(message.topic.clone()).or_default();
            senders.retain(|sender| !sender.is_closed());
            senders.clone()
        };
        for sender in senders {
            // A subscriber that went away in between just misses the message.
            let _ = sender.send(message.clone()).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_in_memory_subscription_gets_every_message_of_its_topics() {
        let bus = Bus::in_memory();
        let mut alerts = bus.subscribe("alert", &["a".into(), "b".into()]).unwrap();
        let mut index = bus.subscribe("index", &["a".into()]).unwrap();
        let publisher = bus.publisher().unwrap();
        publisher
            .publish("a", "k", b"one", &[("h", "v")])
            .await
            .unwrap();
        publisher.publish("b", "k", b"two", &[]).await.unwrap();

        let first = alerts.recv().await.unwrap();
        assert_eq!(
            (first.topic.as_str(), &first.payload[..]),
            ("a", &b"one"[..])
        );
        assert_eq!(first.header("h").as_deref(), Some("v"));
        assert_eq!(&alerts.recv().await.unwrap().payload[..], b"two");
        assert_eq!(&index.recv().await.unwrap().payload[..], b"one");
    }

    #[tokio::test]
    async fn a_full_subscriber_makes_publishers_wait() {
        let bus = Bus::in_memory();
        let mut slow = bus.subscribe("slow", &["t".into()]).unwrap();
        let publisher = bus.publisher().unwrap();
        for _ in 0..MEMORY_QUEUE_CAPACITY {
            publisher.publish("t", "k", b"x", &[]).await.unwrap();
        }
        let blocked = publisher.publish("t", "k", b"last", &[]);
        tokio::pin!(blocked);
        assert!(futures::poll!(&mut blocked).is_pending());
        slow.recv().await.unwrap();
        blocked.await.unwrap();
    }

    #[tokio::test]
    async fn a_kafka_that_does_not_answer_is_reported_down_with_why() {
        let health = crate::Health::default();
        let settings = KafkaSettings::for_brokers("127.0.0.1:1");
        let shutdown = CancellationToken::new();
        Bus::Kafka(Box::new(settings))
            .watch_connection(health.connection("kafka"), "t", shutdown.clone())
            .unwrap();
        health.set_ready(true);
        let reason = loop {
            match health.readiness() {
                crate::health::Readiness::Down(down) if down[0].1 != "not connected yet" => {
                    break down[0].clone();
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert_eq!(reason.0, "kafka");
        assert!(
            reason.1.starts_with("no metadata from 127.0.0.1:1: "),
            "{}",
            reason.1
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn the_in_process_bus_is_always_connected() {
        let health = crate::Health::default();
        Bus::in_memory()
            .watch_connection(health.connection("kafka"), "t", CancellationToken::new())
            .unwrap();
        health.set_ready(true);
        assert!(health.is_ready());
    }

    #[tokio::test]
    async fn the_discard_bus_acknowledges_at_once_and_delivers_nothing() {
        let bus = Bus::Discard;
        bus.publisher()
            .unwrap()
            .publish("t", "k", b"x", &[])
            .await
            .unwrap();
        assert!(matches!(
            bus.subscribe("any", &["t".into()]),
            Err(BusError::Discard)
        ));
    }
}
