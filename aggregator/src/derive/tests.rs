//! Unit tests of the derive stage on the in-process bus.

use super::*;
use crate::rule_source::RuleFiles;
use std::sync::Arc;
use tokio::sync::watch;
use vigil_proto::labels::label;
use vigil_proto::v1::{MetricKind, Resource, Sample, ValueType, sample};

const SECOND: i64 = 1_000_000_000;

fn port_poll(time: i64, octets: u64) -> MetricBatch {
    let labels = vec![label("ifIndex", "1"), label("ifName", "eth0")];
    MetricBatch {
        resource: Some(Resource {
            id: "switch-1".into(),
            ..Resource::default()
        }),
        samples: vec![Sample {
            name: "if.in.octets".into(),
            labels,
            kind: MetricKind::Counter as i32,
            time_unix_nano: time,
            value: Some(sample::Value::Counter(octets)),
            value_type: ValueType::Counter64 as i32,
            unit: "By".into(),
            metric_set: "if".into(),
        }],
        producer: "test".into(),
    }
}

async fn next_rate(derived: &mut Subscription) -> f64 {
    let message = derived.recv().await.unwrap();
    let batch = MetricBatch::from_payload(&message.payload).unwrap();
    let rate = batch
        .samples
        .iter()
        .find(|s| s.name == "if.in.bits_per_second")
        .unwrap();
    match rate.value {
        Some(sample::Value::Gauge(value)) => value,
        _ => panic!("a rate is a gauge"),
    }
}

/// A derive stage running on the in-process bus, with what a test reads from it.
struct Running {
    derived: Subscription,
    dead: Subscription,
    files: watch::Sender<Option<Arc<RuleFiles>>>,
    metrics: SelfMetrics,
    publisher: Publisher,
    raw: String,
    shutdown: CancellationToken,
    stage: tokio::task::JoinHandle<Result<(), StageError>>,
}

impl Running {
    fn start() -> Self {
        Self::start_with(DeriveStageConfig::default())
    }

    fn start_with(config: DeriveStageConfig) -> Self {
        let bus = Bus::in_memory();
        let topics = bus.topics();
        let derived = bus.subscribe("test", &[topics.metrics_derived()]).unwrap();
        let dead = bus
            .subscribe("dlq", &[topics.dead_letter("derive")])
            .unwrap();
        let (files, watched) = watch::channel(Some(Arc::new(RuleFiles::new())));
        let metrics = SelfMetrics::default();
        let stage = DeriveStage::new(&bus, watched, config, &metrics).unwrap();
        let shutdown = CancellationToken::new();
        Self {
            derived,
            dead,
            files,
            metrics,
            publisher: bus.publisher().unwrap(),
            raw: topics.metrics_raw(),
            stage: tokio::spawn(stage.run(shutdown.clone())),
            shutdown,
        }
    }

    async fn publish_poll(&self, time: i64, octets: u64) {
        self.publisher
            .publish_batch(&self.raw, &port_poll(time, octets))
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.stage.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn garbage_is_dead_lettered_and_a_bad_definition_push_keeps_the_last_good_set() {
    let mut running = Running::start();
    let now = unix_nanos(SystemTime::now());

    running
        .publisher
        .publish(&running.raw, "switch-1", b"\xff\xffnot protobuf", &[])
        .await
        .unwrap();
    running.publish_poll(now, 1_000).await;
    running.publish_poll(now + 10 * SECOND, 2_000).await;
    let rejected = running.dead.recv().await.unwrap();
    let reason = rejected.header(vigil_runtime::bus::REASON_HEADER).unwrap();
    assert!(
        reason.starts_with("not a protobuf vigil.v1.MetricBatch")
            || reason.starts_with("invalid vigil.v1.MetricBatch"),
        "{reason}"
    );
    assert_eq!(&rejected.payload[..], b"\xff\xffnot protobuf");
    assert_eq!(
        next_rate(&mut running.derived).await,
        800.0,
        "other data still flows"
    );

    // An invalid definition file is refused; the built-ins keep running.
    running
        .files
        .send(Some(Arc::new(RuleFiles::from([(
            "broken.yaml".to_owned(),
            "definitions:\n  - {name: x, function: median, input: y}\n".to_owned(),
        )]))))
        .unwrap();
    let refused = "vigil_derive_definition_reloads_total{status=\"failure\"} 1";
    tokio::time::timeout(Duration::from_secs(10), async {
        while !running.metrics.encode().contains(refused) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the broken definition file is counted as a failed reload");
    running.publish_poll(now + 20 * SECOND, 4_000).await;
    let rate = tokio::time::timeout(Duration::from_secs(10), next_rate(&mut running.derived));
    assert_eq!(rate.await.expect("rates still flow"), 1_600.0);

    running.stop().await;
}

// One batch stamped a year ahead moved the watermark for good: every later
// sample of its series was out of order, every window reading late.
#[tokio::test]
async fn a_batch_from_a_clock_far_ahead_is_dead_lettered_and_rates_still_flow() {
    let mut running = Running::start();
    let now = unix_nanos(SystemTime::now());
    let year = 365 * 24 * 3_600 * SECOND;

    running.publish_poll(now + year, 500).await;
    running.publish_poll(now, 1_000).await;
    running.publish_poll(now + 10 * SECOND, 2_000).await;
    let rejected = tokio::time::timeout(Duration::from_secs(10), running.dead.recv())
        .await
        .expect("the batch from the future is dead-lettered")
        .unwrap();
    let reason = rejected.header(vigil_runtime::bus::REASON_HEADER).unwrap();
    assert!(
        reason.starts_with("event time is 52w")
            && reason.ends_with(
                "ahead of this host's clock (at most 5m allowed); check the sender's clock"
            ),
        "{reason}"
    );
    let rate = tokio::time::timeout(Duration::from_secs(10), next_rate(&mut running.derived));
    assert_eq!(rate.await.expect("the batches after it give rates"), 800.0);
    assert!(
        running
            .metrics
            .encode()
            .contains(r#"vigil_derive_dead_lettered_total{topic="vigil.metrics.raw"} 1"#),
        "{}",
        running.metrics.encode()
    );

    running.stop().await;
}

#[tokio::test]
async fn series_beyond_max_series_are_counted_by_metric_and_held_ones_go_on() {
    let mut running = Running::start_with(DeriveStageConfig {
        max_series: 1,
        ..DeriveStageConfig::default()
    });
    let now = unix_nanos(SystemTime::now());
    let mut other_port = port_poll(now, 5_000);
    other_port.samples[0].labels = vec![label("ifIndex", "2"), label("ifName", "eth1")];
    running.publish_poll(now, 1_000).await;
    running
        .publisher
        .publish_batch(&running.raw, &other_port)
        .await
        .unwrap();
    running.publish_poll(now + 10 * SECOND, 2_000).await;
    assert_eq!(next_rate(&mut running.derived).await, 800.0);
    let refused = "vigil_derive_series_refused_total{metric=\"if.in.octets\"} 1";
    tokio::time::timeout(Duration::from_secs(10), async {
        while !running.metrics.encode().contains(refused) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the refused series is counted under its metric");
    running.stop().await;
}
