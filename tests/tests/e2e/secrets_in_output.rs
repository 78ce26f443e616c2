//! Secrets stay out of every output. Each binary and CLI runs with known values
//! in every secret field, through the paths where a value is most likely to
//! slip into a message: the broker does not offer the SASL login, snmpd refuses
//! a wrong community and a wrong v3 password, Elasticsearch and Kibana are
//! unreachable, and every pager answers 500. Nothing it prints, logs or serves
//! on `/metrics` may hold any of the values.
//!
//! Real servers throughout (the broker, snmpd, etcd); the pagers are the test's
//! HTTP receiver, since no real PagerDuty or Slack fails on demand.

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use vigil_tests::alert_feed::{MetricFeed, rules_folder, wait_for_count};
use vigil_tests::binaries::{ChildProcess, vigil_binary};
use vigil_tests::deployment::{Deployment, log_batch_payload, metric_value, path_arg};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::servers::TestServers;
use vigil_tests::wait_until;

/// Every secret the tests hand out, by the field it goes into. Each is unique
/// enough that finding it in output can only mean it leaked.
const SASL_PASSWORD: &str = "sasl-S3CRET-41f7";
const SNMP_COMMUNITY: &str = "community-S3CRET-9b2e";
const SNMP_AUTH_PASSWORD: &str = "v3auth-S3CRET-77a1";
const SNMP_PRIV_PASSWORD: &str = "v3priv-S3CRET-2c80";
const ELASTICSEARCH_PASSWORD: &str = "es-password-S3CRET-5d13";
const ELASTICSEARCH_API_KEY: &str = "es-api-key-S3CRET-e6b0";
const KIBANA_PASSWORD: &str = "kibana-password-S3CRET-0a4c";
const PAGERDUTY_KEY: &str = "pagerduty-key-S3CRET-8f29";
/// Slack's and the webhook's URLs carry their token in the path and the query.
const SLACK_TOKEN: &str = "slack-token-S3CRET-3e71";
const WEBHOOK_TOKEN: &str = "webhook-token-S3CRET-c5d2";

const ALL_SECRETS: [&str; 10] = [
    SASL_PASSWORD,
    SNMP_COMMUNITY,
    SNMP_AUTH_PASSWORD,
    SNMP_PRIV_PASSWORD,
    ELASTICSEARCH_PASSWORD,
    ELASTICSEARCH_API_KEY,
    KIBANA_PASSWORD,
    PAGERDUTY_KEY,
    SLACK_TOKEN,
    WEBHOOK_TOKEN,
];

/// How long a failure path may take to be walked on a loaded machine.
const FAILURE_DEADLINE: Duration = Duration::from_secs(90);

/// Writes `value` to a file in `dir` and returns the YAML that references it.
fn secret_file(dir: &Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).expect("secret written");
    format!("{{file: '{}'}}", path.display())
}

/// Fails naming the secret and where it showed when `text` holds any.
fn assert_no_secret(what: &str, text: &str) {
    for secret in ALL_SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows the secret `{secret}`:\n{text}"
        );
    }
}

fn assert_no_secret_in_output(what: &str, output: &Output) {
    assert_no_secret(what, &String::from_utf8_lossy(&output.stdout));
    assert_no_secret(what, &String::from_utf8_lossy(&output.stderr));
}

fn metrics_text(port: u16) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .and_then(|response| response.text())
        .expect("/metrics answers")
}

/// Stops `process` the way an operator does and checks everything it wrote.
fn stop_and_check(what: &str, mut process: ChildProcess) {
    process.terminate();
    let log = std::fs::read_to_string(process.log_path()).expect("process log read");
    assert_no_secret(what, &log);
}

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(vigil_binary(binary))
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{binary} {args:?} could not run: {error}"))
}

fn spawn(name: &str, binary: &str, args: &[&str]) -> ChildProcess {
    let mut command = Command::new(vigil_binary(binary));
    command.args(args);
    ChildProcess::spawn(name, command)
}

#[test]
fn the_agent_shows_no_sasl_password_community_or_v3_key() {
    let deployment = Deployment::new("secrets-agent");
    let servers = TestServers::get();
    let dir = &deployment.work;
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "resource: {{id: secrets-host, host_name: secrets-host}}\n\
             kafka:\n  brokers: '{kafka}'\n  topic_prefix: '{prefix}'\n  \
             sasl: {{mechanism: PLAIN, username: vigil, password: {sasl}}}\n\
             data_dir: '{data}'\nhttp:\n  listen: '127.0.0.1:{port}'\nhost_metrics: {{enabled: false}}\n\
             snmp:\n  credentials:\n    \
             wrong-community: {{version: v2c, community: {community}}}\n    \
             wrong-v3: {{version: v3, v3: {{user: vigiltest, security_level: auth_priv, \
             auth_protocol: sha, auth_password: {auth}, priv_protocol: aes, priv_password: {privacy}}}}}\n  \
             targets:\n    \
             - {{name: v2c-device, address: '{snmp}', credential: wrong-community, interval: 1s, timeout: 300ms, retries: 0, metric_sets: [system]}}\n    \
             - {{name: v3-device, address: '{snmp}', credential: wrong-v3, interval: 1s, timeout: 300ms, retries: 0, metric_sets: [system]}}\n",
            kafka = servers.kafka_bootstrap(),
            prefix = deployment.prefix,
            sasl = secret_file(dir, "sasl", SASL_PASSWORD),
            data = dir.join("agent-data").display(),
            community = secret_file(dir, "community", SNMP_COMMUNITY),
            auth = secret_file(dir, "auth", SNMP_AUTH_PASSWORD),
            privacy = secret_file(dir, "priv", SNMP_PRIV_PASSWORD),
            snmp = servers.snmp_address(),
        ),
    )
    .unwrap();

    let checked = run(
        "vigil-agent",
        &["--config", path_arg(&config), "--check-config"],
    );
    assert!(checked.status.success(), "{checked:?}");
    assert_no_secret_in_output("vigil-agent --check-config", &checked);

    let agent = spawn(
        "secrets-agent",
        "vigil-agent",
        &["--config", path_arg(&config)],
    );
    for device in ["v2c-device", "v3-device"] {
        wait_until(
            &format!("a failed poll of {device}"),
            FAILURE_DEADLINE,
            || {
                let failed = format!("target=\"{device}\",outcome=\"failure\"");
                (metric_value(port, "vigil_agent_snmp_polls", &failed) >= 2.0).then_some(())
            },
        );
    }
    assert_no_secret("the agent's /metrics", &metrics_text(port));
    stop_and_check("the agent's log", agent);
}

#[test]
fn the_alert_stage_shows_no_pager_key_or_receiver_url() {
    let deployment = Deployment::new("secrets-alert");
    let dir = &deployment.work;
    let receiver = &deployment.webhook;
    receiver.respond_with(500);
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    deployment.push_rules(&rules_folder(
        &deployment,
        "rules",
        &[(
            "storage.yaml",
            "groups:\n  - name: storage\n    interval: 1s\n    rules:\n      \
             - alert: DiskFull\n        metric: disk.used_percent\n        condition: value > 90\n",
        )],
    ));
    let slack_url = format!("{}/services/{SLACK_TOKEN}", receiver.url());
    let webhook_url = format!("{}?token={WEBHOOK_TOKEN}", receiver.url());
    let settings = format!(
        "  allowed_lateness: 1s\n  receivers:\n    \
         - {{type: pagerduty, name: pager, routing_key: {key}, url: '{url}'}}\n    \
         - {{type: slack, name: chat, url: {slack}}}\n    \
         - {{type: webhook, name: hook, url: {webhook}}}\n  \
         route: {{receiver: pager, group_by: [alertname], group_wait: 0s, group_interval: 1s, \
         routes: [{{receiver: chat, continue: true}}, {{receiver: hook, continue: true}}, {{receiver: pager}}]}}\n",
        key = secret_file(dir, "pagerduty", PAGERDUTY_KEY),
        url = receiver.url(),
        slack = secret_file(dir, "slack", &slack_url),
        webhook = secret_file(dir, "webhook", &webhook_url),
    );
    let config = deployment.alert_config_with("alert", port, &settings);

    let checked = run(
        "vigil-aggregator",
        &["alert", "--config", path_arg(&config), "--check-config"],
    );
    assert!(checked.status.success(), "{checked:?}");
    assert_no_secret_in_output("vigil-aggregator alert --check-config", &checked);

    let alert = deployment.start_stage("alert", &config, port);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));
    feed.set(
        "db-1",
        &[("mountpoint", "/srv")],
        &[("disk.used_percent", 95.0)],
    );
    for pager in ["pager", "chat", "hook"] {
        wait_for_count(
            port,
            "vigil_alert_notification_retries_total",
            &format!("receiver=\"{pager}\""),
            2.0,
        );
    }
    assert!(
        receiver
            .requests()
            .iter()
            .any(|request| request.body.to_string().contains(PAGERDUTY_KEY)),
        "the routing key did reach PagerDuty's endpoint"
    );
    assert_no_secret("the alert stage's /metrics", &metrics_text(port));
    stop_and_check("the alert stage's log", alert);
}

#[test]
fn the_index_stage_and_setup_show_no_elasticsearch_or_kibana_credential() {
    let deployment = Deployment::new("secrets-index");
    let dir = &deployment.work;
    let [port, unreachable_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    // Nothing listens there: every request fails to connect.
    let nowhere = format!("http://127.0.0.1:{unreachable_port}");
    let write_config = |name: &str, credentials: String| -> PathBuf {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "kafka:\n  brokers: '{kafka}'\n  topic_prefix: '{prefix}'\n\
                 http:\n  listen: '127.0.0.1:{port}'\n\
                 index:\n  group: '{prefix}-index'\n  elasticsearch: {{url: '{nowhere}', {credentials}}}\n  \
                 kibana: {{url: '{nowhere}', username: kibana, password: {kibana}}}\n  \
                 indices: {{logs: '{logs}', metrics: '{metrics}', alerts: '{alerts}'}}\n",
                kafka = TestServers::get().kafka_bootstrap(),
                prefix = deployment.prefix,
                kibana = secret_file(dir, "kibana", KIBANA_PASSWORD),
                logs = deployment.logs_index,
                metrics = deployment.metrics_index,
                alerts = deployment.alerts_index,
            ),
        )
        .unwrap();
        path
    };
    let basic = write_config(
        "index-basic",
        format!(
            "username: vigil, password: {}",
            secret_file(dir, "es-password", ELASTICSEARCH_PASSWORD)
        ),
    );
    let api_key = write_config(
        "index-api-key",
        format!(
            "api_key: {}",
            secret_file(dir, "es-api-key", ELASTICSEARCH_API_KEY)
        ),
    );

    for config in [&basic, &api_key] {
        let checked = run(
            "vigil-aggregator",
            &["index", "--config", path_arg(config), "--check-config"],
        );
        assert!(checked.status.success(), "{checked:?}");
        assert_no_secret_in_output("vigil-aggregator index --check-config", &checked);
        let setup = run("vigil-aggregator", &["setup", "--config", path_arg(config)]);
        assert!(
            !setup.status.success(),
            "setup cannot reach anything: {setup:?}"
        );
        assert_no_secret_in_output("vigil-aggregator setup", &setup);
    }

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .create()
        .unwrap();
    let topic = deployment.topic("logs.raw");
    for (round, config) in [&basic, &api_key].into_iter().enumerate() {
        let index = spawn(
            "secrets-index",
            "vigil-aggregator",
            &["index", "--config", path_arg(config)],
        );
        let payload = log_batch_payload("a line Elasticsearch never sees", round as u64 * 100);
        producer
            .send(BaseRecord::to(&topic).key("secrets-host").payload(&payload))
            .map_err(|(error, _)| error)
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        // Each failed attempt counts as pushback from an unreachable cluster.
        wait_until("two failed bulk requests", FAILURE_DEADLINE, || {
            let unreachable = "cause=\"unreachable\"";
            (metric_value(port, "vigil_index_bulk_concurrency_decreases", unreachable) >= 2.0)
                .then_some(())
        });
        assert_no_secret("the index stage's /metrics", &metrics_text(port));
        stop_and_check("the index stage's log", index);
    }
}
