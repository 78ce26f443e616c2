//! Throughput of the derive stage without Kafka, in raw samples per second of one
//! core: decoding raw batches, deriving from them (rates, KPIs, windows), and
//! encoding what comes out.
//!
//! The corpus is a fixed fleet polled every 10 s, with the names, labels, value
//! types and metric sets the agent sends: 200 switches of 48 IF-MIB ports (every
//! tenth an old one without 64-bit counters, whose octet counters wrap on busy
//! ports) and 200 hosts with the agent's host metrics. Each measured pass starts
//! from an engine that has seen the first poll, so the counters of the following
//! polls give rates; the watermark moves once per poll (the stage ticks every
//! second, far less often per sample at this rate), so the 1-minute windows of
//! `derive/fleet.yaml` close once per pass and their partials are merged back, as
//! the stage does on the in-process bus. Definitions: the built-ins and
//! `derive/fleet.yaml`.
//!
//! Times are the CPU time of the benchmarking thread, so the figures are per core
//! even when other processes share the machine. `bash bench/derive.sh` builds
//! this with the `dist` profile, runs it and profiles it.

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::{ThreadCpuTime, thread_cpu_time};
use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;
use vigil_aggregator::derive::definitions::DefinitionSet;
use vigil_aggregator::derive::engine::{Engine, EngineCounts, EngineSettings};
use vigil_aggregator::derive::rates::RateSettings;
use vigil_proto::Payload;
use vigil_proto::labels::label;
use vigil_proto::v1::{
    Label, MetricBatch, MetricKind, Resource, ResourceKind, Sample, ValueType, sample,
};
use vigil_proto::view::{DerivedBatchWriter, MetricBatchView};

const SWITCHES: usize = 200;
const PORTS: usize = 48;
const HOSTS: usize = 200;
/// The first poll warms the engine; the others are measured.
const POLLS: usize = 13;
const INTERVAL_NANOS: i64 = 10_000_000_000;
/// Source partitions of the raw metrics topic the resources are spread over.
const PARTITIONS: i32 = 12;
/// 2026-11-23 06:00:05 UTC: polls start just after a minute boundary.
const START_UNIX_NANO: i64 = 1_795_413_605_000_000_000;
const SITES: [&str; 5] = ["ams1", "fra1", "lon2", "par1", "waw1"];
const HOST_ROLES: [&str; 5] = ["web", "db", "cache", "kafka", "batch"];
const TWO_TO_THE_32: u64 = 1 << 32;

/// One raw message of the metrics topic.
#[derive(Debug)]
struct Message {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

/// The raw messages of one poll of the whole fleet, in event-time order.
#[derive(Debug)]
struct Poll {
    messages: Vec<Message>,
    samples: u64,
}

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

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// `mean` give or take `spread` (a fraction of it).
    fn around(&mut self, mean: f64, spread: f64) -> f64 {
        mean * self.between(1.0 - spread, 1.0 + spread)
    }
}

fn gauge_sample(
    name: &str,
    labels: Vec<Label>,
    value: f64,
    value_type: ValueType,
    unit: &str,
    metric_set: &str,
    time: i64,
) -> Sample {
    Sample {
        name: name.to_owned(),
        labels,
        kind: MetricKind::Gauge as i32,
        time_unix_nano: time,
        value: Some(sample::Value::Gauge(value)),
        value_type: value_type as i32,
        unit: unit.to_owned(),
        metric_set: metric_set.to_owned(),
    }
}

fn counter_sample(
    name: &str,
    labels: Vec<Label>,
    value: u64,
    value_type: ValueType,
    unit: &str,
    metric_set: &str,
    time: i64,
) -> Sample {
    Sample {
        name: name.to_owned(),
        labels,
        kind: MetricKind::Counter as i32,
        time_unix_nano: time,
        value: Some(sample::Value::Counter(value)),
        value_type: value_type as i32,
        unit: unit.to_owned(),
        metric_set: metric_set.to_owned(),
    }
}

/// A counter growing at a steady rate, give or take a little each poll, kept to
/// its width.
#[derive(Debug)]
struct Counter {
    value: u64,
    per_second: f64,
    modulus: Option<u64>,
    /// Times it went past its width.
    wraps: u64,
}

impl Counter {
    fn new(random: &mut Random, per_second: f64, wide: bool) -> Self {
        let modulus = (!wide).then_some(TWO_TO_THE_32);
        let value = random.next() % modulus.unwrap_or(1 << 48);
        Self {
            value,
            per_second,
            modulus,
            wraps: 0,
        }
    }

    fn step(&mut self, random: &mut Random, seconds: f64) -> u64 {
        let increase = random.around(self.per_second * seconds, 0.2).round() as u64;
        self.value = self.value.wrapping_add(increase);
        if let Some(modulus) = self.modulus {
            self.wraps += self.value / modulus;
            self.value %= modulus;
        }
        self.value
    }

    fn value_type(&self) -> ValueType {
        if self.modulus.is_some() {
            ValueType::Counter32
        } else {
            ValueType::Counter64
        }
    }
}

/// The IF-MIB port of a switch.
#[derive(Debug)]
struct Port {
    labels: Vec<Label>,
    speed_bits_per_second: f64,
    up: bool,
    /// In and out octets, in and out unicast packets, in and out errors, in and
    /// out discards: the order of the agent's interface samples.
    counters: [Counter; 8],
}

const PORT_COUNTERS: [(&str, &str); 8] = [
    ("if.in.octets", "By"),
    ("if.out.octets", "By"),
    ("if.in.packets", "{packet}"),
    ("if.out.packets", "{packet}"),
    ("if.in.errors", "{packet}"),
    ("if.out.errors", "{packet}"),
    ("if.in.discards", "{packet}"),
    ("if.out.discards", "{packet}"),
];

#[derive(Debug)]
struct Switch {
    resource: Resource,
    uptime_ticks: u64,
    ports: Vec<Port>,
}

impl Switch {
    fn new(random: &mut Random, number: usize) -> Self {
        let site = SITES[number % SITES.len()];
        let role = match number % 20 {
            0 => "core",
            5 | 15 => "distribution",
            _ => "access",
        };
        let name = format!("sw-{site}-{}-{:03}", &role[..3], number / SITES.len() + 1);
        // Old switches have no ifXTable counters: 32-bit octets that wrap, and no
        // 10G uplinks.
        let wide = number % 10 != 3;
        let ports = (1..=PORTS)
            .map(|port| {
                let uplink = wide && port > PORTS - 4;
                let (name, descr, speed) = if uplink {
                    let n = port - (PORTS - 4);
                    (
                        format!("Te1/1/{n}"),
                        format!("TenGigabitEthernet1/1/{n}"),
                        10e9,
                    )
                } else {
                    (
                        format!("Gi1/0/{port}"),
                        format!("GigabitEthernet1/0/{port}"),
                        1e9,
                    )
                };
                let up = uplink || random.unit() < 0.7;
                let load = if up { random.unit().powi(3) * 0.6 } else { 0.0 };
                let in_octets = speed / 8.0 * load;
                let out_octets = speed / 8.0 * load * random.between(0.2, 1.5);
                let in_packet_bytes = random.between(200.0, 1200.0);
                let out_packet_bytes = random.between(200.0, 1200.0);
                let troubled = up && random.unit() < 0.05;
                let errors = if troubled {
                    random.between(0.01, 5.0)
                } else {
                    0.0
                };
                let discards = if up { random.between(0.0, 0.5) } else { 0.0 };
                let counters = [
                    Counter::new(random, in_octets, wide),
                    Counter::new(random, out_octets, wide),
                    Counter::new(random, in_octets / in_packet_bytes, wide),
                    Counter::new(random, out_octets / out_packet_bytes, wide),
                    Counter::new(random, errors, false),
                    Counter::new(random, errors * 0.1, false),
                    Counter::new(random, discards, false),
                    Counter::new(random, discards * 2.0, false),
                ];
                Port {
                    labels: vec![
                        label("ifIndex", (10_100 + port).to_string()),
                        label("ifName", name),
                        label("ifDescr", descr),
                    ],
                    speed_bits_per_second: speed,
                    up,
                    counters,
                }
            })
            .collect();
        let octet = number % 250 + 2;
        Self {
            resource: Resource {
                id: name.clone(),
                kind: ResourceKind::Device as i32,
                host_name: name.clone(),
                attributes: vec![
                    label(
                        "address",
                        format!("10.{}.0.{octet}", 10 + number % SITES.len()),
                    ),
                    label("sysName", format!("{name}.net.example.com")),
                    label("role", role),
                    label("site", site),
                ],
            },
            uptime_ticks: random.next() % 3_000_000_000,
            ports,
        }
    }

    /// One poll of the `if` metric set, as the agent's SNMP poller sends it.
    fn poll(&mut self, random: &mut Random, time: i64, first: bool) -> MetricBatch {
        let seconds = if first { 0.0 } else { 10.0 };
        self.uptime_ticks = (self.uptime_ticks + 1000) % TWO_TO_THE_32;
        let mut samples = Vec::with_capacity(PORTS * 10 + 3);
        samples.push(gauge_sample(
            "system.uptime.ticks",
            Vec::new(),
            self.uptime_ticks as f64,
            ValueType::Timeticks,
            "cs",
            "system",
            time,
        ));
        for port in &mut self.ports {
            for ((name, unit), counter) in PORT_COUNTERS.iter().zip(&mut port.counters) {
                let value = counter.step(random, seconds);
                samples.push(counter_sample(
                    name,
                    port.labels.clone(),
                    value,
                    counter.value_type(),
                    unit,
                    "if",
                    time,
                ));
            }
            samples.push(gauge_sample(
                "if.speed.bits_per_second",
                port.labels.clone(),
                port.speed_bits_per_second,
                ValueType::Gauge32,
                "bit/s",
                "if",
                time,
            ));
            samples.push(gauge_sample(
                "if.oper.status",
                port.labels.clone(),
                if port.up { 1.0 } else { 2.0 },
                ValueType::Integer,
                "",
                "if",
                time,
            ));
        }
        samples.push(gauge_sample(
            "snmp.up",
            Vec::new(),
            1.0,
            ValueType::Integer,
            "",
            "snmp",
            time,
        ));
        samples.push(gauge_sample(
            "snmp.poll.duration.seconds",
            Vec::new(),
            random.between(0.1, 0.8),
            ValueType::Float,
            "s",
            "snmp",
            time,
        ));
        MetricBatch {
            resource: Some(self.resource.clone()),
            samples,
            producer: "vigil-agent/0.1.0".to_owned(),
        }
    }
}

const CPU_MODES: [(&str, f64); 8] = [
    ("user", 0.30),
    ("nice", 0.005),
    ("system", 0.08),
    ("idle", 0.57),
    ("iowait", 0.02),
    ("irq", 0.005),
    ("softirq", 0.015),
    ("steal", 0.005),
];
const MOUNTS: [(&str, &str, &str); 4] = [
    ("/", "/dev/nvme0n1p2", "ext4"),
    ("/boot", "/dev/nvme0n1p1", "ext4"),
    ("/var", "/dev/mapper/vg0-var", "xfs"),
    ("/srv", "/dev/nvme1n1", "xfs"),
];

/// A Linux server running the agent with its default host metrics.
#[derive(Debug)]
struct Host {
    resource: Resource,
    uptime_seconds: f64,
    memory_total: f64,
    cpu: Vec<(Label, Counter)>,
    /// Per disk: read bytes, written bytes, reads, writes, I/O seconds.
    disks: Vec<(Label, [Counter; 5])>,
    /// Per interface: the eight `if.*` counters.
    interfaces: Vec<(Label, [Counter; 8])>,
    filesystems: Vec<(Vec<Label>, f64, f64)>,
}

impl Host {
    fn new(random: &mut Random, number: usize) -> Self {
        let site = SITES[number % SITES.len()];
        let role = HOST_ROLES[(number / SITES.len()) % HOST_ROLES.len()];
        let name = format!("{role}-{site}-{:03}", number / 25 + 1);
        let cores = [8.0, 16.0, 32.0, 64.0][number % 4];
        let busy = random.between(0.3, 1.7);
        let cpu = CPU_MODES
            .iter()
            .map(|(mode, share)| {
                let share = if *mode == "idle" {
                    1.0 - (1.0 - share) * busy
                } else {
                    share * busy
                };
                (
                    label("mode", *mode),
                    Counter::new(random, 100.0 * cores * share, true),
                )
            })
            .collect();
        let disks = ["nvme0n1", "nvme1n1"]
            .into_iter()
            .map(|device| {
                let reads = random.between(10.0, 2000.0);
                let writes = random.between(10.0, 1000.0);
                (
                    label("device", device),
                    [
                        Counter::new(random, reads * 16_384.0, true),
                        Counter::new(random, writes * 32_768.0, true),
                        Counter::new(random, reads, true),
                        Counter::new(random, writes, true),
                        Counter::new(random, 0.2, true),
                    ],
                )
            })
            .collect();
        let interfaces = ["lo", "eth0", "eth1"]
            .into_iter()
            .map(|interface| {
                let bytes = random.between(1e5, 2e8);
                let sent = bytes * random.between(0.3, 3.0);
                let dropped = random.between(0.0, 0.2);
                let packet_bytes = random.between(300.0, 1400.0);
                (
                    label("ifName", interface),
                    [
                        Counter::new(random, bytes, true),
                        Counter::new(random, sent, true),
                        Counter::new(random, bytes / packet_bytes, true),
                        Counter::new(random, bytes / packet_bytes, true),
                        Counter::new(random, 0.0, true),
                        Counter::new(random, 0.0, true),
                        Counter::new(random, dropped, true),
                        Counter::new(random, 0.0, true),
                    ],
                )
            })
            .collect();
        let filesystems = MOUNTS
            .iter()
            .map(|(mount, device, fs_type)| {
                let size = random.between(1e9, 2e12).round();
                (
                    vec![
                        label("mountpoint", *mount),
                        label("device", *device),
                        label("fstype", *fs_type),
                    ],
                    size,
                    (size * random.between(0.05, 0.9)).round(),
                )
            })
            .collect();
        Self {
            resource: Resource {
                id: name.clone(),
                kind: ResourceKind::Host as i32,
                host_name: name,
                attributes: vec![label("role", role), label("site", site)],
            },
            uptime_seconds: random.between(3600.0, 3e7).round(),
            memory_total: cores * 8.0 * 1024.0 * 1024.0 * 1024.0,
            cpu,
            disks,
            interfaces,
            filesystems,
        }
    }

    /// One collection, in the order of the agent's host collector.
    fn poll(&mut self, random: &mut Random, time: i64, first: bool) -> MetricBatch {
        let seconds = if first { 0.0 } else { 10.0 };
        self.uptime_seconds += seconds;
        let mut samples = Vec::with_capacity(72);
        let uptime = self.uptime_seconds + random.between(0.0, 0.01);
        samples.push(gauge_sample(
            "host.uptime.seconds",
            Vec::new(),
            uptime,
            ValueType::Float,
            "s",
            "host.uptime",
            time,
        ));
        for name in ["host.load.1m", "host.load.5m", "host.load.15m"] {
            let load = random.between(0.1, 8.0);
            samples.push(gauge_sample(
                name,
                Vec::new(),
                load,
                ValueType::Float,
                "",
                "host.load",
                time,
            ));
        }
        let total = self.memory_total;
        let available = (total * random.between(0.2, 0.7)).round();
        let memory = [
            ("host.memory.total_bytes", total),
            ("host.memory.available_bytes", available),
            ("host.memory.free_bytes", (available * 0.3).round()),
            ("host.memory.buffers_bytes", (total * 0.01).round()),
            ("host.memory.cached_bytes", (available * 0.6).round()),
            ("host.swap.total_bytes", 2_147_479_552.0),
            ("host.swap.free_bytes", 2_147_479_552.0),
        ];
        for (name, bytes) in memory {
            samples.push(gauge_sample(
                name,
                Vec::new(),
                bytes,
                ValueType::Float,
                "By",
                "host.memory",
                time,
            ));
        }
        for (mode, counter) in &mut self.cpu {
            let ticks = counter.step(random, seconds);
            samples.push(counter_sample(
                "host.cpu.ticks",
                vec![mode.clone()],
                ticks,
                ValueType::Counter64,
                "{tick}",
                "host.cpu",
                time,
            ));
        }
        let disk_metrics = [
            ("host.disk.read.bytes", "By"),
            ("host.disk.written.bytes", "By"),
            ("host.disk.reads", "{operation}"),
            ("host.disk.writes", "{operation}"),
            ("host.disk.io_time.seconds", "s"),
        ];
        for (device, counters) in &mut self.disks {
            for ((name, unit), counter) in disk_metrics.iter().zip(counters) {
                let value = counter.step(random, seconds);
                samples.push(counter_sample(
                    name,
                    vec![device.clone()],
                    value,
                    ValueType::Counter64,
                    unit,
                    "host.disk",
                    time,
                ));
            }
        }
        for (interface, counters) in &mut self.interfaces {
            for ((name, unit), counter) in PORT_COUNTERS.iter().zip(counters) {
                let value = counter.step(random, seconds);
                samples.push(counter_sample(
                    name,
                    vec![interface.clone()],
                    value,
                    ValueType::Counter64,
                    unit,
                    "if",
                    time,
                ));
            }
        }
        for (labels, size, used) in &mut self.filesystems {
            *used = (*used + random.between(-1e6, 4e6)).clamp(0.0, *size);
            for (name, bytes) in [
                ("host.fs.size_bytes", *size),
                ("host.fs.used_bytes", *used),
                ("host.fs.available_bytes", (*size - *used) * 0.95),
            ] {
                samples.push(gauge_sample(
                    name,
                    labels.clone(),
                    bytes.round(),
                    ValueType::Float,
                    "By",
                    "host.fs",
                    time,
                ));
            }
        }
        MetricBatch {
            resource: Some(self.resource.clone()),
            samples,
            producer: "vigil-agent/0.1.0".to_owned(),
        }
    }
}

/// Every poll of the fleet, encoded, and how many times 32-bit counters wrapped.
fn corpus() -> (Vec<Poll>, u64) {
    let mut random = Random(0x5eed_d3a1_7e00_0001);
    let mut switches: Vec<Switch> = (0..SWITCHES).map(|n| Switch::new(&mut random, n)).collect();
    let mut hosts: Vec<Host> = (0..HOSTS).map(|n| Host::new(&mut random, n)).collect();
    // Switches and hosts interleaved, each polled at its own phase of the interval.
    let order: Vec<(bool, usize)> = (0..SWITCHES.max(HOSTS))
        .flat_map(|n| {
            [
                (n < SWITCHES).then_some((true, n)),
                (n < HOSTS).then_some((false, n)),
            ]
        })
        .flatten()
        .collect();
    let mut offsets = [0i64; PARTITIONS as usize];
    let polls = (0..POLLS)
        .map(|poll| {
            let mut messages = Vec::with_capacity(order.len());
            let mut samples = 0;
            for (position, &(switch, n)) in order.iter().enumerate() {
                let phase = INTERVAL_NANOS / order.len() as i64 * position as i64;
                let time = START_UNIX_NANO + poll as i64 * INTERVAL_NANOS + phase;
                let first = poll == 0;
                let batch = if switch {
                    switches[n].poll(&mut random, time, first)
                } else {
                    hosts[n].poll(&mut random, time, first)
                };
                samples += batch.samples.len() as u64;
                let partition = (position % PARTITIONS as usize) as i32;
                let offset = &mut offsets[partition as usize];
                messages.push(Message {
                    partition,
                    offset: *offset,
                    payload: batch.to_payload(),
                });
                *offset += 1;
            }
            Poll { messages, samples }
        })
        .collect();
    let wraps = switches
        .iter()
        .flat_map(|switch| &switch.ports)
        .flat_map(|port| &port.counters)
        .map(|counter| counter.wraps)
        .sum();
    (polls, wraps)
}

fn definitions() -> DefinitionSet {
    let files = BTreeMap::from([(
        "fleet.yaml".to_owned(),
        include_str!("../../derive/fleet.yaml").to_owned(),
    )]);
    DefinitionSet::from_files(&files).unwrap_or_else(|errors| {
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("derive/fleet.yaml is invalid: {}", errors.join("; "))
    })
}

/// The engine settings of the stage's defaults (`DeriveStageConfig::default()`).
fn settings() -> EngineSettings {
    EngineSettings {
        rates: RateSettings {
            max_gap_intervals: 3,
            default_interval: Duration::from_secs(60),
        },
        allowed_lateness: Duration::from_secs(30),
        group_wait: Duration::from_secs(10),
        producer: "vigil-derive/bench".to_owned(),
        max_series: 1_000_000,
    }
}

/// What a pass produced.
#[derive(Debug, Default)]
struct Output {
    batches: u64,
    samples: u64,
    partials: u64,
    bytes: u64,
}

/// The steps of a pass, in the order of [`Steps::NAMES`].
#[derive(Debug, Clone, Copy)]
enum Step {
    Decode,
    DeriveEncode,
    FreeInput,
    Windows,
}

/// CPU time spent in each step of a pass, when timed; measured passes are not
/// (a branch per step instead of two clock reads).
#[derive(Debug, Default)]
struct Steps {
    timed: bool,
    last: Duration,
    spent: [Duration; 4],
}

impl Steps {
    const NAMES: [&str; 4] = ["decode", "derive and encode", "free input", "close windows"];

    fn timed() -> Self {
        Self {
            timed: true,
            last: thread_cpu_time(),
            spent: Default::default(),
        }
    }

    /// Charges the time since the previous lap to `step`.
    fn lap(&mut self, step: Step) {
        if self.timed {
            let now = thread_cpu_time();
            self.spent[step as usize] += now.saturating_sub(self.last);
            self.last = now;
        }
    }
}

/// What the stage does with `polls`, without Kafka: decode every message, derive
/// into encoded batches, and close windows once per poll (merging the partials
/// back), encoding what that publishes too when `encode`.
fn run(engine: &mut Engine, polls: &[Poll], encode: bool, steps: &mut Steps) -> Output {
    let mut output = Output::default();
    let mut writer = DerivedBatchWriter::default();
    for poll in polls {
        for message in &poll.messages {
            let batch = MetricBatchView::decode(&message.payload).expect("the corpus decodes");
            steps.lap(Step::Decode);
            if engine.derive(&batch, message.partition, message.offset, &mut writer) {
                output.batches += 1;
                output.samples += writer.samples() as u64;
                output.bytes += writer.bytes.len() as u64;
            }
            steps.lap(Step::DeriveEncode);
            // Freeing is part of the cost; dropped explicitly so that profiles name it.
            drop(batch);
            steps.lap(Step::FreeInput);
        }
        let closed = engine.advance(engine.watermark());
        for batch in &closed.partials {
            output.partials += batch.partials.len() as u64;
            if encode {
                output.bytes += batch.to_payload().len() as u64;
            }
            engine.merge_partials(batch, 0, 0);
        }
        for batch in &closed.derived {
            output.batches += 1;
            output.samples += batch.samples.len() as u64;
            if encode {
                output.bytes += batch.to_payload().len() as u64;
            }
        }
        drop(closed);
        steps.lap(Step::Windows);
    }
    output
}

/// An engine that has seen the first poll: the baselines of every counter.
fn warm_engine(definitions: &DefinitionSet, polls: &[Poll]) -> Engine {
    let mut engine = Engine::new(definitions, settings());
    run(&mut engine, &polls[..1], false, &mut Steps::default());
    engine
}

fn describe(polls: &[Poll], wraps: u64, definitions: &DefinitionSet) {
    let raw: u64 = polls[1..].iter().map(|p| p.samples).sum();
    let messages: usize = polls[1..].iter().map(|p| p.messages.len()).sum();
    let bytes: usize = polls[1..]
        .iter()
        .flat_map(|p| &p.messages)
        .map(|m| m.payload.len())
        .sum();
    // The second of two passes is timed: the first grows the heap, which costs
    // page faults that the measured passes do not see.
    let mut engine = warm_engine(definitions, polls);
    run(&mut engine, &polls[1..], true, &mut Steps::default());
    drop(engine);
    let mut engine = warm_engine(definitions, polls);
    let before = engine.counts();
    let mut steps = Steps::timed();
    let output = run(&mut engine, &polls[1..], true, &mut steps);
    let EngineCounts {
        rates,
        started,
        resets,
        gaps,
        reboots,
        duplicates,
        out_of_order,
        late,
        ..
    } = engine.counts();
    eprintln!(
        "corpus: {SWITCHES} switches x {PORTS} ports and {HOSTS} hosts, {POLLS} polls 10 s apart, \
         {} definitions; measured polls 2..{POLLS}: {messages} messages, {raw} raw samples, \
         {:.1} MiB encoded ({:.0} B per sample), {wraps} wraps of 32-bit counters",
        definitions.len(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / raw as f64,
    );
    eprintln!(
        "one pass derives {} samples in {} batches ({:.1} MiB encoded) and {} partials; \
         counter readings: {} rates, {} started, {} resets, {} gaps, {} reboots, \
         {} duplicates, {} out of order, {} late; engine holds {} series, {} open windows",
        output.samples,
        output.batches,
        output.bytes as f64 / (1024.0 * 1024.0),
        output.partials,
        rates - before.rates,
        started - before.started,
        resets - before.resets,
        gaps - before.gaps,
        reboots - before.reboots,
        duplicates - before.duplicates,
        out_of_order - before.out_of_order,
        late - before.late,
        engine.series(),
        engine.open_windows(),
    );
    let total: Duration = steps.spent.iter().sum();
    let shares: Vec<String> = Steps::NAMES
        .iter()
        .zip(steps.spent)
        .map(|(name, spent)| {
            format!(
                "{name} {:.0} ns ({:.0} %)",
                spent.as_nanos() as f64 / raw as f64,
                100.0 * spent.as_secs_f64() / total.as_secs_f64()
            )
        })
        .collect();
    eprintln!(
        "steps of that pass, CPU time per raw sample: {:.0} ns in all: {}",
        total.as_nanos() as f64 / raw as f64,
        shares.join(", ")
    );
}

fn derive_stage(c: &mut Criterion<ThreadCpuTime>) {
    let (polls, wraps) = corpus();
    let definitions = definitions();
    describe(&polls, wraps, &definitions);
    // bench/derive.sh profiles the passes only, not the making of the corpus.
    if let Some(control) = std::env::var_os("DERIVE_BENCH_PERF_CONTROL") {
        std::fs::write(&control, "enable\n").expect("perf's control FIFO takes the command");
    }
    let measured = &polls[1..];
    let raw_samples: u64 = measured.iter().map(|p| p.samples).sum();

    let mut group = c.benchmark_group("derive");
    group.throughput(Throughput::Elements(raw_samples));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("decode", |b| {
        b.iter(|| {
            for message in measured.iter().flat_map(|p| &p.messages) {
                black_box(MetricBatchView::decode(&message.payload).expect("the corpus decodes"));
            }
        });
    });
    group.bench_function("decode_derive_encode", |b| {
        b.iter_batched(
            || warm_engine(&definitions, &polls),
            |mut engine| {
                black_box(run(&mut engine, measured, true, &mut Steps::default()));
                // Dropped after the measurement.
                engine
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(20));
    targets = derive_stage
}
criterion_main!(benches);
