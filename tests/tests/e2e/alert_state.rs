//! Alert state that survives: the alert stage is SIGKILLed while one alert fires
//! and another is pending, and a second instance joins the consumer group while
//! alerts fire. Real etcd for the rules, the real broker for data and the state
//! topic, and a webhook receiver checking what pagers would get.

use crate::deployment::{Deployment, metric_value};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_proto::Payload;
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricBatch, Resource, Sample, sample};
use vigil_runtime::bus::SCHEMA_HEADER;
use vigil_tests::TestServers;
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

/// Publishes `queue.depth` and `queue.backlog` of some hosts every 500 ms, stamped
/// with the time of sending, with values the test changes while it runs.
struct QueueFeed {
    values: Arc<Mutex<BTreeMap<String, (f64, f64)>>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl QueueFeed {
    fn start(topic: String, hosts: &[&str]) -> QueueFeed {
        let values = Arc::new(Mutex::new(
            hosts
                .iter()
                .map(|host| ((*host).to_owned(), (0.0, 0.0)))
                .collect::<BTreeMap<_, _>>(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .expect("create the queue producer");
        let thread = {
            let (values, stop, sent) = (values.clone(), stop.clone(), sent.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = unix_nanos(SystemTime::now());
                    let readings = values.lock().unwrap().clone();
                    for (host, (depth, backlog)) in readings {
                        let payload = queue_batch(&host, now, depth, backlog).to_payload();
                        let headers = OwnedHeaders::new().insert(Header {
                            key: SCHEMA_HEADER,
                            value: Some(<MetricBatch as Payload>::KIND),
                        });
                        producer
                            .send(
                                BaseRecord::to(&topic)
                                    .key(&host)
                                    .payload(&payload)
                                    .headers(headers),
                            )
                            .map_err(|(error, _)| error)
                            .expect("enqueue a reading");
                    }
                    producer
                        .flush(Duration::from_secs(30))
                        .expect("readings delivered");
                    sent.fetch_add(1, Ordering::Relaxed);
                    // Pacing the readings like an agent's interval, not waiting for anything.
                    thread::sleep(Duration::from_millis(500));
                }
            })
        };
        QueueFeed {
            values,
            stop,
            sent,
            thread: Some(thread),
        }
    }

    /// Sets the readings of `host` and returns once a round with them was sent,
    /// with the time before that round.
    fn set(&self, host: &str, depth: f64, backlog: f64) -> SystemTime {
        self.values
            .lock()
            .unwrap()
            .insert(host.to_owned(), (depth, backlog));
        let before = SystemTime::now();
        let round = self.sent.load(Ordering::Relaxed);
        wait_until("a round of readings", Duration::from_secs(30), || {
            (self.sent.load(Ordering::Relaxed) >= round + 2).then_some(())
        });
        before
    }
}

impl Drop for QueueFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn queue_batch(host: &str, time: i64, depth: f64, backlog: f64) -> MetricBatch {
    let gauge = |name: &str, value: f64| Sample {
        name: name.into(),
        time_unix_nano: time,
        value: Some(sample::Value::Gauge(value)),
        labels: vec![label("queue", "orders")],
        ..Sample::default()
    };
    MetricBatch {
        resource: Some(Resource {
            id: host.into(),
            host_name: host.into(),
            ..Resource::default()
        }),
        samples: vec![gauge("queue.depth", depth), gauge("queue.backlog", backlog)],
        producer: "vigil-e2e-queues".into(),
    }
}

fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// Every alert the webhook received, as (status, alertname, host, startsAt).
fn notified(deployment: &Deployment) -> Vec<(String, String, String, String)> {
    deployment
        .webhook
        .bodies()
        .iter()
        .flat_map(|body| body["alerts"].as_array().cloned().unwrap_or_default())
        .map(|alert: Value| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&alert["status"]),
                text(&alert["labels"]["alertname"]),
                text(&alert["labels"]["host"]),
                text(&alert["startsAt"]),
            )
        })
        .collect()
}

fn count(deployment: &Deployment, status: &str, alert: &str, host: &str) -> usize {
    notified(deployment)
        .iter()
        .filter(|(s, a, h, _)| s == status && a == alert && h == host)
        .count()
}

fn wait_for_notification(deployment: &Deployment, status: &str, alert: &str, host: &str) {
    wait_until(
        &format!("{status} {alert} of {host}"),
        Duration::from_secs(90),
        || (count(deployment, status, alert, host) > 0).then_some(()),
    );
}

fn rules_dir(deployment: &Deployment) -> std::path::PathBuf {
    let dir = deployment.work.join("rules");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("queues.yaml"), RULES).unwrap();
    dir
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
    let feed = QueueFeed::start(deployment.topic("metrics.raw"), &["q1"]);

    feed.set("q1", 10.0, 0.0);
    wait_for_notification(&deployment, "firing", "QueueStuck", "q1");
    let backlog_from = feed.set("q1", 10.0, 10.0);
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

    wait_for_notification(&deployment, "firing", "QueueBacklog", "q1");
    let backlog = notified(&deployment)
        .into_iter()
        .find(|(s, a, _, _)| s == "firing" && a == "QueueBacklog")
        .unwrap();
    let fired_at = chrono::DateTime::parse_from_rfc3339(&backlog.3)
        .expect("startsAt is RFC 3339")
        .timestamp_nanos_opt()
        .unwrap();
    // Its timer ran from before the kill: a timer started over would have
    // started after it and fired 30 s later.
    assert!(
        fired_at - 30_000_000_000 < unix_nanos(killed_at) - 3_000_000_000,
        "QueueBacklog fired at {}, its timer started over after the kill at {killed_at:?}",
        backlog.3
    );
    assert!(fired_at >= unix_nanos(backlog_from) + 29_000_000_000);
    assert_eq!(count(&deployment, "firing", "QueueStuck", "q1"), 1);

    feed.set("q1", 0.0, 0.0);
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
    let feed = QueueFeed::start(deployment.topic("metrics.raw"), &hosts);
    for host in hosts {
        feed.set(host, 10.0, 0.0);
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
        feed.set(host, 0.0, 0.0);
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
