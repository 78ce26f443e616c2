//! The Kafka producer behind the bus' publisher (stage or agent → Kafka): librdkafka's
//! producer and a delivery thread that serves its acknowledgements, and that waits
//! without a timeout while nothing is in flight.
//!
//! rdkafka's `FutureProducer` polls its queue every 100 ms for as long as it lives,
//! and each of those polls spins through its last millisecond: the remaining time
//! is handed to librdkafka in whole milliseconds, rounded down, so the last call
//! asks for 0 ms and returns at once, again and again until the deadline has
//! passed. That is about 0.6 % of a core per producer at rest. Here the thread
//! polls only while librdkafka holds messages or events for it
//! (`rd_kafka_outq_len`), is woken by every send, and otherwise looks once a
//! second for events (errors) that arrived meanwhile.

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long one poll waits while something is in flight (as rdkafka's own thread).
const IN_FLIGHT_POLL: Duration = Duration::from_millis(100);
/// How often an idle delivery thread looks for events that need no send to arrive.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Pause before sending again when librdkafka's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(100);

/// A Kafka producer whose sends resolve on acknowledgement; cheap to clone.
#[derive(Clone)]
pub struct KafkaProducer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaProducer")
    }
}

struct Shared {
    producer: Arc<BaseProducer<Acknowledgements>>,
    wakeup: Arc<Wakeup>,
    delivery: Option<JoinHandle<()>>,
}

/// Hands each delivery report to the send waiting for it.
pub(crate) struct Acknowledgements;

impl ClientContext for Acknowledgements {}

impl ProducerContext for Acknowledgements {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<()>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        // A send that gave up waiting has dropped its receiver; nothing to tell.
        let _ = waiting.send(result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone()));
    }
}

/// What the delivery thread waits on: sends since it last looked, and the stop.
#[derive(Default)]
struct Wakeup {
    state: Mutex<WakeupState>,
    changed: Condvar,
}

#[derive(Default)]
struct WakeupState {
    sends: u64,
    stop: bool,
    #[cfg(test)]
    polls: u64,
    #[cfg(test)]
    idle_checks: u64,
}

/// What the tests watch of the delivery thread: polls and idle checks.
#[cfg(test)]
impl WakeupState {
    fn count_poll(&mut self) {
        self.polls += 1;
    }

    fn count_idle_check(&mut self) {
        self.idle_checks += 1;
    }
}

#[cfg(not(test))]
impl WakeupState {
    fn count_poll(&mut self) {}

    fn count_idle_check(&mut self) {}
}

impl Wakeup {
    fn lock(&self) -> MutexGuard<'_, WakeupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sent(&self) {
        self.lock().sends += 1;
        self.changed.notify_all();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

impl KafkaProducer {
    /// A producer with `config`, and its delivery thread.
    pub(crate) fn new(config: &ClientConfig) -> KafkaResult<Self> {
        let producer = Arc::new(config.create_with_context(Acknowledgements)?);
        let wakeup = Arc::new(Wakeup::default());
        let delivery = std::thread::Builder::new()
            .name("kafka delivery".into())
            .spawn({
                let (producer, wakeup) = (Arc::clone(&producer), Arc::clone(&wakeup));
                move || serve_deliveries(&producer, &wakeup)
            })
            .map_err(|_| KafkaError::ClientCreation("no thread for delivery reports".into()))?;
        Ok(Self {
            shared: Arc::new(Shared {
                producer,
                wakeup,
                delivery: Some(delivery),
            }),
        })
    }

    /// The librdkafka client (metadata requests).
    pub(crate) fn client(&self) -> &Client<Acknowledgements> {
        self.shared.producer.client()
    }

    /// Sends one message and waits until Kafka acknowledged it (or librdkafka
    /// gave up on it); waits while librdkafka's queue is full.
    pub(crate) async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> KafkaResult<()> {
        let (waiting, acknowledged) = oneshot::channel();
        let mut record =
            BaseRecord::<str, [u8], _>::with_opaque_to(topic, Box::new(waiting)).key(key);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.shared.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
        self.shared.wakeup.sent();
        acknowledged.await.unwrap_or(Err(KafkaError::Canceled))
    }
}

/// The delivery thread: polls while librdkafka holds messages or events for it,
/// otherwise waits for a send, the stop, or the next idle check.
fn serve_deliveries(producer: &BaseProducer<Acknowledgements>, wakeup: &Wakeup) {
    loop {
        let seen = {
            let state = wakeup.lock();
            if state.stop {
                return;
            }
            state.sends
        };
        // A send counts in `in_flight_count` before it counts in `sends`, so a
        // send after `seen` was read is either counted here or wakes the wait.
        if producer.in_flight_count() > 0 {
            wakeup.lock().count_poll();
            producer.poll(IN_FLIGHT_POLL);
            continue;
        }
        let state = wakeup.lock();
        let (mut state, waited) = wakeup
            .changed
            .wait_timeout_while(state, IDLE_CHECK, |state| {
                state.sends == seen && !state.stop
            })
            .unwrap_or_else(PoisonError::into_inner);
        if waited.timed_out() {
            state.count_idle_check();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.wakeup.stop();
        if let Some(delivery) = self.delivery.take() {
            // The thread ends after its current poll; a panic in it was reported.
            let _ = delivery.join();
        }
    }
}

#[cfg(test)]
mod tests;
