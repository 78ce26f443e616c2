//! Rule changes reaching a running alert stage through real etcd: a change
//! pushed with `rules push` keeps the `for` timer of a pending alert, and an
//! invalid rule set is refused by `rules push` and, written into etcd past it,
//! rejected by the stage, which says why and keeps evaluating its last good set.

use std::time::{Duration, SystemTime};
use vigil_runtime::etcd::{EtcdClient, EtcdSettings};
use vigil_tests::alert_feed::{
    MetricFeed, alerts_with, parse_time, rules_folder, unix_nanos, wait_for_alert, wait_for_count,
};
use vigil_tests::deployment::{Deployment, metric_value, path_arg};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{TestServers, wait_until};

/// Notifies the deployment's webhook of every alert on its own, at once.
const ROUTE: &str =
    "{receiver: test, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}";

/// A disk rule with a `for` long enough to change the rule while it is pending.
fn filling_rules(condition: &str, summary: &str) -> String {
    format!(
        r#"groups:
  - name: storage
    interval: 1s
    rules:
      - alert: DiskFilling
        metric: disk.used_percent
        condition: {condition}
        for: 12s
        labels: {{severity: ticket}}
        annotations:
          summary: "{summary}"
"#
    )
}

#[test]
fn a_rule_pushed_while_its_alert_is_pending_keeps_the_for_timer() {
    let deployment = Deployment::new("alert-reload-pending");
    let first = filling_rules("value > 90", "{{ $labels.host }} is filling up");
    deployment.push_rules(&rules_folder(
        &deployment,
        "rules",
        &[("storage.yaml", first.as_str())],
    ));
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.alert_config("alert", port, ROUTE);
    let _alert = deployment.start_stage("alert", &config, port);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));

    let full_from = feed.set("db-1", &[], &[("disk.used_percent", 95.0)]);
    // Pending, and for a good part of its 12 s: the change comes mid-way.
    wait_until(
        "DiskFilling pending for a while",
        Duration::from_secs(60),
        || {
            let pending = metric_value(port, "vigil_alert_events_total", "pending") >= 1.0;
            let waited = SystemTime::now() >= full_from + Duration::from_secs(5);
            (pending && waited).then_some(())
        },
    );
    let changed = filling_rules("value > 80", "{{ $labels.host }}: {{ $value }}% used");
    let pushed_at = SystemTime::now();
    deployment.push_rules(&rules_folder(
        &deployment,
        "rules",
        &[("storage.yaml", changed.as_str())],
    ));
    wait_for_count(port, "vigil_alert_rule_reloads_total", "success", 2.0);
    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "firing"),
        0.0,
        "the change came after the alert fired; nothing was tested"
    );

    let fired = wait_for_alert(
        &deployment.webhook,
        "firing",
        &[("alertname", "DiskFilling")],
    );
    assert_eq!(
        fired["annotations"]["summary"], "db-1: 95% used",
        "the new rule fired"
    );
    // It fired `for` after its condition first held (the ticks are whole
    // seconds, so exactly 12 s after the pending alert's start), and that start
    // was well before the change: a timer started over by the reload would
    // have started after `pushed_at`.
    let active_at = parse_time(&fired["startsAt"]) - 12_000_000_000;
    assert!(active_at >= unix_nanos(full_from) - 1_000_000_000);
    assert!(
        active_at < unix_nanos(pushed_at) - 2_000_000_000,
        "fired at {}: its timer started over at the reload at {pushed_at:?}",
        fired["startsAt"]
    );
    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "pending"),
        1.0
    );
    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "firing"),
        1.0
    );
}

const GOOD_RULES: &str = r#"groups:
  - name: storage
    interval: 1s
    rules:
      - alert: DiskFull
        metric: disk.used_percent
        condition: value > 90
        for: 1s
        labels: {severity: page}
"#;

/// Raises the threshold of the good rule past the readings and adds a rule with
/// an invalid `for`: applied in part, it would resolve what fires.
const INVALID_RULES: &str = r#"groups:
  - name: storage
    interval: 1s
    rules:
      - alert: DiskFull
        metric: disk.used_percent
        condition: value > 99
        for: 1s
        labels: {severity: page}
      - alert: DiskFilling
        metric: disk.used_percent
        condition: value > 80
        for: two seconds
"#;

/// The error both the CLI and the stage give for [`INVALID_RULES`].
const INVALID_RULES_ERROR: &str =
    "storage.yaml:13:14: rule `DiskFilling`: `for`: invalid duration `two seconds`";

/// Runs `work` on a runtime of its own, for the etcd client.
fn with_etcd<T>(work: impl AsyncFnOnce(&EtcdClient) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let endpoint = TestServers::get().etcd_endpoint();
        let client = EtcdSettings::new(endpoint, "/vigil")
            .connect()
            .await
            .expect("connect to etcd");
        work(&client).await
    })
}

fn etcd_value(key: &str) -> String {
    with_etcd(async |client| {
        let value = client.get(key).await.expect("etcd get");
        String::from_utf8(value.expect("the key exists")).expect("UTF-8")
    })
}

#[test]
fn an_invalid_rule_set_is_refused_by_push_and_rejected_by_the_stage_which_keeps_the_last_good_set()
{
    let deployment = Deployment::new("alert-invalid-rules");
    deployment.push_rules(&rules_folder(
        &deployment,
        "rules",
        &[("storage.yaml", GOOD_RULES)],
    ));
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.alert_config("alert", port, ROUTE);
    let alert = deployment.start_stage("alert", &config, port);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));
    feed.set("db-1", &[], &[("disk.used_percent", 95.0)]);
    wait_for_alert(&deployment.webhook, "firing", &[("host", "db-1")]);

    // `rules push` refuses the set and says why; etcd keeps the good one.
    let invalid = rules_folder(&deployment, "invalid", &[("storage.yaml", INVALID_RULES)]);
    let output = deployment.aggregator_cli(&["rules", "push", path_arg(&invalid)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with(INVALID_RULES_ERROR)),
        "{stderr}"
    );
    assert!(
        lines.contains(&"nothing pushed: fix the errors above first"),
        "{stderr}"
    );
    let key = format!("{}/rules/storage.yaml", deployment.etcd_prefix);
    assert_eq!(etcd_value(&key), GOOD_RULES);

    // Written straight into etcd, the stage gets it and rejects it.
    with_etcd(async |client| {
        client
            .put(key.as_str(), INVALID_RULES, None)
            .await
            .expect("etcd put");
    });
    wait_for_count(port, "vigil_alert_rule_reloads_total", "failure", 1.0);
    let log = std::fs::read_to_string(alert.log_path()).unwrap();
    let invalid_rule = log
        .lines()
        .find(|line| line.contains(INVALID_RULES_ERROR))
        .unwrap_or_else(|| panic!("no log line names the error:\n{log}"));
    assert!(invalid_rule.contains("ERROR"), "{invalid_rule}");
    assert!(invalid_rule.contains("invalid rule"), "{invalid_rule}");
    assert!(
        log.lines().any(|line| line.contains("ERROR")
            && line.contains("new rule set rejected; the last good rule set stays in force")),
        "{log}"
    );
    assert_eq!(metric_value(port, "vigil_alert_rules_loaded", ""), 1.0);

    // The last good set still evaluates: a new alert fires at its threshold,
    // and the one firing before stays firing.
    feed.set("db-2", &[], &[("disk.used_percent", 95.0)]);
    wait_for_alert(&deployment.webhook, "firing", &[("host", "db-2")]);
    assert!(alerts_with(&deployment.webhook, "resolved", &[]).is_empty());
    assert_eq!(
        metric_value(port, "vigil_alert_rule_reloads_total", "success"),
        1.0
    );
}
