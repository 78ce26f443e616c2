//! The `alert` stage: consumes metrics and logs from the bus, evaluates the rule
//! set in event time, publishes every alert state change to the alerts topic and
//! notifies pagers.
//!
//! Rules come from a watched source (etcd or a folder). A new rule set that fails
//! to load is reported and ignored: the last good set keeps running with its
//! pending timers and firing alerts. The clock of evaluation is the event time of
//! the data; when the input goes quiet, wall-clock time minus the allowed lateness
//! moves it on, so windows still close and alerts still resolve.

pub mod notify;

use crate::rule_source::RuleFilesWatch;
use crate::rules::{Evaluator, RuleSet};
use notify::{Notifier, Receiver};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use vigil_proto::v1::{AlertEvent, LogBatch, MetricBatch};
use vigil_proto::{Payload, Topics};
use vigil_runtime::{Bus, Message, Publisher, SelfMetrics, Subscription};

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
    /// Where notifications go.
    pub receivers: Vec<Receiver>,
    /// Base URL of the UI that alerts link to (`externalURL` in webhooks).
    pub external_url: String,
}

impl Default for AlertStageConfig {
    fn default() -> Self {
        Self {
            group: "vigil-alert".to_owned(),
            tick: Duration::from_secs(1),
            allowed_lateness: Duration::from_secs(5),
            receivers: Vec::new(),
            external_url: String::new(),
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
        let notifier = Notifier::start(
            config.receivers.clone(),
            config.external_url.clone(),
            metrics,
        );
        Ok(Self {
            subscription,
            publisher: bus.publisher()?,
            topics,
            rules,
            evaluator: None,
            notifier,
            config,
            metrics: AlertMetrics::register(metrics),
        })
    }

    /// Evaluates until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
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
                    if last_message.elapsed() >= self.config.tick {
                        let now = unix_nanos(SystemTime::now()) - self.config.allowed_lateness.as_nanos() as i64;
                        let events = self.evaluator_mut().advance_to(now);
                        self.emit(events).await;
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
            MetricBatch::from_payload(&message.payload).map(Batch::Metrics)
        };
        let checked = decoded
            .map_err(|error| error.to_string())
            .and_then(|batch| {
                let limit = unix_nanos(SystemTime::now()) + MAX_CLOCK_SKEW.as_nanos() as i64;
                check_not_ahead(batch.latest_event_time(), limit)?;
                Ok(batch)
            });
        match checked {
            Ok(Batch::Logs(batch)) => {
                let events = self.evaluator_mut().observe_logs(&batch);
                self.emit(events).await;
            }
            Ok(Batch::Metrics(batch)) => {
                let events = self.evaluator_mut().observe_metrics(&batch);
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

    async fn emit(&self, events: Vec<AlertEvent>) {
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

/// A decoded input batch.
enum Batch {
    Logs(LogBatch),
    Metrics(MetricBatch),
}

impl Batch {
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
        vigil_runtime::duration::format_duration(Duration::from_secs(ahead.as_secs())),
        vigil_runtime::duration::format_duration(MAX_CLOCK_SKEW)
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

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
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
