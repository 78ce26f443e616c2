//! The derive stage on real servers: interface counters polled from snmpd become
//! bit rates in Elasticsearch while traffic flows over loopback, and when one of
//! two instances sharing the raw partitions is killed, whoever takes over its
//! partitions replays what it needs and carries on without a spiked or a missing
//! rate.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vigil_proto::Payload;
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricBatch, MetricKind, Resource, Sample, ValueType, sample};
use vigil_runtime::bus::SCHEMA_HEADER;
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::wait::poll_until;
use vigil_tests::{TestServers, elastic, wait_until};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// What the loopback traffic generator aims to send, in bytes per second.
const TRAFFIC_BYTES_PER_SECOND: u64 = 4_000_000;

/// How far above the real traffic a derived rate may be: the agent stamps a reading
/// when it asks, while snmpd serves interface counters from a cache it refreshes
/// every few seconds, so one interval can carry the bytes of a longer one.
const RATE_HEADROOM: f64 = 10.0;

/// Above this, a derived value is a computing error whatever the metric.
const ABSURD: f64 = 1e12;

/// Bit rates of `lo` the first test waits for.
const LOOPBACK_RATES: usize = 5;

/// Resources of the synthetic devices in the handover test: enough that replaying
/// the seconds a handover takes spans more than one of the stage's ticks.
const RESOURCES: usize = 32;

/// Partitions of every topic of the handover test: two per derive instance.
const PARTITIONS: i32 = 4;

/// Interface speed the synthetic devices report, in bit/s.
const SPEED_BITS_PER_SECOND: f64 = 1e10;

/// Relative error allowed between a derived rate and the true one.
const RELATIVE_TOLERANCE: f64 = 1e-6;

fn unix_nanos_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_nanos()).expect("nanoseconds since 1970 fit in i64")
}

/// Bytes `lo` has received so far, from /proc/net/dev.
fn loopback_received_bytes() -> u64 {
    let table = std::fs::read_to_string("/proc/net/dev").expect("/proc/net/dev readable");
    table
        .lines()
        .find_map(|line| {
            let (name, counters) = line.split_once(':')?;
            if name.trim() != "lo" {
                return None;
            }
            counters.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `lo` in /proc/net/dev:\n{table}"))
}

/// A TCP stream over loopback at a steady rate, until dropped.
struct LoopbackTraffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    started: Instant,
    threads: Vec<JoinHandle<()>>,
}

impl LoopbackTraffic {
    fn start(bytes_per_second: u64) -> LoopbackTraffic {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().expect("listener address");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let receiver = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept the traffic connection");
            let mut buffer = vec![0u8; 1 << 16];
            while matches!(stream.read(&mut buffer), Ok(read) if read > 0) {}
        });
        let started = Instant::now();
        let sender = {
            let stop = stop.clone();
            let sent = sent.clone();
            thread::spawn(move || {
                let mut stream = TcpStream::connect(address).expect("connect over loopback");
                let chunk = vec![0x5au8; 1 << 16];
                while !stop.load(Ordering::Relaxed) {
                    let due = bytes_per_second as f64 * started.elapsed().as_secs_f64();
                    if (sent.load(Ordering::Relaxed) as f64) < due {
                        stream.write_all(&chunk).expect("send traffic");
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    } else {
                        // Pacing the generator, not waiting for anything.
                        thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        };
        LoopbackTraffic {
            stop,
            sent,
            started,
            threads: vec![sender, receiver],
        }
    }

    /// Bytes sent per second since the start.
    fn bytes_per_second(&self) -> f64 {
        self.sent.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64()
    }
}

impl Drop for LoopbackTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The sender closes its stream when it ends, which ends the receiver.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn host_name(source: &Value) -> Option<&str> {
    source["host"]["name"]
        .as_str()
        .or(source["host.name"].as_str())
}

/// Whether `hit` holds samples of interface `lo` polled from `test-switch` (the
/// SNMP interface table; only it labels interfaces with `ifIndex`).
fn is_switch_loopback(hit: &Value) -> bool {
    let source = &hit["_source"];
    host_name(source) == Some("test-switch")
        && source["labels"]["ifName"] == "lo"
        && source["labels"]["ifIndex"].is_string()
}

fn is_derived(hit: &Value) -> bool {
    hit["_source"]["vigil"]["derived"] == true
}

fn timestamp(hit: &Value) -> &str {
    hit["_source"]["@timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("document without @timestamp: {hit}"))
}

#[test]
fn interface_bit_rates_reach_the_index_while_traffic_flows() {
    let traffic = LoopbackTraffic::start(TRAFFIC_BYTES_PER_SECOND);
    let loopback_before = loopback_received_bytes();
    let started = Instant::now();

    let deployment = Deployment::with_derive("e2e-derive-if", 3);
    let [agent_port, derive_port, index_port] = free_tcp_ports(3)[..] else {
        unreachable!()
    };
    let derive_config = deployment.derive_config("derive", derive_port);
    let _derive = deployment.start_stage("derive", &derive_config, derive_port);
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);
    let agent_config = deployment.snmp_agent_config("agent", agent_port);
    let _agent = deployment.start_agent(&agent_config, agent_port);

    let hits = wait_until(
        &format!("{LOOPBACK_RATES} derived bit rates of lo indexed"),
        Duration::from_secs(120),
        || {
            let hits = elastic::all_hits(&deployment.metrics_index);
            let rates = hits
                .iter()
                .filter(|hit| {
                    is_derived(hit)
                        && is_switch_loopback(hit)
                        && hit["_source"]["metrics"]["if.in.bits_per_second"].is_number()
                })
                .count();
            (rates >= LOOPBACK_RATES).then_some(hits)
        },
    );
    let sent_bits_per_second = traffic.bytes_per_second() * 8.0;
    let loopback_bits_per_second = (loopback_received_bytes() - loopback_before) as f64 * 8.0
        / started.elapsed().as_secs_f64();
    drop(traffic);
    assert!(
        loopback_bits_per_second >= 0.9 * sent_bits_per_second,
        "lo received {loopback_bits_per_second:.0} bit/s while {sent_bits_per_second:.0} bit/s were sent over it"
    );

    // No derived value of any metric is negative, non-finite or absurd.
    let derived: Vec<&Value> = hits.iter().filter(|hit| is_derived(hit)).collect();
    for hit in &derived {
        let metrics = hit["_source"]["metrics"]
            .as_object()
            .unwrap_or_else(|| panic!("derived document without metrics: {hit}"));
        for (name, value) in metrics {
            let value = value
                .as_f64()
                .unwrap_or_else(|| panic!("{name} is not a number in {hit}"));
            assert!(
                value.is_finite() && (0.0..=ABSURD).contains(&value),
                "derived {name} = {value} in {hit}"
            );
        }
    }

    // The bit rates of lo are plausible for the traffic that flowed.
    let loopback: Vec<&Value> = derived
        .iter()
        .copied()
        .filter(|hit| is_switch_loopback(hit))
        .collect();
    let rates: Vec<f64> = loopback
        .iter()
        .filter_map(|hit| hit["_source"]["metrics"]["if.in.bits_per_second"].as_f64())
        .collect();
    let ceiling = RATE_HEADROOM * loopback_bits_per_second.max(sent_bits_per_second);
    eprintln!(
        "derive e2e: sent {sent_bits_per_second:.0} bit/s, lo averaged {loopback_bits_per_second:.0} bit/s; \
         derived bit rates of lo: {rates:.0?}"
    );
    for rate in &rates {
        assert!(
            *rate <= ceiling,
            "a bit rate of lo of {rate} bit/s is above {ceiling:.0} bit/s ({RATE_HEADROOM} × the traffic)"
        );
    }
    // snmpd refreshes its interface counters every few seconds, so two polls can
    // read the same values (a rate of 0) and the next one the increase of both.
    let highest = rates.iter().copied().fold(0.0, f64::max);
    assert!(
        highest >= 0.5 * sent_bits_per_second,
        "no bit rate of lo shows the {sent_bits_per_second:.0} bit/s sent over it: {rates:?}"
    );

    // Derived samples keep the interface labels and the time of the raw reading
    // they come from, and utilisation is the rate over the reported speed.
    for hit in &loopback {
        let labels = &hit["_source"]["labels"];
        assert_eq!(labels["ifDescr"], "lo", "{hit}");
        assert_eq!(hit["_source"]["metricset"]["name"], "if", "{hit}");
    }
    let raw = wait_until(
        "the raw readings behind every derived rate of lo indexed",
        Duration::from_secs(60),
        || {
            let raw: BTreeMap<(String, String), Value> =
                elastic::all_hits(&deployment.metrics_index)
                    .into_iter()
                    .filter(|hit| !is_derived(hit) && is_switch_loopback(hit))
                    .map(|hit| {
                        let key = (
                            timestamp(&hit).to_owned(),
                            hit["_source"]["labels"]["ifIndex"].to_string(),
                        );
                        (key, hit)
                    })
                    .collect();
            loopback
                .iter()
                .all(|hit| {
                    let key = (
                        timestamp(hit).to_owned(),
                        hit["_source"]["labels"]["ifIndex"].to_string(),
                    );
                    raw.contains_key(&key)
                })
                .then_some(raw)
        },
    );
    let mut utilisations = Vec::new();
    for hit in &loopback {
        let key = (
            timestamp(hit).to_owned(),
            hit["_source"]["labels"]["ifIndex"].to_string(),
        );
        let reading = &raw[&key]["_source"]["metrics"];
        assert!(
            reading["if.in.octets"].is_u64(),
            "the raw reading of {key:?} has no octet counter: {reading}"
        );
        let metrics = &hit["_source"]["metrics"];
        let speed = reading["if.speed.bits_per_second"]
            .as_f64()
            .filter(|speed| *speed > 0.0);
        match (speed, metrics["if.in.bits_per_second"].as_f64()) {
            (Some(speed), Some(rate)) => {
                let utilisation = metrics["if.in.utilisation_percent"]
                    .as_f64()
                    .unwrap_or_else(|| {
                        panic!("lo has a speed of {speed} but no utilisation: {hit}")
                    });
                let expected = rate / speed * 100.0;
                assert!(
                    (utilisation - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                    "utilisation {utilisation} of lo is not {rate} / {speed} × 100: {hit}"
                );
                utilisations.push((speed, utilisation));
            }
            (None, _) => assert!(
                metrics.get("if.in.utilisation_percent").is_none(),
                "lo reports no speed, yet has a utilisation: {hit}"
            ),
            (Some(_), None) => {}
        }
    }
    eprintln!("derive e2e: (speed, utilisation) of lo: {utilisations:.1?}");
}

/// A synthetic device of the handover test and the counter it reports.
#[derive(Debug, Clone)]
struct Device {
    id: String,
    partition: i32,
    /// The first reading of the octet counter.
    base: u64,
    /// Octets counted per second of event time: the true rate.
    octets_per_second: u64,
}

impl Device {
    fn all() -> Vec<Device> {
        (0..RESOURCES)
            .map(|number| Device {
                id: format!("handover-device-{number}"),
                partition: number as i32 % PARTITIONS,
                base: (1 << 40) + number as u64 * 1_000_003,
                octets_per_second: 125_000 * (number as u64 + 1) + 17,
            })
            .collect()
    }

    fn bits_per_second(&self) -> f64 {
        self.octets_per_second as f64 * 8.0
    }

    /// The batch of its `tick`-th reading, taken at `time_unix_nano`.
    fn batch(&self, tick: u64, time_unix_nano: i64) -> MetricBatch {
        let labels = vec![
            label("ifIndex", "2"),
            label("ifName", "eth0"),
            label("ifDescr", "eth0"),
        ];
        let sample = |name: &str,
                      kind: MetricKind,
                      value_type: ValueType,
                      value: sample::Value,
                      unit: &str| {
            Sample {
                name: name.to_owned(),
                labels: labels.clone(),
                kind: kind as i32,
                time_unix_nano,
                value_type: value_type as i32,
                unit: unit.to_owned(),
                metric_set: "if".to_owned(),
                value: Some(value),
            }
        };
        MetricBatch {
            resource: Some(Resource {
                id: self.id.clone(),
                host_name: self.id.clone(),
                ..Resource::default()
            }),
            samples: vec![
                sample(
                    "if.in.octets",
                    MetricKind::Counter,
                    ValueType::Counter64,
                    sample::Value::Counter(self.base + tick * self.octets_per_second),
                    "By",
                ),
                sample(
                    "if.speed.bits_per_second",
                    MetricKind::Gauge,
                    ValueType::Gauge32,
                    sample::Value::Gauge(SPEED_BITS_PER_SECOND),
                    "bit/s",
                ),
            ],
            producer: "vigil-e2e-devices".to_owned(),
        }
    }
}

/// Publishes a reading of every device once per second of event time, on the
/// device's partition of the raw metrics topic, until dropped.
struct DeviceFeed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl DeviceFeed {
    fn start(topic: String, devices: Vec<Device>) -> DeviceFeed {
        let stop = Arc::new(AtomicBool::new(false));
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("create the device producer");
        let first_second = unix_nanos_now() / NANOS_PER_SECOND + 1;
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut tick = 0;
                while !stop.load(Ordering::Relaxed) {
                    let time = (first_second + tick as i64) * NANOS_PER_SECOND;
                    let wait = time - unix_nanos_now();
                    if wait > 0 {
                        // Pacing the readings in real time, not waiting for anything.
                        thread::sleep(Duration::from_nanos(wait as u64));
                    }
                    for device in &devices {
                        let payload = device.batch(tick, time).to_payload();
                        let headers = OwnedHeaders::new().insert(Header {
                            key: SCHEMA_HEADER,
                            value: Some(<MetricBatch as Payload>::KIND),
                        });
                        producer
                            .send(
                                BaseRecord::to(&topic)
                                    .partition(device.partition)
                                    .key(&device.id)
                                    .payload(&payload)
                                    .headers(headers),
                            )
                            .map_err(|(error, _)| error)
                            .expect("enqueue a reading");
                    }
                    producer
                        .flush(Duration::from_secs(30))
                        .expect("readings delivered");
                    tick += 1;
                }
                tick
            })
        };
        DeviceFeed {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops publishing; returns how many readings each device published.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("the feed runs")
            .join()
            .expect("the feed thread")
    }
}

impl Drop for DeviceFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One derived value as read from the derived metrics topic.
#[derive(Debug, Clone, Copy)]
struct DerivedValue {
    time_unix_nano: i64,
    value: f64,
    /// Partition and offset of the message that carried it.
    origin: (i32, i64),
}

/// Derived values by metric name and resource.
type DerivedValues = BTreeMap<(String, String), Vec<DerivedValue>>;

/// Reads every partition of the derived metrics topic from its start, outside any
/// consumer group, and keeps the values of the synthetic devices' interfaces.
struct DerivedReader {
    values: Arc<Mutex<DerivedValues>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DerivedReader {
    fn start(topic: &str, partitions: i32) -> DerivedReader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
            .set("group.id", format!("{topic}-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("create the derived reader");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .expect("add a partition");
        }
        consumer.assign(&assignment).expect("assign the partitions");
        let values = Arc::new(Mutex::new(DerivedValues::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let values = values.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(received) = consumer.poll(Duration::from_millis(200)) else {
                        continue;
                    };
                    let Ok(message) = received else {
                        continue;
                    };
                    let batch = MetricBatch::from_payload(message.payload().unwrap_or_default())
                        .expect("the derive stage publishes valid metric batches");
                    let resource = batch.resource.as_ref().map_or("", |r| r.id.as_str());
                    let mut values = values.lock().unwrap_or_else(|p| p.into_inner());
                    for sample in &batch.samples {
                        let Some(sample::Value::Gauge(value)) = sample.value else {
                            panic!("a derived sample that is not a gauge: {sample:?}");
                        };
                        values
                            .entry((sample.name.clone(), resource.to_owned()))
                            .or_default()
                            .push(DerivedValue {
                                time_unix_nano: sample.time_unix_nano,
                                value,
                                origin: (message.partition(), message.offset()),
                            });
                    }
                }
            })
        };
        DerivedReader {
            values,
            stop,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> DerivedValues {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The time of each device's latest bit rate, in seconds after `origin_unix_nano`.
    fn progress(&self, devices: &[Device], origin_unix_nano: i64) -> String {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let latest: Vec<String> = devices
            .iter()
            .map(|device| {
                let last = values
                    .get(&("if.in.bits_per_second".to_owned(), device.id.clone()))
                    .and_then(|rates| rates.iter().map(|r| r.time_unix_nano).max());
                match last {
                    Some(time) => format!(
                        "{} {:+.0}",
                        device.id,
                        (time - origin_unix_nano) as f64 / NANOS_PER_SECOND as f64
                    ),
                    None => format!("{} none", device.id),
                }
            })
            .collect();
        latest.join(", ")
    }

    /// Whether every device has a bit rate stamped at or after `time_unix_nano`.
    fn all_rated_since(&self, devices: &[Device], time_unix_nano: i64) -> bool {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        devices.iter().all(|device| {
            values
                .get(&("if.in.bits_per_second".to_owned(), device.id.clone()))
                .is_some_and(|rates| rates.iter().any(|r| r.time_unix_nano >= time_unix_nano))
        })
    }
}

impl Drop for DerivedReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Derived batches an instance published, read from its `/metrics`.
fn published(http_port: u16, deployment: &Deployment) -> f64 {
    metric_value(
        http_port,
        "vigil_derive_batches_published",
        &deployment.topic("metrics.derived"),
    )
}

/// The derive stage's own lines of an instance's `/metrics`.
fn derive_metrics(http_port: u16) -> String {
    reqwest::blocking::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .and_then(|response| response.text())
        .unwrap_or_else(|error| format!("(no /metrics: {error})"))
        .lines()
        .filter(|line| line.starts_with("vigil_derive"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks the values of `name` of `device`: each is `expected` (a duplicate after a
/// replay too), and their distinct times follow one another a second apart.
///
/// Returns the distinct times, or what is wrong: wrong values, and the times
/// missing in between (in seconds after `origin_unix_nano`) with the order in which
/// the values were published.
fn check_exact_and_gapless(
    values: &DerivedValues,
    name: &str,
    device: &Device,
    expected: f64,
    origin_unix_nano: i64,
) -> Result<BTreeSet<i64>, String> {
    let seconds = |time: i64| (time - origin_unix_nano) as f64 / NANOS_PER_SECOND as f64;
    let Some(found) = values.get(&(name.to_owned(), device.id.clone())) else {
        return Err(format!("no {name} of {}", device.id));
    };
    let wrong: Vec<(f64, f64)> = found
        .iter()
        .filter(|value| (value.value - expected).abs() > RELATIVE_TOLERANCE * expected)
        .map(|value| (seconds(value.time_unix_nano), value.value))
        .collect();
    if !wrong.is_empty() {
        return Err(format!(
            "{name} of {} is not {expected} at (seconds, value) {wrong:.1?}",
            device.id
        ));
    }
    let times: BTreeSet<i64> = found.iter().map(|v| v.time_unix_nano).collect();
    let ordered: Vec<i64> = times.iter().copied().collect();
    let missing: Vec<f64> = ordered
        .windows(2)
        .flat_map(|pair| (pair[0] + NANOS_PER_SECOND..pair[1]).step_by(NANOS_PER_SECOND as usize))
        .map(seconds)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{name} of {} (raw partition {}) has no value at {missing:+.1?} s",
            device.id, device.partition,
        ));
    }
    Ok(times)
}

/// The times of the values of `name` of `device` in the order they were published,
/// in seconds after `origin_unix_nano`, with the derived partition and offset.
fn publication_order(
    values: &DerivedValues,
    name: &str,
    device: &Device,
    origin_unix_nano: i64,
) -> String {
    let published: Vec<(f64, i32, i64)> = values
        .get(&(name.to_owned(), device.id.clone()))
        .into_iter()
        .flatten()
        .map(|v| {
            let seconds = (v.time_unix_nano - origin_unix_nano) as f64 / NANOS_PER_SECOND as f64;
            (seconds, v.origin.0, v.origin.1)
        })
        .collect();
    format!(
        "{name} of {} was published for (seconds, partition, offset) {published:+.1?}",
        device.id
    )
}

#[test]
fn a_killed_derive_instance_hands_over_without_spike_or_gap() {
    let deployment = Deployment::with_derive("e2e-derive-handover", PARTITIONS);
    let devices = Device::all();
    let [survivor_port, killed_port, replacement_port] = free_tcp_ports(3)[..] else {
        unreachable!()
    };
    let reader = DerivedReader::start(&deployment.topic("metrics.derived"), PARTITIONS);
    let feed = DeviceFeed::start(deployment.topic("metrics.raw"), devices.clone());

    // Names order the members (see `derive_config`): the survivor gets the first
    // half of the partitions, the instance to be killed the second half.
    let survivor_config = deployment.derive_config("derive-2-survivor", survivor_port);
    let mut survivor = deployment.start_stage("derive", &survivor_config, survivor_port);
    let killed_config = deployment.derive_config("derive-3-killed", killed_port);
    let mut killed = deployment.start_stage("derive", &killed_config, killed_port);

    // Both instances own raw partitions: each keeps publishing derived batches.
    let started = Instant::now();
    let both_publish = |since: (f64, f64)| {
        let now = (
            published(survivor_port, &deployment),
            published(killed_port, &deployment),
        );
        (now.0 > since.0 && now.1 > since.1).then_some(now)
    };
    let counts = wait_until(
        "both derive instances to publish derived batches",
        Duration::from_secs(120),
        || both_publish((0.0, 0.0)),
    );
    wait_until(
        "both derive instances to publish again",
        Duration::from_secs(60),
        || both_publish(counts),
    );
    let shared_at = unix_nanos_now();
    wait_until(
        "bit rates of every device while both instances run",
        Duration::from_secs(60),
        || reader.all_rated_since(&devices, shared_at).then_some(()),
    );
    eprintln!(
        "derive e2e: both instances derive after {:.1?}",
        started.elapsed()
    );

    // The broker of these tests (tansu 0.6) keeps a stable group's assignment when
    // a member's session expires: the survivor is told to rejoin and gets its own
    // partitions back, and those of the dead member wait for the next change of
    // membership. So, as the service manager would, a replacement starts, once the
    // broker has dropped the dead member (before that, the new assignment would
    // still give it partitions). The survivor's rejoin shows in its metrics: it
    // replays its own partitions from its committed positions, which hold the last
    // reading of every series, so it sees readings again.
    let replayed = || {
        metric_value(survivor_port, "vigil_derive_counter_readings", "duplicate")
            + metric_value(
                survivor_port,
                "vigil_derive_counter_readings",
                "out_of_order",
            )
    };
    let replayed_before_kill = replayed();
    let killed_at = unix_nanos_now();
    killed.kill_hard();
    let kill = Instant::now();
    wait_until(
        "the survivor to rejoin its group once the broker dropped the killed instance \
         (seen as readings it replays again)",
        Duration::from_secs(60),
        || (replayed() > replayed_before_kill).then_some(()),
    );
    eprintln!(
        "derive e2e: the broker dropped the killed instance after {:.1?}; the replacement starts",
        kill.elapsed()
    );

    // The replacement's name orders it first: it takes the survivor's partitions
    // and the survivor those of the killed instance (if the broker forms the group
    // before the replacement has joined, the survivor first takes them all). The
    // survivor replays them from the positions the killed instance committed,
    // while its own, current partitions have moved its clock on.
    let started_series = |port| metric_value(port, "vigil_derive_counter_readings", "started");
    let survivor_started_before = started_series(survivor_port);
    let replacement_config = deployment.derive_config("derive-1-replacement", replacement_port);
    let mut replacement = deployment.start_stage("derive", &replacement_config, replacement_port);
    let resumed_after = killed_at + 5 * NANOS_PER_SECOND;
    let resumed = poll_until(Duration::from_secs(120), || {
        for instance in [&mut survivor, &mut replacement] {
            if let Some(status) = instance.exit_status() {
                panic!(
                    "a derive instance exited with {status}:\n{}",
                    instance.log_tail()
                );
            }
        }
        reader
            .all_rated_since(&devices, resumed_after)
            .then_some(())
    });
    let self_metrics = || {
        format!(
            "self-metrics of the survivor:\n{}\nof the replacement:\n{}",
            derive_metrics(survivor_port),
            derive_metrics(replacement_port),
        )
    };
    assert!(
        resumed.is_some(),
        "the derive instances did not rate every device again within 120 s of the kill; \
         last bit rate of each device, in seconds after the kill: {}\n{}",
        reader.progress(&devices, killed_at),
        self_metrics(),
    );
    eprintln!(
        "derive e2e: every device rated again {:.1?} after the kill; series started \
         meanwhile by the survivor: {}, by the replacement: {}",
        kill.elapsed(),
        started_series(survivor_port) - survivor_started_before,
        // An absent counter sums to -0.
        started_series(replacement_port) + 0.0,
    );
    let ticks = feed.stop();
    let values = reader.snapshot();
    drop(reader);

    let mut problems = Vec::new();
    let mut example = String::new();
    for device in &devices {
        let rates = check_exact_and_gapless(
            &values,
            "if.in.bits_per_second",
            device,
            device.bits_per_second(),
            killed_at,
        );
        let utilisation = check_exact_and_gapless(
            &values,
            "if.in.utilisation_percent",
            device,
            device.bits_per_second() / SPEED_BITS_PER_SECOND * 100.0,
            killed_at,
        );
        match (rates, utilisation) {
            (Ok(rates), Ok(utilisation)) => {
                let (first, last) = (rates.first(), rates.last());
                if !(first < Some(&killed_at) && last >= Some(&resumed_after)) {
                    problems.push(format!(
                        "the rates of {} ({first:?}..={last:?}) do not span the kill at {killed_at}",
                        device.id
                    ));
                }
                if rates != utilisation {
                    problems.push(format!(
                        "rates and utilisation of {} are derived at different times",
                        device.id
                    ));
                }
            }
            (rates, utilisation) => {
                if problems.is_empty() {
                    example =
                        publication_order(&values, "if.in.bits_per_second", device, killed_at);
                }
                problems.extend(rates.err());
                problems.extend(utilisation.err());
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems after the handover (times in seconds after the kill):\n{}\n\
         for example, {example}\n{}",
        problems.len(),
        problems.join("\n"),
        self_metrics()
    );
    let values_sent: usize = values.values().map(Vec::len).sum();
    let distinct: usize = values
        .values()
        .map(|v| {
            v.iter()
                .map(|d| d.time_unix_nano)
                .collect::<BTreeSet<_>>()
                .len()
        })
        .sum();
    eprintln!(
        "derive e2e: {ticks} readings per device, {} derived values sent again after replays",
        values_sent - distinct
    );

    // Each taken-over series was rebuilt from a replayed reading: none restarted
    // for a gap or a reset.
    for (instance, port) in [
        ("survivor", survivor_port),
        ("replacement", replacement_port),
    ] {
        for outcome in ["gap", "reset", "reboot"] {
            let count = metric_value(
                port,
                "vigil_derive_counter_readings",
                &format!("outcome=\"{outcome}\""),
            );
            assert_eq!(count, 0.0, "the {instance} counted {outcome} readings");
        }
    }
}
