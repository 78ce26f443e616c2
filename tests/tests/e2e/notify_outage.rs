//! Pages that survive a receiver's outage: the receiver (an HTTP server of the
//! test, switched into failing since no real PagerDuty or webhook fails on
//! demand) answers 500 or 503 with `Retry-After`, the real `vigil-aggregator
//! alert` keeps trying until it recovers, also across a SIGKILL and restart
//! in the middle of the outage, and a refused page is counted, not retried.
//! Real etcd for rules, the real broker for metrics and the state topic.

use serde_json::Value;
use std::time::{Duration, SystemTime};
use vigil_tests::alert_feed::{MetricFeed, alerts_with, rules_folder, wait_for_count};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::wait_until;
use vigil_tests::webhook::WebhookReceiver;

const DISK_RULES: &str = r#"groups:
  - name: storage
    interval: 1s
    rules:
      - alert: DiskFull
        metric: disk.used_percent
        condition: value > 90
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.host }}: /srv {{ $value }}% full"
"#;

/// The labels of every disk reading.
const SRV: &[(&str, &str)] = &[("mountpoint", "/srv")];

/// How long the first notification may take to be tried: the evaluation tick
/// and the broker's latency under a loaded machine.
const FIRST_TRY: Duration = Duration::from_secs(90);

/// One group per host, notified at once, repeated only after an hour: a second
/// page within the test can only be a retry.
const ROUTE: &str = "{receiver: pager, group_by: [alertname, host], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}";

/// The alert stage of `deployment` with the disk rule pushed and `receiver`
/// (one YAML flow mapping named `pager`) as its only receiver: its config, and
/// its HTTP port.
fn alert_config(deployment: &Deployment, receiver: &str) -> (std::path::PathBuf, u16) {
    deployment.push_rules(&rules_folder(
        deployment,
        "rules",
        &[("storage.yaml", DISK_RULES)],
    ));
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let settings =
        format!("  allowed_lateness: 1s\n  receivers:\n    - {receiver}\n  route: {ROUTE}\n");
    (deployment.alert_config_with("alert", port, &settings), port)
}

/// The webhook bodies `receiver` accepted with DiskFull of `host` firing.
fn accepted_pages(receiver: &WebhookReceiver, host: &str) -> Vec<Value> {
    receiver
        .accepted_bodies()
        .into_iter()
        .filter(|body| {
            body["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|alert| alert["status"] == "firing" && alert["labels"]["host"] == host)
            })
        })
        .collect()
}

#[test]
fn a_page_sent_during_a_two_minute_pagerduty_outage_arrives_once_it_recovers() {
    let deployment = Deployment::new("notify-outage");
    let pagerduty = WebhookReceiver::start();
    pagerduty.respond_with(500);
    let key = deployment.work.join("pagerduty-key");
    std::fs::write(&key, "R0UT1NGKEY0000000000000000000000\n").unwrap();
    let receiver = format!(
        "{{type: pagerduty, name: pager, routing_key: {{file: '{}'}}, url: '{}'}}",
        key.display(),
        pagerduty.url()
    );
    let (config, port) = alert_config(&deployment, &receiver);
    let _alert = deployment.start_stage("alert", &config, port);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));

    feed.set("db-1", SRV, &[("disk.used_percent", 95.0)]);
    let outage_from = wait_until("the first try", FIRST_TRY, || {
        pagerduty
            .requests()
            .first()
            .map(|request| request.received_at)
    });
    // Tries go on through two minutes of outage, further and further apart.
    let outage = Duration::from_secs(120);
    wait_until("tries through a two-minute outage", outage * 2, || {
        let last = pagerduty.requests().last()?.received_at;
        (last.duration_since(outage_from).ok()? >= outage).then_some(())
    });
    let failed = pagerduty.requests().len();
    assert!(failed >= 8, "{failed} tries in two minutes");
    wait_for_count(
        port,
        "vigil_alert_notification_retries_total",
        "server_error",
        failed as f64,
    );
    assert_eq!(
        metric_value(port, "vigil_alert_notifications_retrying", "pager"),
        1.0
    );
    assert_eq!(
        metric_value(port, "vigil_alert_notifications_total", "sent"),
        0.0
    );

    // PagerDuty is back.
    pagerduty.respond_with(202);
    let trigger = wait_until("the page after the outage", outage, || {
        pagerduty.accepted_bodies().into_iter().next()
    });
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["payload"]["source"], "db-1");
    let requests = pagerduty.requests();
    assert!(
        requests.iter().all(|request| request.body == trigger),
        "every try carried the same page"
    );
    wait_for_count(port, "vigil_alert_notifications_total", "sent", 1.0);
    assert_eq!(
        metric_value(port, "vigil_alert_notifications_retrying", "pager"),
        0.0
    );
    assert_eq!(
        metric_value(port, "vigil_alert_notifications_total", "failed"),
        0.0
    );
}

#[test]
fn an_alert_stage_killed_during_an_outage_pages_once_the_receiver_recovers() {
    let deployment = Deployment::new("notify-restart");
    let webhook = &deployment.webhook;
    webhook.respond_with_retry_after(503, "1");
    let receiver = format!("{{type: webhook, name: pager, url: '{}'}}", webhook.url());
    let (config, port) = alert_config(&deployment, &receiver);
    let mut alert = deployment.start_stage("alert", &config, port);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));

    feed.set("db-1", SRV, &[("disk.used_percent", 95.0)]);
    // A try a second, as the receiver asks: more than a fixed number of tries
    // would allow.
    wait_until("ten tries", FIRST_TRY, || {
        (webhook.requests().len() >= 10).then_some(())
    });
    alert.kill_hard();
    let tried_before = webhook.requests().len();
    let _restarted = deployment.start_stage("alert", &config, port);
    // The state topic does not say the alert was notified, so the restarted
    // stage pages when the alert resumes, and keeps trying.
    wait_until("a try by the restarted stage", FIRST_TRY, || {
        (webhook.requests().len() > tried_before).then_some(())
    });
    assert!(accepted_pages(webhook, "db-1").is_empty());

    webhook.respond_with(200);
    wait_until("the page after the outage", FIRST_TRY, || {
        accepted_pages(webhook, "db-1").into_iter().next()
    });
    wait_for_count(port, "vigil_alert_notifications_total", "sent", 1.0);
    assert_eq!(
        alerts_with(webhook, "firing", &[("host", "db-1")]).len(),
        webhook.requests().len(),
        "every request was the db-1 page"
    );
}

#[test]
fn a_page_the_receiver_refuses_is_counted_and_not_tried_again() {
    let deployment = Deployment::new("notify-refused");
    let webhook = &deployment.webhook;
    webhook.respond_with(400);
    let receiver = format!("{{type: webhook, name: pager, url: '{}'}}", webhook.url());
    let (config, port) = alert_config(&deployment, &receiver);
    let _alert = deployment.start_stage("alert", &config, port);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));

    feed.set("db-1", SRV, &[("disk.used_percent", 95.0)]);
    wait_for_count(
        port,
        "vigil_alert_notifications_failed_total",
        "client_error",
        1.0,
    );
    webhook.respond_with(200);
    let refused_at = SystemTime::now();
    // Another disk fills up: its page goes out, and by then a retry of the
    // refused one would have come long before.
    feed.set("db-2", SRV, &[("disk.used_percent", 95.0)]);
    wait_until("the db-2 page", FIRST_TRY, || {
        accepted_pages(webhook, "db-2").into_iter().next()
    });
    let db1: Vec<_> = webhook
        .requests()
        .into_iter()
        .filter(|request| request.body.to_string().contains("\"host\":\"db-1\""))
        .collect();
    assert_eq!(db1.len(), 1, "{db1:#?}");
    assert!(db1[0].received_at <= refused_at);
    assert_eq!(db1[0].status, 400);
    assert_eq!(
        metric_value(port, "vigil_alert_notifications_total", "failed"),
        1.0
    );
    assert_eq!(
        metric_value(port, "vigil_alert_notifications_retrying", "pager"),
        0.0
    );
}
