//! The `alert` stage: consumes metrics and logs from the bus, evaluates the rule
//! set in event time, publishes every alert state change to the alerts topic and
//! notifies pagers.
//!
//! Rules come from a watched source (etcd or a folder). A new rule set that fails
//! to load is reported and ignored: the last good set keeps running with its
//! pending timers and firing alerts. The clock of evaluation is the event time of
//! the data; when the input goes quiet, wall-clock time minus the allowed lateness
//! moves it on, so windows still close and alerts still resolve. The stage runs
//! in the loop every stage shares (`crate::stage`), with its clock-skew guard
//! on: a batch stamped too far ahead of this host's clock is dead-lettered
//! before it can move the clock into the future.

mod config;
pub mod notify;
mod state;

pub use config::{AlertSection, AlertSectionError};

use crate::rule_source::{RuleFiles, RuleFilesWatch};
use crate::stage::{
    self, CommitPoint, DeadLetterKey, FirstSet, Intake, Rejection, Reload, Stage, StageError,
    WatchedSet,
};
use notify::{Delivered, Notifier, NotifyConfig, SilenceWatch};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use state::{Record, StateStore};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use vigil_config::duration::unix_nanos;
use vigil_proto::v1::{AlertEvent, AlertStatus, LogBatch};
use vigil_proto::view::MetricBatchView;
use vigil_proto::{Payload, Topics};
use vigil_rules::{Evaluator, RuleError, RuleSet, Source};
use vigil_runtime::{
    Bus, BusError, Followed, Follower, Message, Publisher, SelfMetrics, Subscription,
};

/// Settings of the alert stage.
#[derive(Debug, Clone)]
pub struct AlertStageConfig {
    /// Consumer group; instances of one group share the partitions.
    pub group: String,
    /// How often the clock is moved on when no data arrives.
    pub tick: Duration,
    /// How late data may arrive before wall-clock time moves the clock past it.
    pub allowed_lateness: Duration,
    /// Receivers, routing tree and inhibition rules of notifications.
    pub notify: NotifyConfig,
    /// The silences to honour; `None` without etcd.
    pub silences: Option<SilenceWatch>,
}

impl Default for AlertStageConfig {
    fn default() -> Self {
        Self {
            group: "vigil-alert".to_owned(),
            tick: Duration::from_secs(1),
            allowed_lateness: Duration::from_secs(5),
            notify: NotifyConfig::default(),
            silences: None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone)]
struct AlertMetrics {
    events: Family<StatusLabels, Counter>,
    partitions_owned: Gauge,
    alerts_restored: Gauge,
    series: Gauge,
}

impl AlertMetrics {
    fn register(metrics: &SelfMetrics) -> Self {
        Self {
            events: metrics.register(
                "alert_events",
                "Alert state changes, by status",
                Family::default(),
            ),
            partitions_owned: metrics.register(
                "alert_partitions_owned",
                "Input partitions this instance evaluates (all of them on the in-process bus: 0)",
                Gauge::default(),
            ),
            alerts_restored: metrics.register(
                "alert_state_records_read",
                "Alert state records read from the state topic at start",
                Gauge::default(),
            ),
            series: metrics.register(
                "alert_series",
                "Metric series the rules engine holds (those of metrics some rule watches)",
                Gauge::default(),
            ),
        }
    }
}

/// The running alert stage.
#[derive(Debug)]
pub struct AlertStage {
    intake: Intake,
    rules: WatchedSet,
    evaluation: Evaluation,
}

impl AlertStage {
    /// Subscribes to the metric and log topics of `bus`.
    pub fn new(
        bus: &Bus,
        rules: RuleFilesWatch,
        config: AlertStageConfig,
        metrics: &SelfMetrics,
    ) -> Result<Self, StageError> {
        let topics = bus.topics();
        let inputs = [
            topics.metrics_raw(),
            topics.metrics_derived(),
            topics.logs_raw(),
        ];
        let intake = Intake::new::<Evaluation>(bus, &config.group, &inputs, metrics).map_err(
            |source: BusError| StageError::Bus {
                stage: Evaluation::NAME,
                source,
            },
        )?;
        let rules = WatchedSet::new::<Evaluation>(rules, "rule", FirstSet::Awaited, metrics);
        let (notifier, deliveries) =
            Notifier::start(config.notify.clone(), config.silences.clone(), metrics);
        let publisher = intake.publisher().clone();
        let evaluation = Evaluation {
            state: StateStore::new(topics.alert_state(), publisher.clone()),
            publisher,
            topics,
            evaluator: None,
            notifier,
            deliveries,
            state_follower: None,
            bus: bus.clone(),
            assignment: None,
            config,
            metrics: AlertMetrics::register(metrics),
        };
        Ok(Self {
            intake,
            rules,
            evaluation,
        })
    }

    /// Evaluates until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StageError> {
        stage::run(self.evaluation, self.intake, self.rules, shutdown).await
    }
}

/// What the alert stage does with its messages: the rules engine, the state
/// topic and the pagers.
#[derive(Debug)]
struct Evaluation {
    publisher: Publisher,
    topics: Topics,
    evaluator: Option<Evaluator>,
    notifier: Notifier,
    deliveries: notify::Deliveries,
    state: StateStore,
    /// Reads the state topic; `None` once it failed (logged).
    state_follower: Option<Follower>,
    bus: Bus,
    /// The partitions owned when last looked; `None`: all of them.
    assignment: Option<Vec<(String, i32)>>,
    config: AlertStageConfig,
    metrics: AlertMetrics,
}

/// What the alert stage waits for besides messages.
enum Update {
    /// A record of the state topic, or a failure to read one.
    State(Result<Followed, BusError>),
    /// A notification the pagers took.
    Delivered(Delivered),
}

impl Stage for Evaluation {
    const NAME: &'static str = "alert";
    const DEAD_LETTERS_BY: DeadLetterKey = DeadLetterKey::Topic;
    type Batch<'m> = Batch<'m>;
    type Event = Update;

    async fn start(&mut self, shutdown: &CancellationToken) -> Result<(), StageError> {
        self.restore_state(shutdown).await
    }

    fn decode<'m>(&self, message: &'m Message) -> Result<Batch<'m>, Rejection> {
        if message.topic == self.topics.logs_raw() {
            Ok(Batch::Logs(LogBatch::from_payload(&message.payload)?))
        } else {
            Ok(Batch::Metrics(MetricBatchView::decode(&message.payload)?))
        }
    }

    /// The evaluation clock follows event time, so data stamped in the future
    /// would make every current series look stale.
    fn latest_event_time(batch: &Batch<'_>) -> Option<i64> {
        match batch {
            Batch::Logs(batch) => batch.lines.iter().map(|l| l.event_time_unix_nano).max(),
            Batch::Metrics(batch) => batch.samples.iter().map(|s| s.time_unix_nano).max(),
        }
    }

    async fn process<'m>(&mut self, message: &'m Message, batch: Batch<'m>) {
        let source = Source::new(&message.topic, message.partition);
        let events = match batch {
            Batch::Logs(batch) => self.evaluator_mut().observe_logs_from(&batch, &source),
            Batch::Metrics(batch) => self.evaluator_mut().observe_metric_view(&batch, &source),
        };
        self.emit(events).await;
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(self.config.tick)
    }

    async fn tick(&mut self, subscription: &Subscription, input_quiet: bool) {
        self.follow_assignment(subscription).await;
        if input_quiet {
            let now = unix_nanos(SystemTime::now())
                - vigil_config::duration::nanos(self.config.allowed_lateness);
            let events = self.evaluator_mut().advance_to(now);
            self.emit(events).await;
        }
    }

    async fn next_event(&mut self) -> Update {
        tokio::select! {
            followed = next_state(&mut self.state_follower) => Update::State(followed),
            Some(delivered) = self.deliveries.recv() => Update::Delivered(delivered),
        }
    }

    async fn handle(&mut self, update: Update) -> Result<(), StageError> {
        match update {
            Update::State(followed) => self.apply_state(followed),
            Update::Delivered(delivered) => {
                if delivered.status == AlertStatus::Firing {
                    self.state
                        .mark_notified(&delivered.fingerprint, delivered.at)
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Stores each message's offset once it was evaluated or dead-lettered.
    fn commit(&mut self, subscription: &Subscription, point: CommitPoint<'_>) {
        if let CommitPoint::Consumed { message, .. } = point
            && let Err(error) = subscription.commit(message)
        {
            tracing::warn!(%error, "offset could not be stored");
        }
    }
}

impl Reload for Evaluation {
    async fn reload(&mut self, files: &RuleFiles) -> Result<usize, Vec<RuleError>> {
        let rules = RuleSet::from_files(files)?;
        let count = rules.rule_count();
        let events = match self.evaluator.as_mut() {
            Some(evaluator) => evaluator.replace_rules(rules),
            None => {
                self.evaluator = Some(Evaluator::new(rules));
                Vec::new()
            }
        };
        self.emit(events).await;
        Ok(count)
    }
}

impl Evaluation {
    /// Reads the state topic up to its end before anything is evaluated, so that
    /// no alert an earlier run knew of starts over.
    async fn restore_state(&mut self, shutdown: &CancellationToken) -> Result<(), StageError> {
        let topic = self.topics.alert_state();
        let mut follower =
            self.bus
                .follow(&topic)
                .await
                .map_err(|source| StageError::AlertStateUnreadable {
                    topic: topic.clone(),
                    source,
                })?;
        let mut restored = 0_usize;
        loop {
            let followed = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                followed = follower.recv() => followed,
            };
            match followed {
                Ok(Followed::CaughtUp) => break,
                Ok(Followed::Message(message)) => {
                    restored += 1;
                    self.apply_state(Ok(Followed::Message(message)));
                }
                Err(error) => {
                    tracing::warn!(%error, %topic, "reading the alert state failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        tracing::info!(records = restored, %topic, "alert state read");
        self.metrics.alerts_restored.set(restored as i64);
        self.state_follower = Some(follower);
        Ok(())
    }

    /// Takes in a record of the state topic.
    fn apply_state(&mut self, followed: Result<Followed, BusError>) {
        match followed {
            Ok(Followed::Message(message)) => match self.state.read(&message) {
                Record::Foreign(state) => self.evaluator_mut().restore(state),
                Record::Ended(fingerprint) => self.evaluator_mut().forget_restored(&fingerprint),
                Record::Ignored => {}
            },
            Ok(Followed::CaughtUp) => {}
            Err(error) => {
                tracing::warn!(%error, "following the alert state failed; following stops");
                self.state_follower = None;
            }
        }
    }

    /// Notices partitions that moved: the alerts of series that left are handed
    /// back as restored (their new owner resumes them; so would this instance if
    /// they came back), and restored alerts of owned partitions whose series never
    /// showed up are ended.
    async fn follow_assignment(&mut self, subscription: &Subscription) {
        let assignment = subscription.assignment();
        let owned = ownership(assignment.clone());
        if assignment != self.assignment {
            tracing::info!(partitions = ?assignment, "partition assignment changed");
            self.metrics
                .partitions_owned
                .set(assignment.as_ref().map_or(0, Vec::len) as i64);
            self.evaluator_mut().release(&owned);
            for record in self.state.release(&owned) {
                self.evaluator_mut().restore(record);
            }
            self.assignment = assignment;
        }
        let events = self.evaluator_mut().end_unresumed(&owned);
        self.emit(events).await;
        let series = self.evaluator_mut().series();
        self.metrics.series.set(series as i64);
    }

    fn evaluator_mut(&mut self) -> &mut Evaluator {
        self.evaluator
            .get_or_insert_with(|| Evaluator::new(RuleSet::default()))
    }

    /// Writes the state changes behind `events`, then publishes and notifies
    /// them, then tells the pagers of restored alerts that resumed: a firing one
    /// the pagers were told of joins its notification group quietly, one they
    /// never heard of (the previous run died first) is notified now.
    async fn emit(&mut self, events: Vec<AlertEvent>) {
        let changes = self.evaluator_mut().take_state_changes();
        let resumed = self.evaluator_mut().take_resumed();
        for (_, record) in &resumed {
            self.state.adopt(record.clone());
        }
        self.state.write(changes).await;
        self.publish_events(events).await;
        for (event, record) in resumed {
            if event.status != AlertStatus::Firing as i32 {
                continue;
            }
            tracing::info!(alert = %event.alert, fingerprint = %event.fingerprint, notified = record.notified_at_unix_nano != 0, "firing alert resumed");
            if record.notified_at_unix_nano == 0 {
                self.notifier.notify(&event).await;
            } else {
                self.notifier
                    .restore(&event, state::system_time(record.notified_at_unix_nano))
                    .await;
            }
        }
    }

    async fn publish_events(&self, events: Vec<AlertEvent>) {
        let topic = self.topics.alert_events();
        for event in events {
            let status = AlertStatus::try_from(event.status)
                .unwrap_or_default()
                .as_str_name();
            self.metrics
                .events
                .get_or_create(&StatusLabels {
                    status: status_label(status),
                })
                .inc();
            tracing::info!(alert = %event.alert, status, fingerprint = %event.fingerprint, "alert state changed");
            if let Err(error) = self.publisher.publish_batch(&topic, &event).await {
                tracing::error!(%error, %topic, "alert event could not be published");
            }
            self.notifier.notify(&event).await;
        }
    }
}

/// The next record of the state topic; never, once following stopped.
async fn next_state(follower: &mut Option<Follower>) -> Result<Followed, BusError> {
    match follower {
        Some(follower) => follower.recv().await,
        None => std::future::pending().await,
    }
}

/// Whether a source is on a partition of `assignment`; all are without one.
fn ownership(assignment: Option<Vec<(String, i32)>>) -> impl Fn(&Source) -> bool {
    let owned: Option<std::collections::HashSet<(String, i32)>> =
        assignment.map(|partitions| partitions.into_iter().collect());
    move |source: &Source| {
        owned
            .as_ref()
            .is_none_or(|owned| owned.contains(&(source.topic.to_string(), source.partition)))
    }
}

/// A decoded input batch; metric batches are read in place, as views of the
/// message's payload.
enum Batch<'a> {
    Logs(LogBatch),
    Metrics(MetricBatchView<'a>),
}

fn status_label(name: &str) -> &'static str {
    match name {
        "ALERT_STATUS_PENDING" => "pending",
        "ALERT_STATUS_FIRING" => "firing",
        "ALERT_STATUS_RESOLVED" => "resolved",
        _ => "unknown",
    }
}
