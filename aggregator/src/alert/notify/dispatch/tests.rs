//! The dispatcher's timers on paused tokio time: grouping, group_wait,
//! group_interval, repeat_interval, resolves, restores, silences, inhibition,
//! retries after failures and the delivery reports, observed at the receivers'
//! queues, which the test answers in place of the delivery tasks.

use super::*;
use crate::alert::notify::config::Route;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::timeout;
use vigil_proto::labels::label;
use vigil_runtime::etcd::Snapshot;

struct Harness {
    commands: mpsc::Sender<Command>,
    queues: HashMap<String, mpsc::Receiver<Notification>>,
    finished: mpsc::UnboundedSender<Finished>,
    delivered: mpsc::UnboundedReceiver<Delivered>,
    silences: watch::Sender<Option<Arc<Snapshot>>>,
    metrics: DispatchMetrics,
    retrying: HashMap<String, Gauge>,
    started: Instant,
}

/// Queued notifications a receiver may have before its queue is full.
const QUEUE: usize = 16;

const ROUTE: &str = r#"
receiver: team
group_by: [alertname]
group_wait: 30s
group_interval: 5m
repeat_interval: 1h
routes:
  - matchers: ['severity="page"']
    receiver: pager
    continue: true
"#;

fn start(route: &str, inhibit_rules: &str) -> Harness {
    let route: Route = vigil_config::parse_yaml("route.yaml", route).unwrap();
    let inhibit_rules: Vec<InhibitRule> =
        vigil_config::parse_yaml("inhibit.yaml", inhibit_rules).unwrap();
    let mut queues = HashMap::new();
    let mut receivers = HashMap::new();
    let mut retrying = HashMap::new();
    for name in ["team", "pager"] {
        let (sender, queue) = mpsc::channel(QUEUE);
        let gauge = Gauge::default();
        queues.insert(
            name.to_owned(),
            ReceiverQueue {
                sender,
                send_resolved: true,
                depth: Gauge::default(),
                retrying: gauge.clone(),
            },
        );
        receivers.insert(name.to_owned(), queue);
        retrying.insert(name.to_owned(), gauge);
    }
    let (delivered_sender, delivered) = mpsc::unbounded_channel();
    let (finished, finished_receiver) = mpsc::unbounded_channel();
    let (commands, pending) = mpsc::channel(16);
    let (silences, snapshots) = watch::channel(Some(Arc::new(Snapshot::new())));
    let metrics = DispatchMetrics::default();
    let dispatcher = Dispatcher::new(
        RouteTree::new(Some(&route), &[]),
        inhibit_rules,
        queues,
        delivered_sender,
        RetryPolicy::default(),
        metrics.clone(),
    );
    tokio::spawn(dispatcher.run(
        pending,
        finished_receiver,
        Some(SilenceWatch::from_snapshots(snapshots)),
    ));
    Harness {
        commands,
        queues: receivers,
        finished,
        delivered,
        silences,
        metrics,
        retrying,
        started: Instant::now(),
    }
}

fn alert(name: &str, host: &str, severity: &str, status: AlertStatus) -> AlertEvent {
    AlertEvent {
        alert: name.into(),
        labels: vec![
            label("alertname", name),
            label("host", host),
            label("severity", severity),
        ],
        status: status as i32,
        fingerprint: format!("{name}/{host}"),
        ..AlertEvent::default()
    }
}

fn firing(name: &str, host: &str) -> AlertEvent {
    alert(name, host, "warning", AlertStatus::Firing)
}

fn resolved(name: &str, host: &str) -> AlertEvent {
    alert(name, host, "warning", AlertStatus::Resolved)
}

impl Harness {
    async fn send(&self, event: AlertEvent) {
        self.commands.send(Command::Notify(event)).await.unwrap();
    }

    /// The next notification to `receiver` and when it came, since the start,
    /// accepted by the receiver.
    async fn next(&mut self, receiver: &str) -> (Duration, Notification) {
        self.next_answered(receiver, Attempt::Accepted).await
    }

    /// The next notification to `receiver`, answered with `attempt`.
    async fn next_answered(
        &mut self,
        receiver: &str,
        attempt: Attempt,
    ) -> (Duration, Notification) {
        let next = self.next_unanswered(receiver).await;
        self.answer(&next.1, attempt);
        next
    }

    /// The next notification to `receiver`, for the test to answer later.
    async fn next_unanswered(&mut self, receiver: &str) -> (Duration, Notification) {
        let queue = self.queues.get_mut(receiver).unwrap();
        let notification = queue.recv().await.unwrap();
        (self.started.elapsed(), notification)
    }

    fn answer(&self, notification: &Notification, attempt: Attempt) {
        self.finished
            .send(Finished {
                group: notification.group.clone(),
                attempt,
            })
            .unwrap();
    }

    /// The reports that come within a minute, in order.
    async fn reports(&mut self) -> Vec<(String, AlertStatus)> {
        let mut reports = Vec::new();
        while let Ok(Some(delivered)) = timeout(secs(60), self.delivered.recv()).await {
            reports.push((delivered.fingerprint, delivered.status));
        }
        reports
    }

    fn retrying(&self, receiver: &str) -> i64 {
        self.retrying[receiver].get()
    }

    /// Whether `receiver` gets nothing for `span`.
    async fn quiet_for(&mut self, receiver: &str, span: Duration) -> bool {
        let queue = self.queues.get_mut(receiver).unwrap();
        timeout(span, queue.recv()).await.is_err()
    }
}

fn summary(notification: &Notification) -> Vec<String> {
    notification
        .alerts
        .iter()
        .map(|alert| {
            let status = if alert.status() == AlertStatus::Firing {
                "firing"
            } else {
                "resolved"
            };
            format!("{status} {}", alert.fingerprint)
        })
        .collect()
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

#[tokio::test(start_paused = true)]
async fn the_first_notification_waits_group_wait_and_carries_the_whole_group() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    tokio::time::sleep(secs(10)).await;
    harness.send(firing("HostDown", "web-2")).await;
    harness.send(firing("DiskFull", "db-1")).await;

    let (at, first) = harness.next("team").await;
    assert_eq!(at, secs(30));
    assert_eq!(first.group_key, r#"{}:{alertname="HostDown"}"#);
    assert_eq!(
        summary(&first),
        ["firing HostDown/web-1", "firing HostDown/web-2"]
    );
    let (at, second) = harness.next("team").await;
    assert_eq!(at, secs(40), "the DiskFull group has its own group_wait");
    assert_eq!(summary(&second), ["firing DiskFull/db-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_change_to_a_notified_group_waits_for_group_interval() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    assert_eq!(harness.next("team").await.0, secs(30));
    tokio::time::sleep(secs(10)).await;
    harness.send(firing("HostDown", "web-2")).await;

    let (at, update) = harness.next("team").await;
    assert_eq!(at, secs(30 + 300));
    assert_eq!(
        summary(&update),
        ["firing HostDown/web-1", "firing HostDown/web-2"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_unchanged_firing_group_is_repeated_after_repeat_interval() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    assert_eq!(harness.next("team").await.0, secs(30));
    // Ticks every 5m; the first one at least 1h after the last notification.
    let (at, repeat) = harness.next("team").await;
    assert_eq!(at, secs(30 + 3600));
    assert_eq!(summary(&repeat), ["firing HostDown/web-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_resolved_alert_is_sent_once_and_leaves_the_group() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    harness.send(firing("HostDown", "web-2")).await;
    assert_eq!(harness.next("team").await.0, secs(30));
    harness.send(resolved("HostDown", "web-1")).await;

    let (at, update) = harness.next("team").await;
    assert_eq!(at, secs(330));
    assert_eq!(
        summary(&update),
        ["firing HostDown/web-2", "resolved HostDown/web-1"]
    );
    let (at, repeat) = harness.next("team").await;
    assert_eq!(at, secs(330 + 3600));
    assert_eq!(
        summary(&repeat),
        ["firing HostDown/web-2"],
        "resolved only once"
    );

    harness.send(resolved("HostDown", "web-2")).await;
    let (_, last) = harness.next("team").await;
    assert_eq!(summary(&last), ["resolved HostDown/web-2"]);
    assert!(
        harness.quiet_for("team", secs(24 * 3600)).await,
        "the empty group is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn an_alert_resolved_before_it_was_notified_is_never_sent() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    tokio::time::sleep(secs(5)).await;
    harness.send(resolved("HostDown", "web-1")).await;
    assert!(harness.quiet_for("team", secs(24 * 3600)).await);
    assert_eq!(
        harness.reports().await,
        [("HostDown/web-1".to_owned(), AlertStatus::Resolved)],
        "the firing event never reached the receiver"
    );
}

#[tokio::test(start_paused = true)]
async fn delivery_is_reported_once_every_receiver_accepted() {
    let both = "receiver: team\nroutes:\n  - {matchers: [severity=page], receiver: pager, continue: true}\n  - {receiver: team}\n";
    let mut harness = start(both, "[]");
    let page = alert("HostDown", "web-1", "page", AlertStatus::Firing);
    harness.send(page).await;
    let (_, to_team) = harness.next_unanswered("team").await;
    let (_, to_pager) = harness.next_unanswered("pager").await;
    harness.answer(&to_team, Attempt::Accepted);
    assert!(
        timeout(secs(60), harness.delivered.recv()).await.is_err(),
        "the pager has not answered yet"
    );
    harness.answer(&to_pager, Attempt::Accepted);
    let delivered = harness.delivered.recv().await.unwrap();
    assert_eq!(
        (delivered.fingerprint, delivered.status),
        ("HostDown/web-1".to_owned(), AlertStatus::Firing)
    );
}

// A receiver that refused a page counted as delivered, so the stage persisted
// it as notified and a restart never paged again.
#[tokio::test(start_paused = true)]
async fn an_event_one_receiver_refused_is_never_reported_delivered() {
    let both = "receiver: team\nroutes:\n  - {matchers: [severity=page], receiver: pager, continue: true}\n  - {receiver: team}\n";
    let mut harness = start(both, "[]");
    harness
        .send(alert("HostDown", "web-1", "page", AlertStatus::Firing))
        .await;
    harness.next("team").await;
    harness.next_answered("pager", Attempt::Refused).await;
    assert_eq!(harness.reports().await, []);
    assert!(
        harness.quiet_for("pager", secs(3000)).await,
        "a refusal is not tried again before the repeat"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restored_alert_is_not_notified_again_until_its_repeat_interval() {
    let mut harness = start(ROUTE, "[]");
    let notified_at = SystemTime::now() - secs(3600 - 600);
    harness
        .commands
        .send(Command::Restore(firing("HostDown", "web-1"), notified_at))
        .await
        .unwrap();
    // Group ticks at 30s, 5m30s, 10m30s: the first one past the repeat interval.
    let (at, repeat) = harness.next("team").await;
    assert_eq!(at, secs(630));
    assert_eq!(summary(&repeat), ["firing HostDown/web-1"]);
    assert_eq!(
        harness.reports().await,
        [],
        "a restore owes no delivery report"
    );

    harness.send(resolved("HostDown", "web-1")).await;
    let (_, resolve) = harness.next("team").await;
    assert_eq!(summary(&resolve), ["resolved HostDown/web-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_restored_alert_resolving_after_a_restart_is_sent_resolved() {
    let mut harness = start(ROUTE, "[]");
    harness
        .commands
        .send(Command::Restore(
            firing("HostDown", "web-1"),
            SystemTime::now(),
        ))
        .await
        .unwrap();
    harness.send(resolved("HostDown", "web-1")).await;
    let (at, resolve) = harness.next("team").await;
    assert_eq!(at, secs(30));
    assert_eq!(summary(&resolve), ["resolved HostDown/web-1"]);
}

/// A silence of `matchers` that started a minute ago and lasts two hours.
fn silence_snapshot(matchers: &[&str]) -> Option<Arc<Snapshot>> {
    snapshot(&[silence(
        matchers,
        chrono::Duration::minutes(-1),
        secs(2 * 3600),
    )])
}

/// A silence of `matchers` starting `start` from now and lasting `length`.
fn silence(matchers: &[&str], start: chrono::Duration, length: Duration) -> Silence {
    Silence::new(
        matchers.iter().map(|m| m.parse().unwrap()).collect(),
        Utc::now() + start,
        length,
        "alice".into(),
        "maintenance".into(),
    )
    .unwrap()
}

fn snapshot(silences: &[Silence]) -> Option<Arc<Snapshot>> {
    Some(Arc::new(
        silences
            .iter()
            .map(|silence| (silence.id.clone(), serde_json::to_string(silence).unwrap()))
            .collect(),
    ))
}

#[tokio::test(start_paused = true)]
async fn silenced_alerts_are_left_out_until_the_silence_is_lifted() {
    let mut harness = start(ROUTE, "[]");
    harness
        .silences
        .send_replace(silence_snapshot(&["alertname=HostDown", "host=~web-1"]));
    harness.send(firing("HostDown", "web-1")).await;
    harness.send(firing("HostDown", "web-2")).await;
    let (at, first) = harness.next("team").await;
    assert_eq!(at, secs(30));
    assert_eq!(summary(&first), ["firing HostDown/web-2"]);
    let delivered = harness.delivered.recv().await.unwrap();
    assert_eq!(
        delivered.fingerprint, "HostDown/web-2",
        "a silenced alert is not reported delivered"
    );

    harness
        .silences
        .send_replace(Some(Arc::new(Snapshot::new())));
    let (at, update) = harness.next("team").await;
    assert_eq!(at, secs(330));
    assert_eq!(
        summary(&update),
        ["firing HostDown/web-1", "firing HostDown/web-2"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_silences_held_are_counted_by_state() {
    let harness = start(ROUTE, "[]");
    let count = |state: &'static str| {
        harness
            .metrics
            .silences
            .get_or_create(&SilenceLabels { state })
            .get()
    };
    let hour = chrono::Duration::hours(1);
    harness.silences.send_replace(snapshot(&[
        silence(&["alertname=HostDown"], -hour, secs(2 * 3600)),
        silence(&["alertname=SiteDown"], -hour, secs(2 * 3600)),
        silence(&["host=web-1"], hour, secs(3600)),
        silence(&["host=web-2"], -hour * 3, secs(3600)),
    ]));
    // The dispatcher takes the change in on its own task.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        [count("pending"), count("active"), count("expired")],
        [1, 2, 1]
    );
    harness.silences.send_replace(snapshot(&[]));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        [count("pending"), count("active"), count("expired")],
        [0, 0, 0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_firing_source_inhibits_its_targets() {
    let inhibit = "- {source_matchers: [alertname=SiteDown], target_matchers: [alertname=HostDown], equal: [site]}\n";
    let mut harness = start(
        "receiver: team\ngroup_by: ['...']\ngroup_wait: 30s\n",
        inhibit,
    );
    let with_site = |mut event: AlertEvent, site: &str| {
        event.labels.push(label("site", site));
        event
    };
    harness
        .send(with_site(firing("SiteDown", "-"), "fra"))
        .await;
    harness
        .send(with_site(firing("HostDown", "web-1"), "fra"))
        .await;
    harness
        .send(with_site(firing("HostDown", "web-9"), "ams"))
        .await;
    let mut notified = Vec::new();
    for _ in 0..2 {
        notified.extend(summary(&harness.next("team").await.1));
    }
    notified.sort();
    assert_eq!(notified, ["firing HostDown/web-9", "firing SiteDown/-"]);
    assert!(harness.quiet_for("team", secs(60)).await);
}

fn retry() -> Attempt {
    Attempt::Retry { after: None }
}

#[tokio::test(start_paused = true)]
async fn a_failed_notification_is_tried_again_with_a_growing_backoff_until_accepted() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    let (mut at, _) = harness.next_answered("team", retry()).await;
    assert_eq!(at, secs(30));
    // The backoff doubles from 0.5 s up to 30 s; jitter takes up to half off.
    let policy = RetryPolicy::default();
    for failures in 1..=10 {
        let full = policy.backoff(failures, 0.0);
        let (next, notification) = harness.next_answered("team", retry()).await;
        let waited = next - at;
        assert!(
            waited >= full / 2 && waited <= full,
            "try {failures} waited {waited:?}, not within half of {full:?}"
        );
        assert_eq!(summary(&notification), ["firing HostDown/web-1"]);
        assert_eq!(harness.retrying("team"), 1);
        at = next;
    }
    assert_eq!(policy.backoff(10, 0.0), secs(30));
    assert!(
        timeout(secs(60), harness.delivered.recv()).await.is_err(),
        "not delivered while it fails"
    );
    let (_, accepted) = harness.next("team").await;
    assert_eq!(summary(&accepted), ["firing HostDown/web-1"]);
    assert_eq!(
        harness.reports().await,
        [("HostDown/web-1".to_owned(), AlertStatus::Firing)]
    );
    assert_eq!(harness.retrying("team"), 0);
    // Accepted: the group is back on its timers, repeating after an hour.
    assert!(harness.quiet_for("team", secs(3000)).await);
}

#[tokio::test(start_paused = true)]
async fn the_receivers_retry_after_sets_the_next_try_within_a_limit() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    let seven = Attempt::Retry {
        after: Some(secs(7)),
    };
    let (first, _) = harness.next_answered("team", seven).await;
    let day = Attempt::Retry {
        after: Some(secs(24 * 3600)),
    };
    let (second, _) = harness.next_answered("team", day).await;
    assert_eq!(second - first, secs(7));
    let (third, _) = harness.next("team").await;
    assert_eq!(
        third - second,
        RetryPolicy::default().max_retry_after,
        "a day is more than is honoured"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_carries_the_group_as_it_is_by_then() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    harness.send(firing("HostDown", "web-2")).await;
    let minute = Attempt::Retry {
        after: Some(secs(60)),
    };
    let (_, failed) = harness.next_answered("team", minute).await;
    assert_eq!(
        summary(&failed),
        ["firing HostDown/web-1", "firing HostDown/web-2"]
    );
    harness.send(resolved("HostDown", "web-2")).await;
    harness.send(firing("HostDown", "web-3")).await;
    let (at, retried) = harness.next("team").await;
    assert_eq!(at, secs(90));
    assert_eq!(
        summary(&retried),
        ["firing HostDown/web-1", "firing HostDown/web-3"],
        "web-2 resolved before the receiver ever heard of it"
    );
    let mut reports = harness.reports().await;
    reports.sort();
    assert_eq!(
        reports,
        [
            ("HostDown/web-1".to_owned(), AlertStatus::Firing),
            ("HostDown/web-2".to_owned(), AlertStatus::Resolved),
            ("HostDown/web-3".to_owned(), AlertStatus::Firing),
        ],
        "web-2 never fired at the receiver"
    );
}

#[tokio::test(start_paused = true)]
async fn a_page_whose_alert_resolved_while_it_waited_to_be_tried_again_is_dropped() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    harness.next_answered("team", retry()).await;
    harness.send(resolved("HostDown", "web-1")).await;
    assert!(harness.quiet_for("team", secs(24 * 3600)).await);
    assert_eq!(harness.retrying("team"), 0);
    assert_eq!(
        harness.reports().await,
        [("HostDown/web-1".to_owned(), AlertStatus::Resolved)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_resolve_that_failed_is_tried_again() {
    let mut harness = start(ROUTE, "[]");
    harness.send(firing("HostDown", "web-1")).await;
    harness.next("team").await;
    harness.send(resolved("HostDown", "web-1")).await;
    let (_, failed) = harness.next_answered("team", retry()).await;
    assert_eq!(summary(&failed), ["resolved HostDown/web-1"]);
    let (_, retried) = harness.next("team").await;
    assert_eq!(summary(&retried), ["resolved HostDown/web-1"]);
    assert!(
        harness.quiet_for("team", secs(24 * 3600)).await,
        "sent once accepted, and the group is gone"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silenced_alert_is_reported_once_delivered_after_its_silence() {
    let mut harness = start(ROUTE, "[]");
    harness
        .silences
        .send_replace(silence_snapshot(&["alertname=HostDown"]));
    harness.send(firing("HostDown", "web-1")).await;
    assert!(harness.quiet_for("team", secs(600)).await);
    assert_eq!(harness.reports().await, []);
    assert_eq!(
        harness
            .metrics
            .muted
            .get_or_create(&MutedLabels { reason: "silenced" })
            .get(),
        1,
        "counted once, not on every tick"
    );
    harness
        .silences
        .send_replace(Some(Arc::new(Snapshot::new())));
    let (_, sent) = harness.next("team").await;
    assert_eq!(summary(&sent), ["firing HostDown/web-1"]);
    assert_eq!(
        harness.reports().await,
        [("HostDown/web-1".to_owned(), AlertStatus::Firing)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_group_whose_receiver_queue_is_full_tries_again() {
    // Every group is flushed at once, when group_wait ends.
    let mut harness = start(
        "receiver: team\ngroup_by: [alertname]\ngroup_wait: 10s\n",
        "[]",
    );
    for name in 0..=QUEUE {
        harness
            .send(firing(&format!("Alert{name:02}"), "web-1"))
            .await;
    }
    let mut notified = Vec::new();
    for _ in 0..=QUEUE {
        notified.extend(summary(&harness.next("team").await.1));
    }
    notified.sort();
    let expected: Vec<String> = (0..=QUEUE)
        .map(|name| format!("firing Alert{name:02}/web-1"))
        .collect();
    assert_eq!(notified, expected);
    let full = FailureLabels {
        receiver: "team".to_owned(),
        reason: "queue_full",
    };
    assert_eq!(harness.metrics.retries.get_or_create(&full).get(), 1);
    assert_eq!(harness.reports().await.len(), QUEUE + 1);
}
