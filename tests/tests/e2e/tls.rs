//! Every network hop over TLS with client certificates, with a CA each test makes:
//! the alert stage reads its rules from an etcd that lets in only clients with a
//! certificate of that CA; the index stage writes through nginx, which terminates
//! TLS in front of the Elasticsearch-API server and asks for the same; and log
//! lines go from the agent through Kafka to Elasticsearch with both Kafka clients
//! behind another nginx in front of the broker (tansu has no TLS listener). A stage
//! without its client certificate, or trusting another CA, says so in words a
//! person can act on.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use vigil_tests::alert_feed::{Line, LogProducer, MetricFeed, wait_for_alert};
use vigil_tests::deployment::Deployment;
use vigil_tests::ports::{free_tcp_port, free_tcp_ports};
use vigil_tests::readiness::wait_for_readiness;
use vigil_tests::servers::{KafkaBroker, TlsEtcdServer, TlsTerminator};
use vigil_tests::tls::TestCa;
use vigil_tests::{ChildProcess, TestServers, elastic, vigil_binary, wait_until};

/// How long a stage may take to say why it cannot reach a server.
const ERROR_DEADLINE: Duration = Duration::from_secs(60);

/// One rule that fires at once on a full disk.
const DISK_FULL_RULES: &str = "groups:
  - name: tls
    interval: 1s
    rules:
      - alert: DiskFullOverTls
        metric: disk.used_percent
        condition: value > 90
        labels: {severity: ticket}
";

/// Notifies the deployment's webhook of every alert on its own, at once.
const ROUTE: &str =
    "{receiver: test, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}";

/// Replaces `from` with `to` in the file `config`; panics if `from` is not in it.
fn rewrite(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).expect("config file read");
    assert!(
        text.contains(from),
        "`{from}` not in {}:\n{text}",
        config.display()
    );
    std::fs::write(config, text.replace(from, to)).expect("config file written");
}

/// Points the etcd section of the alert config at `etcd`, with the TLS files `tls`
/// (a YAML flow mapping).
fn alert_config_on(
    deployment: &Deployment,
    http_port: u16,
    etcd: &TlsEtcdServer,
    tls: &str,
) -> PathBuf {
    let config = deployment.alert_config("alert", http_port, ROUTE);
    rewrite(
        &config,
        &format!("endpoints: ['{}']", TestServers::get().etcd_endpoint()),
        &format!("endpoints: ['{}']\n  tls: {tls}", etcd.endpoint()),
    );
    config
}

/// The YAML settings `ca_file` (`ca_cert`), `cert_file` and `key_file` (`ca`'s
/// client certificate), comma-separated, for a flow mapping.
fn tls_fields(ca: &TestCa, ca_cert: &Path) -> String {
    format!(
        "ca_file: '{}', cert_file: '{}', key_file: '{}'",
        ca_cert.display(),
        ca.client_cert.display(),
        ca.client_key.display()
    )
}

/// Points the index section of `config` at `terminator`, trusting `ca_cert` and
/// showing `ca`'s client certificate.
fn index_through(config: &Path, terminator: &TlsTerminator, ca: &TestCa, ca_cert: &Path) {
    rewrite(
        config,
        &format!("url: '{}'", terminator.url()),
        &format!("url: '{}', {}", terminator.url(), tls_fields(ca, ca_cert)),
    );
}

/// Starts `vigil-aggregator <stage>` without waiting for it to become ready.
fn spawn_stage(stage: &str, config: &Path) -> ChildProcess {
    let mut command = Command::new(vigil_binary("vigil-aggregator"));
    command.arg(stage).arg("--config").arg(config);
    ChildProcess::spawn(&format!("vigil-{stage}"), command)
}

/// Waits until the log of `process` holds `expected`, and returns the line.
fn wait_for_log_line(process: &ChildProcess, expected: &str) -> String {
    wait_until(
        &format!("`{expected}` in the log of {}", process.name()),
        ERROR_DEADLINE,
        || {
            let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
            log.lines()
                .find(|line| line.contains(expected))
                .map(str::to_owned)
        },
    )
}

#[test]
fn the_alert_stage_reads_its_rules_from_etcd_over_tls_with_a_client_certificate() {
    let ca = TestCa::new("etcd");
    let etcd = TlsEtcdServer::start(&ca);
    let deployment = Deployment::new("tls-etcd");
    etcd.put(
        &format!("{}/rules/disk.yaml", deployment.etcd_prefix),
        DISK_FULL_RULES,
    );
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = alert_config_on(
        &deployment,
        port,
        &etcd,
        &format!("{{{}}}", tls_fields(&ca, &ca.ca_cert)),
    );
    let _alert = deployment.start_stage("alert", &config, port);

    let feed = MetricFeed::start(deployment.topic("metrics.raw"));
    feed.set("db-1", &[], &[("disk.used_percent", 97.0)]);
    wait_for_alert(
        &deployment.webhook,
        "firing",
        &[("alertname", "DiskFullOverTls")],
    );
}

#[test]
fn an_alert_stage_without_a_client_certificate_is_refused_by_etcd_and_says_so() {
    let ca = TestCa::new("etcd-refused");
    let etcd = TlsEtcdServer::start(&ca);
    let deployment = Deployment::new("tls-etcd-refused");
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let tls = format!("{{ca_file: '{}'}}", ca.ca_cert.display());
    let config = alert_config_on(&deployment, port, &etcd, &tls);
    let alert = spawn_stage("alert", &config);

    // etcd ends the handshake with an alert when no client certificate comes.
    let line = wait_for_log_line(&alert, "received fatal alert: BadCertificate");
    assert!(
        line.contains("etcd watch interrupted; keeping the last configuration")
            && line.contains(&format!("etcd {}: ", etcd.endpoint())),
        "the refusal does not say which etcd or what it meant: {line}"
    );
}

#[test]
fn the_index_stage_writes_through_tls_with_a_client_certificate() {
    let ca = TestCa::new("elasticsearch");
    let servers = TestServers::get();
    let terminator = TlsTerminator::https_to(&servers.elasticsearch_url(), &ca);
    let deployment = Deployment::new("tls-index");
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.aggregator_config_for("index", port, &terminator.url());
    index_through(&config, &terminator, &ca, &ca.ca_cert);
    let _index = deployment.start_stage("index", &config, port);

    let mut logs = LogProducer::new(deployment.topic("logs.raw"));
    let lines = [
        Line::at(SystemTime::now(), "sent over TLS, one"),
        Line::at(SystemTime::now(), "sent over TLS, two"),
    ];
    logs.send("web-1", "tls.app", &lines);
    wait_until(
        "both lines indexed through the TLS terminator",
        Duration::from_secs(60),
        || (elastic::count(&deployment.logs_index) == 2).then_some(()),
    );
    let access_log = std::fs::read_to_string(terminator.access_log()).expect("nginx access log");
    assert!(
        access_log.contains("POST /_bulk"),
        "the documents did not go through nginx:\n{access_log}"
    );
}

#[test]
fn an_index_stage_trusting_another_ca_says_the_certificate_is_not_trusted() {
    let ca = TestCa::new("elasticsearch-refused");
    let servers = TestServers::get();
    let terminator = TlsTerminator::https_to(&servers.elasticsearch_url(), &ca);
    let deployment = Deployment::new("tls-index-refused");
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.aggregator_config_for("index", port, &terminator.url());
    index_through(&config, &terminator, &ca, &ca.other_ca_cert);
    let _index = spawn_stage("index", &config);

    let body = wait_for_readiness(
        port,
        503,
        "invalid peer certificate: UnknownIssuer",
        ERROR_DEADLINE,
    );
    assert!(
        body.contains(&format!(
            "elasticsearch down: {}/ does not answer: ",
            terminator.url()
        )),
        "/ready does not say which Elasticsearch is refused: {body}"
    );
}

#[test]
fn log_lines_reach_elasticsearch_with_tls_on_every_hop() {
    let ca = TestCa::new("pipeline");
    let kafka_tls_port = free_tcp_port();
    let broker = KafkaBroker::start_behind(kafka_tls_port);
    let broker_port = broker
        .bootstrap()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the bootstrap address ends in a port");
    let _kafka_tls = TlsTerminator::tls_to(kafka_tls_port, broker_port, &ca);
    let elasticsearch_tls = TlsTerminator::https_to(&TestServers::get().elasticsearch_url(), &ca);
    let deployment = Deployment::on_broker("tls-pipeline", &broker);
    let kafka_over_tls = (
        format!("brokers: '{}'", broker.bootstrap()),
        format!(
            "brokers: '127.0.0.1:{kafka_tls_port}'\n  tls: {{{}}}",
            tls_fields(&ca, &ca.ca_cert)
        ),
    );

    let [index_port, agent_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let index_config =
        deployment.aggregator_config_for("index", index_port, &elasticsearch_tls.url());
    rewrite(&index_config, &kafka_over_tls.0, &kafka_over_tls.1);
    index_through(&index_config, &elasticsearch_tls, &ca, &ca.ca_cert);
    let _index = deployment.start_stage("index", &index_config, index_port);

    let log = deployment.work.join("app.log");
    std::fs::write(&log, "").expect("log file created");
    let agent_config = deployment.logs_agent_config(
        "agent",
        &[format!(
            "path: '{}', dataset: tls.app, read_from: beginning",
            log.display()
        )],
        agent_port,
    );
    rewrite(&agent_config, &kafka_over_tls.0, &kafka_over_tls.1);
    let _agent = deployment.start_agent(&agent_config, agent_port);

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("log file opened");
    for n in 1..=5 {
        writeln!(file, "encrypted line {n}").expect("log line written");
    }
    wait_until(
        "5 log lines indexed after two hops over TLS",
        Duration::from_secs(90),
        || (elastic::count(&deployment.logs_index) == 5).then_some(()),
    );
}
