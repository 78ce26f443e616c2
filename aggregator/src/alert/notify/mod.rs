//! Pagers: where the alert stage sends firing and resolved alerts, the way
//! Alertmanager would. Events go through a routing tree into aggregation groups
//! (`dispatch`), leave out what silences and inhibition rules mute, and reach
//! receivers (PagerDuty, Slack, an Alertmanager-compatible webhook, the console),
//! each on its own queue and task (`deliver`); a notification that fails is
//! tried again until the receiver accepts it or it is no longer needed.
//!
//! The stage hands over events with [`Notifier::notify`], re-seeds alerts that
//! were already notified before a restart with [`Notifier::restore`], and learns
//! from [`Deliveries`] when the receivers accepted a notification about an
//! event, so it can persist what was delivered (and nothing else: a page lost
//! to an outage is sent again after a restart).

mod config;
mod deliver;
mod dispatch;
mod inhibit;
mod matcher;
mod pagerduty;
mod route;
mod silence;
mod slack;
mod text;
mod webhook;

#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_GROUP_INTERVAL, DEFAULT_GROUP_WAIT, DEFAULT_REPEAT_INTERVAL, InhibitRule, NotifyConfig,
    PAGERDUTY_EVENTS_URL, Receiver, RetryPolicy, Route,
};
pub use dispatch::Delivered;
pub use matcher::{Matcher, MatcherError};
pub use silence::{
    InvalidSilence, Silence, SilenceError, SilenceState, SilenceStore, SilenceWatch, parse_silences,
};
pub use text::console_line;

use deliver::{Delivery, http_client};
use dispatch::{Command, DispatchMetrics, Dispatcher, FailureLabels, ReceiverQueue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use route::RouteTree;
use std::collections::HashMap;
use std::time::SystemTime;
use tokio::sync::mpsc;
use vigil_proto::v1::AlertEvent;
use vigil_runtime::SelfMetrics;

/// Notifications one receiver may have waiting (at most one per group); beyond,
/// a group tries again later rather than holding up the dispatcher.
const RECEIVER_QUEUE: usize = 1024;

/// Events the dispatcher may have waiting before `notify` waits.
const COMMAND_QUEUE: usize = 4096;

/// Reports of delivered alert events, one per event the receivers accepted.
pub type Deliveries = mpsc::UnboundedReceiver<Delivered>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
}

/// The stage's handle on the notification pipeline.
#[derive(Debug, Clone)]
pub struct Notifier {
    commands: mpsc::Sender<Command>,
}

impl Notifier {
    /// Starts the dispatcher and one delivery task per receiver. `config` must
    /// have passed [`NotifyConfig::validate`]; `silences` is `None` without etcd.
    pub fn start(
        config: NotifyConfig,
        silences: Option<SilenceWatch>,
        metrics: &SelfMetrics,
    ) -> (Self, Deliveries) {
        let retries = metrics.register(
            "alert_notification_retries",
            "Tries of notifications that failed and will be repeated, by receiver and reason \
             (server_error, rate_limited, timeout, connection, secret, queue_full)",
            Family::<FailureLabels, Counter>::default(),
        );
        let dispatch_metrics = DispatchMetrics {
            retries: retries.clone(),
            muted: metrics.register(
                "alert_notifications_muted",
                "Alert events not notified, by reason (silenced, inhibited)",
                Family::default(),
            ),
            silences: metrics.register(
                "alert_silences",
                "Silences held, by state (pending, active, expired)",
                Family::default(),
            ),
        };
        let notifications = metrics.register(
            "alert_notifications",
            "Notifications finished, by receiver and outcome (sent, failed)",
            Family::default(),
        );
        let failures = metrics.register(
            "alert_notifications_failed",
            "Notifications the receiver refused for good, by receiver and reason \
             (client_error, too_large, unexpected_status)",
            Family::<FailureLabels, Counter>::default(),
        );
        let depths = metrics.register(
            "alert_notification_queue_depth",
            "Notifications waiting for their receiver",
            Family::<ReceiverLabels, Gauge>::default(),
        );
        let retrying = metrics.register(
            "alert_notifications_retrying",
            "Groups whose notification failed and waits to be tried again, by receiver",
            Family::<ReceiverLabels, Gauge>::default(),
        );
        let durations = metrics.register(
            "alert_notification_duration_seconds",
            "Time of one try at a notification, by receiver",
            Family::<ReceiverLabels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 4.0, 9))
            }),
        );
        let http = http_client();
        let (finished_sender, finished) = mpsc::unbounded_channel();
        let mut queues = HashMap::new();
        for receiver in &config.receivers {
            let labels = ReceiverLabels {
                receiver: receiver.name().to_owned(),
            };
            let depth = depths.get_or_create(&labels).clone();
            let (sender, queue) = mpsc::channel(RECEIVER_QUEUE);
            queues.insert(
                receiver.name().to_owned(),
                ReceiverQueue {
                    sender,
                    send_resolved: receiver.send_resolved(),
                    depth: depth.clone(),
                    retrying: retrying.get_or_create(&labels).clone(),
                },
            );
            let delivery = Delivery {
                receiver: receiver.clone(),
                http: http.clone(),
                external_url: config.external_url.clone(),
                notifications: notifications.clone(),
                failures: failures.clone(),
                retries: retries.clone(),
                duration: durations.get_or_create(&labels).clone(),
                depth,
            };
            tokio::spawn(delivery.run(queue, finished_sender.clone()));
        }
        let tree = RouteTree::new(config.route.as_ref(), &config.receivers);
        let (delivered, deliveries) = mpsc::unbounded_channel();
        let (commands, pending) = mpsc::channel(COMMAND_QUEUE);
        let dispatcher = Dispatcher::new(
            tree,
            config.inhibit_rules,
            queues,
            delivered,
            config.retry,
            dispatch_metrics,
        );
        tokio::spawn(dispatcher.run(pending, finished, silences));
        (Self { commands }, deliveries)
    }

    /// Hands a live event over; only firing and resolved ones are notified.
    pub async fn notify(&self, event: &AlertEvent) {
        // The dispatcher only ends when every handle is gone.
        let _ = self.commands.send(Command::Notify(event.clone())).await;
    }

    /// Re-seeds a firing alert that receivers were told about at `notified_at`,
    /// before a restart: it joins its groups without a new notification, and its
    /// `repeat_interval` counts from `notified_at`.
    pub async fn restore(&self, event: &AlertEvent, notified_at: SystemTime) {
        let _ = self
            .commands
            .send(Command::Restore(event.clone(), notified_at))
            .await;
    }
}
