//! Bad input gets a clear error and loses nothing: garbage configs and rules are
//! refused with messages naming the file, line and field, and a message on a topic
//! that is not a Vigil batch goes to the dead-letter topic while the data around it
//! still flows.

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::process::{Command, Output};
use std::time::Duration;
use vigil_tests::deployment::{Deployment, log_batch_payload, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::process::new_work_dir;
use vigil_tests::{TestServers, elastic, vigil_binary, wait_until};

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(vigil_binary(binary))
        .args(args)
        .output()
        .expect("binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `text` as a config file, runs `binary` with `args` and the file's path
/// last, and asserts it fails with `file:location` in its message.
fn assert_config_refused(binary: &str, args: &[&str], text: &str, location: &str) {
    let path = new_work_dir("bad-config").join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let mut all_args = args.to_vec();
    all_args.push(path.to_str().unwrap());
    let output = run(binary, &all_args);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("{}:{location}", path.display())),
        "{message}"
    );
}

#[test]
fn agent_config_with_an_unknown_key_names_the_key_and_file() {
    assert_config_refused(
        "vigil-agent",
        &["--check-config", "--config"],
        "kafka: {brokers: '127.0.0.1:9092'}\nlogs: []\ncolour: red\n",
        "3:1: unknown field `colour`",
    );
}

#[test]
fn aggregator_config_with_an_unknown_key_names_the_key_and_file() {
    assert_config_refused(
        "vigil-aggregator",
        &["alert", "--check-config", "--config"],
        "kafka:\n  brokers: 'k:9092'\n  bokers: x\n",
        "3:3: unknown field `bokers`",
    );
}

#[test]
fn agent_config_with_a_value_out_of_range_names_its_line_and_field() {
    assert_config_refused(
        "vigil-agent",
        &["--check-config", "--config"],
        "kafka: {brokers: '127.0.0.1:9092'}\nlog_batch:\n  max_lines: 0\n",
        "3:14: `log_batch.max_lines` must be at least 1",
    );
}

#[test]
fn aggregator_config_with_a_value_out_of_range_names_its_line_and_field() {
    assert_config_refused(
        "vigil-aggregator",
        &["index", "--check-config", "--config"],
        "kafka: {brokers: 'k:9092'}\nindex:\n  elasticsearch: {url: 'http://127.0.0.1:9200'}\n  max_documents: 0\n",
        "4:18: `index.max_documents` must be positive",
    );
}

/// Runs `<kind> check` (`rules` or `definitions`) on a folder holding `files`,
/// asserts that it failed, and returns what it printed on standard error.
fn check_errors(kind: &str, purpose: &str, files: &[(&str, &str)]) -> String {
    let dir = new_work_dir(purpose);
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let output = run("vigil-aggregator", &[kind, "check", dir.to_str().unwrap()]);
    assert!(!output.status.success());
    stderr(&output)
}

fn rules_check_errors(purpose: &str, files: &[(&str, &str)]) -> String {
    check_errors("rules", purpose, files)
}

#[test]
fn malformed_derive_definitions_name_the_file_line_and_field() {
    let message = check_errors(
        "definitions",
        "bad-definitions",
        &[
            (
                "fleet.yaml",
                "definitions:\n  - name: site.traffic\n    function: median\n    input: if.in.bits_per_second\n  - name: site.load\n    function: avg\n    input: host.load.1m\n    windows: [1m, five minutes]\n",
            ),
            (
                "typo.yaml",
                "definitions:\n  - name: x\n    function: max\n    imput: host.load.1m\n",
            ),
        ],
    );
    let lines: Vec<&str> = message.lines().collect();
    assert!(
        lines.contains(&"fleet.yaml:3:15: definition `site.traffic`: `function`: unknown function `median`; expected one of rate, ratio, share, avg, min, max, sum, count, p50, p95, p99"),
        "{message}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "fleet.yaml:8:19: definition `site.load`: `windows[1]`: invalid duration `five minutes`"
        )),
        "{message}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("typo.yaml:4:5: unknown field `imput`")),
        "{message}"
    );
    assert!(message.contains(": 3 error(s)"), "{message}");
}

#[test]
fn rule_file_with_a_yaml_error_is_reported_with_file_line_and_column() {
    let message = rules_check_errors(
        "bad-rule-yaml",
        &[
            ("good.yaml", "groups: []\n"),
            (
                "broken.yaml",
                "groups:\n  - name: g\n    rules:\n      - alert: A\n        metric: m\n        condition: value > 1\n      labels: [\n",
            ),
        ],
    );
    let located = message.lines().any(|line| {
        let mut parts = line.split(':');
        parts.next() == Some("broken.yaml")
            && parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
            && parts.next().is_some_and(|c| c.parse::<u32>().is_ok())
    });
    assert!(located, "error names broken.yaml:line:column: {message}");
    assert!(!message.contains("good.yaml"), "{message}");
}

#[test]
fn rule_with_an_invalid_regex_names_the_rule_and_the_regex() {
    let message = rules_check_errors(
        "bad-rule-regex",
        &[(
            "logs.yaml",
            "groups:\n  - name: g\n    rules:\n      - alert: OomBurst\n        logs: {match: 'message =~ \"java.lang.(OutOfMemory\"'}\n        type: frequency\n        threshold: {count: 5, window: 1m}\n",
        )],
    );
    assert!(message.contains("logs.yaml:"), "{message}");
    assert!(message.contains("OomBurst"), "{message}");
    assert!(message.contains("java.lang.(OutOfMemory"), "{message}");
}

#[test]
fn a_non_protobuf_message_is_dead_lettered_and_processing_continues() {
    let deployment = Deployment::new("e2e-dlq");
    let [alert_port, index_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let rules_dir = deployment.work.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("none.yaml"), "groups: []\n").unwrap();
    deployment.push_rules(&rules_dir);
    let alert_config = deployment.aggregator_config("alert", alert_port);
    let _alert = deployment.start_stage("alert", &alert_config, alert_port);
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .create()
        .unwrap();
    let topic = deployment.topic("logs.raw");
    let garbage = b"<html>this is not a protobuf batch</html>";
    let before = log_batch_payload("before the garbage", 0);
    let after = log_batch_payload("after the garbage", 100);
    for payload in [before.as_slice(), garbage, after.as_slice()] {
        producer
            .send(BaseRecord::to(&topic).key("dlq-host").payload(payload))
            .map_err(|(error, _)| error)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    wait_until("both valid lines indexed", Duration::from_secs(60), || {
        (elastic::count(&deployment.logs_index) == 2).then_some(())
    });
    wait_until(
        "the dead letter counted by both stages",
        Duration::from_secs(30),
        || {
            (metric_value(index_port, "vigil_index_dead_lettered_total", "") >= 1.0
                && metric_value(alert_port, "vigil_alert_dead_lettered_total", "") >= 1.0)
                .then_some(())
        },
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .set("group.id", format!("{}-dlq-reader", deployment.prefix))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "10000")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&deployment.topic("dlq.index")])
        .unwrap();
    let (payload, reason) = wait_until(
        "the garbage on the index dead-letter topic",
        Duration::from_secs(60),
        || {
            let message = consumer.poll(Duration::from_millis(500))?.ok()?;
            let reason = message
                .headers()?
                .iter()
                .find(|h| h.key == "vigil-reason")?
                .value?
                .to_vec();
            Some((
                message.payload()?.to_vec(),
                String::from_utf8_lossy(&reason).into_owned(),
            ))
        },
    );
    assert_eq!(payload, garbage);
    assert!(reason.contains("vigil.v1.LogBatch"), "{reason}");
}
