//! Hostile messages on every topic each stage consumes: batches that decode but
//! carry values no sender should (times outside 1970..2200 or years ahead,
//! `i64` extremes, a million labels, unnamed samples and labels, `min` above
//! `max`, NaN and infinities where the contract forbids them) are published
//! between valid ones to the real stage processes. No stage panics, each
//! hostile message reaches the stage's dead-letter topic with a reason naming
//! its fault, and the valid messages around them still give their derived
//! samples, alerts and documents. NaN and infinite gauges are valid by the
//! contract (as in Prometheus): they are taken, and never become a derived
//! value, an alert or a dead letter. Log lines with more parsed fields than a
//! line may carry, or with an overlong field name or value, are refused alike.

use std::collections::BTreeMap;
use std::time::Duration;
use vigil_proto::Payload;
use vigil_proto::labels::label;
use vigil_proto::limits::{MAX_LOG_FIELD_NAME_BYTES, MAX_LOG_FIELD_VALUE_BYTES, MAX_LOG_FIELDS};
use vigil_proto::v1::{LogBatch, MetricBatch, MetricKind, Sample, sample};
use vigil_tests::alert_feed::{notified_alerts, rules_folder, wait_for_alert};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::hostile::{
    Hostile, NANOS_PER_SECOND, OrderedProducer, Published, alert_event, assert_dead_lettered,
    assert_running_without_panic, dead_letter_reasons, gauge, log_batch, log_batch_years_ahead,
    metric_batch, metric_batch_years_ahead, now_unix_nano, partial, partial_batch, read_topic,
    refused_alert_events, refused_log_batches, refused_metric_batches, refused_partial_batches,
};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{elastic, wait_until};

/// How long the stage may take to handle every message sent, on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits until every hostile message is on `topic` and returns the dead letters'
/// reasons by key.
fn wait_for_dead_letters(topic: &str, hostile: &[Hostile]) -> BTreeMap<String, String> {
    wait_until(
        &format!("{} hostile messages on {topic}", hostile.len()),
        DEADLINE,
        || {
            let reasons = dead_letter_reasons(topic);
            hostile
                .iter()
                .all(|case| reasons.contains_key(&case.message.key))
                .then_some(reasons)
        },
    )
}

/// Log batches of one line whose parsed fields break the wire's limits: too
/// many, a name too long, a value too long; keys start with `prefix`.
fn hostile_log_fields(prefix: &str, dataset: &str, now: i64) -> Vec<Hostile> {
    let host = format!("{prefix}-fields-host");
    let case = |key: &str, fields: Vec<vigil_proto::v1::Label>, reason: String| {
        let mut batch = log_batch(&host, dataset, "a line with hostile fields", now);
        batch.lines[0].fields = fields;
        Hostile {
            message: Published::of(format!("{prefix}/{key}"), &batch),
            reason: format!("invalid {}: line 0 (at offset 0) {reason}", LogBatch::KIND),
        }
    };
    let long_name = "n".repeat(MAX_LOG_FIELD_NAME_BYTES + 1);
    vec![
        case(
            "too-many-fields",
            (0..=MAX_LOG_FIELDS)
                .map(|field| label(format!("k{field}"), "v"))
                .collect(),
            format!(
                "has {} fields, more than the {MAX_LOG_FIELDS} allowed",
                MAX_LOG_FIELDS + 1
            ),
        ),
        case(
            "field-name-too-long",
            vec![label("user.name", "alice"), label(long_name.clone(), "v")],
            format!(
                "has a field name of {} bytes at position 1 (`{}…`), longer than the {MAX_LOG_FIELD_NAME_BYTES} allowed",
                long_name.len(),
                &long_name[..32]
            ),
        ),
        case(
            "field-value-too-long",
            vec![label(
                "message.extra",
                "x".repeat(MAX_LOG_FIELD_VALUE_BYTES + 1),
            )],
            format!(
                "has field `message.extra` with a value of {} bytes, longer than the {MAX_LOG_FIELD_VALUE_BYTES} allowed",
                MAX_LOG_FIELD_VALUE_BYTES + 1
            ),
        ),
    ]
}

fn messages(hostile: &[Hostile]) -> impl Iterator<Item = &Published> {
    hostile.iter().map(|case| &case.message)
}

/// A batch of three `e2e.gauge` series, NaN, +∞ and −∞: valid by the contract.
fn non_finite_gauges(resource_id: &str, time: i64) -> MetricBatch {
    let series = |value: f64, name: &str| Sample {
        labels: vec![label("value", name)],
        ..gauge("e2e.gauge", value, time)
    };
    metric_batch(
        resource_id,
        vec![
            series(f64::NAN, "nan"),
            series(f64::INFINITY, "+inf"),
            series(f64::NEG_INFINITY, "-inf"),
        ],
    )
}

const GROUP_DEFINITION: &str = "hostile.site.load.sum";

const DEFINITIONS: &str = "definitions:
  - name: hostile.site.load.sum
    function: sum
    input: hostile.load
    windows: [1m]
    group_by: [site]
";

/// An interface reading of `device` at `time`: the octet counter at `octets`,
/// the interface speed `speed`, and the memory gauges the built-in used-percent
/// derives from.
fn interface_reading(device: &str, time: i64, octets: u64, speed: f64, memory: f64) -> MetricBatch {
    let labels = vec![label("ifIndex", "2"), label("ifName", "eth0")];
    let interface = |name: &str, kind: MetricKind, value: sample::Value| Sample {
        name: name.into(),
        labels: labels.clone(),
        kind: kind as i32,
        time_unix_nano: time,
        metric_set: "if".into(),
        value: Some(value),
        ..Sample::default()
    };
    let mut batch = metric_batch(
        device,
        vec![
            interface(
                "if.in.octets",
                MetricKind::Counter,
                sample::Value::Counter(octets),
            ),
            interface(
                "if.speed.bits_per_second",
                MetricKind::Gauge,
                sample::Value::Gauge(speed),
            ),
            gauge("host.memory.total_bytes", memory, time),
            gauge("host.memory.available_bytes", memory, time),
        ],
    );
    for sample in &mut batch.samples[2..] {
        sample.metric_set = "memory".into();
    }
    batch
}

/// Derived samples on `topic` by (resource, metric name).
fn derived_samples(topic: &str) -> BTreeMap<(String, String), Vec<Sample>> {
    let mut samples: BTreeMap<(String, String), Vec<Sample>> = BTreeMap::new();
    for record in read_topic(topic) {
        let batch = MetricBatch::from_payload(&record.payload)
            .expect("the derive stage publishes valid batches");
        let resource = batch.resource.as_ref().map_or("", |r| r.id.as_str());
        for sample in batch.samples {
            samples
                .entry((resource.to_owned(), sample.name.clone()))
                .or_default()
                .push(sample);
        }
    }
    samples
}

fn gauge_value(sample: &Sample) -> f64 {
    match sample.value {
        Some(sample::Value::Gauge(value)) => value,
        ref other => panic!("a derived sample that is not a gauge: {other:?}"),
    }
}

#[test]
fn derive_dead_letters_hostile_raw_metrics_and_partials_and_derives_from_the_rest() {
    let deployment = Deployment::with_derive("e2e-hostile-derive", 1);
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.derive_config("derive", port);
    std::fs::write(
        deployment
            .work
            .join("derive-definitions")
            .join("hostile.yaml"),
        DEFINITIONS,
    )
    .unwrap();
    let mut derive = deployment.start_stage("derive", &config, port);
    wait_until("the definitions loaded", DEADLINE, || {
        (metric_value(port, "vigil_derive_definition_reloads_total", "success") >= 1.0)
            .then_some(())
    });

    // The partials come first, while no raw sample has moved the watermark; their
    // window closes once the raw samples, a minute ahead, have.
    let now = now_unix_nano();
    let window_end = now - 5 * NANOS_PER_SECOND;
    let producer = OrderedProducer::new();
    let partial_topic = deployment.topic("metrics.partial");
    let group_key = format!("{GROUP_DEFINITION}|site=ams");
    let mut from_partition_1 = partial(GROUP_DEFINITION, "ams", window_end, 7.0);
    from_partition_1.source_partition = 1;
    let valid_partials = [
        Published::of(
            "valid-partial-0",
            &partial_batch(
                &group_key,
                vec![partial(GROUP_DEFINITION, "ams", window_end, 5.0)],
            ),
        ),
        Published::of(
            "valid-partial-1",
            &partial_batch(&group_key, vec![from_partition_1]),
        ),
    ];
    let hostile_partials = refused_partial_batches("metrics.partial", GROUP_DEFINITION, window_end);
    producer.send(&partial_topic, &valid_partials[0]);
    producer.send_all(&partial_topic, messages(&hostile_partials));
    producer.send(&partial_topic, &valid_partials[1]);
    let partial_count = (hostile_partials.len() + valid_partials.len()) as f64;
    wait_until("the partials taken", DEADLINE, || {
        (metric_value(port, "vigil_derive_messages_consumed_total", &partial_topic)
            >= partial_count)
            .then_some(())
    });

    let first = now + 50 * NANOS_PER_SECOND;
    let second = now + 60 * NANOS_PER_SECOND;
    let reading = |device: &str, time: i64, octets: u64, speed: f64, memory: f64| {
        Published::of(
            format!("{device}@{time}"),
            &interface_reading(device, time, octets, speed, memory),
        )
    };
    let mut hostile_raw = refused_metric_batches("metrics.raw", now);
    hostile_raw.push(metric_batch_years_ahead("metrics.raw", now));
    let raw_topic = deployment.topic("metrics.raw");
    producer.send(&raw_topic, &reading("valid-device", first, 1_000, 1e9, 8e9));
    producer.send(
        &raw_topic,
        &reading("non-finite-device", first, 1_000, f64::INFINITY, f64::NAN),
    );
    producer.send_all(&raw_topic, messages(&hostile_raw));
    producer.send(
        &raw_topic,
        &reading("non-finite-device", second, 13_500, f64::NAN, f64::INFINITY),
    );
    producer.send(
        &raw_topic,
        &reading("valid-device", second, 13_500, 1e9, 8e9),
    );

    // 12,500 octets in 10 s.
    let expected_rate = 10_000.0;
    let derived_topic = deployment.topic("metrics.derived");
    let derived = wait_until("the rates and the group sum derived", DEADLINE, || {
        let derived = derived_samples(&derived_topic);
        let has = |resource: &str, name: &str| {
            derived.contains_key(&(resource.to_owned(), name.to_owned()))
        };
        (has("valid-device", "if.in.bits_per_second")
            && has("non-finite-device", "if.in.bits_per_second")
            && has(&format!("group:{group_key}"), GROUP_DEFINITION))
        .then_some(derived)
    });
    for device in ["valid-device", "non-finite-device"] {
        let rates = &derived[&(device.to_owned(), "if.in.bits_per_second".to_owned())];
        assert_eq!(rates.len(), 1, "{device}: {rates:?}");
        assert_eq!(rates[0].time_unix_nano, second, "{device}");
        assert!(
            (gauge_value(&rates[0]) - expected_rate).abs() < 1e-6,
            "{device}: {rates:?}"
        );
    }
    let sums = &derived[&(format!("group:{group_key}"), GROUP_DEFINITION.to_owned())];
    assert_eq!(sums.len(), 1, "{sums:?}");
    assert_eq!(sums[0].time_unix_nano, window_end);
    assert_eq!(gauge_value(&sums[0]), 12.0, "the two valid partials merged");
    let non_finite: Vec<_> = derived
        .iter()
        .flat_map(|(key, samples)| samples.iter().map(move |s| (key, s)))
        .filter(|(_, sample)| !gauge_value(sample).is_finite())
        .collect();
    assert!(
        non_finite.is_empty(),
        "non-finite derived values: {non_finite:?}"
    );
    assert!(
        !derived
            .keys()
            .any(|(resource, _)| resource.starts_with("metrics.raw")),
        "a hostile batch was derived from: {:?}",
        derived.keys().collect::<Vec<_>>()
    );

    let all_hostile: Vec<Hostile> = hostile_partials.into_iter().chain(hostile_raw).collect();
    let reasons = wait_for_dead_letters(&deployment.topic("dlq.derive"), &all_hostile);
    assert_dead_lettered(&reasons, &all_hostile);
    assert_eq!(
        reasons.len(),
        all_hostile.len(),
        "only the hostile messages are dead-lettered: {reasons:#?}"
    );
    assert_running_without_panic(&mut derive);
}

const ALERT_RULES: &str = r#"groups:
  - name: hostile
    interval: 1s
    rules:
      - alert: GaugeSeen
        metric: e2e.gauge
        condition: value > 0
      - alert: LineSeen
        logs: {dataset: e2e.hostile, match: 'message =~ "line"'}
        type: any
        group_by: [host.name]
"#;

#[test]
fn alert_dead_letters_hostile_metrics_and_logs_and_alerts_on_the_rest() {
    let deployment = Deployment::new("e2e-hostile-alert");
    deployment.push_rules(&rules_folder(
        &deployment,
        "rules",
        &[("hostile.yaml", ALERT_RULES)],
    ));
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.alert_config(
        "alert",
        port,
        "{receiver: test, group_by: ['...'], group_wait: 0s, group_interval: 1s}",
    );
    let mut alert = deployment.start_stage("alert", &config, port);
    wait_until("the stage to own partitions", DEADLINE, || {
        (metric_value(port, "vigil_alert_partitions_owned", "") > 0.0).then_some(())
    });

    let now = now_unix_nano();
    let producer = OrderedProducer::new();
    let mut all_hostile = Vec::new();
    for kind in ["metrics.raw", "metrics.derived"] {
        let mut hostile = refused_metric_batches(kind, now);
        hostile.push(metric_batch_years_ahead(kind, now));
        let valid = |host: &str| {
            Published::of(
                host,
                &metric_batch(host, vec![gauge("e2e.gauge", 1.0, now)]),
            )
        };
        let topic = deployment.topic(kind);
        producer.send(&topic, &valid(&format!("{kind}-valid-before")));
        producer.send_all(&topic, messages(&hostile));
        producer.send(
            &topic,
            &Published::of(
                "non-finite",
                &non_finite_gauges(&format!("{kind}-non-finite"), now),
            ),
        );
        producer.send(&topic, &valid(&format!("{kind}-valid-after")));
        all_hostile.extend(hostile);
    }
    let mut hostile_logs = refused_log_batches("logs.raw", "e2e.hostile", now);
    hostile_logs.push(log_batch_years_ahead("logs.raw", "e2e.hostile", now));
    hostile_logs.extend(hostile_log_fields("logs.raw", "e2e.hostile", now));
    let logs_topic = deployment.topic("logs.raw");
    let valid_line =
        |host: &str| Published::of(host, &log_batch(host, "e2e.hostile", "a valid line", now));
    producer.send(&logs_topic, &valid_line("logs-valid-before"));
    producer.send_all(&logs_topic, messages(&hostile_logs));
    producer.send(&logs_topic, &valid_line("logs-valid-after"));
    all_hostile.extend(hostile_logs);

    for kind in ["metrics.raw", "metrics.derived"] {
        for host in [
            format!("{kind}-valid-before"),
            format!("{kind}-valid-after"),
        ] {
            wait_for_alert(
                &deployment.webhook,
                "firing",
                &[("alertname", "GaugeSeen"), ("host", &host)],
            );
        }
    }
    for host in ["logs-valid-before", "logs-valid-after"] {
        wait_for_alert(
            &deployment.webhook,
            "firing",
            &[("alertname", "LineSeen"), ("host", host)],
        );
    }
    let reasons = wait_for_dead_letters(&deployment.topic("dlq.alert"), &all_hostile);
    assert_dead_lettered(&reasons, &all_hostile);
    assert_eq!(
        reasons.len(),
        all_hostile.len(),
        "only the hostile messages are dead-lettered: {reasons:#?}"
    );
    // Every message was taken before the last valid one: an alert of a hostile
    // or non-finite batch would have been notified by now.
    let notified: Vec<String> = notified_alerts(&deployment.webhook)
        .iter()
        .map(|alert| {
            alert["labels"]["host"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        notified.iter().all(|host| host.contains("-valid-")),
        "alerts of hostile or non-finite data: {notified:?}"
    );
    assert_running_without_panic(&mut alert);
}

#[test]
fn index_dead_letters_hostile_batches_of_every_topic_and_indexes_the_rest() {
    let deployment = Deployment::new("e2e-hostile-index");
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.aggregator_config("index", port);
    let mut index = deployment.start_stage("index", &config, port);

    // The index stage keeps no event-time clock: data stamped years ahead, but
    // before 2200, is indexed as it is, so only the fixed limits apply here.
    let now = now_unix_nano();
    let producer = OrderedProducer::new();
    let mut all_hostile = Vec::new();
    for kind in ["metrics.raw", "metrics.derived"] {
        let hostile = refused_metric_batches(kind, now);
        let valid = |host: &str| {
            Published::of(
                host,
                &metric_batch(host, vec![gauge("e2e.gauge", 1.0, now)]),
            )
        };
        let topic = deployment.topic(kind);
        producer.send(&topic, &valid(&format!("{kind}-valid-before")));
        producer.send_all(&topic, messages(&hostile));
        producer.send(
            &topic,
            &Published::of(
                "non-finite",
                &non_finite_gauges(&format!("{kind}-non-finite"), now),
            ),
        );
        producer.send(&topic, &valid(&format!("{kind}-valid-after")));
        all_hostile.extend(hostile);
    }
    let mut hostile_logs = refused_log_batches("logs.raw", "e2e.hostile", now);
    hostile_logs.extend(hostile_log_fields("logs.raw", "e2e.hostile", now));
    let logs_topic = deployment.topic("logs.raw");
    let valid_line =
        |host: &str| Published::of(host, &log_batch(host, "e2e.hostile", "a valid line", now));
    producer.send(&logs_topic, &valid_line("logs-valid-before"));
    producer.send_all(&logs_topic, messages(&hostile_logs));
    producer.send(&logs_topic, &valid_line("logs-valid-after"));
    all_hostile.extend(hostile_logs);

    let hostile_alerts = refused_alert_events("alerts.events", now);
    let alerts_topic = deployment.topic("alerts.events");
    let mut non_finite_alert = alert_event("ValidAlert", "non-finite", now);
    non_finite_alert.value = f64::NAN;
    producer.send(
        &alerts_topic,
        &Published::of(
            "valid-before",
            &alert_event("ValidAlert", "valid-before", now),
        ),
    );
    producer.send_all(&alerts_topic, messages(&hostile_alerts));
    producer.send(
        &alerts_topic,
        &Published::of("non-finite", &non_finite_alert),
    );
    producer.send(
        &alerts_topic,
        &Published::of(
            "valid-after",
            &alert_event("ValidAlert", "valid-after", now),
        ),
    );
    all_hostile.extend(hostile_alerts);

    let reasons = wait_for_dead_letters(&deployment.topic("dlq.index"), &all_hostile);
    assert_dead_lettered(&reasons, &all_hostile);
    // The valid ones and those with non-finite values: two log lines; from
    // each metrics topic two documents and three non-finite series; three alerts.
    for (index, expected) in [
        (&deployment.logs_index, 2),
        (&deployment.metrics_index, 10),
        (&deployment.alerts_index, 3),
    ] {
        wait_until(
            &format!("{expected} documents in {index}"),
            DEADLINE,
            || (elastic::count(index) >= expected).then_some(()),
        );
        assert_eq!(
            elastic::count(index),
            expected,
            "{index}: {:#?}",
            elastic::all_hits(index)
        );
    }
    assert_eq!(
        dead_letter_reasons(&deployment.topic("dlq.index")).len(),
        all_hostile.len(),
        "only the hostile messages are dead-lettered: {reasons:#?}"
    );
    assert_running_without_panic(&mut index);
}
