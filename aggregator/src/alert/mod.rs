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
//!
//! Events and state records leave through a bounded outbox that retries them
//! while Kafka is away and counts what it has to drop; the state topic is
//! followed for as long as the stage runs, a failed read retried after a backoff.

mod config;
pub mod notify;
mod outbox;
mod state;

pub use config::{AlertSection, AlertSectionError};

use crate::rule_source::{RuleFiles, RuleFilesWatch};
use crate::stage::{
    self, CommitPoint, DeadLetterKey, FirstSet, Intake, Rejection, Reload, Stage, StageError,
    WatchedSet,
};
use futures::FutureExt;
use notify::{Delivered, Notifier, NotifyConfig, SilenceWatch};
use outbox::{Outbox, Outgoing};
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
use vigil_rules::{Evaluator, RefusedSeries, RuleError, RuleSet, Source};
use vigil_runtime::{Bus, BusError, Followed, Follower, Message, SelfMetrics, Subscription};

/// How long a stopping stage waits for Kafka to take the records still queued.
const OUTBOX_FLUSH_DEADLINE: Duration = Duration::from_secs(10);
/// Wait before reading the state topic again after a failed read; doubles up to
/// [`MAX_FOLLOW_BACKOFF`].
const INITIAL_FOLLOW_BACKOFF: Duration = Duration::from_millis(500);
const MAX_FOLLOW_BACKOFF: Duration = Duration::from_secs(10);

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
    /// Most metric series and log keys the rules engine holds together; samples
    /// of new series and lines of new keys beyond are refused and counted by rule.
    pub max_series: usize,
}

impl Default for AlertStageConfig {
    fn default() -> Self {
        Self {
            group: "vigil-alert".to_owned(),
            tick: Duration::from_secs(1),
            allowed_lateness: Duration::from_secs(5),
            notify: NotifyConfig::default(),
            silences: None,
            max_series: 1_000_000,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

/// How often at most the refusal of new series is logged.
const SERIES_REFUSED_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct AlertMetrics {
    events: Family<StatusLabels, Counter>,
    partitions_owned: Gauge,
    alerts_restored: Gauge,
    state_records_followed: Counter,
    state_follow_errors: Counter,
    series: Gauge,
    log_keys: Gauge,
    series_refused: Family<RuleLabels, Counter>,
    log_times_merged: Family<RuleLabels, Counter>,
    /// When the refusal of new series was last logged.
    refusal_logged: Option<std::time::Instant>,
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
            state_records_followed: metrics.register(
                "alert_state_records_followed",
                "Alert state records read from the state topic after the start",
                Counter::default(),
            ),
            state_follow_errors: metrics.register(
                "alert_state_follow_errors",
                "Failed reads of the state topic (each retried after a backoff)",
                Counter::default(),
            ),
            series: metrics.register(
                "alert_series",
                "Metric series the rules engine holds (those of metrics some rule watches)",
                Gauge::default(),
            ),
            log_keys: metrics.register(
                "alert_log_keys",
                "Keys the log rules hold (group_by values), counted with the series against alert.max_series",
                Gauge::default(),
            ),
            series_refused: metrics.register(
                "alert_series_refused",
                "Samples of new series and log lines of new keys refused because alert.max_series \
                 series and log keys were held, by rule",
                Family::default(),
            ),
            log_times_merged: metrics.register(
                "alert_log_times_merged",
                "Distinct line times of a log key merged into a later one because the key held \
                 the most its rule keeps, by rule",
                Family::default(),
            ),
            refusal_logged: None,
        }
    }

    /// Counts the samples of new series and log lines of new keys refused, and
    /// says so in the log at most every `SERIES_REFUSED_LOG_EVERY`, naming the
    /// metrics and the rules.
    fn report_refused_series(&mut self, refused: RefusedSeries) {
        if refused.is_empty() {
            return;
        }
        let rules: Vec<&str> = refused.by_rule.keys().map(String::as_str).collect();
        let rules = rules.join(", ");
        for (rule, count) in refused.by_rule {
            self.series_refused
                .get_or_create(&RuleLabels { rule })
                .inc_by(count);
        }
        let now = std::time::Instant::now();
        if self
            .refusal_logged
            .is_none_or(|logged| now.duration_since(logged) >= SERIES_REFUSED_LOG_EVERY)
        {
            self.refusal_logged = Some(now);
            let metrics: Vec<String> = refused.metrics.into_iter().collect();
            tracing::warn!(
                metrics = %metrics.join(", "),
                %rules,
                "alert.max_series series and log keys are held: samples of new series and log lines of new keys are refused"
            );
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
        let outbox = Outbox::start(bus.clone(), topics.clone(), outbox::QUEUE_CAPACITY, metrics)
            .map_err(|source| StageError::Bus {
                stage: Evaluation::NAME,
                source,
            })?;
        let evaluation = Evaluation {
            state: StateStore::new(outbox.clone()),
            outbox,
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
    outbox: Outbox,
    topics: Topics,
    evaluator: Option<Evaluator>,
    notifier: Notifier,
    deliveries: notify::Deliveries,
    state: StateStore,
    /// Reads the state topic; `None` until the state was restored.
    state_follower: Option<StateFollower>,
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
            followed = next_state(self.state_follower.as_mut()) => Update::State(followed),
            Some(delivered) = self.deliveries.recv() => Update::Delivered(delivered),
        }
    }

    async fn handle(&mut self, update: Update) -> Result<(), StageError> {
        match update {
            Update::State(followed) => self.follow_state(followed),
            Update::Delivered(delivered) => {
                if delivered.status == AlertStatus::Firing {
                    self.state
                        .mark_notified(&delivered.fingerprint, delivered.at);
                }
            }
        }
        Ok(())
    }

    /// Gives Kafka a last chance to take the queued events and state records.
    async fn drain(&mut self, _failed: bool) -> Result<(), StageError> {
        self.outbox.flush(OUTBOX_FLUSH_DEADLINE).await;
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
                let mut evaluator = Evaluator::new(rules);
                evaluator.set_max_series(self.config.max_series);
                self.evaluator = Some(evaluator);
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
                    self.metrics.state_follow_errors.inc();
                    tracing::warn!(%error, %topic, "reading the alert state failed; retrying");
                    tokio::time::sleep(INITIAL_FOLLOW_BACKOFF).await;
                }
            }
        }
        tracing::info!(records = restored, %topic, "alert state read");
        self.metrics.alerts_restored.set(restored as i64);
        self.state_follower = Some(StateFollower::new(
            follower,
            self.metrics.state_follow_errors.clone(),
        ));
        Ok(())
    }

    /// Takes in a record of the state topic read while restoring.
    fn apply_state(&mut self, followed: Result<Followed, BusError>) {
        match followed {
            Ok(Followed::Message(message)) => match self.state.read(&message) {
                Record::Foreign(state) => self.evaluator_mut().restore(state),
                Record::Ended(fingerprint) => self.evaluator_mut().forget_restored(&fingerprint),
                Record::Ignored => {}
            },
            Ok(Followed::CaughtUp) => {}
            Err(error) => {
                let retry_in = self
                    .state_follower
                    .as_ref()
                    .and_then(|follower| follower.retry_at)
                    .map_or(INITIAL_FOLLOW_BACKOFF, |at| {
                        at.saturating_duration_since(tokio::time::Instant::now())
                    });
                tracing::warn!(%error, ?retry_in, "following the alert state failed; retrying");
            }
        }
    }

    /// Takes in a record of the state topic read while following it.
    fn follow_state(&mut self, followed: Result<Followed, BusError>) {
        if let Ok(Followed::Message(_)) = &followed {
            self.metrics.state_records_followed.inc();
        }
        self.apply_state(followed);
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
        let log_keys = self.evaluator_mut().log_keys();
        self.metrics.log_keys.set(log_keys as i64);
        let refused = self.evaluator_mut().take_refused_series();
        self.metrics.report_refused_series(refused);
        for (rule, times) in self.evaluator_mut().take_merged_log_times() {
            self.metrics
                .log_times_merged
                .get_or_create(&RuleLabels { rule })
                .inc_by(times);
        }
    }

    fn evaluator_mut(&mut self) -> &mut Evaluator {
        let max_series = self.config.max_series;
        self.evaluator.get_or_insert_with(|| {
            let mut evaluator = Evaluator::new(RuleSet::default());
            evaluator.set_max_series(max_series);
            evaluator
        })
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
            // Not awaited: the outbox retries it while Kafka is away, and the
            // pagers hear of it meanwhile.
            self.outbox.send(Outgoing::Event(event.clone()));
            self.notifier.notify(&event).await;
        }
    }
}

/// The next record of the state topic; never, before the state was restored.
async fn next_state(follower: Option<&mut StateFollower>) -> Result<Followed, BusError> {
    match follower {
        Some(follower) => follower.recv().await,
        None => std::future::pending().await,
    }
}

/// Follows the state topic after the start; after a failed read it waits
/// before the next (0.5 s doubling to 10 s), and never stops for good: the
/// consumer reconnects on its own once the broker is back.
#[derive(Debug)]
struct StateFollower {
    follower: Follower,
    /// When the next read may start, after a failure.
    retry_at: Option<tokio::time::Instant>,
    /// The wait after the next failure.
    backoff: Duration,
    /// Counts every failed read.
    errors: Counter,
}

impl StateFollower {
    fn new(follower: Follower, errors: Counter) -> Self {
        Self {
            follower,
            retry_at: None,
            backoff: INITIAL_FOLLOW_BACKOFF,
            errors,
        }
    }

    /// The next record; cancel-safe (a wait cut short resumes where it was).
    /// The consumer queues an error for each failed connection attempt while
    /// the broker is away; after a failed read, those already queued are read
    /// (and counted) at once, so that the backoff does not spread them over
    /// minutes once the broker is back.
    async fn recv(&mut self) -> Result<Followed, BusError> {
        if let Some(retry_at) = self.retry_at {
            tokio::time::sleep_until(retry_at).await;
            self.retry_at = None;
        }
        let mut followed = self.follower.recv().await;
        while followed.is_err() {
            self.errors.inc();
            match self.follower.recv().now_or_never() {
                Some(next) => followed = next,
                None => break,
            }
        }
        match &followed {
            Ok(_) => self.backoff = INITIAL_FOLLOW_BACKOFF,
            Err(_) => {
                self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_FOLLOW_BACKOFF);
            }
        }
        followed
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

#[cfg(test)]
mod tests;
