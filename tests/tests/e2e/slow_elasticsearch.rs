//! The index stage stays in its consumer group while Elasticsearch hangs for longer
//! than `max.poll.interval.ms`: the consumer keeps polling (so it never leaves the
//! group and forces a rebalance), and the batch in hand is written once when
//! Elasticsearch answers again.

use crate::deployment::{Deployment, log_batch_payload, metric_value};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::Duration;
use vigil_tests::elastic::ElasticClient;
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::servers::ElasticsearchServer;
use vigil_tests::{TestServers, wait_until};

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
