//! One Vigil deployment per test on the shared servers: its own topics, etcd
//! prefix, indices and webhook receiver, config files for the real binaries, and
//! helpers to start them and wait until they are ready.

use prost::Message as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use vigil_proto::v1::{LogBatch, LogLine, LogSource, Resource};

use crate::process::new_work_dir;
use crate::servers::KafkaBroker;
use crate::webhook::WebhookReceiver;
use crate::{ChildProcess, TestServers, unique_name, vigil_binary, wait_until};

/// Partitions of every topic a test creates.
const PARTITIONS: i32 = 3;

/// Consumer settings the compatible broker needs to rebalance quickly (it holds a
/// JoinGroup for about the rebalance timeout).
const CONSUMER_PROPERTIES: &str =
    "{session.timeout.ms: '6000', max.poll.interval.ms: '10000', heartbeat.interval.ms: '1000'}";

/// What one test's Vigil deployment is made of on the shared servers.
#[derive(Debug)]
pub struct Deployment {
    /// The unique name that starts its topics, consumer groups and indices.
    pub prefix: String,
    /// Where its rules and settings live in etcd.
    pub etcd_prefix: String,
    /// The index of its log documents.
    pub logs_index: String,
    /// The index of its metric documents.
    pub metrics_index: String,
    /// The index of its alert documents.
    pub alerts_index: String,
    /// Its own folder for config files and data.
    pub work: PathBuf,
    /// The receiver its alert stage notifies.
    pub webhook: WebhookReceiver,
    /// Bootstrap address of the broker the deployment's topics live on: the shared
    /// one, or a test's private broker that it restarts.
    kafka_bootstrap: String,
}

/// The topics of one deployment, after its prefix.
const TOPICS: [&str; 7] = [
    "metrics.raw",
    "metrics.derived",
    "logs.raw",
    "alerts.events",
    "alerts.state",
    "dlq.alert",
    "dlq.index",
];

/// The topics only the derive stage uses, after the deployment's prefix.
const DERIVE_TOPICS: [&str; 2] = ["metrics.partial", "dlq.derive"];

impl Deployment {
    /// Creates the topics of a new deployment named after `purpose`.
    pub fn new(purpose: &str) -> Deployment {
        let servers = TestServers::get();
        Self::on_broker(purpose, servers.kafka())
    }

    /// Like [`new`](Self::new), with the topics on `broker`, e.g. a private one
    /// that a fault test restarts without disturbing the other tests.
    pub fn on_broker(purpose: &str, broker: &KafkaBroker) -> Deployment {
        Self::with_topics(purpose, broker, &TOPICS, PARTITIONS)
    }

    /// Like [`new`](Self::new), with the derive stage's topics too and
    /// `partitions` partitions in every topic.
    pub fn with_derive(purpose: &str, partitions: i32) -> Deployment {
        let topics: Vec<&str> = TOPICS.iter().chain(&DERIVE_TOPICS).copied().collect();
        Self::with_topics(purpose, TestServers::get().kafka(), &topics, partitions)
    }

    fn with_topics(
        purpose: &str,
        broker: &KafkaBroker,
        topics: &[&str],
        partitions: i32,
    ) -> Deployment {
        let prefix = unique_name(purpose);
        for topic in topics {
            broker.create_topic(&format!("{prefix}.{topic}"), partitions);
        }
        Deployment {
            etcd_prefix: format!("/{prefix}"),
            logs_index: format!("{prefix}-logs"),
            metrics_index: format!("{prefix}-metrics"),
            alerts_index: format!("{prefix}-alerts"),
            work: new_work_dir(purpose),
            webhook: WebhookReceiver::start(),
            kafka_bootstrap: broker.bootstrap(),
            prefix,
        }
    }

    /// The full name of its topic `dataset_and_kind`, e.g. `metrics.raw`.
    pub fn topic(&self, dataset_and_kind: &str) -> String {
        format!("{}.{dataset_and_kind}", self.prefix)
    }

    fn kafka_section(&self) -> String {
        format!(
            "kafka:\n  brokers: '{}'\n  topic_prefix: '{}'\n  consumer_properties: {CONSUMER_PROPERTIES}\n",
            self.kafka_bootstrap, self.prefix
        )
    }

    /// Writes the aggregator config; `http_port` serves its `/metrics`.
    pub fn aggregator_config(&self, name: &str, http_port: u16) -> PathBuf {
        self.aggregator_config_for(name, http_port, &TestServers::get().elasticsearch_url())
    }

    /// Writes the aggregator config with the index stage writing to `elasticsearch`.
    pub fn aggregator_config_for(
        &self,
        name: &str,
        http_port: u16,
        elasticsearch: &str,
    ) -> PathBuf {
        let servers = TestServers::get();
        let text = format!(
            "{kafka}etcd:\n  endpoints: ['{etcd}']\n  prefix: '{etcd_prefix}'\nhttp:\n  listen: '127.0.0.1:{http_port}'\n\
             alert:\n  group: '{prefix}-alert'\n  tick: 500ms\n  allowed_lateness: 1s\n  receivers:\n    - {{type: webhook, name: test, url: '{webhook}'}}\n  route: {{receiver: test, group_wait: 0s, group_interval: 1s}}\n\
             index:\n  group: '{prefix}-index'\n  elasticsearch: {{url: '{es}'}}\n  indices: {{logs: '{logs}', metrics: '{metrics}', alerts: '{alerts}'}}\n",
            kafka = self.kafka_section(),
            etcd = servers.etcd_endpoint(),
            etcd_prefix = self.etcd_prefix,
            prefix = self.prefix,
            webhook = self.webhook.url(),
            es = elasticsearch,
            logs = self.logs_index,
            metrics = self.metrics_index,
            alerts = self.alerts_index,
        );
        self.write(name, &text)
    }

    /// Writes a config for the alert stage alone, notifying the test webhook
    /// through `route` (YAML of `alert.route`, receiver `test`).
    pub fn alert_config(&self, name: &str, http_port: u16, route: &str) -> PathBuf {
        let settings = format!(
            "  allowed_lateness: 1s\n  receivers:\n    - {{type: webhook, name: test, url: '{webhook}'}}\n  route: {route}\n",
            webhook = self.webhook.url(),
        );
        self.alert_config_with(name, http_port, &settings)
    }

    /// Writes a config for the alert stage alone with `settings`: YAML lines of
    /// the `alert` section, indented by two spaces, other than `group` and `tick`
    /// (`allowed_lateness`, `receivers`, `route`, `inhibit_rules`, ...).
    pub fn alert_config_with(&self, name: &str, http_port: u16, settings: &str) -> PathBuf {
        let text = format!(
            "{kafka}etcd:\n  endpoints: ['{etcd}']\n  prefix: '{etcd_prefix}'\nhttp:\n  listen: '127.0.0.1:{http_port}'\n\
             alert:\n  group: '{prefix}-alert'\n  tick: 500ms\n{settings}",
            kafka = self.kafka_section(),
            etcd = TestServers::get().etcd_endpoint(),
            etcd_prefix = self.etcd_prefix,
            prefix = self.prefix,
        );
        self.write(name, &text)
    }

    /// Writes a config for the derive stage with the built-in definitions only (its
    /// definitions folder is empty); `http_port` serves its `/metrics`.
    ///
    /// `name` is also its Kafka client id, which the broker puts at the start of
    /// the instance's member id: the range assignor hands out partitions in the
    /// order of member ids, so names decide which instance gets which partitions.
    pub fn derive_config(&self, name: &str, http_port: u16) -> PathBuf {
        let definitions = self.work.join(format!("{name}-definitions"));
        std::fs::create_dir_all(&definitions).expect("definitions folder created");
        let text = format!(
            "{kafka}  properties: {{client.id: '{name}'}}\nhttp:\n  listen: '127.0.0.1:{http_port}'\n\
             derive:\n  group: '{prefix}-derive'\n  definitions_dir: '{definitions}'\n",
            kafka = self.kafka_section(),
            prefix = self.prefix,
            definitions = definitions.display(),
        );
        self.write(name, &text)
    }

    /// Writes an agent config tailing `log` and, if asked, polling the test snmpd.
    pub fn agent_config(&self, name: &str, log: &Path, http_port: u16, snmp: bool) -> PathBuf {
        let snmp_section = if snmp { snmp_section() } else { String::new() };
        let text = format!(
            "resource: {{id: e2e-host, host_name: e2e-host}}\n{kafka}data_dir: '{data}'\nhttp:\n  listen: '127.0.0.1:{http_port}'\n\
             logs:\n  - {{path: '{log}', dataset: e2e.app}}\nhost_metrics: {{enabled: true, interval: 1s}}\n{snmp_section}",
            kafka = self.kafka_section(),
            data = self.work.join(format!("{name}-data")).display(),
            log = log.display(),
        );
        self.write(name, &text)
    }

    /// Writes an agent config that only polls the test snmpd (as `test-switch`,
    /// every 2 s): no logs, no host metrics.
    pub fn snmp_agent_config(&self, name: &str, http_port: u16) -> PathBuf {
        let text = format!(
            "resource: {{id: e2e-host, host_name: e2e-host}}\n{kafka}data_dir: '{data}'\nhttp:\n  listen: '127.0.0.1:{http_port}'\n\
             host_metrics: {{enabled: false}}\n{snmp}",
            kafka = self.kafka_section(),
            data = self.work.join(format!("{name}-data")).display(),
            snmp = snmp_section(),
        );
        self.write(name, &text)
    }

    /// Writes an agent config that only tails logs: one `logs` entry per item of
    /// `log_entries`, each the inside of a YAML flow mapping such as
    /// `path: '/dir/app-*.log*', read_from: beginning`; host metrics are off.
    pub fn logs_agent_config(&self, name: &str, log_entries: &[String], http_port: u16) -> PathBuf {
        let logs: String = log_entries
            .iter()
            .map(|entry| format!("  - {{{entry}}}\n"))
            .collect();
        let text = format!(
            "resource: {{id: e2e-host, host_name: e2e-host}}\n{kafka}data_dir: '{data}'\nhttp:\n  listen: '127.0.0.1:{http_port}'\n\
             logs:\n{logs}host_metrics: {{enabled: false}}\n",
            kafka = self.kafka_section(),
            data = self.work.join(format!("{name}-data")).display(),
        );
        self.write(name, &text)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work.join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("config file written");
        path
    }

    /// Starts `vigil-agent` and waits until its tailer took its positions.
    pub fn start_agent(&self, config: &Path, http_port: u16) -> ChildProcess {
        let mut command = Command::new(vigil_binary("vigil-agent"));
        command
            .arg("--config")
            .arg(config)
            .env("VIGIL_LOG", process_log_filter());
        let mut agent = ChildProcess::spawn("vigil-agent", command);
        wait_for_ready(&mut agent, http_port);
        agent
    }

    /// Starts `vigil-aggregator <stage>` and waits until it is ready.
    pub fn start_stage(&self, stage: &str, config: &Path, http_port: u16) -> ChildProcess {
        let mut command = Command::new(vigil_binary("vigil-aggregator"));
        command
            .arg(stage)
            .arg("--config")
            .arg(config)
            .env("VIGIL_LOG", process_log_filter());
        let mut process = ChildProcess::spawn(&format!("vigil-{stage}"), command);
        wait_for_ready(&mut process, http_port);
        process
    }

    /// Runs `vigil-aggregator rules push` of `dir` to this deployment's prefix.
    pub fn push_rules(&self, dir: &Path) {
        let output = self.aggregator_cli(&["rules", "push", path_arg(dir)]);
        assert!(
            output.status.success(),
            "rules push failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs `vigil-aggregator` with `args`, then the etcd endpoint and prefix of
    /// this deployment, and returns what it did.
    pub fn aggregator_cli(&self, args: &[&str]) -> Output {
        Command::new(vigil_binary("vigil-aggregator"))
            .args(args)
            .args(["--etcd-endpoint", &TestServers::get().etcd_endpoint()])
            .args(["--etcd-prefix", &self.etcd_prefix])
            .output()
            .expect("vigil-aggregator runs")
    }
}

/// A path as a command-line argument; the test directories are UTF-8.
pub fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The agent's SNMP section: the test snmpd as `test-switch`, v2c, every 2 s.
fn snmp_section() -> String {
    let servers = TestServers::get();
    format!(
        "snmp:\n  targets:\n    - {{name: test-switch, address: '{}', version: v2c, community: '{}', interval: 2s, timeout: 500ms, retries: 1, metric_sets: [system, if]}}\n",
        servers.snmp_address(),
        servers.snmp_community()
    )
}

/// Waits until `/ready` of a process answers 200, failing early if it exits.
fn wait_for_ready(process: &mut ChildProcess, http_port: u16) {
    let url = format!("http://127.0.0.1:{http_port}/ready");
    wait_until(
        &format!("{} to become ready", process.name()),
        Duration::from_secs(60),
        || {
            if let Some(status) = process.exit_status() {
                panic!(
                    "{} exited with {status}:\n{}",
                    process.name(),
                    process.log_tail()
                );
            }
            let ready = reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success());
            ready.then_some(())
        },
    );
}

/// The value of a counter or gauge in a process's `/metrics`, summed over labels
/// that contain `label_fragment`.
pub fn metric_value(http_port: u16, name: &str, label_fragment: &str) -> f64 {
    let text = reqwest::blocking::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label_fragment))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A valid one-line log batch, encoded, for tests that produce to Kafka directly.
pub fn log_batch_payload(text: &str, offset: u64) -> Vec<u8> {
    LogBatch {
        resource: Some(Resource {
            id: "dlq-host".into(),
            host_name: "dlq-host".into(),
            ..Resource::default()
        }),
        source: Some(LogSource {
            path: "/var/log/dlq.log".into(),
            source_id: "1:1".into(),
            dataset: "dlq.test".into(),
            ..LogSource::default()
        }),
        lines: vec![LogLine {
            offset,
            length: text.len() as u64 + 1,
            message: text.as_bytes().to_vec(),
            event_time_unix_nano: 1_700_000_000_000_000_000,
            observed_time_unix_nano: 1_700_000_000_000_000_000,
            ..LogLine::default()
        }],
    }
    .encode_to_vec()
}

/// The log filter of the started processes: `VIGIL_E2E_LOG` when set (e.g.
/// `info,vigil_aggregator=debug` to follow one failing test), `info` otherwise.
fn process_log_filter() -> String {
    std::env::var("VIGIL_E2E_LOG").unwrap_or_else(|_| "info".to_owned())
}
