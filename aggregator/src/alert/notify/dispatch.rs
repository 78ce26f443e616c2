//! The dispatcher: between the alert stage's events and the receivers. It sorts
//! alerts into aggregation groups along the routing tree and decides, on each
//! group's timer, whether a notification is due: the first after `group_wait`,
//! then changes every `group_interval`, an unchanged firing group again after
//! `repeat_interval`, and resolved alerts once before they leave the group.
//! Silenced and inhibited alerts are left out when a group is flushed.
//!
//! One task owns all groups, so no locks; it never waits for a receiver (each has
//! its own queue and task). A group has at most one notification with its
//! receiver at a time, and takes the answer in: what the receiver accepted is
//! what it knows of; a failure that may pass schedules the group's next flush
//! after the receiver's `Retry-After` or a backoff, and that flush renders the
//! group as it is by then, so a retry never carries alerts that resolved or
//! were replaced meanwhile. An alert event is reported delivered only once every
//! receiver it routes to accepted it (or knew of it already), so the stage
//! persists as notified only what was.

use super::config::{InhibitRule, RetryPolicy};
use super::deliver::{Attempt, Finished};
use super::inhibit::is_inhibited;
use super::route::{GroupId, RouteTree};
use super::silence::{Silence, SilenceState, SilenceWatch};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::time::SystemTime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use vigil_proto::v1::{AlertEvent, AlertStatus};

/// An alert event whose delivery is reported: fingerprint and status.
pub(crate) type DeliveryKey = (String, AlertStatus);

/// An alert event that every receiver it routes to accepted in a notification,
/// or knew of already. Events that were silenced, inhibited, refused or
/// replaced before they were delivered are never reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub fingerprint: String,
    pub status: AlertStatus,
    /// When the last of those receivers accepted it.
    pub at: SystemTime,
}

/// One message to one receiver about one group.
#[derive(Debug, Clone)]
pub(crate) struct Notification {
    pub(crate) receiver: String,
    /// The group it is about, to which the answer goes back.
    pub(crate) group: GroupId,
    /// Alertmanager's group key: stable, so pagers deduplicate on it.
    pub(crate) group_key: String,
    pub(crate) group_labels: BTreeMap<String, String>,
    /// Firing alerts, then resolved ones.
    pub(crate) alerts: Vec<AlertEvent>,
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
    /// Groups whose last notification failed and waits to be tried again.
    pub(crate) retrying: Gauge,
}

/// A receiver and why a notification to it failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub(crate) receiver: String,
    pub(crate) reason: &'static str,
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
    /// Failed tries that will be repeated, by receiver and reason; the
    /// dispatcher counts `queue_full`, the delivery tasks the others.
    pub(crate) retries: Family<FailureLabels, Counter>,
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
    /// Firing alerts the receiver last accepted (or refused: see `refused`).
    notified_firing: BTreeSet<String>,
    /// Firing alerts of `notified_firing` the receiver refused: not sent again
    /// until the group changes or repeats, and never reported delivered.
    refused: BTreeSet<String>,
    /// When the notification the receiver last answered was sent.
    last_sent: Option<Instant>,
    next_flush: Instant,
    /// The notification with the receiver's task, not answered yet; the group
    /// is not flushed meanwhile.
    in_flight: Option<InFlight>,
    /// Tries failed in a row; the backoff grows with them.
    failures: u32,
}

#[derive(Debug)]
struct GroupAlert {
    event: AlertEvent,
    /// Whether this group owes a delivery report for the event.
    awaiting: bool,
    /// Whether the event was counted as muted; it stays owed until the receiver
    /// gets it, after the silence or the inhibition ends.
    muted: bool,
}

/// What a notification with the receiver carries, to apply once it answers.
#[derive(Debug)]
struct InFlight {
    sent_at: Instant,
    /// The firing alerts sent.
    firing: BTreeSet<String>,
    /// Firing alerts the receiver knows of once it accepts: those sent, and
    /// those it knew of that are muted now.
    known_firing: BTreeSet<String>,
    /// The resolved alerts sent, which leave the group once answered.
    resolved: BTreeSet<String>,
    /// The events sent that the group owes a report for.
    awaiting: Vec<DeliveryKey>,
}

/// How one group finished with an alert event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The receiver accepted it, or needed nothing (it knew already, or it is a
    /// resolution of an alert it never heard of or does not take).
    Delivered,
    /// The receiver did not get it: it refused it, or the alert left the group
    /// while muted.
    Missed,
    /// A newer event of the alert took its place before it was delivered.
    Replaced,
}

/// The groups that still owe a report for one event, and how the others
/// finished.
#[derive(Debug, Default)]
struct Owed {
    groups: usize,
    delivered: bool,
    missed: bool,
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
    /// Events → the groups that still owe their delivery report.
    owed: HashMap<DeliveryKey, Owed>,
    queues: HashMap<String, ReceiverQueue>,
    delivered: mpsc::UnboundedSender<Delivered>,
    retry: RetryPolicy,
    metrics: DispatchMetrics,
}

impl Dispatcher {
    pub(crate) fn new(
        tree: RouteTree,
        inhibit_rules: Vec<InhibitRule>,
        queues: HashMap<String, ReceiverQueue>,
        delivered: mpsc::UnboundedSender<Delivered>,
        retry: RetryPolicy,
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
            retry,
            metrics,
        }
    }

    /// Runs until every notifier handle is gone.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut finished: mpsc::UnboundedReceiver<Finished>,
        mut silences: Option<SilenceWatch>,
    ) {
        if let Some(watch) = &mut silences {
            self.silences = watch.current();
        }
        let mut next_silence_change = self.count_silences(Utc::now());
        loop {
            let next_flush = self
                .groups
                .values()
                .filter(|group| group.in_flight.is_none())
                .map(|group| group.next_flush)
                .min();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Notify(event)) => self.notify(event, Instant::now()),
                    Some(Command::Restore(event, notified_at)) => {
                        self.restore(event, notified_at, Instant::now());
                    }
                    None => return,
                },
                Some(finished) = finished.recv() => {
                    self.answered(finished.group, finished.attempt, Instant::now());
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
        self.owed.entry(key.clone()).or_default().groups += 1;
        let mut replaced = Vec::new();
        for id in groups {
            self.owed.entry(key.clone()).or_default().groups += 1;
            let group = self.group(id, now);
            let alert = GroupAlert {
                event: event.clone(),
                awaiting: true,
                muted: false,
            };
            if let Some(previous) = group.alerts.insert(event.fingerprint.clone(), alert)
                && previous.awaiting
            {
                replaced.push(delivery_key(&previous.event));
            }
        }
        // The count started at one so that no report goes out before every group
        // took the event; this settles that extra one.
        replaced.push(key);
        for key in replaced {
            self.settle(key, Verdict::Replaced);
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
        let mut replaced = Vec::new();
        for id in self.tree.groups_for(&event.labels) {
            let group = self.group(id, now);
            group.notified_firing.insert(event.fingerprint.clone());
            group.last_sent = group.last_sent.max(Some(sent_at));
            let alert = GroupAlert {
                event: event.clone(),
                awaiting: false,
                muted: false,
            };
            if let Some(previous) = group.alerts.insert(event.fingerprint.clone(), alert)
                && previous.awaiting
            {
                replaced.push(delivery_key(&previous.event));
            }
        }
        for key in replaced {
            self.settle(key, Verdict::Replaced);
        }
    }

    fn group(&mut self, id: GroupId, now: Instant) -> &mut Group {
        let group_wait = self.tree.route(id.route).group_wait;
        self.groups.entry(id).or_insert_with(|| Group {
            alerts: BTreeMap::new(),
            notified_firing: BTreeSet::new(),
            refused: BTreeSet::new(),
            last_sent: None,
            next_flush: now + group_wait,
            in_flight: None,
            failures: 0,
        })
    }

    fn flush_due(&mut self, now: Instant) {
        let due: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, group)| group.in_flight.is_none() && group.next_flush <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.flush(id, now);
        }
    }

    /// Hands the receiver of group `id` a notification if one is due, then
    /// drops the group's resolved alerts that it does not carry.
    fn flush(&mut self, id: GroupId, now: Instant) {
        let Some(mut group) = self.groups.remove(&id) else {
            return;
        };
        let was_retrying = group.failures > 0;
        let route = self.tree.route(id.route);
        let Some(queue) = self.queues.get(&route.receiver) else {
            return;
        };
        let wall = Utc::now();
        let mut firing = BTreeSet::new();
        let mut resolved = BTreeSet::new();
        let mut muted_firing = BTreeSet::new();
        let mut settled = Vec::new();
        for (fingerprint, alert) in &mut group.alerts {
            let event = &alert.event;
            let is_firing = event.status() == AlertStatus::Firing;
            if let Some(reason) = self.mute_reason(event, wall) {
                if alert.awaiting && !alert.muted {
                    self.metrics
                        .muted
                        .get_or_create(&MutedLabels { reason })
                        .inc();
                    alert.muted = true;
                }
                if is_firing {
                    muted_firing.insert(fingerprint.clone());
                }
            } else if is_firing {
                firing.insert(fingerprint.clone());
            } else if queue.send_resolved && group.notified_firing.contains(fingerprint) {
                resolved.insert(fingerprint.clone());
            } else if alert.awaiting {
                settled.push((delivery_key(event), Verdict::Delivered));
                alert.awaiting = false;
            }
        }
        let has_new = firing
            .iter()
            .any(|fingerprint| !group.notified_firing.contains(fingerprint));
        let repeat_due = !firing.is_empty()
            && group
                .last_sent
                .is_none_or(|sent| now >= sent + route.repeat_interval);
        group.next_flush = now + route.group_interval;
        if has_new || !resolved.is_empty() || repeat_due {
            let sent = || firing.iter().chain(&resolved).map(|fp| &group.alerts[fp]);
            let notification = Notification {
                receiver: route.receiver.clone(),
                group: id.clone(),
                group_key: self.tree.group_key(&id),
                group_labels: id.labels.clone(),
                alerts: sent().map(|alert| alert.event.clone()).collect(),
            };
            let awaiting: Vec<DeliveryKey> = sent()
                .filter(|alert| alert.awaiting)
                .map(|alert| delivery_key(&alert.event))
                .collect();
            match queue.sender.try_send(notification) {
                Ok(()) => {
                    queue.depth.inc();
                    for fingerprint in firing.iter().chain(&resolved) {
                        if let Some(alert) = group.alerts.get_mut(fingerprint) {
                            alert.awaiting = false;
                        }
                    }
                    group.in_flight = Some(InFlight {
                        sent_at: now,
                        known_firing: firing
                            .iter()
                            .chain(muted_firing.intersection(&group.notified_firing))
                            .cloned()
                            .collect(),
                        firing,
                        resolved: resolved.clone(),
                        awaiting,
                    });
                }
                Err(_) => {
                    tracing::warn!(receiver = %route.receiver, "notification queue full; the group tries again later");
                    self.metrics
                        .retries
                        .get_or_create(&FailureLabels {
                            receiver: route.receiver.clone(),
                            reason: "queue_full",
                        })
                        .inc();
                    group.failures += 1;
                    group.next_flush = now + self.retry.backoff(group.failures, jitter());
                }
            }
        } else {
            group.failures = 0;
            // Nothing new: the receiver knows of every firing alert already.
            for fingerprint in &firing {
                let Some(alert) = group.alerts.get_mut(fingerprint) else {
                    continue;
                };
                if alert.awaiting {
                    let verdict = if group.refused.contains(fingerprint) {
                        Verdict::Missed
                    } else {
                        Verdict::Delivered
                    };
                    settled.push((delivery_key(&alert.event), verdict));
                    alert.awaiting = false;
                }
            }
        }
        settled.extend(drop_resolved(&mut group, Verdict::Missed, |fingerprint| {
            !resolved.contains(fingerprint)
        }));
        self.keep(id, group, was_retrying);
        for (key, verdict) in settled {
            self.settle(key, verdict);
        }
    }

    /// Takes in the receiver's answer to group `id`'s notification.
    fn answered(&mut self, id: GroupId, attempt: Attempt, now: Instant) {
        let Some(mut group) = self.groups.remove(&id) else {
            return;
        };
        let Some(sent) = group.in_flight.take() else {
            self.groups.insert(id, group);
            return;
        };
        let was_retrying = group.failures > 0;
        let mut settled = Vec::new();
        match attempt {
            Attempt::Accepted | Attempt::Refused => {
                let verdict = if attempt == Attempt::Accepted {
                    group
                        .refused
                        .retain(|fingerprint| !sent.firing.contains(fingerprint));
                    Verdict::Delivered
                } else {
                    group.refused.extend(sent.firing.iter().cloned());
                    Verdict::Missed
                };
                group.failures = 0;
                group.last_sent = Some(sent.sent_at);
                group.notified_firing = sent.known_firing;
                settled.extend(drop_resolved(&mut group, verdict, |fingerprint| {
                    sent.resolved.contains(fingerprint)
                }));
                settled.extend(sent.awaiting.into_iter().map(|key| (key, verdict)));
            }
            Attempt::Retry { after } => {
                group.failures += 1;
                let wait = match after {
                    Some(asked) => self.retry.retry_after(asked),
                    None => self.retry.backoff(group.failures, jitter()),
                };
                group.next_flush = now + wait;
                // The next try owes what this one did, unless a newer event of
                // the alert took its place meanwhile.
                for key in sent.awaiting {
                    match group.alerts.get_mut(&key.0) {
                        Some(alert) if delivery_key(&alert.event) == key && !alert.awaiting => {
                            alert.awaiting = true;
                        }
                        _ => settled.push((key, Verdict::Replaced)),
                    }
                }
            }
        }
        self.keep(id, group, was_retrying);
        for (key, verdict) in settled {
            self.settle(key, verdict);
        }
    }

    /// Puts group `id` back unless it has no alerts left, and counts it among
    /// its receiver's groups waiting to try again if it is one now and was not
    /// (`was_retrying`), or the other way round.
    fn keep(&mut self, id: GroupId, mut group: Group, was_retrying: bool) {
        group
            .notified_firing
            .retain(|fingerprint| group.alerts.contains_key(fingerprint));
        group
            .refused
            .retain(|fingerprint| group.notified_firing.contains(fingerprint));
        let retrying = group.failures > 0 && !group.alerts.is_empty();
        if let Some(queue) = self.queues.get(&self.tree.route(id.route).receiver) {
            match (was_retrying, retrying) {
                (false, true) => {
                    queue.retrying.inc();
                }
                (true, false) => {
                    queue.retrying.dec();
                }
                _ => {}
            }
        }
        if !group.alerts.is_empty() {
            self.groups.insert(id, group);
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

    /// One group finished with an event; reports it once all have, if it
    /// reached every receiver.
    fn settle(&mut self, key: DeliveryKey, verdict: Verdict) {
        let Some(owed) = self.owed.get_mut(&key) else {
            return;
        };
        owed.groups -= 1;
        match verdict {
            Verdict::Delivered => owed.delivered = true,
            Verdict::Missed => owed.missed = true,
            Verdict::Replaced => {}
        }
        if owed.groups == 0 {
            let reached = owed.delivered && !owed.missed;
            self.owed.remove(&key);
            if reached {
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

/// Drops the resolved alerts of `group` that `leaves` picks; the events among
/// them still owed are settled with `verdict`.
fn drop_resolved(
    group: &mut Group,
    verdict: Verdict,
    leaves: impl Fn(&str) -> bool,
) -> Vec<(DeliveryKey, Verdict)> {
    let mut settled = Vec::new();
    group.alerts.retain(|fingerprint, alert| {
        let stays = alert.event.status() == AlertStatus::Firing || !leaves(fingerprint);
        if !stays && alert.awaiting {
            settled.push((delivery_key(&alert.event), verdict));
        }
        stays
    });
    settled
}

fn delivery_key(event: &AlertEvent) -> DeliveryKey {
    (event.fingerprint.clone(), event.status())
}

/// A random number in `[0, 1)` to spread retries.
fn jitter() -> f64 {
    let bits = RandomState::new().hash_one(Instant::now()) >> 11;
    bits as f64 / (1_u64 << 53) as f64
}
