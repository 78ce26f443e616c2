//! Health of the aggregator stages: `/ready` answers 503 naming the connection
//! that is down while the broker or Elasticsearch is stopped, and 200 again once
//! it is back; the alert stage goes on following its state topic after a broker
//! restart; the three stages of one config file each listen on their own port.

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::Duration;
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::{free_tcp_port, free_tcp_ports};
use vigil_tests::readiness::{give_each_stage_its_port, readiness, wait_for_readiness};
use vigil_tests::servers::{ElasticsearchServer, KafkaBroker};
use vigil_tests::wait_until;

/// Long enough for a probe (every 2 s, 3 s to answer) to notice, and for
/// librdkafka to reconnect (its backoff grows to 10 s) on a loaded machine.
const NOTICED: Duration = Duration::from_secs(60);

#[test]
fn ready_names_kafka_while_the_broker_is_down_and_following_the_state_survives_it() {
    let broker = KafkaBroker::start();
    let deployment = Deployment::on_broker("health-kafka", &broker);
    let port = free_tcp_port();
    let config = deployment.alert_config("alert", port, "{receiver: test}");
    let _alert = deployment.start_stage("alert", &config, port);
    assert_eq!(metric_value(port, "vigil_connection_up", "kafka"), 1.0);

    broker.stop();
    wait_for_readiness(port, 503, "kafka down: ", NOTICED);
    assert_eq!(metric_value(port, "vigil_connection_up", "kafka"), 0.0);

    broker.restart();
    wait_for_readiness(port, 200, "ready", NOTICED);
    assert_eq!(metric_value(port, "vigil_connection_up", "kafka"), 1.0);

    // A record written to the state topic after the restart still reaches the
    // stage (the stage itself wrote none: it has no rules).
    let followed = "vigil_alert_state_records_followed_total";
    assert_eq!(metric_value(port, followed, ""), 0.0);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("producer created");
    producer
        .send(BaseRecord::<str, [u8]>::to(&deployment.topic("alerts.state")).key("health-check"))
        .map_err(|(error, _)| error)
        .expect("record queued");
    producer
        .flush(Duration::from_secs(30))
        .expect("record acknowledged");
    wait_until(
        "the alert stage to read the new state record",
        NOTICED,
        || (metric_value(port, followed, "") >= 1.0).then_some(()),
    );
    eprintln!(
        "health: state topic read errors during the outage: {}",
        metric_value(port, "vigil_alert_state_follow_errors_total", "")
    );
}

#[test]
fn the_index_stage_is_unready_naming_elasticsearch_while_it_is_down() {
    let elasticsearch = ElasticsearchServer::start();
    let deployment = Deployment::new("health-es");
    let port = free_tcp_port();
    let config = deployment.aggregator_config_for("index", port, &elasticsearch.url());
    let _index = deployment.start_stage("index", &config, port);
    assert_eq!(
        metric_value(port, "vigil_connection_up", "elasticsearch"),
        1.0
    );

    elasticsearch.stop();
    let body = wait_for_readiness(port, 503, "elasticsearch down: ", NOTICED);
    assert!(
        !body.contains("kafka"),
        "only Elasticsearch is down: {body}"
    );
    assert_eq!(
        metric_value(port, "vigil_connection_up", "elasticsearch"),
        0.0
    );

    elasticsearch.restart();
    wait_for_readiness(port, 200, "ready", NOTICED);
    assert_eq!(
        metric_value(port, "vigil_connection_up", "elasticsearch"),
        1.0
    );
}

#[test]
fn the_three_stages_of_one_config_file_each_listen_on_their_own_port() {
    let deployment = Deployment::with_derive("health-ports", 1);
    let ports = free_tcp_ports(4);
    let shared = ports[3];
    let config = deployment.aggregator_config("stages", shared);
    give_each_stage_its_port(&config, [ports[0], ports[1], ports[2]]);

    let _derive = deployment.start_stage("derive", &config, ports[0]);
    let _alert = deployment.start_stage("alert", &config, ports[1]);
    let _index = deployment.start_stage("index", &config, ports[2]);
    for (port, stage) in ports.iter().zip(["derive", "alert", "index"]) {
        let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
            .and_then(|response| response.text())
            .expect("metrics answered");
        assert!(
            metrics.contains(&format!("vigil_{stage}_receive_errors")),
            "port {port} serves the {stage} stage:\n{metrics}"
        );
    }
    assert_eq!(readiness(shared), None, "no stage took the shared address");
}
