//! The bus side of the stage loop: the subscription a stage consumes, the
//! dead-letter topic where the messages it cannot process go, and the counts of
//! both.

use super::{Rejection, Stage};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use vigil_runtime::{Bus, BusError, Message, Publisher, SelfMetrics, Subscription};

/// A counter by one label.
pub(crate) type ByLabel = Family<[(&'static str, String); 1], Counter>;

/// What a stage's dead-letter counter is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetterKey {
    /// `topic`: the topic the message came from.
    Topic,
    /// `reason`: the kind of fault ([`Rejection::kind`]).
    Reason,
}

/// A stage's subscription, its dead-letter topic and their counters.
#[derive(Debug)]
pub(crate) struct Intake {
    subscription: Subscription,
    publisher: Publisher,
    dead_letter_topic: String,
    dead_letter_key: DeadLetterKey,
    consumed: ByLabel,
    dead_lettered: ByLabel,
    receive_errors: Counter,
}

impl Intake {
    /// Subscribes consumer group `group` to `inputs` for stage `S`, and registers
    /// its counters.
    pub(crate) fn new<S: Stage>(
        bus: &Bus,
        group: &str,
        inputs: &[String],
        metrics: &SelfMetrics,
    ) -> Result<Self, BusError> {
        let stage = S::NAME;
        let dead_lettered_help = match S::DEAD_LETTERS_BY {
            DeadLetterKey::Topic => format!(
                "Messages the {stage} stage could not take (not valid batches, or stamped too far ahead), sent to the dead-letter topic, by topic"
            ),
            DeadLetterKey::Reason => format!(
                "Messages and refused records the {stage} stage sent to its dead-letter topic, by reason"
            ),
        };
        Ok(Self {
            subscription: bus.subscribe(group, inputs)?,
            publisher: bus.publisher()?,
            dead_letter_topic: bus.topics().dead_letter(stage),
            dead_letter_key: S::DEAD_LETTERS_BY,
            consumed: metrics.register(
                &format!("{stage}_messages_consumed"),
                &format!("Messages the {stage} stage consumed, by topic"),
                ByLabel::default(),
            ),
            dead_lettered: metrics.register(
                &format!("{stage}_dead_lettered"),
                &dead_lettered_help,
                ByLabel::default(),
            ),
            receive_errors: metrics.register(
                &format!("{stage}_receive_errors"),
                "Errors consuming from the bus (broker unreachable, poll interval exceeded)",
                Counter::default(),
            ),
        })
    }

    /// Where the stage publishes; shares the connection of the dead letters.
    pub(crate) fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The dead-letter counter, for a stage that also dead-letters on its own
    /// (the index stage, records Elasticsearch refused).
    pub(crate) fn dead_lettered(&self) -> &ByLabel {
        &self.dead_lettered
    }

    pub(super) fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    pub(super) async fn recv(&mut self) -> Result<Message, BusError> {
        self.subscription.recv().await
    }

    /// Runs `work` while the consumer stays in its group without fetching.
    pub(super) async fn while_busy<T>(&mut self, work: impl Future<Output = T>) -> T {
        self.subscription.while_busy(work).await
    }

    pub(super) fn count_consumed(&self, message: &Message) {
        self.consumed
            .get_or_create(&[("topic", message.topic.clone())])
            .inc();
    }

    pub(super) fn count_receive_error(&self) {
        self.receive_errors.inc();
    }

    /// Counts `message` as dead-lettered and sends it to the dead-letter topic with
    /// the reason.
    pub(super) async fn dead_letter(&self, message: &Message, rejection: &Rejection) {
        let label = match self.dead_letter_key {
            DeadLetterKey::Topic => ("topic", message.topic.clone()),
            DeadLetterKey::Reason => ("reason", rejection.kind.to_owned()),
        };
        self.dead_lettered.get_or_create(&[label]).inc();
        self.publisher
            .skip_invalid(&self.dead_letter_topic, message, &rejection.reason)
            .await;
    }

    /// Commits the done positions; the stage consumes no more.
    pub(super) fn close(&self) {
        self.subscription.close();
    }
}
