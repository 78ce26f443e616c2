//! Kubernetes container logs from the file to the page: the agent follows a
//! kubelet-style `/var/log/pods` tree (under the test's directory) with the
//! `kubernetes` preset, CRI lines and Docker json-file lines alike; a rule on
//! `log.level == "error"` grouped by namespace and pod fires for the one pod
//! whose errors pass its threshold, labelled from the log's path; and a rotation
//! as the kubelet makes it (rename to `0.log.<time>`, a new `0.log`) loses and
//! repeats no line in the index.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vigil_tests::alert_feed::{alerts_with, rules_folder, wait_for_alert};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{elastic, wait_while_progressing};

const RULES: &str = r#"groups:
  - name: pods
    interval: 1s
    rules:
      - alert: PodErrors
        logs: {dataset: e2e.pods, match: 'log.level == "error"'}
        type: frequency
        threshold: {count: 3, window: 10m}
        group_by: [kubernetes.namespace, kubernetes.pod.name]
        labels: {severity: ticket}
        annotations:
          summary: "{{ $labels.kubernetes.pod.name }}: {{ $value }} errors"
"#;

const CHECKOUT: &str = "shop_checkout-7d9f8c-x2x4q_5c0e7a4e-1f2b-4c3d-9e8f-0a1b2c3d4e5f/server";
const COREDNS: &str =
    "kube-system_coredns-5d78c9869d-abcde_0f0e0d0c-0000-4000-8000-000000000001/coredns";

/// Appends `lines` (each with its newline) to `path`, creating it.
fn append(path: &Path, lines: &[String]) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    for line in lines {
        writeln!(file, "{line}").expect("line written");
    }
}

/// The time `seconds` before now as the runtimes write it, RFC 3339 in UTC with
/// nanoseconds: the rule counts lines of the last ten minutes.
fn stamp(seconds: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A CRI line of a JSON application log, `seconds` old.
fn cri(seconds: i64, stream: &str, level: &str, text: &str) -> String {
    format!(
        r#"{} {stream} F {{"level":"{level}","msg":"{text}"}}"#,
        stamp(seconds)
    )
}

/// The messages in the logs index, by pod name found in the document.
fn indexed_messages(deployment: &Deployment) -> BTreeMap<String, Vec<String>> {
    let mut by_pod: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for hit in elastic::all_hits(&deployment.logs_index) {
        let source = &hit["_source"];
        let text = source.to_string();
        let pod = ["checkout-7d9f8c-x2x4q", "coredns-5d78c9869d-abcde"]
            .into_iter()
            .find(|pod| text.contains(pod))
            .unwrap_or_else(|| panic!("a document names no pod: {source}"));
        let message = source["message"].as_str().unwrap_or_default().to_owned();
        by_pod.entry(pod.to_owned()).or_default().push(message);
    }
    by_pod
}

#[test]
fn errors_of_one_pod_page_with_its_namespace_and_name_and_rotation_loses_nothing() {
    let deployment = Deployment::new("kubernetes-logs");
    deployment.push_rules(&rules_folder(&deployment, "rules", &[("pods.yaml", RULES)]));
    let [agent_port, alert_port, index_port] = free_tcp_ports(3)[..] else {
        unreachable!()
    };
    let pods = deployment.work.join("var/log/pods");
    let checkout: PathBuf = pods.join(CHECKOUT);
    let coredns: PathBuf = pods.join(COREDNS);
    for dir in [&checkout, &coredns] {
        fs::create_dir_all(dir).expect("pod log folder made");
    }
    let alert_config = deployment.alert_config(
        "alert",
        alert_port,
        "{receiver: test, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}",
    );
    let _alert = deployment.start_stage("alert", &alert_config, alert_port);
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);
    let entry = format!(
        "path: '{}/*/*/*.log', dataset: e2e.pods, read_from: beginning, \
         parsers: [{{preset: kubernetes}}, {{json: {{message_field: msg}}}}]",
        pods.display()
    );
    let agent_config = deployment.logs_agent_config("agent", &[entry], agent_port);
    let _agent = deployment.start_agent(&agent_config, agent_port);

    // Checkout: three errors, one of them split by the runtime (CRI `P` parts),
    // and Docker json-file lines beside CRI ones. CoreDNS: one error only.
    append(
        &checkout.join("0.log"),
        &[
            cri(50, "stdout", "info", "order 1 placed"),
            cri(40, "stderr", "error", "payment 1 failed"),
            format!(
                r#"{{"log":"{{\"level\":\"error\",\"msg\":\"payment 2 failed\"}}\n","stream":"stderr","time":"{}"}}"#,
                stamp(30)
            ),
            format!(r#"{} stderr P {{"level":"error","#, stamp(20)),
            format!(r#"{} stderr F "msg":"payment 3 failed"}}"#, stamp(20)),
        ],
    );
    append(
        &coredns.join("0.log"),
        &[
            cri(50, "stdout", "info", "serving on 53"),
            cri(40, "stderr", "error", "upstream timeout"),
        ],
    );

    let page = wait_for_alert(
        &deployment.webhook,
        "firing",
        &[
            ("alertname", "PodErrors"),
            ("kubernetes.namespace", "shop"),
            ("kubernetes.pod.name", "checkout-7d9f8c-x2x4q"),
        ],
    );
    eprintln!("kubernetes_logs: paged: {page}");
    assert_eq!(
        alerts_with(
            &deployment.webhook,
            "firing",
            &[("kubernetes.pod.name", "coredns-5d78c9869d-abcde")]
        )
        .len(),
        0,
        "one error of coredns pages nobody"
    );

    // The kubelet rotates: the file is renamed, a new one takes its place.
    fs::rename(
        checkout.join("0.log"),
        checkout.join("0.log.20261207-100005"),
    )
    .expect("log rotated");
    append(
        &checkout.join("0.log"),
        &[
            cri(1, "stdout", "info", "order 2 placed"),
            cri(0, "stdout", "info", "order 3 placed"),
        ],
    );

    let expected_documents = 8;
    wait_while_progressing(
        "every line indexed",
        expected_documents,
        Duration::from_secs(120),
        || {
            elastic::refresh(&deployment.logs_index);
            elastic::count(&deployment.logs_index)
        },
    );
    let by_pod = indexed_messages(&deployment);
    let mut checkout_messages = by_pod["checkout-7d9f8c-x2x4q"].clone();
    checkout_messages.sort();
    assert_eq!(
        checkout_messages,
        [
            "order 1 placed",
            "order 2 placed",
            "order 3 placed",
            "payment 1 failed",
            "payment 2 failed",
            "payment 3 failed",
        ],
        "each checkout line once, the split one joined"
    );
    assert_eq!(by_pod["coredns-5d78c9869d-abcde"].len(), 2);
    assert_eq!(
        metric_value(agent_port, "vigil_agent_log_parse_failures_total", ""),
        0.0,
        "every line fitted the preset and the JSON step"
    );
}
