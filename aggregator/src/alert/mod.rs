//! The `alert` stage: consumes metrics and logs from the bus, evaluates the rule
//! set in event time, publishes every alert state change to the alerts topic and
//! notifies pagers.
//!
//! Rules come from a watched source (etcd or a folder). A new rule set that fails
//! to load is reported and ignored: the last good set keeps running with its
//! pending timers and firing alerts. The clock of evaluation is the event time of
//! the data; when the input goes quiet, wall-clock time minus the allowed lateness
//! moves it on, so windows still close and alerts still resolve.

mod config;
pub mod notify;
mod state;

pub use config::{AlertSection, AlertSectionError};

use crate::rule_source::RuleFilesWatch;
use notify::{Notifier, NotifyConfig, SilenceWatch};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use state::{Record, StateStore};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use vigil_config::duration::unix_nanos;
use vigil_proto::v1::{AlertEvent, LogBatch};
use vigil_proto::view::MetricBatchView;
use vigil_proto::{Payload, Topics};
use vigil_rules::{Evaluator, RuleSet, Source};
use vigil_runtime::{Bus, Followed, Follower, Message, Publisher, SelfMetrics, Subscription};

/// How far ahead of this host's clock data may be stamped. The evaluation clock
/// follows event time, so one batch from a host with a wrong clock would otherwise
/// move it into the future and make every current series look stale.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

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
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone)]
struct AlertMetrics {
    consumed: Family<TopicLabels, Counter>,
    dead_lettered: Family<TopicLabels, Counter>,
    events: Family<StatusLabels, Counter>,
    reloads: Family<StatusLabels, Counter>,
    rules_loaded: Gauge,
    partitions_owned: Gauge,
    alerts_restored: Gauge,
    series: Gauge,
}

impl AlertMetrics {
    fn register(metrics: &SelfMetrics) -> Self {
        Self {
            consumed: metrics.register(
                "alert_messages_consumed",
                "Messages consumed, by topic",
                Family::default(),
            ),
            dead_lettered: metrics.register(
                "alert_dead_lettered",
                "Messages that were not valid batches, sent to the dead-letter topic",
                Family::default(),
            ),
            events: metrics.register(
                "alert_events",
                "Alert state changes, by status",
                Family::default(),
            ),
            reloads: metrics.register(
                "alert_rule_reloads",
                "Rule set reloads, by outcome (a failed reload keeps the last good set)",
                Family::default(),
            ),
            rules_loaded: metrics.register(
                "alert_rules_loaded",
                "Rules in the running rule set",
                Gauge::default(),
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
    subscription: Subscription,
    publisher: Publisher,
    topics: Topics,
    rules: RuleFilesWatch,
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

impl AlertStage {
    /// Subscribes to the metric and log topics of `bus`.
    pub fn new(
        bus: &Bus,
        rules: RuleFilesWatch,
        config: AlertStageConfig,
        metrics: &SelfMetrics,
    ) -> anyhow::Result<Self> {
        let topics = bus.topics();
        let subscription = bus.subscribe(
            &config.group,
            &[
                topics.metrics_raw(),
                topics.metrics_derived(),
                topics.logs_raw(),
            ],
        )?;
        let (notifier, deliveries) =
            Notifier::start(config.notify.clone(), config.silences.clone(), metrics);
        let publisher = bus.publisher()?;
        Ok(Self {
            subscription,
            state: StateStore::new(topics.alert_state(), publisher.clone()),
            publisher,
            topics,
            rules,
            evaluator: None,
            notifier,
            deliveries,
            state_follower: None,
            bus: bus.clone(),
            assignment: None,
            config,
            metrics: AlertMetrics::register(metrics),
        })
    }

    /// Evaluates until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.restore_state(&shutdown).await?;
        self.wait_for_first_rules(&shutdown).await;
        let mut tick = tokio::time::interval(self.config.tick);
        let mut last_message = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = self.rules.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the rule source stopped");
                    }
                    self.reload().await;
                }
                _ = tick.tick() => {
                    self.follow_assignment().await;
                    if last_message.elapsed() >= self.config.tick {
                        let now = unix_nanos(SystemTime::now()) - self.config.allowed_lateness.as_nanos() as i64;
                        let events = self.evaluator_mut().advance_to(now);
                        self.emit(events).await;
                    }
                }
                followed = next_state(&mut self.state_follower) => self.apply_state(followed),
                Some(delivered) = self.deliveries.recv() => {
                    if delivered.status == vigil_proto::v1::AlertStatus::Firing {
                        self.state.mark_notified(&delivered.fingerprint, delivered.at).await;
                    }
                }
                received = self.subscription.recv() => {
                    last_message = Instant::now();
                    match received {
                        Ok(message) => self.process(message).await,
                        Err(error) => {
                            tracing::warn!(%error, "consuming failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            }
        }
        self.subscription.close();
        Ok(())
    }

    /// Reads the state topic up to its end before anything is evaluated, so that
    /// no alert an earlier run knew of starts over.
    async fn restore_state(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let topic = self.topics.alert_state();
        let mut follower =
            self.bus.follow(&topic).await.map_err(|error| {
                anyhow::anyhow!("reading the alert state topic `{topic}`: {error}")
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
    fn apply_state(&mut self, followed: Result<Followed, vigil_runtime::BusError>) {
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
    async fn follow_assignment(&mut self) {
        let assignment = self.subscription.assignment();
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

    async fn wait_for_first_rules(&mut self, shutdown: &CancellationToken) {
        loop {
            if self.rules.borrow_and_update().is_some() {
                self.reload().await;
                return;
            }
            tracing::info!("waiting for the first rule set");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = self.rules.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn reload(&mut self) {
        let Some(files) = self.rules.borrow_and_update().clone() else {
            return;
        };
        match RuleSet::from_files(&files) {
            Ok(rules) => {
                let count = rules.rule_count();
                let events = match self.evaluator.as_mut() {
                    Some(evaluator) => evaluator.replace_rules(rules),
                    None => {
                        self.evaluator = Some(Evaluator::new(rules));
                        Vec::new()
                    }
                };
                self.metrics.rules_loaded.set(count as i64);
                self.metrics
                    .reloads
                    .get_or_create(&StatusLabels { status: "success" })
                    .inc();
                tracing::info!(rules = count, files = files.len(), "rule set loaded");
                self.emit(events).await;
            }
            Err(errors) => {
                self.metrics
                    .reloads
                    .get_or_create(&StatusLabels { status: "failure" })
                    .inc();
                for error in &errors {
                    tracing::error!(%error, "invalid rule");
                }
                tracing::error!(
                    errors = errors.len(),
                    "new rule set rejected; the last good rule set stays in force"
                );
            }
        }
    }

    async fn process(&mut self, message: Message) {
        self.metrics
            .consumed
            .get_or_create(&TopicLabels {
                topic: message.topic.clone(),
            })
            .inc();
        let decoded = if message.topic == self.topics.logs_raw() {
            LogBatch::from_payload(&message.payload).map(Batch::Logs)
        } else {
            MetricBatchView::decode(&message.payload).map(Batch::Metrics)
        };
        let checked = decoded
            .map_err(|error| error.to_string())
            .and_then(|batch| {
                let limit = unix_nanos(SystemTime::now()) + MAX_CLOCK_SKEW.as_nanos() as i64;
                check_not_ahead(batch.latest_event_time(), limit)?;
                Ok(batch)
            });
        let source = Source::new(&message.topic, message.partition);
        match checked {
            Ok(Batch::Logs(batch)) => {
                let events = self.evaluator_mut().observe_logs_from(&batch, &source);
                self.emit(events).await;
            }
            Ok(Batch::Metrics(batch)) => {
                let events = self.evaluator_mut().observe_metric_view(&batch, &source);
                self.emit(events).await;
            }
            Err(reason) => self.dead_letter(&message, &reason).await,
        }
        if let Err(error) = self.subscription.commit(&message) {
            tracing::warn!(%error, "offset could not be stored");
        }
    }

    async fn dead_letter(&self, message: &Message, reason: &str) {
        self.metrics
            .dead_lettered
            .get_or_create(&TopicLabels {
                topic: message.topic.clone(),
            })
            .inc();
        let topic = self.topics.dead_letter("alert");
        self.publisher.skip_invalid(&topic, message, reason).await;
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
            if event.status != vigil_proto::v1::AlertStatus::Firing as i32 {
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
            let status = vigil_proto::v1::AlertStatus::try_from(event.status)
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
async fn next_state(follower: &mut Option<Follower>) -> Result<Followed, vigil_runtime::BusError> {
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

impl Batch<'_> {
    fn latest_event_time(&self) -> i64 {
        match self {
            Self::Logs(batch) => batch.lines.iter().map(|l| l.event_time_unix_nano).max(),
            Self::Metrics(batch) => batch.samples.iter().map(|s| s.time_unix_nano).max(),
        }
        .unwrap_or_default()
    }
}

/// Refuses event times after `limit_unix_nano`, saying by how much they are ahead.
fn check_not_ahead(latest_unix_nano: i64, limit_unix_nano: i64) -> Result<(), String> {
    if latest_unix_nano <= limit_unix_nano {
        return Ok(());
    }
    let ahead = Duration::from_nanos((latest_unix_nano - limit_unix_nano) as u64) + MAX_CLOCK_SKEW;
    Err(format!(
        "event time is {} ahead of this host's clock (at most {} allowed); check the sender's clock",
        vigil_config::duration::format_duration(Duration::from_secs(ahead.as_secs())),
        vigil_config::duration::format_duration(MAX_CLOCK_SKEW)
    ))
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
mod tests {
    use super::*;

    #[test]
    fn data_from_a_clock_far_ahead_is_refused_with_the_offset() {
        let now = 1_700_000_000_000_000_000;
        let limit = now + MAX_CLOCK_SKEW.as_nanos() as i64;
        assert!(check_not_ahead(now + 60_000_000_000, limit).is_ok());
        let two_hours = 7_200_000_000_000;
        assert_eq!(
            check_not_ahead(now + two_hours, limit).unwrap_err(),
            "event time is 2h ahead of this host's clock (at most 5m allowed); check the sender's clock"
        );
    }
}
