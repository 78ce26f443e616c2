//! Tests of the derive engine from raw batches (through the wire format) to
//! derived samples, closed windows, merged group partials and resume offsets.

use super::*;
use crate::derive::window::{Accumulator, WindowBounds};
use std::collections::BTreeMap;
use vigil_proto::Payload;
use vigil_proto::labels::{find, label};
use vigil_proto::v1::{MetricKind, Resource, Sample, ValueType, sample};
use vigil_proto::view::{DerivedBatchWriter, MetricBatchView};

const SECOND: i64 = 1_000_000_000;
/// A minute boundary, so windows line up with readable times.
const T0: i64 = 1_800_000_000 * SECOND;

fn settings() -> EngineSettings {
    EngineSettings {
        rates: RateSettings {
            max_gap_intervals: 3,
            default_interval: Duration::from_secs(10),
        },
        allowed_lateness: Duration::from_secs(5),
        group_wait: Duration::from_secs(5),
        producer: "test".into(),
        max_series: 1_000,
    }
}

/// The derived batch of `batch`, through the wire format as in the stage.
fn derive(
    engine: &mut Engine,
    batch: &MetricBatch,
    partition: i32,
    offset: i64,
) -> Option<MetricBatch> {
    let payload = batch.to_payload();
    let view = MetricBatchView::decode(&payload).unwrap();
    let mut writer = DerivedBatchWriter::default();
    engine
        .derive(&view, partition, offset, &mut writer)
        .then(|| MetricBatch::from_payload(&writer.bytes).unwrap())
}

fn engine_with(user: &str) -> Engine {
    let files = if user.is_empty() {
        BTreeMap::new()
    } else {
        BTreeMap::from([("user.yaml".to_owned(), user.to_owned())])
    };
    Engine::new(&DefinitionSet::from_files(&files).unwrap(), settings())
}

fn counter(name: &str, labels: &[(&str, &str)], time: i64, value: u64, width: ValueType) -> Sample {
    Sample {
        name: name.into(),
        labels: labels.iter().map(|(n, v)| label(*n, *v)).collect(),
        kind: MetricKind::Counter as i32,
        time_unix_nano: time,
        value: Some(sample::Value::Counter(value)),
        value_type: width as i32,
        unit: String::new(),
        metric_set: "if".into(),
    }
}

fn gauge(name: &str, labels: &[(&str, &str)], time: i64, value: f64) -> Sample {
    Sample {
        kind: MetricKind::Gauge as i32,
        value: Some(sample::Value::Gauge(value)),
        value_type: ValueType::Float as i32,
        ..counter(name, labels, time, 0, ValueType::Float)
    }
}

fn batch(resource: &str, attributes: &[(&str, &str)], samples: Vec<Sample>) -> MetricBatch {
    MetricBatch {
        resource: Some(Resource {
            id: resource.into(),
            host_name: resource.into(),
            attributes: attributes.iter().map(|(n, v)| label(*n, *v)).collect(),
            ..Resource::default()
        }),
        samples,
        producer: "test".into(),
    }
}

fn value(batch: &MetricBatch, name: &str) -> Option<f64> {
    batch
        .samples
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| match s.value {
            Some(sample::Value::Gauge(value)) => Some(value),
            _ => None,
        })
}

/// One poll of a switch port: octets (32-bit), speed and sysUpTime.
fn port_poll(time: i64, octets_in: u64, uptime_ticks: f64) -> MetricBatch {
    let port = [("ifIndex", "1"), ("ifName", "Gi0/1")];
    batch(
        "switch-1",
        &[],
        vec![
            gauge("system.uptime.ticks", &[], time, uptime_ticks),
            counter("if.in.octets", &port, time, octets_in, ValueType::Counter32),
            gauge("if.speed.bits_per_second", &port, time, 1e9),
        ],
    )
}

#[test]
fn float_counters_give_rates_and_a_decrease_is_a_reset() {
    let mut engine = engine_with(
        "definitions:\n  - {name: http.requests_per_second, function: rate, input: http_requests_total}\n",
    );
    let scrape = |time: i64, count: f64| {
        let mut sample = gauge("http_requests_total", &[("code", "200")], time, 0.0);
        sample.kind = MetricKind::Counter as i32;
        sample.value = Some(sample::Value::FloatCounter(count));
        batch("web-1:9100", &[], vec![sample])
    };
    assert!(derive(&mut engine, &scrape(T0, 100.5), 0, 0).is_none());
    let derived = derive(&mut engine, &scrape(T0 + 10 * SECOND, 130.5), 0, 1).unwrap();
    assert_eq!(value(&derived, "http.requests_per_second"), Some(3.0));
    // The target restarted: its counter starts again, no rate and no spike.
    assert!(derive(&mut engine, &scrape(T0 + 20 * SECOND, 2.0), 0, 2).is_none());
    let derived = derive(&mut engine, &scrape(T0 + 30 * SECOND, 7.0), 0, 3).unwrap();
    assert_eq!(value(&derived, "http.requests_per_second"), Some(0.5));
    // A staleness marker is no reading: the next sample still steps from 7.
    let mut marker = scrape(T0 + 35 * SECOND, 0.0);
    marker.samples[0].value = Some(sample::Value::FloatCounter(
        vigil_proto::staleness::stale_marker(),
    ));
    assert!(derive(&mut engine, &marker, 0, 4).is_none());
    let derived = derive(&mut engine, &scrape(T0 + 40 * SECOND, 17.0), 0, 5).unwrap();
    assert_eq!(value(&derived, "http.requests_per_second"), Some(1.0));
}

#[test]
fn interface_rates_and_utilisation_come_from_two_polls() {
    let mut engine = engine_with("");
    assert!(derive(&mut engine, &port_poll(T0, 1_000, 100.0), 0, 0).is_none());
    let derived = derive(
        &mut engine,
        &port_poll(T0 + 10 * SECOND, 1_000 + 12_500_000, 1_100.0),
        0,
        1,
    )
    .unwrap();
    assert_eq!(value(&derived, "if.in.bits_per_second"), Some(10_000_000.0));
    assert_eq!(value(&derived, "if.in.utilisation_percent"), Some(1.0));
    let rate = derived
        .samples
        .iter()
        .find(|s| s.name == "if.in.bits_per_second")
        .unwrap();
    assert_eq!(find(&rate.labels, "ifName"), Some("Gi0/1"));
    assert_eq!(rate.metric_set, "if");
    assert_eq!(rate.unit, "bit/s");
    assert_eq!(rate.time_unix_nano, T0 + 10 * SECOND);
}

#[test]
fn a_32_bit_wrap_within_the_speed_is_a_rate_and_a_reboot_is_none() {
    let mut engine = engine_with("");
    derive(
        &mut engine,
        &port_poll(T0, u64::from(u32::MAX) - 999, 100.0),
        0,
        0,
    );
    let wrapped = derive(
        &mut engine,
        &port_poll(T0 + 10 * SECOND, 9_000, 1_100.0),
        0,
        1,
    )
    .unwrap();
    assert_eq!(
        value(&wrapped, "if.in.bits_per_second"),
        Some(10_000.0 * 8.0 / 10.0)
    );
    // The device rebooted: sysUpTime went back and the counter restarted low.
    let rebooted = derive(&mut engine, &port_poll(T0 + 20 * SECOND, 500, 50.0), 0, 2);
    assert!(rebooted.is_none_or(|b| value(&b, "if.in.bits_per_second").is_none()));
    assert_eq!(engine.counts().reboots, 1);
    let after = derive(
        &mut engine,
        &port_poll(T0 + 30 * SECOND, 1_750, 1_050.0),
        0,
        3,
    )
    .unwrap();
    assert_eq!(value(&after, "if.in.bits_per_second"), Some(1_000.0));
}

#[test]
fn cpu_utilisation_is_the_busy_share_of_ticks() {
    let mut engine = engine_with("");
    let ticks = |time, user, idle, iowait| {
        let tick = |mode, value| Sample {
            metric_set: "host.cpu".into(),
            ..counter(
                "host.cpu.ticks",
                &[("mode", mode)],
                time,
                value,
                ValueType::Counter64,
            )
        };
        batch(
            "web-1",
            &[],
            vec![
                tick("user", user),
                tick("idle", idle),
                tick("iowait", iowait),
            ],
        )
    };
    derive(&mut engine, &ticks(T0, 100, 1_000, 10), 0, 0);
    let derived = derive(&mut engine, &ticks(T0 + 10 * SECOND, 400, 1_600, 110), 0, 1).unwrap();
    let close = |found: Option<f64>, expected: f64| {
        assert!(
            found.is_some_and(|v| (v - expected).abs() < 1e-9),
            "{found:?} ≠ {expected}"
        );
    };
    close(value(&derived, "host.cpu.utilisation_percent"), 30.0);
    close(value(&derived, "host.cpu.iowait_percent"), 10.0);
    let busy = derived
        .samples
        .iter()
        .find(|s| s.name == "host.cpu.utilisation_percent")
        .unwrap();
    assert!(busy.labels.is_empty(), "the mode label is summed away");
}

#[test]
fn memory_and_container_kpis_are_ratios_of_the_same_labels() {
    let mut engine = engine_with("");
    let memory = batch(
        "web-1",
        &[],
        vec![
            gauge("host.memory.total_bytes", &[], T0, 1000.0),
            gauge("host.memory.available_bytes", &[], T0, 250.0),
            gauge("host.fs.size_bytes", &[("mountpoint", "/")], T0, 200.0),
            gauge("host.fs.used_bytes", &[("mountpoint", "/")], T0, 50.0),
            gauge("host.fs.used_bytes", &[("mountpoint", "/var")], T0, 50.0),
        ],
    );
    let derived = derive(&mut engine, &memory, 0, 0).unwrap();
    assert_eq!(value(&derived, "host.memory.used_percent"), Some(75.0));
    let fs: Vec<_> = derived
        .samples
        .iter()
        .filter(|s| s.name == "host.fs.used_percent")
        .collect();
    assert_eq!(fs.len(), 1, "/var has no size, so no share");
    assert_eq!(fs[0].value, Some(sample::Value::Gauge(25.0)));

    let container = |time, usage, periods, throttled| {
        batch(
            "web-1/c1",
            &[],
            vec![
                counter(
                    "container.cpu.usage.microseconds",
                    &[],
                    time,
                    usage,
                    ValueType::Counter64,
                ),
                counter(
                    "container.cpu.periods",
                    &[],
                    time,
                    periods,
                    ValueType::Counter64,
                ),
                counter(
                    "container.cpu.throttled.periods",
                    &[],
                    time,
                    throttled,
                    ValueType::Counter64,
                ),
                gauge("container.cpu.available_cores", &[], time, 0.5),
            ],
        )
    };
    derive(&mut engine, &container(T0, 0, 0, 0), 0, 1);
    let derived = derive(
        &mut engine,
        &container(T0 + 10 * SECOND, 2_000_000, 100, 25),
        0,
        2,
    )
    .unwrap();
    // 0.2 s of CPU per second on half a core: 40 %.
    assert_eq!(
        value(&derived, "container.cpu.utilisation_percent"),
        Some(40.0)
    );
    assert_eq!(
        value(&derived, "container.cpu.throttled_percent"),
        Some(25.0)
    );
    assert!(value(&derived, "rate(container.cpu.periods)").is_none());
}

#[test]
fn per_series_windows_close_once_the_watermark_passes_their_end() {
    let mut engine = engine_with(
        "definitions:\n  - {name: load.max, function: max, input: host.load.1m, windows: [1m]}\n",
    );
    for (step, load) in [1.0, 4.0, 2.0].into_iter().enumerate() {
        let time = T0 + (step as i64 * 20 + 5) * SECOND;
        derive(
            &mut engine,
            &batch("web-1", &[], vec![gauge("host.load.1m", &[], time, load)]),
            0,
            step as i64,
        );
    }
    assert!(
        engine.advance(T0 + 64 * SECOND).derived.is_empty(),
        "lateness not over yet"
    );
    let closed = engine.advance(T0 + 65 * SECOND);
    assert_eq!(closed.derived.len(), 1);
    let aggregate = &closed.derived[0].samples[0];
    assert_eq!(aggregate.name, "load.max");
    assert_eq!(aggregate.value, Some(sample::Value::Gauge(4.0)));
    assert_eq!(aggregate.time_unix_nano, T0 + 60 * SECOND);
    assert_eq!(find(&aggregate.labels, "window"), Some("1m"));
    assert!(
        engine.advance(T0 + 200 * SECOND).derived.is_empty(),
        "closed only once"
    );
}

#[test]
fn group_partials_merge_per_source_partition_and_a_resent_one_replaces() {
    let definitions = "definitions:\n  - {name: site.load.sum, function: sum, input: host.load.1m, windows: [1m], group_by: [site]}\n";
    let mut first = engine_with(definitions);
    let mut second = engine_with(definitions);
    let load = |host: &str, value| {
        batch(
            host,
            &[("site", "ams")],
            vec![gauge("host.load.1m", &[], T0 + 5 * SECOND, value)],
        )
    };
    derive(&mut first, &load("web-1", 1.5), 0, 0);
    derive(&mut second, &load("web-2", 2.5), 1, 0);
    let from_first = first.advance(T0 + 65 * SECOND).partials;
    let from_second = second.advance(T0 + 65 * SECOND).partials;
    assert_eq!(from_first.len(), 1);
    assert_eq!(from_first[0].group_key, "site.load.sum|site=ams");
    assert_eq!(from_second[0].partials[0].source_partition, 1);

    let mut finisher = engine_with(definitions);
    finisher.merge_partials(&from_first[0], 0, 10);
    finisher.merge_partials(&from_second[0], 0, 11);
    // Partition 0 replayed by a new owner sends its partial again.
    finisher.merge_partials(&from_first[0], 0, 12);
    assert_eq!(finisher.resume_partial_offset(0), Some(10));
    assert!(
        finisher.advance(T0 + 69 * SECOND).derived.is_empty(),
        "waits for other instances"
    );
    let finished = finisher.advance(T0 + 70 * SECOND).derived;
    assert_eq!(finished.len(), 1);
    let sample = &finished[0].samples[0];
    assert_eq!(sample.name, "site.load.sum");
    assert_eq!(sample.value, Some(sample::Value::Gauge(4.0)));
    assert_eq!(find(&sample.labels, "site"), Some("ams"));
    assert_eq!(
        finished[0].resource.as_ref().unwrap().id,
        "group:site.load.sum|site=ams"
    );
    assert_eq!(finisher.resume_partial_offset(0), None);
}

#[test]
fn the_resume_offset_keeps_what_a_new_owner_must_replay() {
    let mut engine = engine_with(
        "definitions:\n  - {name: load.avg, function: avg, input: host.load.1m, windows: [1m]}\n",
    );
    let load = |host: &str, seconds| {
        batch(
            host,
            &[],
            vec![gauge("host.load.1m", &[], T0 + seconds * SECOND, 1.0)],
        )
    };
    derive(&mut engine, &load("web-1", 5), 3, 100);
    derive(&mut engine, &load("web-2", 6), 3, 101);
    derive(&mut engine, &load("web-1", 15), 3, 102);
    // web-2's latest message and the open window's first message.
    assert_eq!(engine.resume_offset(3), Some(100));
    derive(&mut engine, &load("web-1", 65), 3, 103);
    derive(&mut engine, &load("web-2", 66), 3, 104);
    engine.advance(T0 + 71 * SECOND);
    // The first window is closed; the latest messages are what is left.
    assert_eq!(engine.resume_offset(3), Some(103));
    assert_eq!(engine.resume_offset(4), None);
}

#[test]
fn a_partition_replayed_behind_the_others_keeps_its_series_across_ticks() {
    let mut engine = engine_with("");
    let poll = |seconds: i64, octets| {
        port_poll(T0 + seconds * SECOND, octets, (100 + seconds * 100) as f64)
    };
    // This instance's own partition is at +100 s ...
    let mut own = poll(100, 0);
    own.resource.as_mut().unwrap().id = "switch-own".into();
    derive(&mut engine, &own, 1, 0);
    // ... while a taken-over partition is replayed from +10 s, one tick per reading.
    for step in 0..5 {
        let derived = derive(&mut engine, &poll(10 + step, 1_000 * step as u64), 2, step);
        engine.advance(engine.watermark());
        if step > 0 {
            let derived = derived.expect("every replayed reading after the first gives a rate");
            assert_eq!(value(&derived, "if.in.bits_per_second"), Some(8_000.0));
        }
    }
    assert_eq!(
        engine.counts().started,
        2,
        "one start per series, none after a tick"
    );
}

#[test]
fn a_replayed_partition_does_not_refill_windows_emitted_before() {
    let mut engine = engine_with(
        "definitions:\n  - {name: load.count, function: count, input: host.load.1m, windows: [1m]}\n",
    );
    let load = |seconds| {
        batch(
            "web-1",
            &[],
            vec![gauge("host.load.1m", &[], T0 + seconds * SECOND, 1.0)],
        )
    };
    // A new owner starts in the second window; a late sample of the first
    // window must not make a one-sample aggregate of it.
    derive(&mut engine, &load(70), 0, 50);
    derive(&mut engine, &load(55), 0, 51);
    assert_eq!(engine.counts().late, 1);
    let closed = engine.advance(T0 + 200 * SECOND);
    assert_eq!(closed.derived.len(), 1);
    assert_eq!(
        closed.derived[0].samples[0].time_unix_nano,
        T0 + 120 * SECOND
    );
}

// A partial merged before any raw batch left the watermark at its start
// (`i64::MIN`), and the stage's next tick overflowed subtracting the group wait
// from it.
#[test]
fn a_tick_before_any_raw_batch_keeps_the_partials_merged() {
    let definitions = "definitions:\n  - {name: site.load.sum, function: sum, input: host.load.1m, windows: [1m], group_by: [site]}\n";
    let mut instance = engine_with(definitions);
    derive(
        &mut instance,
        &batch(
            "web-1",
            &[("site", "ams")],
            vec![gauge("host.load.1m", &[], T0 + 5 * SECOND, 1.5)],
        ),
        0,
        0,
    );
    let partials = instance.advance(T0 + 65 * SECOND).partials;

    let mut finisher = engine_with(definitions);
    finisher.merge_partials(&partials[0], 2, 7);
    assert!(finisher.advance(finisher.watermark()).derived.is_empty());
    assert_eq!(finisher.resume_partial_offset(2), Some(7));
    let finished = finisher.advance(T0 + 70 * SECOND).derived;
    assert_eq!(value(&finished[0], "site.load.sum"), Some(1.5));
}

// Window bounds at the ends of `i64` overflowed the width and closing time of a
// partial; the codec refuses them, but the engine must not panic on them.
#[test]
fn partials_with_extreme_windows_do_not_overflow() {
    let definitions = "definitions:\n  - {name: site.load.max, function: max, input: host.load.1m, windows: [1m], group_by: [site]}\n";
    let mut engine = engine_with(definitions);
    let mut partial = Accumulator::new(false).to_partial(
        "site.load.max",
        vec![label("site", "ams")],
        WindowBounds {
            start_unix_nano: i64::MIN,
            end_unix_nano: i64::MAX,
        },
    );
    partial.count = 1;
    let hostile = PartialAggregateBatch {
        group_key: "site.load.max|site=ams".into(),
        partials: vec![partial.clone()],
        producer: "test".into(),
    };
    engine.merge_partials(&hostile, 0, 1);
    partial.window_start_unix_nano = i64::MAX - 60 * SECOND;
    engine.merge_partials(
        &PartialAggregateBatch {
            partials: vec![partial],
            ..hostile
        },
        0,
        2,
    );
    engine.advance(i64::MIN);
    assert!(engine.advance(i64::MAX).derived.len() <= 1);
}

/// Three ports of one switch polled at `time`, each at `octets`.
fn three_ports(time: i64, octets: u64) -> MetricBatch {
    let samples = ["1", "2", "3"]
        .into_iter()
        .map(|index| {
            counter(
                "if.in.octets",
                &[("ifIndex", index)],
                time,
                octets,
                ValueType::Counter64,
            )
        })
        .collect();
    batch("switch-1", &[], samples)
}

// Regression: every new series was held, without bound, however many came.
#[test]
fn series_beyond_max_series_are_refused_and_counted_by_metric() {
    let mut engine = Engine::new(
        &DefinitionSet::from_files(&BTreeMap::new()).unwrap(),
        EngineSettings {
            max_series: 2,
            ..settings()
        },
    );
    derive(&mut engine, &three_ports(T0, 1_000), 0, 0);
    assert_eq!(engine.series(), 2);
    assert_eq!(
        engine.take_refused_series(),
        BTreeMap::from([("if.in.octets".to_owned(), 1)])
    );
    let derived = derive(&mut engine, &three_ports(T0 + 10 * SECOND, 2_000), 0, 1).unwrap();
    let ports: Vec<&str> = derived
        .samples
        .iter()
        .filter(|s| s.name == "if.in.bits_per_second")
        .filter_map(|s| find(&s.labels, "ifIndex"))
        .collect();
    assert_eq!(ports, ["1", "2"], "the series held go on");
    assert_eq!(
        engine.take_refused_series(),
        BTreeMap::from([("if.in.octets".to_owned(), 1)])
    );
    assert!(engine.take_refused_series().is_empty());
}
