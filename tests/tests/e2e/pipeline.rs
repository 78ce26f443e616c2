//! The whole data path on real servers: agent → Kafka → alert and index stages →
//! Elasticsearch and a webhook, with rules pushed to etcd and changed at runtime.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{elastic, wait_until};

const LINES: usize = 10_000;

/// The metric rule fires while `condition` holds for the test switch's uptime.
fn rules(metric_condition: &str) -> String {
    format!(
        r#"groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: SwitchUp
        metric: system.uptime.ticks
        condition: {metric_condition}
        for: 2s
        labels: {{severity: page}}
        annotations:
          summary: "{{{{ .labels.host }}}} has been up for {{{{ .value }}}} ticks"
      - alert: AppErrors
        logs: {{dataset: e2e.app, match: 'message =~ "ERROR job [0-9]+ failed"'}}
        type: frequency
        threshold: {{count: 5, window: 10s}}
        group_by: [host.name]
        labels: {{severity: ticket}}
"#
    )
}

fn line(number: usize) -> String {
    if number % 1000 == 999 {
        format!("line {number:05} ERROR job {number} failed")
    } else {
        format!(
            "line {number:05} ok request served path=/api/{} status=200",
            number % 17
        )
    }
}

/// Webhook notifications as (status, alertname, labels).
fn notifications(deployment: &Deployment) -> Vec<(String, String, Value)> {
    deployment
        .webhook
        .bodies()
        .iter()
        .flat_map(|body| body["alerts"].as_array().cloned().unwrap_or_default())
        .map(|alert| {
            (
                alert["status"].as_str().unwrap_or_default().to_owned(),
                alert["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                alert["labels"].clone(),
            )
        })
        .collect()
}

fn has_notification(deployment: &Deployment, status: &str, alert: &str) -> Option<Value> {
    notifications(deployment)
        .into_iter()
        .find(|(s, a, _)| s == status && a == alert)
        .map(|(_, _, labels)| labels)
}

#[test]
fn logs_metrics_and_alerts_flow_end_to_end_and_rules_reload_from_etcd() {
    let deployment = Deployment::new("e2e-pipeline");
    let [agent_port, alert_port, index_port] = free_tcp_ports(3)[..] else {
        unreachable!()
    };

    let rules_dir = deployment.work.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("e2e.yaml"), rules("value > 0")).unwrap();
    deployment.push_rules(&rules_dir);

    let aggregator_config = deployment.aggregator_config("aggregator", alert_port);
    let _alert = deployment.start_stage("alert", &aggregator_config, alert_port);
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);

    let log_path = deployment.work.join("app.log");
    std::fs::File::create(&log_path).unwrap();
    let agent_config = deployment.agent_config("agent", &log_path, agent_port, true);
    let _agent = deployment.start_agent(&agent_config, agent_port);

    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut expected = BTreeSet::new();
    for number in 0..LINES {
        let text = line(number);
        writeln!(log, "{text}").unwrap();
        expected.insert(text);
    }
    log.flush().unwrap();

    wait_until("all log lines indexed", Duration::from_secs(120), || {
        (elastic::count(&deployment.logs_index) >= LINES as u64).then_some(())
    });
    let hits = elastic::all_hits(&deployment.logs_index);
    let ids: BTreeSet<&str> = hits.iter().filter_map(|h| h["_id"].as_str()).collect();
    assert_eq!(hits.len(), LINES, "exactly one document per line");
    assert_eq!(ids.len(), LINES, "document ids are distinct");
    let messages: BTreeSet<String> = hits
        .iter()
        .filter_map(|h| h["_source"]["message"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(messages, expected, "every line's text arrives intact");
    let first = &hits[0]["_source"];
    assert_eq!(
        first["host"]["name"]
            .as_str()
            .or(first["host.name"].as_str()),
        Some("e2e-host")
    );

    let interface_sample = wait_until(
        "SNMP interface counters indexed",
        Duration::from_secs(60),
        || {
            elastic::all_hits(&deployment.metrics_index)
                .into_iter()
                .find(|hit| {
                    // The agent's host metrics carry `if.in.octets{ifName}` too;
                    // only the SNMP interface table has `ifIndex`.
                    let source = &hit["_source"];
                    source["labels"]["ifName"] == "lo"
                        && source["labels"]["ifIndex"].is_string()
                        && (source["metrics"]["if.in.octets"].is_u64())
                })
        },
    );
    assert_eq!(
        interface_sample["_source"]["host"]["name"]
            .as_str()
            .or(interface_sample["_source"]["host.name"].as_str()),
        Some("test-switch")
    );
    wait_until("SNMP sysUpTime indexed", Duration::from_secs(30), || {
        elastic::all_hits(&deployment.metrics_index)
            .into_iter()
            .find(|hit| hit["_source"]["metrics"]["system.uptime.ticks"].is_number())
    });

    let switch_labels = wait_until("metric rule fires", Duration::from_secs(60), || {
        has_notification(&deployment, "firing", "SwitchUp")
    });
    assert_eq!(switch_labels["host"], "test-switch");
    assert_eq!(switch_labels["severity"], "page");
    let error_labels = wait_until("log rule fires", Duration::from_secs(60), || {
        has_notification(&deployment, "firing", "AppErrors")
    });
    assert_eq!(error_labels["host"], "e2e-host");
    assert_eq!(error_labels["severity"], "ticket");

    // The log rule's window slides past the errors: it resolves on its own.
    wait_until("log rule resolves", Duration::from_secs(60), || {
        has_notification(&deployment, "resolved", "AppErrors")
    });

    // A rule change pushed to etcd applies without restart: the condition clears.
    assert!(has_notification(&deployment, "resolved", "SwitchUp").is_none());
    std::fs::write(rules_dir.join("e2e.yaml"), rules("value < 0")).unwrap();
    deployment.push_rules(&rules_dir);
    wait_until(
        "metric rule resolves after the rule change",
        Duration::from_secs(60),
        || has_notification(&deployment, "resolved", "SwitchUp"),
    );
    assert!(metric_value(alert_port, "vigil_alert_rule_reloads_total", "success") >= 2.0);
}
