//! Tests of the index stage from the bus to the sink: dead letters for garbage and
//! refused documents, several writes in flight, and settings that cannot work.

use super::dead_letter::DOCUMENT_ID_HEADER;
use super::*;
use crate::index::elasticsearch::{BulkClient, BulkClientConfig};
use crate::index::fake_elasticsearch::{FakeElasticsearch, bulk_response};
use crate::index::ndjson::NdjsonSink;
use serde_json::Value;
use std::path::Path;
use vigil_proto::Payload;
use vigil_proto::labels::label;
use vigil_proto::v1::{
    AlertEvent, AlertStatus, LogBatch, LogLine, LogSource, MetricBatch, Resource, Sample, sample,
};
use vigil_runtime::bus::{REASON_HEADER, SCHEMA_HEADER};

const T0: i64 = 1_714_557_600_000_000_000;

fn log_batch(first_offset: u64, texts: &[&str]) -> LogBatch {
    let mut offset = first_offset;
    let lines = texts
        .iter()
        .map(|text| {
            let line = LogLine {
                offset,
                event_time_unix_nano: T0,
                observed_time_unix_nano: T0,
                message: text.as_bytes().to_vec(),
                length: text.len() as u64 + 1,
                ..LogLine::default()
            };
            offset += line.length;
            line
        })
        .collect();
    LogBatch {
        resource: Some(Resource {
            id: "web-1".into(),
            host_name: "web-1".into(),
            ..Resource::default()
        }),
        source: Some(LogSource {
            path: "/var/log/app.log".into(),
            source_id: "1:2".into(),
            dataset: "app".into(),
            ..LogSource::default()
        }),
        lines,
    }
}

fn quick_config() -> IndexStageConfig {
    IndexStageConfig {
        linger: Duration::from_millis(10),
        ..IndexStageConfig::default()
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A stage writing to `sink`, running on a fresh in-memory bus, and a
/// subscription to its dead-letter topic.
fn start_stage(
    sink: DocumentSink,
    config: IndexStageConfig,
) -> (
    Bus,
    Subscription,
    SelfMetrics,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), StageError>>,
) {
    let bus = Bus::in_memory();
    let self_metrics = SelfMetrics::default();
    let stage = IndexStage::new(&bus, sink, IndexNames::default(), config, &self_metrics).unwrap();
    let dead_letters = bus
        .subscribe("test", &[bus.topics().dead_letter("index")])
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(stage.run(shutdown.clone()));
    (bus, dead_letters, self_metrics, shutdown, running)
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition not reached within 10 s");
}

#[tokio::test]
async fn garbage_is_dead_lettered_and_the_batches_around_it_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let sink = DocumentSink::Ndjson(NdjsonSink::new(dir.path()).unwrap());
    let (bus, mut dead_letters, self_metrics, shutdown, running) =
        start_stage(sink, quick_config());
    let topics = bus.topics();

    let publisher = bus.publisher().unwrap();
    publisher
        .publish_batch(
            &topics.logs_raw(),
            &log_batch(0, &["before one", "before two"]),
        )
        .await
        .unwrap();
    publisher
        .publish(
            &topics.logs_raw(),
            "web-1",
            b"this is not protobuf at all\n",
            &[],
        )
        .await
        .unwrap();
    publisher
        .publish_batch(&topics.logs_raw(), &log_batch(22, &["after"]))
        .await
        .unwrap();
    let metrics_batch = MetricBatch {
        resource: Some(Resource {
            id: "web-1".into(),
            ..Resource::default()
        }),
        samples: vec![Sample {
            name: "host.cpu.ticks".into(),
            labels: vec![label("mode", "user")],
            time_unix_nano: T0,
            value: Some(sample::Value::Counter(42)),
            metric_set: "host.cpu".into(),
            ..Sample::default()
        }],
        producer: "test".into(),
    };
    publisher
        .publish_batch(&topics.metrics_raw(), &metrics_batch)
        .await
        .unwrap();
    let event = AlertEvent {
        alert: "HighCpu".into(),
        fingerprint: "f1".into(),
        status: AlertStatus::Firing.into(),
        starts_at_unix_nano: T0,
        evaluated_at_unix_nano: T0,
        ..AlertEvent::default()
    };
    publisher
        .publish_batch(&topics.alert_events(), &event)
        .await
        .unwrap();

    let dead = tokio::time::timeout(Duration::from_secs(10), dead_letters.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&dead.payload[..], b"this is not protobuf at all\n");
    let reason = dead.header(REASON_HEADER).unwrap();
    assert!(
        reason.starts_with("not a protobuf vigil.v1.LogBatch")
            || reason.starts_with("invalid vigil.v1.LogBatch"),
        "{reason}"
    );
    let logs = dir.path().join("vigil-logs.ndjson");
    wait_for(|| read_lines(&logs).len() == 3).await;
    wait_for(|| read_lines(&dir.path().join("vigil-alerts.ndjson")).len() == 1).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let messages: Vec<_> = read_lines(&logs)
        .iter()
        .map(|line| line["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(messages, ["before one", "before two", "after"]);
    let metrics = read_lines(&dir.path().join("vigil-metrics.ndjson"));
    assert_eq!(metrics[0]["metrics"]["host.cpu.ticks"], 42);
    assert_eq!(metrics[0]["labels"]["mode"], "user");

    let exposed = self_metrics.encode();
    assert!(
        exposed.contains(r#"vigil_index_documents_written_total{index="vigil-logs"} 3"#),
        "{exposed}"
    );
    assert!(
        exposed.contains(r#"vigil_index_dead_lettered_total{reason="not_protobuf"} 1"#)
            || exposed.contains(r#"vigil_index_dead_lettered_total{reason="invalid_batch"} 1"#),
        "{exposed}"
    );
    assert!(
        exposed.contains(r#"vigil_index_messages_consumed_total{topic="vigil.logs.raw"} 3"#),
        "{exposed}"
    );
}

#[tokio::test]
async fn a_message_with_a_rejected_document_is_dead_lettered_with_the_reason() {
    // The second document of every bulk request is refused with a mapping error.
    let server = FakeElasticsearch::start(|request| {
        let mut statuses = vec![201; request.documents()];
        if let Some(second) = statuses.get_mut(1) {
            *second = 400;
        }
        (200, bulk_response(&statuses))
    })
    .await;
    let sink =
        DocumentSink::Elasticsearch(BulkClient::new(BulkClientConfig::new(&server.url)).unwrap());
    let config = IndexStageConfig {
        max_documents: 1,
        ..quick_config()
    };
    let (bus, mut dead_letters, self_metrics, shutdown, running) = start_stage(sink, config);
    let topics = bus.topics();

    let publisher = bus.publisher().unwrap();
    publisher
        .publish_batch(
            &topics.logs_raw(),
            &log_batch(0, &["fine", "refused", "fine"]),
        )
        .await
        .unwrap();
    let dead = tokio::time::timeout(Duration::from_secs(10), dead_letters.recv())
        .await
        .unwrap()
        .unwrap();
    let batch = log_batch(0, &["fine", "refused", "fine"]);
    let refused_id = crate::index::documents::log_document_id("web-1", "1:2", 5);
    assert_eq!(
        dead.header(REASON_HEADER).unwrap(),
        format!(
            "Elasticsearch refused document {refused_id} for index vigil-logs: \
             400 Bad Request: mapper_parsing_exception: failed to parse field [log.offset] of type [long]"
        )
    );
    assert_eq!(
        dead.header("vigil-origin").unwrap(),
        format!("{}/0/0", topics.logs_raw())
    );
    assert_eq!(dead.header(DOCUMENT_ID_HEADER).unwrap(), refused_id);
    assert_eq!(dead.header(SCHEMA_HEADER).unwrap(), LogBatch::KIND);
    // The record alone, ready to be published to the logs topic again.
    let record = LogBatch::from_payload(&dead.payload).unwrap();
    assert_eq!(record.lines, vec![batch.lines[1].clone()]);
    assert_eq!(record.resource, batch.resource);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let exposed = self_metrics.encode();
    assert!(
        exposed.contains(r#"vigil_index_documents_written_total{index="vigil-logs"} 2"#),
        "{exposed}"
    );
    assert!(
        exposed.contains(r#"vigil_index_dead_lettered_total{reason="rejected"} 1"#),
        "{exposed}"
    );
}

// The scripted server answers on blocking threads, so the stage needs a free one.
#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn batches_are_written_several_at_a_time() {
    // Every answer waits until three requests are in flight together.
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (now, highest) = (in_flight.clone(), peak.clone());
    let server = FakeElasticsearch::start(move |request| {
        let current = now.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        highest.fetch_max(current, std::sync::atomic::Ordering::SeqCst);
        let started = std::time::Instant::now();
        while highest.load(std::sync::atomic::Ordering::SeqCst) < 3
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        (200, bulk_response(&vec![201; request.documents()]))
    })
    .await;
    let sink = DocumentSink::Elasticsearch(
        BulkClient::new(BulkClientConfig {
            concurrency: crate::index::ConcurrencySettings {
                initial: 3,
                max: 3,
                latency_factor: 1000.0,
            },
            ..BulkClientConfig::new(&server.url)
        })
        .unwrap(),
    );
    let config = IndexStageConfig {
        max_documents: 1,
        ..quick_config()
    };
    let (bus, _dead_letters, self_metrics, shutdown, running) = start_stage(sink, config);
    let publisher = bus.publisher().unwrap();
    for number in 0..6u64 {
        publisher
            .publish_batch(&bus.topics().logs_raw(), &log_batch(number * 10, &["line"]))
            .await
            .unwrap();
    }
    wait_for(|| {
        self_metrics
            .encode()
            .contains(r#"vigil_index_documents_written_total{index="vigil-logs"} 6"#)
    })
    .await;
    assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let exposed = self_metrics.encode();
    assert!(
        exposed.contains("vigil_index_bulk_concurrency_limit 3"),
        "{exposed}"
    );
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let bus = Bus::in_memory();
    let dir = tempfile::tempdir().unwrap();
    let sink = || DocumentSink::Ndjson(NdjsonSink::new(dir.path()).unwrap());
    let error = IndexStage::new(
        &bus,
        sink(),
        IndexNames::default(),
        IndexStageConfig {
            max_documents: 0,
            ..IndexStageConfig::default()
        },
        &SelfMetrics::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "index stage setting `max_documents` must be positive"
    );
    let error = IndexStage::new(
        &bus,
        sink(),
        IndexNames {
            logs: "Logs".into(),
            ..IndexNames::default()
        },
        IndexStageConfig::default(),
        &SelfMetrics::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("must be lowercase"), "{error}");
}
