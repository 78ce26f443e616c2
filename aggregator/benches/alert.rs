//! The alert stage's rules engine under a fleet's load: 1,000 metric rules over
//! 100,000 series and 100 regex log rules over nginx, application and syslog
//! lines, in samples and lines per second of one core; the CPU time of one
//! evaluation round of the 1,000 rules; and the wall time from publishing a batch
//! to the webhook POST of the alert it raises, through the real stage.
//!
//! The fleet: 1,000 hosts (10 sites x 10 roles x 10), each sending 100 series
//! every 10 s in one batch, as the agent does: load, memory, uptime, 16 CPUs, 4
//! file systems, 4 network interfaces, 4 disks and an application's HTTP
//! requests by route and status. Values are a fixed function of the series and
//! the poll, so a run and Prometheus' scrapes (see `export`) see the same data;
//! a few hosts are hot (load, CPU, a full file system, interface errors, 5xx
//! answers) and their alerts fire. Rules: 100 templates (20 metrics or selections
//! with 5 thresholds or window functions each) for each of the 10 roles, one
//! group of 100 per role, every 15 s; log rules: 50 patterns, each as a warning
//! (3 lines a minute) and a critical rule (20 lines in 5 minutes), by host.
//!
//! Run as `cargo bench --bench alert` for the criterion throughput benchmarks
//! (CPU time of the benchmarking thread); `bash bench/alert.sh` runs them, the
//! subcommands below, and Prometheus side by side:
//!
//! - `rounds`: the CPU time of one evaluation round of the 1,000 metric rules over
//!   windows of 5 minutes of data, and the ingest throughput around it;
//! - `latency SECONDS`: the stage on the in-process bus at the fleet's rate, with
//!   probes that make alerts fire; prints p50/p99 from publish to webhook POST;
//! - `export DIR`: the same rules as Prometheus alerting rules (`rules.yml`) and
//!   the series with their value functions (`series.tsv`) for
//!   `bench/alert_exposition.py`.

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::{ThreadCpuTime, thread_cpu_time};
use criterion::{Criterion, SamplingMode, Throughput};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use vigil_aggregator::alert::notify::{NotifyConfig, Receiver, Route};
use vigil_aggregator::alert::{AlertStage, AlertStageConfig};
use vigil_proto::Payload;
use vigil_proto::labels::label;
use vigil_proto::v1::{
    Label, LogBatch, LogLine, LogSource, MetricBatch, MetricKind, Resource, ResourceKind, Sample,
    ValueType, sample,
};
use vigil_proto::view::MetricBatchView;
use vigil_rules::{Evaluator, RuleSet, Source};
use vigil_runtime::secret::InlineOrSecret;
use vigil_runtime::{Bus, SelfMetrics};

const SITES: [&str; 10] = [
    "ams1", "fra1", "lon2", "par1", "waw1", "mad1", "mil1", "sto1", "dub1", "vie1",
];
const ROLES: [&str; 10] = [
    "web", "api", "db", "cache", "kafka", "batch", "search", "proxy", "worker", "storage",
];
const HOSTS_PER_SITE_AND_ROLE: usize = 10;
const HOSTS: usize = SITES.len() * ROLES.len() * HOSTS_PER_SITE_AND_ROLE;
const SERIES_PER_HOST: usize = 100;
const POLL_SECONDS: i64 = 10;
const POLL_NANOS: i64 = POLL_SECONDS * 1_000_000_000;
/// The groups' evaluation interval.
const GROUP_SECONDS: i64 = 15;
const GROUP_NANOS: i64 = GROUP_SECONDS * 1_000_000_000;
/// Polls before a measurement: the 5-minute windows are full.
const WARM_POLLS: u64 = 31;
/// 2026-11-23 06:00:00 UTC, a multiple of the groups' interval.
const START_UNIX_NANO: i64 = 1_795_413_600_000_000_000;
const MOUNTS: [(&str, &str, &str); 4] = [
    ("/", "/dev/nvme0n1p2", "ext4"),
    ("/boot", "/dev/nvme0n1p1", "ext4"),
    ("/var", "/dev/mapper/vg0-var", "xfs"),
    ("/srv", "/dev/nvme1n1", "xfs"),
];
const INTERFACES: [&str; 4] = ["lo", "eth0", "eth1", "bond0"];
const DISKS: [&str; 4] = ["nvme0n1", "nvme1n1", "sda", "sdb"];
const ROUTES: [&str; 5] = ["/", "/api/search", "/api/checkout", "/api/login", "/static"];
const STATUSES: [&str; 5] = ["200", "301", "404", "500", "503"];
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Log lines per batch, per source.
const LINES_PER_BATCH: usize = 250;
/// Hosts whose log sources send one batch each per iteration of the log benchmark.
const LOG_HOSTS_PER_ITERATION: usize = 100;
const DATASETS: [&str; 3] = ["nginx.access", "app", "syslog"];

/// SplitMix64: a fixed sequence, so every run measures the same corpus.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [low, high).
    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One series of a host and the function that gives its value at each poll:
/// a gauge saws between `base` and `base + step` over 12 polls; a counter grows
/// by `step` per poll, give or take 10 %. `bench/alert_exposition.py` computes the
/// same functions.
#[derive(Debug)]
struct Series {
    name: &'static str,
    labels: Vec<Label>,
    counter: bool,
    unit: &'static str,
    metric_set: &'static str,
    base: f64,
    step: f64,
    phase: u64,
}

impl Series {
    fn value_at(&self, poll: u64) -> sample::Value {
        let phase = self.phase;
        if self.counter {
            let jitter = ((poll * 7 + phase) % 10) as f64 / 100.0;
            sample::Value::Counter((self.base + self.step * (poll as f64 + jitter)) as u64)
        } else {
            let saw = ((poll + phase) % 12) as f64 / 12.0;
            sample::Value::Gauge(self.base + self.step * saw)
        }
    }
}

#[derive(Debug)]
struct Host {
    resource: Resource,
    series: Vec<Series>,
}

/// Which hosts are hot, and in what.
fn hot(number: usize, every: usize) -> bool {
    number % every == every / 2
}

impl Host {
    fn new(random: &mut Random, number: usize) -> Self {
        let site = SITES[number % SITES.len()];
        let role = ROLES[number / SITES.len() % ROLES.len()];
        let name = format!(
            "{role}-{site}-{:03}",
            number / (SITES.len() * ROLES.len()) + 1
        );
        let mut series = Vec::with_capacity(SERIES_PER_HOST);
        let mut add = |name, labels, counter, unit, metric_set, base, step| {
            let phase = ((series.len() * 5 + number) % 12) as u64;
            series.push(Series {
                name,
                labels,
                counter,
                unit,
                metric_set,
                base,
                step,
                phase,
            });
        };
        let cores = [8.0, 16.0, 32.0, 64.0][number % 4];
        let load = if hot(number, 37) {
            cores * 1.5
        } else {
            cores * 0.2
        };
        add("host.load.1m", vec![], false, "", "host", load, load * 0.3);
        add(
            "host.memory.available_bytes",
            vec![],
            false,
            "By",
            "host",
            if hot(number, 43) {
                0.2 * GIB
            } else {
                12.0 * GIB
            },
            0.1 * GIB,
        );
        add(
            "host.uptime.seconds",
            vec![],
            false,
            "s",
            "host",
            (number as f64 + 1.0) * 86_400.0,
            POLL_SECONDS as f64 * 12.0,
        );
        for cpu in 0..16 {
            let busy = if hot(number, 53) && cpu < 4 {
                96.0
            } else {
                35.0
            };
            add(
                "host.cpu.utilization",
                vec![label("cpu", cpu.to_string())],
                false,
                "%",
                "host.cpu",
                busy,
                3.5,
            );
        }
        for (index, (mountpoint, device, fstype)) in MOUNTS.into_iter().enumerate() {
            let labels = vec![
                label("mountpoint", mountpoint),
                label("device", device),
                label("fstype", fstype),
            ];
            let full = hot(number, 41) && index == 2;
            let size = [100.0, 1.0, 400.0, 2000.0][index] * GIB;
            let used = if full { 0.97 } else { 0.4 + 0.1 * index as f64 };
            add(
                "host.fs.used_percent",
                labels.clone(),
                false,
                "%",
                "host.fs",
                used * 100.0,
                1.0,
            );
            add(
                "host.fs.available_bytes",
                labels.clone(),
                false,
                "By",
                "host.fs",
                (1.0 - used) * size,
                0.001 * size,
            );
            add(
                "host.fs.inodes.used_percent",
                labels,
                false,
                "%",
                "host.fs",
                12.0 + 5.0 * index as f64,
                0.5,
            );
        }
        for (index, interface) in INTERFACES.into_iter().enumerate() {
            let labels = vec![label("ifName", interface)];
            let bytes = [2e6, 6e7, 2e7, 8e7][index] * POLL_SECONDS as f64;
            let errors = if hot(number, 29) && interface == "eth1" {
                30.0 * POLL_SECONDS as f64
            } else {
                0.0
            };
            for (name, step) in [
                ("if.in.octets", bytes),
                ("if.out.octets", bytes * 1.4),
                ("if.in.errors", errors),
                ("if.out.errors", errors * 0.1),
                ("if.in.discards", errors * 0.5 + 0.2),
                ("if.out.discards", 0.1),
            ] {
                let unit = if name.ends_with("octets") {
                    "By"
                } else {
                    "{packet}"
                };
                let start = (random.next() % (1 << 40)) as f64;
                add(name, labels.clone(), true, unit, "host.net", start, step);
            }
        }
        for device in DISKS {
            let labels = vec![label("device", device)];
            let reads = random.between(50.0, 2000.0) * POLL_SECONDS as f64;
            let writes = random.between(50.0, 1000.0) * POLL_SECONDS as f64;
            for (name, unit, step) in [
                ("host.disk.read_bytes", "By", reads * 16_384.0),
                ("host.disk.write_bytes", "By", writes * 32_768.0),
                ("host.disk.reads", "{operation}", reads),
                ("host.disk.writes", "{operation}", writes),
                ("host.disk.io_time.seconds", "s", 0.2 * POLL_SECONDS as f64),
            ] {
                let start = (random.next() % (1 << 36)) as f64;
                add(name, labels.clone(), true, unit, "host.disk", start, step);
            }
        }
        for route in ROUTES {
            for status in STATUSES {
                let per_second = match status {
                    "200" => 120.0,
                    "301" => 4.0,
                    "404" => 2.0,
                    _ if hot(number, 31) && route == "/api/checkout" => 12.0,
                    _ => 0.05,
                };
                let labels = vec![label("route", route), label("status", status)];
                let start = (random.next() % 1_000_000) as f64;
                add(
                    "app.http.requests",
                    labels,
                    true,
                    "{request}",
                    "app",
                    start,
                    per_second * POLL_SECONDS as f64,
                );
            }
        }
        assert_eq!(series.len(), SERIES_PER_HOST);
        Self {
            resource: Resource {
                id: name.clone(),
                kind: ResourceKind::Host as i32,
                host_name: name,
                attributes: vec![label("site", site), label("role", role)],
            },
            series,
        }
    }

    /// The batch the agent sends for `poll`, stamped `time`.
    fn batch(&self, poll: u64, time: i64) -> MetricBatch {
        let samples = self
            .series
            .iter()
            .map(|series| Sample {
                name: series.name.to_owned(),
                labels: series.labels.clone(),
                kind: if series.counter {
                    MetricKind::Counter
                } else {
                    MetricKind::Gauge
                } as i32,
                time_unix_nano: time,
                value: Some(series.value_at(poll)),
                value_type: if series.counter {
                    ValueType::Counter64
                } else {
                    ValueType::Float
                } as i32,
                unit: series.unit.to_owned(),
                metric_set: series.metric_set.to_owned(),
            })
            .collect();
        MetricBatch {
            resource: Some(self.resource.clone()),
            samples,
            producer: "vigil-agent/0.1.0".to_owned(),
        }
    }
}

fn fleet() -> Vec<Host> {
    let mut random = Random(0x5eed_a1e7_0000_0001);
    (0..HOSTS).map(|n| Host::new(&mut random, n)).collect()
}

/// Hosts send at their own phase of the poll interval.
fn host_time(poll: u64, host: usize) -> i64 {
    START_UNIX_NANO + poll as i64 * POLL_NANOS + POLL_NANOS / HOSTS as i64 * host as i64
}

/// One poll of the whole fleet, encoded, in event-time order.
fn poll_payloads(fleet: &[Host], poll: u64) -> Vec<Vec<u8>> {
    fleet
        .iter()
        .enumerate()
        .map(|(n, host)| host.batch(poll, host_time(poll, n)).to_payload())
        .collect()
}

/// What a rule compares: the latest value or a function over a window.
#[derive(Debug, Clone, Copy)]
enum Subject {
    Value,
    Window(&'static str, &'static str),
}

/// A rule for each role: a metric, a selection and five conditions.
#[derive(Debug)]
struct Template {
    alert: &'static str,
    metric: &'static str,
    matchers: &'static [(&'static str, &'static str)],
    conditions: [(Subject, &'static str, f64); 5],
}

const VARIANTS: [&str; 5] = ["Info", "Warning", "Critical", "Sustained", "Short"];

fn templates() -> Vec<Template> {
    use Subject::{Value, Window};
    let avg = |w| Window("avg", w);
    let max = |w| Window("max", w);
    let min = |w| Window("min", w);
    let rate = |w| Window("rate", w);
    let increase = |w| Window("increase", w);
    let not_loopback: &'static [(&str, &str)] = &[("ifName", "!~lo")];
    vec![
        Template {
            alert: "HostLoad",
            metric: "host.load.1m",
            matchers: &[],
            conditions: [
                (avg("5m"), ">", 8.0),
                (avg("5m"), ">", 16.0),
                (max("5m"), ">", 32.0),
                (Value, ">", 48.0),
                (avg("1m"), ">", 12.0),
            ],
        },
        Template {
            alert: "HostMemoryLow",
            metric: "host.memory.available_bytes",
            matchers: &[],
            conditions: [
                (max("5m"), "<", 0.5 * GIB),
                (max("5m"), "<", 0.25 * GIB),
                (Value, "<", 0.125 * GIB),
                (avg("5m"), "<", 1.0 * GIB),
                (min("1m"), "<", 0.3 * GIB),
            ],
        },
        Template {
            alert: "HostRebooted",
            metric: "host.uptime.seconds",
            matchers: &[],
            conditions: [
                (Value, "<", 600.0),
                (Value, "<", 1800.0),
                (min("5m"), "<", 300.0),
                (Value, "<", 3600.0),
                (max("5m"), "<", 7200.0),
            ],
        },
        Template {
            alert: "CpuBusy",
            metric: "host.cpu.utilization",
            matchers: &[],
            conditions: [
                (avg("5m"), ">", 90.0),
                (avg("5m"), ">", 95.0),
                (max("5m"), ">", 99.0),
                (Value, ">", 98.0),
                (avg("1m"), ">", 92.0),
            ],
        },
        Template {
            alert: "CpuZeroBusy",
            metric: "host.cpu.utilization",
            matchers: &[("cpu", "0")],
            conditions: [
                (avg("5m"), ">", 80.0),
                (avg("5m"), ">", 90.0),
                (min("5m"), ">", 85.0),
                (Value, ">", 95.0),
                (avg("1m"), ">", 85.0),
            ],
        },
        Template {
            alert: "RootFilesystemFull",
            metric: "host.fs.used_percent",
            matchers: &[("mountpoint", "/")],
            conditions: [
                (Value, ">", 85.0),
                (Value, ">", 90.0),
                (max("5m"), ">", 95.0),
                (avg("5m"), ">", 92.0),
                (Value, ">", 98.0),
            ],
        },
        Template {
            alert: "DataFilesystemFull",
            metric: "host.fs.used_percent",
            matchers: &[("mountpoint", "=~/var|/srv")],
            conditions: [
                (Value, ">", 85.0),
                (Value, ">", 90.0),
                (max("5m"), ">", 95.0),
                (avg("5m"), ">", 92.0),
                (Value, ">", 98.0),
            ],
        },
        Template {
            alert: "FilesystemSpaceLow",
            metric: "host.fs.available_bytes",
            matchers: &[("fstype", "!~tmpfs|ramfs")],
            conditions: [
                (max("5m"), "<", 1.0 * GIB),
                (max("5m"), "<", 5.0 * GIB),
                (Value, "<", 0.5 * GIB),
                (avg("5m"), "<", 2.0 * GIB),
                (min("1m"), "<", 0.25 * GIB),
            ],
        },
        Template {
            alert: "InodesLow",
            metric: "host.fs.inodes.used_percent",
            matchers: &[],
            conditions: [
                (Value, ">", 80.0),
                (Value, ">", 90.0),
                (max("5m"), ">", 95.0),
                (avg("5m"), ">", 85.0),
                (Value, ">", 99.0),
            ],
        },
        Template {
            alert: "InboundTrafficHigh",
            metric: "if.in.octets",
            matchers: not_loopback,
            conditions: [
                (rate("5m"), ">", 0.8 * 1e9 / 8.0),
                (rate("5m"), ">", 0.9 * 1e9 / 8.0),
                (rate("1m"), ">", 0.95 * 1e9 / 8.0),
                (increase("5m"), ">", 200.0 * GIB),
                (rate("5m"), ">", 0.7 * 1e9 / 8.0),
            ],
        },
        Template {
            alert: "OutboundTrafficHigh",
            metric: "if.out.octets",
            matchers: not_loopback,
            conditions: [
                (rate("5m"), ">", 0.8 * 1e9 / 8.0),
                (rate("5m"), ">", 0.9 * 1e9 / 8.0),
                (rate("1m"), ">", 0.95 * 1e9 / 8.0),
                (increase("5m"), ">", 200.0 * GIB),
                (rate("5m"), ">", 0.7 * 1e9 / 8.0),
            ],
        },
        Template {
            alert: "InboundErrors",
            metric: "if.in.errors",
            matchers: not_loopback,
            conditions: [
                (rate("5m"), ">", 1.0),
                (rate("5m"), ">", 5.0),
                (rate("5m"), ">", 20.0),
                (rate("1m"), ">", 10.0),
                (increase("5m"), ">", 100.0),
            ],
        },
        Template {
            alert: "OutboundErrors",
            metric: "if.out.errors",
            matchers: not_loopback,
            conditions: [
                (rate("5m"), ">", 1.0),
                (rate("5m"), ">", 5.0),
                (rate("5m"), ">", 20.0),
                (rate("1m"), ">", 10.0),
                (increase("5m"), ">", 100.0),
            ],
        },
        Template {
            alert: "InboundDiscards",
            metric: "if.in.discards",
            matchers: not_loopback,
            conditions: [
                (rate("5m"), ">", 1.0),
                (rate("5m"), ">", 10.0),
                (rate("1m"), ">", 5.0),
                (increase("5m"), ">", 1000.0),
                (rate("5m"), ">", 50.0),
            ],
        },
        Template {
            alert: "DiskBusy",
            metric: "host.disk.io_time.seconds",
            matchers: &[],
            conditions: [
                (rate("5m"), ">", 0.9),
                (rate("5m"), ">", 0.95),
                (rate("1m"), ">", 0.99),
                (increase("5m"), ">", 280.0),
                (rate("5m"), ">", 0.8),
            ],
        },
        Template {
            alert: "DiskReadHeavy",
            metric: "host.disk.read_bytes",
            matchers: &[],
            conditions: [
                (rate("5m"), ">", 500e6),
                (rate("5m"), ">", 1e9),
                (rate("1m"), ">", 2e9),
                (increase("5m"), ">", 300e9),
                (rate("5m"), ">", 400e6),
            ],
        },
        Template {
            alert: "DiskWriteHeavy",
            metric: "host.disk.writes",
            matchers: &[("device", "=~nvme.*")],
            conditions: [
                (rate("5m"), ">", 5000.0),
                (rate("5m"), ">", 10000.0),
                (rate("1m"), ">", 20000.0),
                (increase("5m"), ">", 3e6),
                (rate("5m"), ">", 4000.0),
            ],
        },
        Template {
            alert: "HttpServerErrors",
            metric: "app.http.requests",
            matchers: &[("status", "=~5..")],
            conditions: [
                (rate("5m"), ">", 1.0),
                (rate("5m"), ">", 5.0),
                (rate("5m"), ">", 20.0),
                (rate("1m"), ">", 10.0),
                (increase("5m"), ">", 600.0),
            ],
        },
        Template {
            alert: "HttpNotFound",
            metric: "app.http.requests",
            matchers: &[("status", "404")],
            conditions: [
                (rate("5m"), ">", 10.0),
                (rate("5m"), ">", 50.0),
                (rate("1m"), ">", 100.0),
                (increase("5m"), ">", 6000.0),
                (rate("5m"), ">", 30.0),
            ],
        },
        Template {
            alert: "CheckoutFailing",
            metric: "app.http.requests",
            matchers: &[("route", "/api/checkout"), ("status", "!=200")],
            conditions: [
                (rate("5m"), ">", 5.0),
                (rate("5m"), ">", 10.0),
                (rate("1m"), ">", 20.0),
                (increase("5m"), ">", 3000.0),
                (rate("5m"), ">", 8.0),
            ],
        },
    ]
}

fn vigil_condition(subject: Subject, comparison: &str, threshold: f64) -> String {
    match subject {
        Subject::Value => format!("value {comparison} {threshold}"),
        Subject::Window(function, window) => {
            format!("{function}({window}) {comparison} {threshold}")
        }
    }
}

/// PromQL of the same rule. Prometheus' names cannot hold dots.
fn promql(
    template: &Template,
    role: &str,
    subject: Subject,
    comparison: &str,
    threshold: f64,
) -> String {
    let mut selector = format!("role=\"{role}\"");
    for (name, test) in template.matchers {
        let (operator, value) = ["=~", "!~", "!="]
            .into_iter()
            .find_map(|op| test.strip_prefix(op).map(|value| (op, value)))
            .unwrap_or(("=", test));
        write!(selector, ",{name}{operator}\"{value}\"").expect("writing to a String");
    }
    let series = format!("{}{{{selector}}}", template.metric.replace('.', "_"));
    let measured = match subject {
        Subject::Value => series,
        Subject::Window(function @ ("rate" | "increase"), window) => {
            format!("{function}({series}[{window}])")
        }
        Subject::Window(function, window) => format!("{function}_over_time({series}[{window}])"),
    };
    format!("{measured} {comparison} {threshold}")
}

/// The 1,000 metric rules, one group of 100 per role: Vigil's YAML and
/// Prometheus' rule file.
fn metric_rules() -> (String, String) {
    let mut vigil = String::from("groups:\n");
    let mut prometheus = String::from("groups:\n");
    for role in ROLES {
        for text in [&mut vigil, &mut prometheus] {
            writeln!(
                text,
                "  - name: fleet-{role}\n    interval: {GROUP_SECONDS}s\n    rules:"
            )
            .expect("writing to a String");
        }
        for template in templates() {
            for (variant, (subject, comparison, threshold)) in
                VARIANTS.iter().zip(template.conditions)
            {
                let alert = format!("{}{variant}", template.alert);
                let summary = "{{ $labels.host }}: {{ $value }}";
                let matchers: Vec<String> = template
                    .matchers
                    .iter()
                    .map(|(name, test)| format!("{name}: \"{test}\""))
                    .collect();
                let condition = vigil_condition(subject, comparison, threshold);
                writeln!(
                    vigil,
                    "      - alert: {alert}\n        metric: {}\n        match: {{role: {role}{}}}\n        \
                     condition: {condition}\n        labels: {{severity: {}, team: {role}}}\n        \
                     annotations: {{summary: \"{summary}\"}}",
                    template.metric,
                    matchers.iter().map(|m| format!(", {m}")).collect::<String>(),
                    variant.to_lowercase(),
                )
                .expect("writing to a String");
                let expr = promql(&template, role, subject, comparison, threshold);
                writeln!(
                    prometheus,
                    "      - alert: {alert}\n        expr: '{expr}'\n        \
                     labels: {{severity: {}, team: {role}}}\n        \
                     annotations: {{summary: \"{summary}\"}}",
                    variant.to_lowercase(),
                )
                .expect("writing to a String");
            }
        }
    }
    (vigil, prometheus)
}

/// Log patterns by dataset: what operators page on in access logs, application
/// logs and syslog.
const LOG_PATTERNS: [(&str, &str); 50] = [
    ("nginx.access", r#"" 5[0-9][0-9] "#),
    ("nginx.access", r#"" 502 "#),
    ("nginx.access", r#"" 503 "#),
    ("nginx.access", r#"" 504 "#),
    ("nginx.access", r#"" 499 "#),
    ("nginx.access", r#"" 429 "#),
    ("nginx.access", r#"" 403 "#),
    ("nginx.access", r#"POST /api/login[^"]*" 401"#),
    ("nginx.access", r"sqlmap|nikto|masscan|zgrab"),
    ("nginx.access", r"\.\./\.\./"),
    ("nginx.access", r"/wp-login\.php|/xmlrpc\.php"),
    ("nginx.access", r"/\.env|/\.git/config"),
    ("nginx.access", r#"" 5[0-9][0-9] [0-9]+ "[^"]*" "curl/"#),
    ("nginx.access", r"(?i)union\s+select"),
    ("nginx.access", r#""GET /api/checkout[^"]*" 5"#),
    ("app", r"\bERROR\b"),
    ("app", r"\bFATAL\b"),
    ("app", r"panic:"),
    ("app", r"(?i)exception"),
    ("app", r"(?i)timed? ?out"),
    ("app", r"connection refused"),
    ("app", r"deadlock detected"),
    ("app", r"OutOfMemoryError"),
    ("app", r"too many open files"),
    ("app", r"circuit breaker (is )?open"),
    ("app", r"retry(ing)? attempt [5-9]"),
    ("app", r"slow query: [0-9]{4,}ms"),
    ("app", r"TLS handshake (failed|error)"),
    ("app", r"certificate (has )?expired"),
    ("app", r"authentication failed for user"),
    ("app", r"pool exhausted"),
    ("app", r"ECONNRESET"),
    ("app", r"context deadline exceeded"),
    ("app", r"ERROR .*payment"),
    ("syslog", r"Out of memory: Killed process|oom-kill:"),
    ("syslog", r"segfault at [0-9a-f]+"),
    ("syslog", r"I/O error, dev [a-z0-9]+"),
    ("syslog", r"EXT4-fs error"),
    ("syslog", r"XFS \([^)]+\): Corruption"),
    ("syslog", r"Failed password for"),
    ("syslog", r"Invalid user [^ ]+ from"),
    ("syslog", r"sudo: .*authentication failure"),
    ("syslog", r"NIC Link is Down"),
    ("syslog", r"NETDEV WATCHDOG"),
    ("syslog", r"blocked for more than [0-9]+ seconds"),
    ("syslog", r"nf_conntrack: table full"),
    ("syslog", r"Failed with result '(exit-code|signal|timeout)'"),
    ("syslog", r"watchdog: BUG: soft lockup"),
    ("syslog", r"(?i)hardware error"),
    ("syslog", r"temperature above threshold"),
];

/// The 100 log rules: each pattern as a warning and a critical rule.
fn log_rules() -> String {
    let mut yaml = String::from("groups:\n  - name: logs\n    interval: 15s\n    rules:\n");
    for (number, (dataset, pattern)) in LOG_PATTERNS.iter().enumerate() {
        for (severity, count, window) in [("warning", 3, "1m"), ("critical", 20, "5m")] {
            // A single-quoted YAML scalar holding a double-quoted filter string.
            let filter = format!(
                "message =~ \"{}\"",
                pattern.replace('\\', "\\\\").replace('"', "\\\"")
            )
            .replace('\'', "''");
            writeln!(
                yaml,
                "      - alert: LogPattern{number:02}{}\n        logs: {{dataset: {dataset}, match: '{filter}'}}\n        \
                 type: frequency\n        threshold: {{count: {count}, window: {window}}}\n        \
                 group_by: [host.name]\n        labels: {{severity: {severity}}}\n        \
                 annotations: {{summary: \"{{{{ $labels.host }}}}: {{{{ $value }}}} lines\"}}",
                if severity == "warning" { "Warning" } else { "Critical" },
            )
            .expect("writing to a String");
        }
    }
    yaml
}

fn rule_files() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("fleet.yaml".to_owned(), metric_rules().0),
        ("logs.yaml".to_owned(), log_rules()),
    ])
}

fn rule_set(files: &BTreeMap<String, String>) -> RuleSet {
    RuleSet::from_files(files).unwrap_or_else(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("the benchmark's rules are invalid: {}", errors.join("; "))
    })
}

/// Lines of an nginx access log, an application's log and syslog, with the rare
/// lines that rules look for.
fn log_line(random: &mut Random, dataset: &str, host: &str) -> String {
    let roll = random.below(1000);
    match dataset {
        "nginx.access" => {
            let client = format!(
                "10.{}.{}.{}",
                random.below(256),
                random.below(256),
                random.below(256)
            );
            let (method, path) = match random.below(20) {
                0..=7 => (
                    "GET",
                    format!(
                        "/api/search?q=item{}&page={}",
                        random.below(5000),
                        random.below(9) + 1
                    ),
                ),
                8..=10 => ("POST", "/api/checkout".to_owned()),
                11..=12 => ("POST", "/api/login".to_owned()),
                13..=17 => (
                    "GET",
                    format!("/static/js/app.{:08x}.js", random.next() as u32),
                ),
                18 => ("GET", "/".to_owned()),
                _ => ("GET", format!("/products/{}", random.below(100_000))),
            };
            let status = match roll {
                0..=4 => "500",
                5..=6 => "502",
                7 => "504",
                8..=11 => "499",
                12..=40 => "404",
                41..=45 => "401",
                46 => "403",
                47..=80 => "301",
                _ => "200",
            };
            let agent = random.pick(&[
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
                "curl/8.5.0",
                "Go-http-client/1.1",
                "Prometheus/2.42.0",
            ]);
            format!(
                "{client} - - [23/Nov/2026:06:{:02}:{:02} +0000] \"{method} {path} HTTP/1.1\" {status} {} \"https://shop.example.com/\" \"{agent}\"",
                random.below(60),
                random.below(60),
                random.below(50_000),
            )
        }
        "app" => {
            let level = match roll {
                0..=9 => "ERROR",
                10..=59 => "WARN ",
                60..=299 => "DEBUG",
                _ => "INFO ",
            };
            let text = match (level, random.below(8)) {
                ("ERROR", 0) => {
                    "payment provider returned 502, giving up: context deadline exceeded".to_owned()
                }
                ("ERROR", 1) => {
                    "java.net.ConnectException: connection refused (upstream inventory:8080)"
                        .to_owned()
                }
                ("ERROR", 2) => format!(
                    "slow query: {}ms SELECT * FROM orders WHERE user_id = ?",
                    1000 + random.below(9000)
                ),
                ("ERROR", _) => format!(
                    "request failed: order {} could not be saved",
                    random.below(1_000_000)
                ),
                ("WARN ", 0) => {
                    format!("retrying attempt {} for order-service", 1 + random.below(9))
                }
                ("WARN ", _) => format!(
                    "cache miss ratio {:.2} above 0.30",
                    random.between(0.3, 0.6)
                ),
                (_, 0) => format!(
                    "cart updated user={} items={} took={}ms",
                    random.below(100_000),
                    1 + random.below(9),
                    random.below(80)
                ),
                (_, 1) => format!(
                    "GET /api/search q=item{} hits={} took={}ms",
                    random.below(5000),
                    random.below(400),
                    random.below(200)
                ),
                (_, 2) => "scheduled job cleanup-sessions finished".to_owned(),
                _ => format!(
                    "session {:016x} refreshed for user {}",
                    random.next(),
                    random.below(100_000)
                ),
            };
            format!(
                "2026-11-23T06:{:02}:{:02}.{:03}Z {level} [http-nio-8080-exec-{}] c.e.shop.{} - {text}",
                random.below(60),
                random.below(60),
                random.below(1000),
                random.below(200),
                random.pick(&[
                    "CartService",
                    "SearchController",
                    "OrderRepository",
                    "PaymentClient"
                ]),
            )
        }
        _ => {
            let text = match roll {
                0 => format!(
                    "kernel: [{}.{:06}] Out of memory: Killed process {} (java) total-vm:8123456kB",
                    random.below(1_000_000),
                    random.below(1_000_000),
                    random.below(60_000)
                ),
                1..=2 => format!(
                    "kernel: [{}.{:06}] app[{}]: segfault at 0 ip 000055d0c0a1b2c3 sp 00007ffd error 4",
                    random.below(1_000_000),
                    random.below(1_000_000),
                    random.below(60_000)
                ),
                3..=30 => format!(
                    "sshd[{}]: Failed password for invalid user admin from 203.0.113.{} port {} ssh2",
                    random.below(60_000),
                    random.below(256),
                    random.below(65_536)
                ),
                31..=40 => format!(
                    "sshd[{}]: Invalid user oracle from 198.51.100.{} port {}",
                    random.below(60_000),
                    random.below(256),
                    random.below(65_536)
                ),
                41..=300 => format!(
                    "CRON[{}]: (root) CMD (/usr/lib/sysstat/debian-sa1 1 1)",
                    random.below(60_000)
                ),
                301..=600 => format!(
                    "systemd[1]: Started session-{}.scope - Session {} of User deploy.",
                    random.below(100_000),
                    random.below(100_000)
                ),
                _ => format!(
                    "sshd[{}]: Accepted publickey for deploy from 10.1.{}.{} port {} ssh2: ED25519 SHA256:{:016x}",
                    random.below(60_000),
                    random.below(256),
                    random.below(256),
                    random.below(65_536),
                    random.next()
                ),
            };
            format!(
                "Nov 23 06:{:02}:{:02} {host} {text}",
                random.below(60),
                random.below(60)
            )
        }
    }
}

/// Pre-made lines of each dataset, reused with new times.
#[derive(Debug)]
struct LogCorpus {
    lines: Vec<Vec<String>>,
}

impl LogCorpus {
    fn new() -> Self {
        let mut random = Random(0x5eed_1065_0000_0001);
        let lines = DATASETS
            .iter()
            .map(|dataset| {
                (0..8192)
                    .map(|n| log_line(&mut random, dataset, &format!("host-{:03}", n % 1000)))
                    .collect()
            })
            .collect();
        Self { lines }
    }

    /// One batch of `LINES_PER_BATCH` lines of `dataset` from `host`, stamped from
    /// `time` on, 1 ms apart; `cursor` picks the lines.
    fn batch(&self, host: &Host, dataset: usize, cursor: usize, time: i64) -> LogBatch {
        let pool = &self.lines[dataset];
        let mut offset = (cursor * 200) as u64;
        let lines = (0..LINES_PER_BATCH)
            .map(|n| {
                let message = pool[(cursor + n * 7) % pool.len()].clone().into_bytes();
                let length = message.len() as u64 + 1;
                let line = LogLine {
                    offset,
                    event_time_unix_nano: time + n as i64 * 1_000_000,
                    observed_time_unix_nano: time + n as i64 * 1_000_000,
                    message,
                    length,
                    ..LogLine::default()
                };
                offset += length;
                line
            })
            .collect();
        let path = [
            "/var/log/nginx/access.log",
            "/var/log/shop/app.log",
            "/var/log/syslog",
        ][dataset];
        LogBatch {
            resource: host.resource.clone().into(),
            source: Some(LogSource {
                path: path.to_owned(),
                source_id: format!("{}:{path}", host.resource.id),
                device: 2049,
                inode: 1_000 + dataset as u64,
                dataset: DATASETS[dataset].to_owned(),
            }),
            lines,
        }
    }
}

/// An evaluator of all the rules that has seen `WARM_POLLS` polls.
fn warm_evaluator(fleet: &[Host]) -> Evaluator {
    let mut evaluator = Evaluator::new(rule_set(&rule_files()));
    for poll in 0..WARM_POLLS {
        for payload in poll_payloads(fleet, poll) {
            let batch = MetricBatchView::decode(&payload).expect("the corpus decodes");
            evaluator.observe_metric_view(&batch, &Source::default());
        }
    }
    evaluator
}

fn alert_benchmarks(c: &mut Criterion<ThreadCpuTime>) {
    let fleet = fleet();
    let mut evaluator = warm_evaluator(&fleet);
    let mut next_poll = WARM_POLLS;
    let mut group = c.benchmark_group("alert");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements((HOSTS * SERIES_PER_HOST) as u64));
    // One poll of the fleet per iteration, decoded and observed; the groups'
    // evaluation rounds fall inside (two every three polls).
    group.bench_function("metrics_decode_evaluate", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                let payloads = poll_payloads(&fleet, next_poll);
                next_poll += 1;
                let start = thread_cpu_time();
                for payload in &payloads {
                    let batch = MetricBatchView::decode(payload).expect("the corpus decodes");
                    black_box(evaluator.observe_metric_view(&batch, &Source::default()));
                }
                spent += thread_cpu_time().saturating_sub(start);
            }
            spent
        });
    });
    let corpus = LogCorpus::new();
    let mut logs = Evaluator::new(rule_set(&rule_files()));
    let mut second = 0usize;
    group.throughput(Throughput::Elements(
        (LOG_HOSTS_PER_ITERATION * DATASETS.len() * LINES_PER_BATCH) as u64,
    ));
    // One second of logs per iteration: 100 hosts x 3 sources x 250 lines.
    group.bench_function("logs_decode_evaluate", |b| {
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            for _ in 0..iterations {
                let time = START_UNIX_NANO + second as i64 * 1_000_000_000;
                let payloads: Vec<Vec<u8>> = (0..LOG_HOSTS_PER_ITERATION)
                    .flat_map(|n| {
                        let host = &fleet[(second * LOG_HOSTS_PER_ITERATION + n) % HOSTS];
                        (0..DATASETS.len()).map(move |dataset| (host, dataset))
                    })
                    .enumerate()
                    .map(|(n, (host, dataset))| {
                        corpus
                            .batch(host, dataset, second * 977 + n * 31, time)
                            .to_payload()
                    })
                    .collect();
                second += 1;
                let start = thread_cpu_time();
                for payload in &payloads {
                    let batch = LogBatch::from_payload(payload).expect("the corpus decodes");
                    black_box(logs.observe_logs(&batch));
                }
                spent += thread_cpu_time().saturating_sub(start);
            }
            spent
        });
    });
    group.finish();
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// CPU time of evaluation rounds of the 1,000 metric rules with full windows,
/// each timed alone (the clock moved to the tick before the batch that passes
/// it), and of decoding and observing the batches between them.
fn rounds(count: u64) {
    let fleet = fleet();
    let files = rule_files();
    let mut evaluator = Evaluator::new(rule_set(&BTreeMap::from([(
        "fleet.yaml".to_owned(),
        files["fleet.yaml"].clone(),
    )])));
    let mut round_seconds = Vec::new();
    let mut ingest = Duration::ZERO;
    let mut samples = 0u64;
    let mut events = 0usize;
    let mut next_tick = START_UNIX_NANO + GROUP_NANOS;
    let mut poll = 0;
    let warm_until = START_UNIX_NANO + WARM_POLLS as i64 * POLL_NANOS;
    while (round_seconds.len() as u64) < count {
        for (n, payload) in poll_payloads(&fleet, poll).iter().enumerate() {
            if host_time(poll, n) >= next_tick {
                let start = thread_cpu_time();
                let fired = evaluator.advance_to(next_tick);
                let spent = thread_cpu_time().saturating_sub(start);
                if next_tick >= warm_until {
                    round_seconds.push(spent.as_secs_f64());
                    events += fired.len();
                }
                next_tick += GROUP_NANOS;
            }
            let start = thread_cpu_time();
            let batch = MetricBatchView::decode(payload).expect("the corpus decodes");
            black_box(evaluator.observe_metric_view(&batch, &Source::default()));
            let spent = thread_cpu_time().saturating_sub(start);
            if host_time(poll, n) >= warm_until {
                ingest += spent;
                samples += batch.samples.len() as u64;
            }
        }
        poll += 1;
    }
    let firing = evaluator.alerts().len();
    let rounds_total: f64 = round_seconds.iter().sum();
    let measured_seconds = rounds_total + ingest.as_secs_f64();
    let median_round = median(&mut round_seconds.clone());
    println!(
        "{}",
        json!({
            "kind": "rounds",
            "rules": 1000,
            "series": HOSTS * SERIES_PER_HOST,
            "rounds": round_seconds.len(),
            "round_cpu_seconds_median": median_round,
            "round_cpu_seconds_min": round_seconds.iter().copied().fold(f64::INFINITY, f64::min),
            "round_cpu_seconds_max": round_seconds.iter().copied().fold(0.0, f64::max),
            "events_in_rounds": events,
            "alerts_active": firing,
            "samples": samples,
            "ingest_cpu_seconds": ingest.as_secs_f64(),
            "samples_per_cpu_second_ingest": samples as f64 / ingest.as_secs_f64(),
            "samples_per_cpu_second_with_rounds": samples as f64 / measured_seconds,
        })
    );
}

/// Writes Prometheus' rule file and the series table of
/// `bench/alert_exposition.py`.
fn export(dir: &str) {
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir).expect("the export folder can be created");
    std::fs::write(dir.join("rules.yml"), metric_rules().1).expect("rules.yml is written");
    for (name, text) in rule_files() {
        std::fs::write(dir.join(format!("vigil-{name}")), text).expect("rule files are written");
    }
    let mut table = String::with_capacity(HOSTS * SERIES_PER_HOST * 120);
    for host in fleet() {
        let resource = &host.resource;
        for series in &host.series {
            let mut labels = format!(
                "host=\"{}\",site=\"{}\",role=\"{}\"",
                resource.host_name, resource.attributes[0].value, resource.attributes[1].value
            );
            for l in &series.labels {
                write!(labels, ",{}=\"{}\"", l.name, l.value).expect("writing to a String");
            }
            writeln!(
                table,
                "{}{{{labels}}}\t{}\t{}\t{}\t{}",
                series.name.replace('.', "_"),
                u8::from(series.counter),
                series.base,
                series.step,
                series.phase
            )
            .expect("writing to a String");
        }
    }
    std::fs::write(dir.join("series.tsv"), table).expect("series.tsv is written");
}

/// A probe: when the batch that makes an alert fire was published.
#[derive(Debug, Clone, Copy)]
struct Probe {
    published: Instant,
}

/// Probes waiting for their webhook, by alert name and host, and the latencies
/// of those that arrived.
#[derive(Debug, Default)]
struct Probes {
    waiting: HashMap<(String, String), VecDeque<Probe>>,
    /// (alert, seconds from publish to POST).
    arrived: Vec<(String, f64)>,
}

fn unix_nanos_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Answers the stage's webhook POSTs and matches firing probes.
async fn webhook_receiver(listener: TcpListener, probes: Arc<Mutex<Probes>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(serve_webhook(stream, Arc::clone(&probes)));
    }
}

async fn serve_webhook(mut stream: TcpStream, probes: Arc<Mutex<Probes>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 16384];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        while buffer.len() < body_start + length {
            let mut chunk = [0u8; 16384];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let arrived = Instant::now();
        if let Ok(payload) =
            serde_json::from_slice::<Value>(&buffer[body_start..body_start + length])
        {
            record_arrival(&payload, arrived, &probes);
        }
        buffer.drain(..body_start + length);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}

fn record_arrival(payload: &Value, arrived: Instant, probes: &Mutex<Probes>) {
    let mut probes = probes.lock().unwrap_or_else(|p| p.into_inner());
    for alert in payload["alerts"].as_array().into_iter().flatten() {
        if alert["status"] != "firing" {
            continue;
        }
        let name = alert["labels"]["alertname"].as_str().unwrap_or_default();
        let host = alert["labels"]["host"].as_str().unwrap_or_default();
        let key = (name.to_owned(), host.to_owned());
        let Some(probe) = probes.waiting.get_mut(&key).and_then(VecDeque::pop_front) else {
            continue;
        };
        probes.arrived.push((
            name.to_owned(),
            arrived.duration_since(probe.published).as_secs_f64(),
        ));
    }
}

/// Rules whose alerts the latency run provokes, evaluated every second.
const PROBE_RULES: &str = r#"groups:
  - name: latency
    interval: 1s
    rules:
      - alert: LoadSpike
        metric: host.load.1m
        condition: value > 1000
        labels: {severity: page}
        annotations: {summary: "{{ $labels.host }}: load {{ $value }}"}
      - alert: ProbeLine
        logs: {dataset: app, match: 'message =~ "latency probe [0-9]+"'}
        type: any
        threshold: {window: 5s}
        group_by: [host.name]
        labels: {severity: page}
        annotations: {summary: "{{ $labels.host }}: probe line"}
      - alert: HistoryTaken
        logs: {dataset: app, match: 'message =~ "history marker"'}
        type: any
        threshold: {window: 5s}
        group_by: [host.name]
"#;

/// The stage on the in-process bus at the fleet's rate for `seconds`: 100 metric
/// batches and 100 log batches (50 lines) a second, one metric probe (a load
/// spike) and one log probe every 100 ms, after 5 minutes of history sent as fast
/// as the stage takes it.
fn latency(seconds: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run_latency(seconds));
}

async fn run_latency(seconds: u64) {
    let fleet = fleet();
    let corpus = LogCorpus::new();
    let bus = Bus::in_memory();
    let topics = bus.topics();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let url = format!("http://{}/", listener.local_addr().expect("an address"));
    let probes = Arc::new(Mutex::new(Probes::default()));
    tokio::spawn(webhook_receiver(listener, Arc::clone(&probes)));

    let mut files = rule_files();
    files.insert("latency.yaml".to_owned(), PROBE_RULES.to_owned());
    let (_rules_sender, rules) = tokio::sync::watch::channel(Some(Arc::new(files)));
    // Every alert on its own, sent as soon as it fires: the latency measured is
    // the stage's, not a grouping delay.
    let config = AlertStageConfig {
        notify: NotifyConfig {
            receivers: vec![Receiver::Webhook {
                name: "bench".to_owned(),
                url: InlineOrSecret::Inline(url),
                send_resolved: true,
            }],
            route: Some(Route {
                receiver: Some("bench".to_owned()),
                group_by: Some(vec!["...".to_owned()]),
                group_wait: Some(Duration::ZERO),
                ..Route::default()
            }),
            ..NotifyConfig::default()
        },
        ..AlertStageConfig::default()
    };
    let stage = AlertStage::new(&bus, rules, config, &SelfMetrics::default())
        .expect("the stage subscribes");
    let shutdown = CancellationToken::new();
    let stage_task = tokio::spawn(stage.run(shutdown.clone()));
    let publisher = bus.publisher().expect("a publisher");
    let metrics_topic = topics.metrics_raw();
    let logs_topic = topics.logs_raw();

    // History: the polls of the last 5 minutes, as fast as the stage takes them.
    let history_start = unix_nanos_now() - WARM_POLLS as i64 * POLL_NANOS;
    let started = Instant::now();
    for poll in 0..WARM_POLLS {
        for (n, host) in fleet.iter().enumerate() {
            let time =
                history_start + poll as i64 * POLL_NANOS + POLL_NANOS / HOSTS as i64 * n as i64;
            publisher
                .publish_batch(&metrics_topic, &host.batch(poll, time))
                .await
                .expect("the bus takes the batch");
        }
    }
    // The history is processed when a marker line published after it fires. Its
    // own alert: a probe of the same host would otherwise fire again within the
    // group's `group_interval`, and wait for it, as in Alertmanager.
    let marker_host = &fleet[0];
    let mut marker = corpus.batch(marker_host, 1, 0, unix_nanos_now());
    marker.lines.truncate(1);
    marker.lines[0].message = b"history marker".to_vec();
    let key = (
        "HistoryTaken".to_owned(),
        marker_host.resource.host_name.clone(),
    );
    probes
        .lock()
        .expect("not poisoned")
        .waiting
        .entry(key)
        .or_default()
        .push_back(Probe {
            published: Instant::now(),
        });
    publisher
        .publish_batch(&logs_topic, &marker)
        .await
        .expect("the bus takes the batch");
    while probes.lock().expect("not poisoned").arrived.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let history_seconds = started.elapsed().as_secs_f64();
    probes.lock().expect("not poisoned").arrived.clear();

    // Steady load: one metric batch and one log batch every 10 ms.
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut poll = WARM_POLLS;
    let mut slot = 0usize;
    let mut behind = Duration::ZERO;
    let steps = seconds * 100;
    for step in 0..steps {
        let due = ticker.tick().await;
        behind = behind.max(due.elapsed());
        let host_number = slot % HOSTS;
        let host = &fleet[host_number];
        let now = unix_nanos_now();
        let mut batch = host.batch(poll, now);
        // One host in ten per cycle of the fleet, another tenth each cycle, so a
        // probed host is back to normal (its alert resolved) before its next probe.
        let probing = slot % 10 == (slot / HOSTS) % 10;
        if probing {
            batch.samples[0].value = Some(sample::Value::Gauge(5000.0));
            let key = ("LoadSpike".to_owned(), host.resource.host_name.clone());
            probes
                .lock()
                .expect("not poisoned")
                .waiting
                .entry(key)
                .or_default()
                .push_back(Probe {
                    published: Instant::now(),
                });
        }
        publisher
            .publish_batch(&metrics_topic, &batch)
            .await
            .expect("the bus takes the batch");
        let log_host = &fleet[(slot * 7 + 3) % HOSTS];
        // Probe lines go to the application log, whose rule watches for them.
        let dataset = if probing {
            1
        } else {
            step as usize % DATASETS.len()
        };
        // The last line, the probe's, is stamped now.
        let mut logs = corpus.batch(log_host, dataset, slot * 13, unix_nanos_now() - 49_000_000);
        logs.lines.truncate(50);
        if probing {
            let probe_line = logs.lines.last_mut().expect("lines");
            probe_line.message = format!("latency probe {step}").into_bytes();
            let key = ("ProbeLine".to_owned(), log_host.resource.host_name.clone());
            probes
                .lock()
                .expect("not poisoned")
                .waiting
                .entry(key)
                .or_default()
                .push_back(Probe {
                    published: Instant::now(),
                });
        }
        publisher
            .publish_batch(&logs_topic, &logs)
            .await
            .expect("the bus takes the batch");
        slot += 1;
        if slot.is_multiple_of(HOSTS) {
            poll += 1;
        }
    }
    // Stragglers get two seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    stage_task
        .await
        .expect("the stage task ends")
        .expect("the stage ends cleanly");

    let probes = probes.lock().expect("not poisoned");
    let mut report = json!({
        "kind": "latency",
        "seconds": seconds,
        "history_polls": WARM_POLLS,
        "history_seconds": history_seconds,
        "publisher_most_behind_seconds": behind.as_secs_f64(),
    });
    for alert in ["LoadSpike", "ProbeLine"] {
        let mut total: Vec<f64> = probes
            .arrived
            .iter()
            .filter(|a| a.0 == alert)
            .map(|a| a.1)
            .collect();
        total.sort_by(f64::total_cmp);
        let missing: usize = probes
            .waiting
            .iter()
            .filter(|(key, _)| key.0 == alert)
            .map(|(_, waiting)| waiting.len())
            .sum();
        let missing_hosts: Vec<&str> = probes
            .waiting
            .iter()
            .filter(|(key, waiting)| key.0 == alert && !waiting.is_empty())
            .map(|(key, _)| key.1.as_str())
            .collect();
        let figures = if total.is_empty() {
            json!({"arrived": 0, "missing": missing, "missing_hosts": missing_hosts})
        } else {
            json!({
                "arrived": total.len(),
                "missing": missing,
                "missing_hosts": missing_hosts,
                "p50": percentile(&total, 0.5),
                "p99": percentile(&total, 0.99),
                "max": total[total.len() - 1],
            })
        };
        report[alert] = figures;
    }
    println!("{report}");
}

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = arguments.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["rounds", count] => rounds(count.parse().expect("a number of rounds")),
        ["latency", seconds] => latency(seconds.parse().expect("a number of seconds")),
        ["export", dir] => export(dir),
        _ => {
            let mut criterion = Criterion::default()
                .with_measurement(ThreadCpuTime)
                .sample_size(10)
                .warm_up_time(Duration::from_secs(2))
                .measurement_time(Duration::from_secs(20))
                .configure_from_args();
            alert_benchmarks(&mut criterion);
            criterion.final_summary();
        }
    }
}
