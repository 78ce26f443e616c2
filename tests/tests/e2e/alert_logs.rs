//! Log rules on real servers: log batches produced to the logs topic as agents
//! send them, the real alert stage evaluating `frequency`, `spike`, `new_value`
//! and `flatline` rules from etcd, and a webhook receiving what fires. In each
//! case a line arrives late (its event time before that of lines already sent,
//! within the allowed lateness) and the alert fires only because it counts at
//! its own event time.

use serde_json::json;
use std::time::{Duration, SystemTime};
use vigil_tests::alert_feed::{
    Line, LogProducer, parse_time, rules_folder, unix_nanos, wait_for_alert, wait_for_count,
};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::wait_until;

const LOG_RULES: &str = r#"groups:
  - name: logs
    interval: 1s
    rules:
      - alert: PaymentErrors
        logs: {dataset: e2e.payments, match: 'message =~ "ERROR"'}
        type: frequency
        threshold: {count: 3, window: 10s}
        group_by: [host.name]
        labels: {severity: ticket}
        annotations:
          summary: "{{ $labels.host }}: {{ $value }} payment errors within 10s"
      - alert: NewSudoUser
        logs: {dataset: e2e.secure, match: 'message =~ "sudo:"'}
        type: new_value
        new_value: {field: user.name, lookback: 1h, window: 10s, learn: 2s}
        group_by: [host.name]
        labels: {severity: info}
        annotations:
          summary: "{{ $labels.user.name }} used sudo on {{ $labels.host }} for the first time"
      - alert: LoginFailureSpike
        logs: {dataset: e2e.auth, match: 'message =~ "login failed"'}
        type: spike
        spike: {window: 5s, baseline: 10s, ratio: 3, min_count: 4}
        group_by: [host.name]
        labels: {severity: ticket}
        annotations:
          summary: "{{ $labels.host }}: login failures at {{ $value | humanize }}x the rate before"
      - alert: HeartbeatMissing
        logs: {dataset: e2e.cron, match: 'message =~ "heartbeat"'}
        type: flatline
        threshold: {window: 4s}
        group_by: [host.name]
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.host }}: no heartbeat for 4s"
"#;

/// How far behind the newest line a line may be and still be on time for the
/// evaluation clock; the late lines here are 2 s behind.
const ALLOWED_LATENESS: &str = "3s";

fn seconds(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}

/// The alert stage evaluating [`LOG_RULES`] and producing to its logs topic.
struct LogRun {
    deployment: Deployment,
    port: u16,
    logs: LogProducer,
    _alert: vigil_tests::ChildProcess,
}

impl LogRun {
    fn start() -> LogRun {
        let deployment = Deployment::new("alert-logs");
        deployment.push_rules(&rules_folder(
            &deployment,
            "rules",
            &[("logs.yaml", LOG_RULES)],
        ));
        let [port] = free_tcp_ports(1)[..] else {
            unreachable!()
        };
        let settings = format!(
            "  allowed_lateness: {ALLOWED_LATENESS}\n  receivers:\n    - {{type: webhook, name: hook, url: '{}'}}\n\
             \x20 route: {{receiver: hook, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}\n",
            deployment.webhook.url()
        );
        let config = deployment.alert_config_with("alert", port, &settings);
        let alert = deployment.start_stage("alert", &config, port);
        // Lines sent before the stage owns the logs topic would all reach it
        // late; these tests decide which lines are late.
        wait_until(
            "the stage to own partitions",
            Duration::from_secs(120),
            || (metric_value(port, "vigil_alert_partitions_owned", "") > 0.0).then_some(()),
        );
        LogRun {
            logs: LogProducer::new(deployment.topic("logs.raw")),
            deployment,
            port,
            _alert: alert,
        }
    }

    /// Sends a line no rule matches on `host`'s partition and waits until the
    /// stage took it: everything sent before was evaluated.
    fn settle(&mut self, host: &str) {
        self.logs.send(
            host,
            "e2e.noise",
            &[Line::at(SystemTime::now(), "GET /health 200")],
        );
        let sent = self.logs.sent as f64;
        wait_until(
            "the stage to take every batch",
            Duration::from_secs(60),
            || {
                let consumed =
                    metric_value(self.port, "vigil_alert_messages_consumed_total", "logs.raw");
                (consumed >= sent).then_some(())
            },
        );
    }

    fn firing_events(&self) -> f64 {
        metric_value(self.port, "vigil_alert_events_total", "firing")
    }
}

#[test]
fn log_rules_fire_on_lines_that_arrive_late_within_the_allowed_lateness() {
    let mut run = LogRun::start();
    let started = SystemTime::now();

    // frequency: 3 ERROR lines within 10 s; the third arrives last but
    // happened first.
    let t0 = SystemTime::now();
    run.logs.send(
        "pay-1",
        "e2e.payments",
        &[Line::at(t0 - seconds(1.0), "ERROR card declined order=1")],
    );
    run.logs.send(
        "pay-1",
        "e2e.payments",
        &[Line::at(t0, "ERROR card declined order=2")],
    );
    run.settle("pay-1");
    assert_eq!(run.firing_events(), 0.0, "two lines are not three");
    run.logs.send(
        "pay-1",
        "e2e.payments",
        &[Line::at(t0 - seconds(2.0), "ERROR card declined order=0")],
    );
    let payment = wait_for_alert(
        &run.deployment.webhook,
        "firing",
        &[("alertname", "PaymentErrors")],
    );
    assert_eq!(
        payment["labels"],
        json!({"alertname": "PaymentErrors", "host": "pay-1", "severity": "ticket"})
    );
    assert_eq!(
        payment["annotations"],
        json!({"summary": "pay-1: 3 payment errors within 10s"})
    );

    // new_value: alice and bob are learned in the first 2 s; dave only shows
    // up in a late line, after alice's.
    let learned = started - seconds(30.0);
    run.logs.send(
        "db-7",
        "e2e.secure",
        &[
            Line::at(learned, "sudo: alice : COMMAND=/bin/ls").with_field("user.name", "alice"),
            Line::at(learned + seconds(1.0), "sudo: bob : COMMAND=/bin/df")
                .with_field("user.name", "bob"),
        ],
    );
    let t1 = SystemTime::now();
    run.logs.send(
        "db-7",
        "e2e.secure",
        &[Line::at(t1, "sudo: alice : COMMAND=/bin/ps").with_field("user.name", "alice")],
    );
    run.settle("db-7");
    assert_eq!(run.firing_events(), 1.0, "alice and bob are known");
    run.logs.send(
        "db-7",
        "e2e.secure",
        &[
            Line::at(t1 - seconds(2.0), "sudo: dave : COMMAND=/bin/bash")
                .with_field("user.name", "dave"),
        ],
    );
    let sudo = wait_for_alert(
        &run.deployment.webhook,
        "firing",
        &[("alertname", "NewSudoUser")],
    );
    assert_eq!(
        sudo["labels"],
        json!({"alertname": "NewSudoUser", "host": "db-7", "severity": "info", "user.name": "dave"})
    );
    assert_eq!(
        sudo["annotations"],
        json!({"summary": "dave used sudo on db-7 for the first time"})
    );

    // spike: the rule compares the last 5 s with the 10 s before, so it needs
    // 15 s of watching first (the evaluation clock runs the allowed lateness
    // behind, and started about when the stage did).
    wait_until("15 s of logs watched", Duration::from_secs(60), || {
        (SystemTime::now() >= started + seconds(16.0)).then_some(())
    });
    let t2 = SystemTime::now();
    // Two failures in the 10 s before the window: 0.2 a second.
    run.logs.send(
        "sso-1",
        "e2e.auth",
        &[
            Line::at(t2 - seconds(13.0), "login failed user=carol"),
            Line::at(t2 - seconds(9.0), "login failed user=carol"),
        ],
    );
    // Three in the window: three times the rate, but fewer than `min_count`.
    run.logs.send(
        "sso-1",
        "e2e.auth",
        &[
            Line::at(t2 - seconds(2.0), "login failed user=erin"),
            Line::at(t2 - seconds(1.0), "login failed user=erin"),
            Line::at(t2, "login failed user=erin"),
        ],
    );
    run.settle("sso-1");
    assert_eq!(run.firing_events(), 2.0, "three lines are below min_count");
    run.logs.send(
        "sso-1",
        "e2e.auth",
        &[Line::at(t2 - seconds(3.0), "login failed user=erin")],
    );
    let spike = wait_for_alert(
        &run.deployment.webhook,
        "firing",
        &[("alertname", "LoginFailureSpike")],
    );
    assert_eq!(
        spike["labels"],
        json!({"alertname": "LoginFailureSpike", "host": "sso-1", "severity": "ticket"})
    );
    assert_eq!(
        spike["annotations"],
        json!({"summary": "sso-1: login failures at 4x the rate before"})
    );

    // flatline: cron-2 is only known from a late heartbeat, 2 s before
    // cron-1's; each host is missed once 4 s passed after its last heartbeat.
    let t3 = SystemTime::now();
    run.logs
        .send("cron-1", "e2e.cron", &[Line::at(t3, "CRON heartbeat")]);
    run.settle("cron-1");
    run.logs.send(
        "cron-2",
        "e2e.cron",
        &[Line::at(t3 - seconds(2.0), "CRON heartbeat")],
    );
    let cron_2 = wait_for_alert(&run.deployment.webhook, "firing", &[("host", "cron-2")]);
    let cron_1 = wait_for_alert(&run.deployment.webhook, "firing", &[("host", "cron-1")]);
    assert_eq!(
        cron_2["labels"],
        json!({"alertname": "HeartbeatMissing", "host": "cron-2", "severity": "warning"})
    );
    assert_eq!(
        cron_2["annotations"],
        json!({"summary": "cron-2: no heartbeat for 4s"})
    );
    // Evaluated on whole seconds: the first tick 4 s after each heartbeat's
    // own time. Counted at its arrival instead, cron-2's would have fired
    // with cron-1's.
    let second = 1_000_000_000;
    let cron_2_fired = parse_time(&cron_2["startsAt"]) - unix_nanos(t3);
    assert!(
        (2 * second..3 * second).contains(&cron_2_fired),
        "cron-2 fired {cron_2_fired} ns after cron-1's heartbeat"
    );
    let cron_1_fired = parse_time(&cron_1["startsAt"]) - unix_nanos(t3);
    assert!(
        (4 * second..5 * second).contains(&cron_1_fired),
        "cron-1 fired {cron_1_fired} ns after its heartbeat"
    );
    wait_for_count(run.port, "vigil_alert_events_total", "firing", 5.0);
    assert_eq!(run.firing_events(), 5.0);
}
