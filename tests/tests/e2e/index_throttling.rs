//! Elasticsearch answering 429 to single documents of a bulk request, as a busy
//! cluster does: only those documents are sent again, and every line is stored
//! once. No real server can be made to reject chosen documents on demand, so a
//! proxy in front of the Elasticsearch-API test server answers a quarter of the
//! documents 429 the first time it sees them and forwards everything else.

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vigil_proto::v1::{LogBatch, LogLine, LogSource, Resource};
use vigil_tests::bulk_proxy::BulkProxy;
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{TestServers, elastic, wait_until};

const BATCHES: usize = 10;
const LINES_PER_BATCH: usize = 100;

fn batch(number: usize) -> Vec<u8> {
    let lines = (0..LINES_PER_BATCH)
        .map(|line| {
            let text = format!("batch {number:02} line {line:03}");
            LogLine {
                offset: (number * LINES_PER_BATCH + line) as u64 * 100,
                length: text.len() as u64 + 1,
                message: text.into_bytes(),
                event_time_unix_nano: 1_795_413_600_000_000_000,
                observed_time_unix_nano: 1_795_413_600_000_000_000,
                ..LogLine::default()
            }
        })
        .collect();
    LogBatch {
        resource: Some(Resource {
            id: "throttled-host".into(),
            host_name: "throttled-host".into(),
            ..Resource::default()
        }),
        source: Some(LogSource {
            path: "/var/log/throttled.log".into(),
            source_id: "1:9".into(),
            dataset: "throttled".into(),
            ..LogSource::default()
        }),
        lines,
    }
    .encode_to_vec()
}

#[test]
fn documents_answered_429_alone_are_sent_again_and_every_line_is_stored_once() {
    let deployment = Deployment::new("e2e-index-429");
    let port = free_tcp_ports(1)[0];
    // Ids are hex digits: those starting with 0-3 are a quarter of them.
    let proxy = BulkProxy::start(&TestServers::get().elasticsearch_url(), |id, times| {
        times == 0 && id.starts_with(['0', '1', '2', '3'])
    });
    let config = deployment.aggregator_config_for("index", port, &proxy.url());
    let _index = deployment.start_stage("index", &config, port);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .create()
        .unwrap();
    for number in 0..BATCHES {
        producer
            .send(
                BaseRecord::to(&deployment.topic("logs.raw"))
                    .key("throttled-host")
                    .payload(&batch(number)),
            )
            .map_err(|(error, _)| error)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let total = (BATCHES * LINES_PER_BATCH) as u64;
    wait_until("every line stored", Duration::from_secs(120), || {
        (elastic::count(&deployment.logs_index) >= total).then_some(())
    });
    let stored: BTreeSet<String> = elastic::all_ids(&deployment.logs_index)
        .into_iter()
        .collect();
    assert_eq!(stored.len() as u64, total);
    assert_eq!(
        elastic::count(&deployment.logs_index),
        total,
        "no line twice"
    );

    // What the proxy saw: each throttled document once more, nothing else again.
    let bulks = proxy.bulk_requests();
    let mut sent: BTreeMap<&str, usize> = BTreeMap::new();
    let mut throttled: BTreeSet<&str> = BTreeSet::new();
    for bulk in &bulks {
        for id in &bulk.ids {
            *sent.entry(id).or_default() += 1;
        }
        throttled.extend(bulk.throttled.iter().map(String::as_str));
    }
    assert!(
        (total / 8..total / 2).contains(&(throttled.len() as u64)),
        "about a quarter throttled: {}",
        throttled.len()
    );
    for (id, times) in &sent {
        let expected = if throttled.contains(id) { 2 } else { 1 };
        assert_eq!(*times, expected, "document {id} was sent {times} times");
        assert!(stored.contains(*id), "document {id} is not stored");
    }
    assert_eq!(sent.len() as u64, total);
    for bulk in bulks.iter().filter(|bulk| {
        bulk.ids
            .iter()
            .any(|id| sent[id.as_str()] == 2 && !bulk.throttled.contains(id))
    }) {
        assert!(
            bulk.ids.iter().all(|id| throttled.contains(id.as_str())),
            "a retry carries only throttled documents: {:?}",
            bulk.ids
        );
    }
    wait_until("the retries counted", Duration::from_secs(10), || {
        (metric_value(port, "vigil_index_documents_retried_total", "") == throttled.len() as f64)
            .then_some(())
    });
    assert!(
        metric_value(
            port,
            "vigil_index_bulk_concurrency_decreases_total",
            "throttled"
        ) >= 1.0
    );
    assert_eq!(
        metric_value(port, "vigil_index_documents_duplicate_total", ""),
        0.0
    );
}
