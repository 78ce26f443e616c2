//! The dashboards fit the documents: every field a saved object of
//! `dashboards/kibana` uses is mapped by the templates and present in the documents
//! a real pipeline writes. Agent (host metrics, SNMP of the test snmpd, a log
//! file), derive, alert and index stages run against the real servers with the
//! templates installed by `setup`; the test machine runs no containers, so the
//! container metrics the agent would read from cgroups are produced by the test,
//! in the agent's names, for the derive stage to turn into rates and percentages.

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;
use vigil_aggregator::index::setup::Dashboards;
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricBatch, MetricKind, Resource, ResourceKind, Sample, sample};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::index_setup::{dashboards_dir, install_templates};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{TestServers, elastic, wait_until};

const RULES: &str = r#"groups:
  - name: e2e-dashboards
    interval: 1s
    rules:
      - alert: HostUp
        metric: host.uptime.seconds
        condition: value > 0
        labels: {severity: info}
        annotations:
          summary: "{{ .labels.host }} is up"
"#;

/// Every field of `source`, as dotted paths; the keys of `labels` and `metrics`
/// keep their dots, as the templates map them.
fn fields_of(prefix: &str, source: &Value, fields: &mut BTreeSet<String>) {
    match source {
        Value::Object(object) => {
            for (key, value) in object {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                fields_of(&path, value, fields);
            }
        }
        _ => {
            fields.insert(prefix.to_owned());
        }
    }
}

/// Three container readings 10 s apart, in the agent's names and labels.
fn container_batches() -> Vec<Vec<u8>> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let labels = || {
        vec![
            label("container.id", "4f3c2b1a0e9d"),
            label("container.runtime", "docker"),
            label("cgroup.path", "/system.slice/docker-4f3c2b1a0e9d.scope"),
        ]
    };
    (0..3i64)
        .map(|poll| {
            let time = now - (2 - poll) * 10_000_000_000;
            let sample = |name: &str, set: &str, value: sample::Value| Sample {
                name: name.into(),
                labels: labels(),
                kind: match value {
                    sample::Value::Counter(_) | sample::Value::FloatCounter(_) => {
                        MetricKind::Counter
                    }
                    sample::Value::Gauge(_) => MetricKind::Gauge,
                }
                .into(),
                time_unix_nano: time,
                value: Some(value),
                metric_set: set.into(),
                ..Sample::default()
            };
            let tick = poll as u64;
            MetricBatch {
                resource: Some(Resource {
                    id: "e2e-containers".into(),
                    kind: ResourceKind::Host.into(),
                    host_name: "e2e-containers".into(),
                    ..Resource::default()
                }),
                samples: vec![
                    sample(
                        "container.cpu.usage.microseconds",
                        "container.cpu",
                        sample::Value::Counter(1_000_000 + tick * 2_500_000),
                    ),
                    sample(
                        "container.cpu.periods",
                        "container.cpu",
                        sample::Value::Counter(100 + tick * 100),
                    ),
                    sample(
                        "container.cpu.throttled.periods",
                        "container.cpu",
                        sample::Value::Counter(10 + tick * 5),
                    ),
                    sample(
                        "container.cpu.available_cores",
                        "container.cpu",
                        sample::Value::Gauge(2.0),
                    ),
                    sample(
                        "container.memory.working_set_bytes",
                        "container.memory",
                        sample::Value::Gauge(200_000_000.0),
                    ),
                    sample(
                        "container.memory.limit_bytes",
                        "container.memory",
                        sample::Value::Gauge(1_000_000_000.0),
                    ),
                    sample(
                        "container.pids.current",
                        "container.pids",
                        sample::Value::Gauge(12.0),
                    ),
                ],
                producer: "e2e".into(),
            }
            .encode_to_vec()
        })
        .collect()
}

#[test]
fn every_field_the_dashboards_use_is_mapped_and_written_by_the_pipeline() {
    let dashboards = Dashboards::from_dir(&dashboards_dir()).unwrap();
    let used = dashboards.saved_object_fields();
    let mapped = dashboards.mapped_fields();
    let unmapped: Vec<&String> = used.iter().filter(|f| !mapped.contains_key(*f)).collect();
    assert!(
        unmapped.is_empty(),
        "used by dashboards, not in the templates: {unmapped:?}"
    );

    let deployment = Deployment::with_derive("e2e-index-kinds", 3);
    let [agent_port, derive_port, alert_port, index_port] = free_tcp_ports(4)[..] else {
        unreachable!()
    };
    let rules_dir = deployment.work.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("e2e.yaml"), RULES).unwrap();
    deployment.push_rules(&rules_dir);

    let index_config = deployment.aggregator_config("index", index_port);
    install_templates(&index_config);
    let _index = deployment.start_stage("index", &index_config, index_port);
    let derive_config = deployment.derive_config("derive", derive_port);
    let _derive = deployment.start_stage("derive", &derive_config, derive_port);
    let alert_config = deployment.aggregator_config("alert", alert_port);
    let _alert = deployment.start_stage("alert", &alert_config, alert_port);

    let log_path = deployment.work.join("app.log");
    std::fs::File::create(&log_path).unwrap();
    let agent_config = deployment.agent_config("agent", &log_path, agent_port, true);
    let _agent = deployment.start_agent(&agent_config, agent_port);
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    for number in 0..20 {
        writeln!(log, "request {number} served").unwrap();
        writeln!(log, "ERROR request {number} failed").unwrap();
    }
    log.flush().unwrap();

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .create()
        .unwrap();
    for payload in container_batches() {
        producer
            .send(
                BaseRecord::to(&deployment.topic("metrics.raw"))
                    .key("e2e-containers")
                    .payload(&payload),
            )
            .map_err(|(error, _)| error)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let mut written = BTreeSet::new();
    let mut reported = Vec::new();
    let missing = wait_until(
        "every field the dashboards use in the indexed documents",
        Duration::from_secs(180),
        || {
            for index in [
                &deployment.logs_index,
                &deployment.metrics_index,
                &deployment.alerts_index,
            ] {
                for hit in elastic::all_hits(index) {
                    fields_of("", &hit["_source"], &mut written);
                }
            }
            let missing: Vec<String> = used
                .iter()
                .filter(|f| !written.contains(*f))
                .cloned()
                .collect();
            if missing != reported {
                eprintln!("index_dashboards: fields not written yet: {missing:?}");
                reported.clone_from(&missing);
            }
            missing.is_empty().then_some(missing)
        },
    );
    assert!(missing.is_empty());
    assert_eq!(
        metric_value(index_port, "vigil_index_dead_lettered_total", ""),
        0.0,
        "the templates took every document the pipeline wrote"
    );
}
