//! What the index stage writes, read back from the Elasticsearch-API test server
//! with Vigil's templates installed: Elastic Common Schema fields and
//! content-derived ids for logs, metrics and alerts; a second consumer group that
//! reads the same records again adds no document; and a record that breaks the
//! mapping goes to the dead-letter topic, alone and with the reason, while the rest
//! of its message is indexed.

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_aggregator::index::MetricStream;
use vigil_aggregator::index::documents::{alert_document_id, log_document_id, metric_document_id};
use vigil_proto::labels::label;
use vigil_proto::v1::{
    AlertEvent, AlertStatus, Label, LogBatch, LogLine, LogSource, MetricBatch, MetricKind,
    Resource, ResourceKind, Sample, sample,
};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::index_setup::install_templates;
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{TestServers, elastic, wait_until};

/// 2026-11-23T06:00:00Z
const T0: i64 = 1_795_413_600_000_000_000;

fn resource() -> Resource {
    Resource {
        id: "e2e-web-1".into(),
        kind: ResourceKind::Host.into(),
        host_name: "web-1.example".into(),
        attributes: vec![label("site", "fra1")],
    }
}

fn log_batch(texts: &[&str]) -> LogBatch {
    let mut offset = 0;
    let lines = texts
        .iter()
        .map(|text| {
            let line = LogLine {
                offset,
                event_time_unix_nano: T0,
                observed_time_unix_nano: T0 + 1_000_000,
                message: text.as_bytes().to_vec(),
                length: text.len() as u64 + 1,
                ..LogLine::default()
            };
            offset += line.length;
            line
        })
        .collect();
    LogBatch {
        resource: Some(resource()),
        source: Some(LogSource {
            path: "/var/log/app/app.log".into(),
            source_id: "2049:77".into(),
            dataset: "app".into(),
            ..LogSource::default()
        }),
        lines,
    }
}

fn sample(name: &str, labels: Vec<Label>, set: &str, value: sample::Value) -> Sample {
    let kind = match value {
        sample::Value::Counter(_) | sample::Value::FloatCounter(_) => MetricKind::Counter,
        sample::Value::Gauge(_) => MetricKind::Gauge,
    };
    Sample {
        name: name.into(),
        labels,
        kind: kind.into(),
        time_unix_nano: T0,
        value: Some(value),
        metric_set: set.into(),
        ..Sample::default()
    }
}

fn metric_batch(samples: Vec<Sample>) -> MetricBatch {
    MetricBatch {
        resource: Some(resource()),
        samples,
        producer: "e2e".into(),
    }
}

fn produce(topic: &str, payload: &[u8]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .create()
        .unwrap();
    producer
        .send(BaseRecord::to(topic).key("e2e-web-1").payload(payload))
        .map_err(|(error, _)| error)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Documents of `index` by id, once it holds `count`.
fn documents(index: &str, count: u64) -> BTreeMap<String, Value> {
    wait_until(
        &format!("{count} documents in {index}"),
        Duration::from_secs(60),
        || (elastic::count(index) >= count).then_some(()),
    );
    elastic::all_hits(index)
        .into_iter()
        .map(|hit| {
            (
                hit["_id"].as_str().unwrap().to_owned(),
                hit["_source"].clone(),
            )
        })
        .collect()
}

#[test]
fn logs_metrics_and_alerts_land_with_their_fields_and_ids_and_are_never_duplicated() {
    let deployment = Deployment::new("e2e-index-docs");
    let [first_port, second_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let config = deployment.aggregator_config("index", first_port);
    install_templates(&config);
    let mut first = deployment.start_stage("index", &config, first_port);

    let logs = log_batch(&["GET /health 200", "ERROR payment declined", "GET /cart 200"]);
    produce(&deployment.topic("logs.raw"), &logs.encode_to_vec());
    let huge = (1u64 << 60) + 1;
    let metrics = metric_batch(vec![
        sample(
            "if.in.octets",
            vec![label("ifName", "eth0")],
            "if",
            sample::Value::Counter(huge),
        ),
        sample(
            "if.out.octets",
            vec![label("ifName", "eth0")],
            "if",
            sample::Value::Counter(7),
        ),
        sample(
            "host.load.1m",
            Vec::new(),
            "host.load",
            sample::Value::Gauge(0.25),
        ),
    ]);
    produce(&deployment.topic("metrics.raw"), &metrics.encode_to_vec());
    let alert = AlertEvent {
        group: "hosts".into(),
        alert: "HighLoad".into(),
        labels: vec![label("host", "web-1.example"), label("severity", "page")],
        annotations: vec![label("summary", "load is high")],
        status: AlertStatus::Firing.into(),
        starts_at_unix_nano: T0,
        value: 12.5,
        fingerprint: "c0ffee".into(),
        evaluated_at_unix_nano: T0 + 15_000_000_000,
        ..AlertEvent::default()
    };
    produce(&deployment.topic("alerts.events"), &alert.encode_to_vec());

    let log_documents = documents(&deployment.logs_index, 3);
    let ids: Vec<String> = [0u64, 16, 39]
        .iter()
        .map(|&offset| log_document_id("e2e-web-1", "2049:77", offset))
        .collect();
    assert_eq!(
        log_documents.keys().cloned().collect::<Vec<_>>(),
        {
            let mut sorted = ids.clone();
            sorted.sort();
            sorted
        },
        "ids come from resource, file identity and offset"
    );
    let second_line = &log_documents[&ids[1]];
    assert_eq!(second_line["@timestamp"], "2026-11-23T06:00:00Z");
    assert_eq!(second_line["message"], "ERROR payment declined");
    assert_eq!(second_line["host"]["name"], "web-1.example");
    assert_eq!(second_line["log"]["file"]["path"], "/var/log/app/app.log");
    assert_eq!(second_line["log"]["offset"], 16);
    assert_eq!(second_line["event"]["dataset"], "app");
    assert_eq!(second_line["event"]["kind"], "event");
    assert_eq!(second_line["event"]["created"], "2026-11-23T06:00:00.001Z");
    let ingested = second_line["event"]["ingested"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ingested).is_ok(),
        "{second_line}"
    );
    assert_eq!(second_line["labels"]["site"], "fra1");
    assert_eq!(second_line["vigil"]["resource"]["kind"], "host");

    let metric_documents = documents(&deployment.metrics_index, 2);
    let interface_id = metric_document_id(
        "e2e-web-1",
        MetricStream::Raw,
        "if",
        &[label("ifName", "eth0")],
        T0,
    );
    let interface = &metric_documents[&interface_id];
    assert_eq!(
        interface["metrics"]["if.in.octets"].as_u64(),
        Some(huge),
        "exact past 2^53"
    );
    assert_eq!(interface["metrics"]["if.out.octets"], 7);
    assert_eq!(interface["event"]["dataset"], "if");
    assert_eq!(interface["metricset"]["name"], "if");
    assert_eq!(interface["labels"]["ifName"], "eth0");
    assert_eq!(interface["labels"]["site"], "fra1");
    let load_id = metric_document_id("e2e-web-1", MetricStream::Raw, "host.load", &[], T0);
    assert_eq!(metric_documents[&load_id]["metrics"]["host.load.1m"], 0.25);

    let alert_documents = documents(&deployment.alerts_index, 1);
    let alert_id = alert_document_id("c0ffee", AlertStatus::Firing, T0);
    let stored = &alert_documents[&alert_id];
    assert_eq!(stored["rule"]["name"], "HighLoad");
    assert_eq!(stored["vigil"]["alert"]["status"], "firing");
    assert_eq!(
        stored["vigil"]["alert"]["annotations"]["summary"],
        "load is high"
    );
    assert_eq!(stored["host"]["name"], "web-1.example");
    assert_eq!(stored["event"]["start"], "2026-11-23T06:00:00Z");
    first.terminate();

    // Another consumer group reads every record again: all answered 409.
    let again = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("'{}-index'", deployment.prefix),
            &format!("'{}-again'", deployment.prefix),
        )
        .replace(
            &format!("127.0.0.1:{first_port}"),
            &format!("127.0.0.1:{second_port}"),
        );
    let again_config = deployment.work.join("index-again.yaml");
    std::fs::write(&again_config, again).unwrap();
    let _second = deployment.start_stage("index", &again_config, second_port);
    wait_until(
        "the second group to find all 6 documents stored",
        Duration::from_secs(60),
        || {
            (metric_value(second_port, "vigil_index_documents_duplicate_total", "") == 6.0)
                .then_some(())
        },
    );
    assert_eq!(
        metric_value(second_port, "vigil_index_documents_written_total", ""),
        0.0
    );
    assert_eq!(elastic::all_ids(&deployment.logs_index).len(), 3);
    assert_eq!(elastic::all_ids(&deployment.metrics_index).len(), 2);
    assert_eq!(elastic::all_ids(&deployment.alerts_index).len(), 1);
}

#[test]
fn a_record_that_breaks_the_mapping_is_dead_lettered_with_its_reason_and_the_rest_indexed() {
    let deployment = Deployment::new("e2e-index-mapping");
    let port = free_tcp_ports(1)[0];
    let config = deployment.aggregator_config("index", port);
    install_templates(&config);
    let _index = deployment.start_stage("index", &config, port);

    // `if.in.octets` is a counter, mapped `unsigned_long`: a negative gauge of that
    // name cannot be stored.
    let batch = metric_batch(vec![
        sample(
            "if.in.octets",
            vec![label("ifName", "eth0")],
            "if",
            sample::Value::Counter(10),
        ),
        sample(
            "if.in.octets",
            vec![label("ifName", "eth1")],
            "if",
            sample::Value::Gauge(-1.0),
        ),
        sample(
            "host.load.1m",
            Vec::new(),
            "host.load",
            sample::Value::Gauge(0.5),
        ),
    ]);
    produce(&deployment.topic("metrics.raw"), &batch.encode_to_vec());
    produce(
        &deployment.topic("logs.raw"),
        &log_batch(&["after the broken sample"]).encode_to_vec(),
    );

    let stored = documents(&deployment.metrics_index, 2);
    assert!(stored.contains_key(&metric_document_id(
        "e2e-web-1",
        MetricStream::Raw,
        "if",
        &[label("ifName", "eth0")],
        T0
    )));
    documents(&deployment.logs_index, 1);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .set("group.id", format!("{}-dlq-reader", deployment.prefix))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "10000")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&deployment.topic("dlq.index")])
        .unwrap();
    let (payload, headers) = wait_until(
        "the refused record on the dead-letter topic",
        Duration::from_secs(60),
        || {
            let message = consumer.poll(Duration::from_millis(500))?.ok()?;
            let headers: BTreeMap<String, String> = message
                .headers()?
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect();
            Some((message.payload()?.to_vec(), headers))
        },
    );
    let refused_id = metric_document_id(
        "e2e-web-1",
        MetricStream::Raw,
        "if",
        &[label("ifName", "eth1")],
        T0,
    );
    let reason = &headers["vigil-reason"];
    assert!(
        reason.starts_with(&format!(
            "Elasticsearch refused document {refused_id} for index {}: 400 Bad Request: ",
            deployment.metrics_index
        )) && reason.contains("if.in.octets")
            && reason.contains("unsigned_long"),
        "{reason}"
    );
    assert_eq!(headers["vigil-document-id"], refused_id);
    assert_eq!(headers["vigil-schema"], "vigil.v1.MetricBatch");
    assert!(
        headers["vigil-origin"].starts_with(&format!("{}/", deployment.topic("metrics.raw"))),
        "{headers:?}"
    );
    let record = MetricBatch::decode(payload.as_slice()).unwrap();
    assert_eq!(
        record.samples,
        vec![batch.samples[1].clone()],
        "the record alone"
    );
    assert_eq!(record.resource, batch.resource);
    wait_until("the dead letter counted", Duration::from_secs(10), || {
        (metric_value(port, "vigil_index_dead_lettered_total", "rejected") == 1.0).then_some(())
    });
    assert_eq!(elastic::count(&deployment.metrics_index), 2);
}
