//! Alert records survive a Kafka outage: an alert that fires while the broker is
//! down is paged at once, and its event and state record reach their topics once
//! the broker is back, although the outage outlasted the producer's delivery
//! timeout (shortened here to two seconds so that the test need not wait a
//! minute for it). The stage's consumer session is made longer than the outage:
//! a stage cut off from Kafka for longer gives its partitions up, and a new
//! owner resumes their alerts from the state topic after the outage.

use prost::Message;
use std::time::Duration;
use vigil_proto::v1::{AlertEvent, AlertState, AlertStatus};
use vigil_tests::alert_feed::{MetricFeed, rules_folder, wait_for_alert};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::hostile::read_topic_on;
use vigil_tests::ports::free_tcp_port;
use vigil_tests::servers::KafkaBroker;
use vigil_tests::wait_until;

/// Pending for long enough that the broker is stopped before it fires, even on a
/// loaded machine.
const RULES: &str = r#"groups:
  - name: queues
    interval: 1s
    rules:
      - alert: QueueStuck
        metric: queue.depth
        condition: value > 5
        for: 15s
        labels: {severity: page}
"#;

const ROUTE: &str =
    "{receiver: test, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}";

/// Long enough for librdkafka to reconnect (its backoff grows to 10 s) and for
/// the outbox's backoff on a loaded machine.
const NOTICED: Duration = Duration::from_secs(90);

#[test]
fn an_alert_that_fires_while_the_broker_is_down_reaches_its_topics_afterwards() {
    let broker = KafkaBroker::start();
    let deployment = Deployment::on_broker("alert-outage", &broker);
    deployment.push_rules(&rules_folder(
        &deployment,
        "rules",
        &[("queues.yaml", RULES)],
    ));
    let port = free_tcp_port();
    let config = deployment.alert_config("alert", port, ROUTE);
    let text = std::fs::read_to_string(&config).expect("alert config readable");
    let text = text
        .replacen(
            "kafka:\n",
            "kafka:\n  producer_properties: {message.timeout.ms: '2000'}\n",
            1,
        )
        .replacen(
            "session.timeout.ms: '6000'",
            "session.timeout.ms: '120000'",
            1,
        )
        .replacen(
            "max.poll.interval.ms: '10000'",
            "max.poll.interval.ms: '180000'",
            1,
        );
    assert!(text.contains("'120000'"), "session timeout set in:\n{text}");
    std::fs::write(&config, text).expect("alert config written");
    let _alert = deployment.start_stage("alert", &config, port);

    let feed = MetricFeed::start_on(&broker.bootstrap(), deployment.topic("metrics.raw"));
    feed.set("q1", &[("queue", "orders")], &[("queue.depth", 10.0)]);
    wait_until("the alert to be pending", NOTICED, || {
        (metric_value(port, "vigil_alert_events", "pending") >= 1.0).then_some(())
    });
    drop(feed);
    broker.stop();

    let page = wait_for_alert(
        &deployment.webhook,
        "firing",
        &[("alertname", "QueueStuck"), ("host", "q1")],
    );
    eprintln!("alert_outage: paged while the broker is down: {page}");
    wait_until(
        "the stage to publish the alert records again after a failed delivery",
        NOTICED,
        || (metric_value(port, "vigil_alert_publish_retries", "") >= 1.0).then_some(()),
    );
    broker.restart();

    let events_topic = deployment.topic("alerts.events");
    let event = wait_until("the firing event on the events topic", NOTICED, || {
        read_topic_on(&broker.bootstrap(), &events_topic)
            .iter()
            .filter_map(|record| AlertEvent::decode(record.payload.as_slice()).ok())
            .find(|event| event.alert == "QueueStuck" && event.status() == AlertStatus::Firing)
    });
    assert!(
        event
            .labels
            .iter()
            .any(|label| label.name == "host" && label.value == "q1"),
        "the event is the alert of host q1: {event:?}"
    );
    let state_topic = deployment.topic("alerts.state");
    let state = wait_until(
        "the firing state record on the state topic",
        NOTICED,
        || {
            read_topic_on(&broker.bootstrap(), &state_topic)
                .iter()
                .filter_map(|record| AlertState::decode(record.payload.as_slice()).ok())
                .find(|state| state.alert == "QueueStuck" && state.fired_at_unix_nano != 0)
        },
    );
    assert_eq!(state.fingerprint, event.fingerprint);
    assert_eq!(
        metric_value(port, "vigil_alert_publish_dropped", ""),
        0.0,
        "no alert record was dropped"
    );
}
