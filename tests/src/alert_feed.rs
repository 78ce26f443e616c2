//! What the alert tests put into the alert stage and read out of it: metric
//! readings and log lines produced straight to a deployment's raw topics as
//! agents would send them, and the alerts the test receivers were notified of.

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
use vigil_proto::v1::{LogBatch, LogLine, LogSource, MetricBatch, Resource, Sample, sample};
use vigil_runtime::bus::SCHEMA_HEADER;

use crate::deployment::{Deployment, metric_value};
use crate::webhook::WebhookReceiver;
use crate::{TestServers, wait_until};

/// How long a notification may take: a `for` of a few seconds, the evaluation
/// tick, `group_wait` and the broker's latency under a loaded machine.
const NOTIFICATION_DEADLINE: Duration = Duration::from_secs(90);

/// Labels and gauge values of one host, as the feed sends them.
type HostReadings = (Vec<(String, String)>, Vec<(String, f64)>);

/// The labels of every sample of a host, as (name, value).
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Gauge readings, as (metric, value).
pub type Gauges<'a> = &'a [(&'a str, f64)];

/// Publishes gauges of some hosts every 500 ms, stamped with the time of
/// sending, with labels and values the test changes while it runs.
#[derive(Debug)]
pub struct MetricFeed {
    readings: Arc<Mutex<BTreeMap<String, HostReadings>>>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl MetricFeed {
    /// Starts publishing to `topic` of the shared broker; nothing is sent until a
    /// host is set.
    pub fn start(topic: String) -> MetricFeed {
        Self::start_on(&TestServers::get().kafka_bootstrap(), topic)
    }

    /// Like [`start`](Self::start), on the broker at `bootstrap`.
    pub fn start_on(bootstrap: &str, topic: String) -> MetricFeed {
        let readings = Arc::new(Mutex::new(BTreeMap::<String, HostReadings>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let producer = producer(bootstrap);
        let thread = {
            let (readings, stop, rounds) = (readings.clone(), stop.clone(), rounds.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = unix_nanos(SystemTime::now());
                    let current = readings.lock().unwrap().clone();
                    for (host, (labels, values)) in current {
                        let batch = metric_batch(&host, &labels, &values, now);
                        send(&producer, &topic, &host, &batch);
                    }
                    producer
                        .flush(Duration::from_secs(30))
                        .expect("readings delivered");
                    rounds.fetch_add(1, Ordering::Relaxed);
                    // Pacing the readings like an agent's interval, not waiting for anything.
                    thread::sleep(Duration::from_millis(500));
                }
            })
        };
        MetricFeed {
            readings,
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Sets the gauges of `host`, each sample labelled with `labels`, and returns
    /// once a round with them was sent, with the time before that round.
    pub fn set(&self, host: &str, labels: Labels<'_>, values: Gauges<'_>) -> SystemTime {
        self.set_all(&[(host, labels, values)])
    }

    /// Sets the gauges of several hosts at once, so that they go out in the same
    /// round with the same timestamp; returns like [`set`](Self::set).
    pub fn set_all(&self, hosts: &[(&str, Labels<'_>, Gauges<'_>)]) -> SystemTime {
        {
            let mut readings = self.readings.lock().unwrap();
            for (host, labels, values) in hosts {
                let owned = |pairs: &[(&str, &str)]| {
                    pairs
                        .iter()
                        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                        .collect()
                };
                let values = values
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), *value))
                    .collect();
                readings.insert((*host).to_owned(), (owned(labels), values));
            }
        }
        let before = SystemTime::now();
        // The round under way may have read the old values; the one after it has
        // the new ones.
        let round = self.rounds.load(Ordering::Relaxed);
        wait_until("a round of readings", Duration::from_secs(30), || {
            (self.rounds.load(Ordering::Relaxed) >= round + 2).then_some(())
        });
        before
    }
}

impl Drop for MetricFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn metric_batch(
    host: &str,
    labels: &[(String, String)],
    values: &[(String, f64)],
    time: i64,
) -> MetricBatch {
    MetricBatch {
        resource: Some(Resource {
            id: host.into(),
            host_name: host.into(),
            ..Resource::default()
        }),
        samples: values
            .iter()
            .map(|(name, value)| Sample {
                name: name.clone(),
                time_unix_nano: time,
                value: Some(sample::Value::Gauge(*value)),
                labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
                ..Sample::default()
            })
            .collect(),
        producer: "vigil-e2e-feed".into(),
    }
}

/// An idempotent producer on the broker at `bootstrap`.
fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("create a producer")
}

/// Enqueues `batch` on `topic` under `key`, with the schema header agents set.
fn send<P: Payload>(producer: &BaseProducer, topic: &str, key: &str, batch: &P) {
    let payload = batch.to_payload();
    let headers = OwnedHeaders::new().insert(Header {
        key: SCHEMA_HEADER,
        value: Some(P::KIND),
    });
    producer
        .send(
            BaseRecord::to(topic)
                .key(key)
                .payload(&payload)
                .headers(headers),
        )
        .map_err(|(error, _)| error)
        .expect("enqueue a batch");
}

/// One log line to produce: its event time, text and parsed fields.
#[derive(Debug, Clone)]
pub struct Line {
    time: SystemTime,
    text: String,
    fields: Vec<(String, String)>,
}

impl Line {
    /// A line with `text` that happened at `time`, without parsed fields.
    pub fn at(time: SystemTime, text: &str) -> Line {
        Line {
            time,
            text: text.to_owned(),
            fields: Vec::new(),
        }
    }

    /// The line with the parsed field `name` set to `value`.
    pub fn with_field(mut self, name: &str, value: &str) -> Line {
        self.fields.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// Produces log batches of hosts' files to a deployment's logs topic, one Kafka
/// message per batch, each acknowledged before the next is sent; byte offsets
/// continue per host and dataset, as an agent's would.
pub struct LogProducer {
    topic: String,
    producer: BaseProducer,
    offsets: BTreeMap<(String, String), u64>,
    /// Batches acknowledged so far.
    pub sent: usize,
}

impl std::fmt::Debug for LogProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogProducer")
            .field("topic", &self.topic)
            .field("offsets", &self.offsets)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl LogProducer {
    /// A producer to `topic` that has sent nothing yet.
    pub fn new(topic: String) -> LogProducer {
        LogProducer {
            topic,
            producer: producer(&TestServers::get().kafka_bootstrap()),
            offsets: BTreeMap::new(),
            sent: 0,
        }
    }

    /// Sends `lines` of `host`'s file of `dataset` as one batch.
    pub fn send(&mut self, host: &str, dataset: &str, lines: &[Line]) {
        let offset = self
            .offsets
            .entry((host.to_owned(), dataset.to_owned()))
            .or_default();
        let lines = lines
            .iter()
            .map(|line| {
                let length = line.text.len() as u64 + 1;
                let log_line = LogLine {
                    offset: *offset,
                    length,
                    message: line.text.as_bytes().to_vec(),
                    event_time_unix_nano: unix_nanos(line.time),
                    observed_time_unix_nano: unix_nanos(SystemTime::now()),
                    fields: line.fields.iter().map(|(n, v)| label(n, v)).collect(),
                    ..LogLine::default()
                };
                *offset += length;
                log_line
            })
            .collect();
        let batch = LogBatch {
            resource: Some(Resource {
                id: host.into(),
                host_name: host.into(),
                ..Resource::default()
            }),
            source: Some(LogSource {
                path: format!("/var/log/{dataset}.log"),
                source_id: format!("{host}:{dataset}"),
                dataset: dataset.into(),
                ..LogSource::default()
            }),
            lines,
        };
        send(&self.producer, &self.topic, host, &batch);
        self.producer
            .flush(Duration::from_secs(30))
            .expect("log batch delivered");
        self.sent += 1;
    }
}

/// `time` in nanoseconds since the Unix epoch.
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// An RFC 3339 time of a notification, in Unix nanoseconds.
pub fn parse_time(text: &Value) -> i64 {
    let text = text.as_str().unwrap_or_default();
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("`{text}` is not RFC 3339: {error}"))
        .timestamp_nanos_opt()
        .unwrap()
}

/// Every alert of every Alertmanager-format body `receiver` got, oldest first.
pub fn notified_alerts(receiver: &WebhookReceiver) -> Vec<Value> {
    receiver
        .bodies()
        .iter()
        .flat_map(|body| body["alerts"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The notified alerts with `status` whose labels include every pair of `labels`.
pub fn alerts_with(
    receiver: &WebhookReceiver,
    status: &str,
    labels: &[(&str, &str)],
) -> Vec<Value> {
    notified_alerts(receiver)
        .into_iter()
        .filter(|alert| {
            alert["status"] == status
                && labels
                    .iter()
                    .all(|(name, value)| alert["labels"][*name] == *value)
        })
        .collect()
}

/// Waits for a notified alert with `status` and `labels`, and returns the first.
pub fn wait_for_alert(receiver: &WebhookReceiver, status: &str, labels: &[(&str, &str)]) -> Value {
    wait_until(
        &format!("a {status} alert with {labels:?}"),
        NOTIFICATION_DEADLINE,
        || alerts_with(receiver, status, labels).into_iter().next(),
    )
}

/// Waits until the stage on `http_port` counted at least `at_least` of the
/// counter `name` with labels containing `label_fragment`.
pub fn wait_for_count(http_port: u16, name: &str, label_fragment: &str, at_least: f64) {
    wait_until(
        &format!("{name}{{{label_fragment}}} to reach {at_least}"),
        NOTIFICATION_DEADLINE,
        || (metric_value(http_port, name, label_fragment) >= at_least).then_some(()),
    );
}

/// Writes `files` (name, text) into the deployment's folder `name` and returns it.
pub fn rules_folder(
    deployment: &Deployment,
    name: &str,
    files: &[(&str, &str)],
) -> std::path::PathBuf {
    let dir = deployment.work.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}
