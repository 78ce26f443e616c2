//! The dispatcher: between the alert stage's events and the receivers. It sorts
//! alerts into aggregation groups along the routing tree and decides, on each
//! group's timer, whether a notification is due: the first after `group_wait`,
//! then changes every `group_interval`, an unchanged firing group again after
//! `repeat_interval`, and resolved alerts once before they leave the group.
//! Silenced and inhibited alerts are left out when a group is flushed.
//!
//! One task owns all groups, so no locks; it never waits for a receiver (each has
//! its own queue and task), and it reports when every notification that carried
//! an alert event has finished, so the stage can persist what was delivered.

use super::config::InhibitRule;
use super::inhibit::is_inhibited;
use super::route::{GroupId, RouteTree};
use super::silence::{Silence, SilenceState, SilenceWatch};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use vigil_proto::v1::{AlertEvent, AlertStatus};

/// An alert event whose delivery is reported: fingerprint and status.
pub(crate) type DeliveryKey = (String, AlertStatus);

/// An alert event whose notification finished for every receiver it routes to:
/// sent, given up after retries, or not needed (silenced, inhibited, unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub fingerprint: String,
    pub status: AlertStatus,
    /// When the last of those notifications finished.
    pub at: SystemTime,
}

/// One message to one receiver about one group.
#[derive(Debug, Clone)]
pub(crate) struct Notification {
    pub(crate) receiver: String,
    /// Alertmanager's group key: stable, so pagers deduplicate on it.
    pub(crate) group_key: String,
    pub(crate) group_labels: BTreeMap<String, String>,
    /// Firing alerts, then resolved ones.
    pub(crate) alerts: Vec<AlertEvent>,
    /// Events reported as delivered once this notification finished.
    pub(crate) awaiting: Vec<DeliveryKey>,
}

/// What the notifier handle asks of the dispatcher.
#[derive(Debug)]
pub(crate) enum Command {
    Notify(AlertEvent),
    /// A firing alert notified before a restart, at this time.
    Restore(AlertEvent, SystemTime),
}

/// The queue of one receiver's delivery task.
#[derive(Debug)]
pub(crate) struct ReceiverQueue {
    pub(crate) sender: mpsc::Sender<Notification>,
    pub(crate) send_resolved: bool,
    /// Notifications queued and not yet taken by the delivery task.
    pub(crate) depth: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) receiver: String,
    pub(crate) outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MutedLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SilenceLabels {
    state: &'static str,
}

/// Metrics the dispatcher keeps.
#[derive(Debug, Clone, Default)]
pub(crate) struct DispatchMetrics {
    /// Notifications by receiver and outcome (the dispatcher counts `dropped`).
    pub(crate) notifications: Family<OutcomeLabels, Counter>,
    /// Alert events not notified, by reason (`silenced`, `inhibited`).
    pub(crate) muted: Family<MutedLabels, Counter>,
    /// Silences held, by state (`pending`, `active`, `expired`): what an
    /// operator checks after `silences add` or `expire` to see that the stage
    /// took it.
    pub(crate) silences: Family<SilenceLabels, Gauge>,
}

#[derive(Debug)]
struct Group {
    alerts: BTreeMap<String, GroupAlert>,
    /// Firing alerts the receiver was last told about.
    notified_firing: BTreeSet<String>,
    last_sent: Option<Instant>,
    next_flush: Instant,
}

#[derive(Debug)]
struct GroupAlert {
    event: AlertEvent,
    /// Whether this group owes a delivery report for the event.
    awaiting: bool,
}

/// The state of all aggregation groups.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    tree: RouteTree,
    inhibit_rules: Vec<InhibitRule>,
    silences: Vec<Silence>,
    groups: BTreeMap<GroupId, Group>,
    /// Every firing alert, the sources of inhibition.
    firing: HashMap<String, AlertEvent>,
    /// Events → how many groups still owe their delivery report.
    owed: HashMap<DeliveryKey, usize>,
    queues: HashMap<String, ReceiverQueue>,
    delivered: mpsc::UnboundedSender<Delivered>,
    metrics: DispatchMetrics,
}

impl Dispatcher {
    pub(crate) fn new(
        tree: RouteTree,
        inhibit_rules: Vec<InhibitRule>,
        queues: HashMap<String, ReceiverQueue>,
        delivered: mpsc::UnboundedSender<Delivered>,
        metrics: DispatchMetrics,
    ) -> Self {
        Self {
            tree,
            inhibit_rules,
            silences: Vec::new(),
            groups: BTreeMap::new(),
            firing: HashMap::new(),
            owed: HashMap::new(),
            queues,
            delivered,
            metrics,
        }
    }

    /// Runs until every notifier handle is gone.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut finished: mpsc::UnboundedReceiver<Vec<DeliveryKey>>,
        mut silences: Option<SilenceWatch>,
    ) {
        if let Some(watch) = &mut silences {
            self.silences = watch.current();
        }
        let mut next_silence_change = self.count_silences(Utc::now());
        loop {
            let next_flush = self.groups.values().map(|group| group.next_flush).min();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Notify(event)) => self.notify(event, Instant::now()),
                    Some(Command::Restore(event, notified_at)) => {
                        self.restore(event, notified_at, Instant::now());
                    }
                    None => return,
                },
                Some(keys) = finished.recv() => {
                    for key in keys {
                        self.settle(key);
                    }
                }
                changed = silence_change(&mut silences) => match (changed, &mut silences) {
                    (true, Some(watch)) => {
                        self.silences = watch.current();
                        next_silence_change = self.count_silences(Utc::now());
                    }
                    _ => silences = None,
                },
                () = sleep_until(next_flush) => self.flush_due(Instant::now()),
                () = sleep_until(next_silence_change) => {
                    next_silence_change = self.count_silences(Utc::now());
                }
            }
        }
    }

    fn notify(&mut self, event: AlertEvent, now: Instant) {
        let status = event.status();
        if !matches!(status, AlertStatus::Firing | AlertStatus::Resolved) {
            return;
        }
        let key = (event.fingerprint.clone(), status);
        if status == AlertStatus::Firing {
            self.firing.insert(event.fingerprint.clone(), event.clone());
        } else {
            self.firing.remove(&event.fingerprint);
        }
        let groups = self.tree.groups_for(&event.labels);
        *self.owed.entry(key.clone()).or_default() += 1;
        let mut superseded = Vec::new();
        for id in groups {
            *self.owed.entry(key.clone()).or_default() += 1;
            let group = self.group(id, now);
            let alert = GroupAlert {
                event: event.clone(),
                awaiting: true,
            };
            if let Some(previous) = group.alerts.insert(event.fingerprint.clone(), alert)
                && previous.awaiting
            {
                superseded.push((previous.event.fingerprint.clone(), previous.event.status()));
            }
        }
        // The count started at one so that no report goes out before every group
        // took the event; this settles that extra one.
        superseded.push(key);
        for key in superseded {
            self.settle(key);
        }
    }

    fn restore(&mut self, event: AlertEvent, notified_at: SystemTime, now: Instant) {
        if event.status() != AlertStatus::Firing {
            return self.notify(event, now);
        }
        let ago = SystemTime::now()
            .duration_since(notified_at)
            .unwrap_or_default();
        let sent_at = now.checked_sub(ago).unwrap_or(now);
        self.firing.insert(event.fingerprint.clone(), event.clone());
        let mut superseded = Vec::new();
        for id in self.tree.groups_for(&event.labels) {
            let group = self.group(id, now);
            group.notified_firing.insert(event.fingerprint.clone());
            group.last_sent = group.last_sent.max(Some(sent_at));
            let alert = GroupAlert {
                event: event.clone(),
                awaiting: false,
            };
            if let Some(previous) = group.alerts.insert(event.fingerprint.clone(), alert)
                && previous.awaiting
            {
                superseded.push((previous.event.fingerprint.clone(), previous.event.status()));
            }
        }
        for key in superseded {
            self.settle(key);
        }
    }

    fn group(&mut self, id: GroupId, now: Instant) -> &mut Group {
        let group_wait = self.tree.route(id.route).group_wait;
        self.groups.entry(id).or_insert_with(|| Group {
            alerts: BTreeMap::new(),
            notified_firing: BTreeSet::new(),
            last_sent: None,
            next_flush: now + group_wait,
        })
    }

    fn flush_due(&mut self, now: Instant) {
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| group.next_flush <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.flush(id, now);
        }
    }

    /// Notifies the receiver of group `id` if something is due, then drops the
    /// group's resolved alerts.
    fn flush(&mut self, id: GroupId, now: Instant) {
        let Some(mut group) = self.groups.remove(&id) else {
            return;
        };
        let route = self.tree.route(id.route);
        let Some(queue) = self.queues.get(&route.receiver) else {
            return;
        };
        let wall = Utc::now();
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        let mut muted_firing = BTreeSet::new();
        let mut settled = Vec::new();
        for alert in group.alerts.values_mut() {
            let event = &alert.event;
            let key = (event.fingerprint.clone(), event.status());
            let is_firing = event.status() == AlertStatus::Firing;
            if let Some(reason) = self.mute_reason(event, wall) {
                if alert.awaiting {
                    self.metrics
                        .muted
                        .get_or_create(&MutedLabels { reason })
                        .inc();
                    settled.push(key);
                }
                if is_firing {
                    muted_firing.insert(event.fingerprint.clone());
                }
            } else if is_firing {
                firing.push(alert);
            } else if queue.send_resolved && group.notified_firing.contains(&event.fingerprint) {
                resolved.push(alert);
            } else if alert.awaiting {
                settled.push(key);
            }
        }
        let has_new = firing
            .iter()
            .any(|alert| !group.notified_firing.contains(&alert.event.fingerprint));
        let repeat_due = !firing.is_empty()
            && group
                .last_sent
                .is_none_or(|sent| now >= sent + route.repeat_interval);
        if has_new || !resolved.is_empty() || repeat_due {
            let awaiting: Vec<DeliveryKey> = firing
                .iter()
                .chain(&resolved)
                .filter(|alert| alert.awaiting)
                .map(|alert| (alert.event.fingerprint.clone(), alert.event.status()))
                .collect();
            let notification = Notification {
                receiver: route.receiver.clone(),
                group_key: self.tree.group_key(&id),
                group_labels: id.labels.clone(),
                alerts: firing
                    .iter()
                    .chain(&resolved)
                    .map(|alert| alert.event.clone())
                    .collect(),
                awaiting,
            };
            group.notified_firing = firing
                .iter()
                .map(|alert| alert.event.fingerprint.clone())
                .chain(muted_firing.intersection(&group.notified_firing).cloned())
                .collect();
            group.last_sent = Some(now);
            match queue.sender.try_send(notification) {
                Ok(()) => {
                    queue.depth.inc();
                }
                Err(error) => {
                    tracing::warn!(receiver = %route.receiver, "notification queue full; notification dropped");
                    self.metrics
                        .notifications
                        .get_or_create(&OutcomeLabels {
                            receiver: route.receiver.clone(),
                            outcome: "dropped",
                        })
                        .inc();
                    settled.extend(error.into_inner().awaiting);
                }
            }
        } else {
            settled.extend(
                firing
                    .iter()
                    .filter(|alert| alert.awaiting)
                    .map(|alert| (alert.event.fingerprint.clone(), AlertStatus::Firing)),
            );
        }
        group
            .alerts
            .retain(|_, alert| alert.event.status() == AlertStatus::Firing);
        for alert in group.alerts.values_mut() {
            alert.awaiting = false;
        }
        group
            .notified_firing
            .retain(|fingerprint| group.alerts.contains_key(fingerprint));
        if !group.alerts.is_empty() {
            group.next_flush = now + route.group_interval;
            self.groups.insert(id, group);
        }
        for key in settled {
            self.settle(key);
        }
    }

    fn mute_reason(&self, event: &AlertEvent, now: chrono::DateTime<Utc>) -> Option<&'static str> {
        if self
            .silences
            .iter()
            .any(|silence| silence.mutes(&event.labels, now))
        {
            Some("silenced")
        } else if is_inhibited(&self.inhibit_rules, event, self.firing.values()) {
            Some("inhibited")
        } else {
            None
        }
    }

    /// Counts the silences by their state at `now`; returns when the next one
    /// starts or ends, and the counts change.
    fn count_silences(&self, now: DateTime<Utc>) -> Option<Instant> {
        for state in [
            SilenceState::Pending,
            SilenceState::Active,
            SilenceState::Expired,
        ] {
            let count = self
                .silences
                .iter()
                .filter(|silence| silence.state(now) == state)
                .count();
            self.metrics
                .silences
                .get_or_create(&SilenceLabels {
                    state: state.as_str(),
                })
                .set(count as i64);
        }
        let next_change = self
            .silences
            .iter()
            .flat_map(|silence| [silence.starts_at, silence.ends_at])
            .filter(|time| *time > now)
            .min()?;
        Instant::now().checked_add((next_change - now).to_std().unwrap_or_default())
    }

    /// One group finished with an event; reports it once all have.
    fn settle(&mut self, key: DeliveryKey) {
        let Some(count) = self.owed.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.owed.remove(&key);
            let (fingerprint, status) = key;
            // Nobody listening is fine: the stage may not persist deliveries.
            let _ = self.delivered.send(Delivered {
                fingerprint,
                status,
                at: SystemTime::now(),
            });
        }
    }
}

#[cfg(test)]
mod tests;

async fn silence_change(watch: &mut Option<SilenceWatch>) -> bool {
    match watch {
        Some(watch) => watch.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
