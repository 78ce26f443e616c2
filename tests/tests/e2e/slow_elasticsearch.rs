//! Elasticsearch hung or gone, on a private server so other tests do not see it:
//! while it hangs for longer than `max.poll.interval.ms` the index stage stays in
//! its consumer group (the consumer keeps polling, so it never leaves the group and
//! forces a rebalance) and the batch in hand is written once when Elasticsearch
//! answers again; when it is stopped for 30 s in the middle of a stream of lines and
//! started again, every line is stored exactly once.

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use vigil_proto::v1::{LogBatch, LogLine, LogSource, Resource};
use vigil_tests::deployment::{Deployment, log_batch_payload, metric_value};
use vigil_tests::elastic::ElasticClient;
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::servers::ElasticsearchServer;
use vigil_tests::{TestServers, wait_until, wait_while_progressing};

const BATCHES: u64 = 10;

/// Longer than the test deployment's `max.poll.interval.ms` of 10 s.
const HANG: Duration = Duration::from_secs(15);

#[test]
fn a_hung_elasticsearch_does_not_make_the_index_stage_leave_its_group() {
    let elasticsearch = ElasticsearchServer::start();
    let deployment = Deployment::new("e2e-slow-es");
    let port = free_tcp_ports(1)[0];
    let config = deployment.aggregator_config_for("index", port, &elasticsearch.url());
    let _index = deployment.start_stage("index", &config, port);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .create()
        .unwrap();
    elasticsearch.freeze();
    for number in 0..BATCHES {
        let payload = log_batch_payload(&format!("written while frozen {number}"), number * 100);
        producer
            .send(
                BaseRecord::to(&deployment.topic("logs.raw"))
                    .key("slow-host")
                    .payload(&payload),
            )
            .map_err(|(error, _)| error)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_until(
        "the stage to take the messages",
        Duration::from_secs(60),
        || {
            let consumed = metric_value(port, "vigil_index_messages_consumed_total", "");
            (consumed >= BATCHES as f64).then_some(())
        },
    );
    // The fault itself: Elasticsearch hangs while the stage waits for its answer.
    std::thread::sleep(HANG);
    elasticsearch.thaw();

    // One more batch on the same partition: once it is indexed, any second
    // consumption of the earlier ones (which come before it) has happened too.
    let after = log_batch_payload("written after the thaw", BATCHES * 100);
    producer
        .send(
            BaseRecord::to(&deployment.topic("logs.raw"))
                .key("slow-host")
                .payload(&after),
        )
        .map_err(|(error, _)| error)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let client = ElasticClient::new(elasticsearch.url());
    wait_until(
        "every batch written after the thaw",
        Duration::from_secs(90),
        || (client.count(&deployment.logs_index) == BATCHES + 1).then_some(()),
    );
    assert_eq!(
        metric_value(port, "vigil_index_messages_consumed_total", ""),
        (BATCHES + 1) as f64,
        "no message was consumed twice"
    );
    assert_eq!(
        metric_value(port, "vigil_index_documents_duplicate_total", ""),
        0.0,
        "nothing was written twice"
    );
    assert_eq!(
        metric_value(port, "vigil_index_receive_errors_total", ""),
        0.0,
        "the consumer never exceeded its poll interval (which makes it leave the group)"
    );
}

/// How long Elasticsearch is down in the middle of the stream.
const OUTAGE: Duration = Duration::from_secs(30);
/// Messages of [`LINES_PER_MESSAGE`] lines produced before, during and after it.
const MESSAGES_PER_PHASE: usize = 20;
const LINES_PER_MESSAGE: usize = 50;

/// Message `number` of the stream: lines `number * LINES_PER_MESSAGE ..`.
fn stream_message(number: usize) -> Vec<u8> {
    let lines = (0..LINES_PER_MESSAGE)
        .map(|line| {
            let seq = number * LINES_PER_MESSAGE + line;
            let text = format!("stream line {seq:05}");
            LogLine {
                offset: seq as u64 * 32,
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
            id: "outage-host".into(),
            host_name: "outage-host".into(),
            ..Resource::default()
        }),
        source: Some(LogSource {
            path: "/var/log/outage.log".into(),
            source_id: "3:3".into(),
            dataset: "outage".into(),
            ..LogSource::default()
        }),
        lines,
    }
    .encode_to_vec()
}

#[test]
fn an_elasticsearch_stopped_for_30_s_mid_stream_ends_with_every_line_stored_once() {
    let elasticsearch = ElasticsearchServer::start();
    let deployment = Deployment::new("e2e-es-outage");
    let port = free_tcp_ports(1)[0];
    let config = deployment.aggregator_config_for("index", port, &elasticsearch.url());
    let _index = deployment.start_stage("index", &config, port);
    let client = ElasticClient::new(elasticsearch.url());

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", TestServers::get().kafka_bootstrap())
        .create()
        .unwrap();
    // Keys spread the messages over the partitions.
    let send = |number: usize| {
        producer
            .send(
                BaseRecord::to(&deployment.topic("logs.raw"))
                    .key(&format!("key-{}", number % 7))
                    .payload(&stream_message(number)),
            )
            .map_err(|(error, _)| error)
            .unwrap();
    };
    for number in 0..MESSAGES_PER_PHASE {
        send(number);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_until("indexing to begin", Duration::from_secs(60), || {
        (metric_value(port, "vigil_index_documents_written_total", "") > 0.0).then_some(())
    });

    // The fault: stopped while the stream is being written, down for 30 s while
    // more lines arrive.
    let down = Instant::now();
    elasticsearch.stop();
    for number in MESSAGES_PER_PHASE..2 * MESSAGES_PER_PHASE {
        send(number);
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    elasticsearch.restart();
    for number in 2 * MESSAGES_PER_PHASE..3 * MESSAGES_PER_PHASE {
        send(number);
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let total = (3 * MESSAGES_PER_PHASE * LINES_PER_MESSAGE) as u64;
    // The backlog drains at the pace of a server shared with the other tests: a
    // stall fails the test, a slow drain does not.
    wait_while_progressing("every line stored", total, Duration::from_secs(120), || {
        client.count(&deployment.logs_index)
    });
    let hits = client.all_hits(&deployment.logs_index);
    let messages: BTreeSet<String> = hits
        .iter()
        .filter_map(|hit| hit["_source"]["message"].as_str().map(str::to_owned))
        .collect();
    let expected: BTreeSet<String> = (0..total)
        .map(|seq| format!("stream line {seq:05}"))
        .collect();
    assert_eq!(hits.len() as u64, total, "no line stored twice");
    assert_eq!(messages, expected, "no line lost");
    assert!(
        metric_value(port, "vigil_index_bulk_retries_total", "") >= 1.0,
        "writes failed during the outage and were retried"
    );
    assert!(
        metric_value(
            port,
            "vigil_index_bulk_concurrency_decreases_total",
            "unreachable"
        ) >= 1.0
    );
}
