//! Alert state that survives: the alert stage is SIGKILLed while one alert fires
//! and another is pending, and a second instance joins the consumer group while
//! alerts fire. Real etcd for the rules, the real broker for data and the state
//! topic, and a webhook receiver checking what pagers would get.

use std::time::{Duration, SystemTime};
use vigil_tests::alert_feed::{
    MetricFeed, alerts_with, parse_time, rules_folder, unix_nanos, wait_for_alert,
};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::wait_until;

const RULES: &str = r#"groups:
  - name: queues
    interval: 1s
    rules:
      - alert: QueueStuck
        metric: queue.depth
        condition: value > 5
        for: 2s
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.host }}: {{ $value }} messages waiting"
      - alert: QueueBacklog
        metric: queue.backlog
        condition: value > 5
        for: 30s
        labels: {severity: ticket}
"#;

/// One notification per alert, sent at once, repeated only after an hour.
const ROUTE: &str =
    "{receiver: test, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}";

/// The label of every queue reading.
const QUEUE: &[(&str, &str)] = &[("queue", "orders")];

/// Sets `queue.depth` and `queue.backlog` of `host`, like [`MetricFeed::set`].
fn set_queue(feed: &MetricFeed, host: &str, depth: f64, backlog: f64) -> SystemTime {
    feed.set(
        host,
        QUEUE,
        &[("queue.depth", depth), ("queue.backlog", backlog)],
    )
}

fn count(deployment: &Deployment, status: &str, alert: &str, host: &str) -> usize {
    alerts_with(
        &deployment.webhook,
        status,
        &[("alertname", alert), ("host", host)],
    )
    .len()
}

fn wait_for_notification(deployment: &Deployment, status: &str, alert: &str, host: &str) {
    wait_for_alert(
        &deployment.webhook,
        status,
        &[("alertname", alert), ("host", host)],
    );
}

fn rules_dir(deployment: &Deployment) -> std::path::PathBuf {
    rules_folder(deployment, "rules", &[("queues.yaml", RULES)])
}

#[test]
fn a_sigkilled_alert_stage_neither_pages_again_nor_restarts_a_pending_timer() {
    let deployment = Deployment::new("alert-sigkill");
    deployment.push_rules(&rules_dir(&deployment));
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.alert_config("alert", port, ROUTE);
    let mut alert = deployment.start_stage("alert", &config, port);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));

    set_queue(&feed, "q1", 10.0, 0.0);
    wait_for_notification(&deployment, "firing", "QueueStuck", "q1");
    let backlog_from = set_queue(&feed, "q1", 10.0, 10.0);
    // The backlog alert is pending, and has been for a few seconds of its 30.
    wait_until(
        "QueueBacklog pending for a while",
        Duration::from_secs(60),
        || {
            let pending = metric_value(port, "vigil_alert_events_total", "pending") >= 2.0;
            let waited = SystemTime::now() >= backlog_from + Duration::from_secs(8);
            (pending && waited).then_some(())
        },
    );
    let killed_at = SystemTime::now();
    alert.kill_hard();
    let _restarted = deployment.start_stage("alert", &config, port);

    let backlog = wait_for_alert(
        &deployment.webhook,
        "firing",
        &[("alertname", "QueueBacklog"), ("host", "q1")],
    );
    let fired_at = parse_time(&backlog["startsAt"]);
    // Its timer ran from before the kill: a timer started over would have
    // started after it and fired 30 s later.
    assert!(
        fired_at - 30_000_000_000 < unix_nanos(killed_at) - 3_000_000_000,
        "QueueBacklog fired at {}, its timer started over after the kill at {killed_at:?}",
        backlog["startsAt"]
    );
    assert!(fired_at >= unix_nanos(backlog_from) + 29_000_000_000);
    assert_eq!(count(&deployment, "firing", "QueueStuck", "q1"), 1);

    set_queue(&feed, "q1", 0.0, 0.0);
    wait_for_notification(&deployment, "resolved", "QueueStuck", "q1");
    wait_for_notification(&deployment, "resolved", "QueueBacklog", "q1");
    assert_eq!(count(&deployment, "firing", "QueueStuck", "q1"), 1);
    assert_eq!(count(&deployment, "resolved", "QueueStuck", "q1"), 1);
    assert_eq!(count(&deployment, "firing", "QueueBacklog", "q1"), 1);
    assert_eq!(count(&deployment, "resolved", "QueueBacklog", "q1"), 1);
}

#[test]
fn two_alert_instances_in_one_group_never_page_twice() {
    let deployment = Deployment::new("alert-pair");
    deployment.push_rules(&rules_dir(&deployment));
    let [first_port, second_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let hosts = ["q1", "q2", "q3", "q4", "q5", "q6"];
    let first_config = deployment.alert_config("alert-a", first_port, ROUTE);
    let _first = deployment.start_stage("alert", &first_config, first_port);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));
    let idle: &[(&str, f64)] = &[("queue.depth", 0.0), ("queue.backlog", 0.0)];
    let all_idle: Vec<_> = hosts.iter().map(|host| (*host, QUEUE, idle)).collect();
    feed.set_all(&all_idle);
    for host in hosts {
        set_queue(&feed, host, 10.0, 0.0);
    }
    for host in hosts {
        wait_for_notification(&deployment, "firing", "QueueStuck", host);
    }

    // A second instance joins: partitions move to it with their firing alerts.
    let second_config = deployment.alert_config("alert-b", second_port, ROUTE);
    let _second = deployment.start_stage("alert", &second_config, second_port);
    wait_until(
        "the second instance to own partitions",
        Duration::from_secs(120),
        || (metric_value(second_port, "vigil_alert_partitions_owned", "") > 0.0).then_some(()),
    );
    for host in hosts {
        set_queue(&feed, host, 0.0, 0.0);
    }
    for host in hosts {
        wait_for_notification(&deployment, "resolved", "QueueStuck", host);
    }
    for host in hosts {
        assert_eq!(
            count(&deployment, "firing", "QueueStuck", host),
            1,
            "{host}"
        );
        assert_eq!(
            count(&deployment, "resolved", "QueueStuck", host),
            1,
            "{host}"
        );
    }
}
