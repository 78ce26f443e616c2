use super::*;
use vigil_runtime::kafka::KafkaSettings;
use vigil_runtime::{Bus, Message};

/// A Kafka that does not answer (nothing listens on its port), whose producers
/// give up on a message after 100 ms.
fn unreachable_kafka() -> Bus {
    let mut settings = KafkaSettings::for_brokers("127.0.0.1:1");
    settings
        .producer_properties
        .insert("message.timeout.ms".into(), "100".into());
    Bus::Kafka(Box::new(settings))
}

fn event(alert: &str) -> Outgoing {
    Outgoing::Event(AlertEvent {
        alert: alert.to_owned(),
        fingerprint: alert.to_owned(),
        ..AlertEvent::default()
    })
}

fn state(fingerprint: &str, value: f64) -> Outgoing {
    Outgoing::State(AlertState {
        fingerprint: fingerprint.to_owned(),
        value,
        ..AlertState::default()
    })
}

/// The value of `name` with `labels` in the registry's exposition.
fn metric(metrics: &SelfMetrics, name_and_labels: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_records_and_counts_every_drop() {
    let metrics = SelfMetrics::default();
    let outbox = Outbox::start(unreachable_kafka(), Topics::default(), 3, &metrics).unwrap();
    let mut acknowledgements: Vec<Acknowledgement> = ["a", "b", "c", "d", "e"]
        .map(|alert| outbox.send_acknowledged(event(alert)))
        .into();
    let dropped = r#"vigil_alert_publish_dropped_total{record="event"}"#;
    assert_eq!(metric(&metrics, dropped), 2.0);
    assert!(acknowledgements.remove(0).await.is_err(), "`a` was dropped");
    assert!(acknowledgements.remove(0).await.is_err(), "`b` was dropped");

    // The others are tried, fail, and wait for another try.
    let retried = r#"vigil_alert_publish_retries_total{record="event"}"#;
    while metric(&metrics, retried) < 3.0 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(outbox.is_failing());
    assert_eq!(metric(&metrics, "vigil_alert_publish_queue"), 3.0);

    // Stopping with Kafka still away drops and counts the rest.
    outbox.flush(Duration::from_millis(50)).await;
    assert_eq!(metric(&metrics, dropped), 5.0);
    assert_eq!(metric(&metrics, "vigil_alert_publish_queue"), 0.0);
    for acknowledgement in acknowledgements {
        assert!(acknowledgement.await.is_err());
    }
}

#[tokio::test]
async fn records_are_published_in_order_and_acknowledged() {
    let bus = Bus::in_memory();
    let topics = Topics::default();
    let mut subscription = bus
        .subscribe("test", &[topics.alert_events(), topics.alert_state()])
        .unwrap();
    let metrics = SelfMetrics::default();
    let outbox = Outbox::start(bus.clone(), topics.clone(), 10, &metrics).unwrap();
    let acknowledgements = [
        outbox.send_acknowledged(state("f1", 1.0)),
        outbox.send_acknowledged(event("f1")),
        outbox.send_acknowledged(Outgoing::Tombstone("f1".into())),
    ];
    for acknowledgement in acknowledgements {
        acknowledgement.await.expect("acknowledged");
    }
    let mut received: Vec<Message> = Vec::new();
    for _ in 0..3 {
        received.push(subscription.recv().await.unwrap());
    }
    let topics_in_order: Vec<&str> = received.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics_in_order,
        [
            topics.alert_state(),
            topics.alert_events(),
            topics.alert_state()
        ]
    );
    assert!(received[2].payload.is_empty(), "the tombstone deletes f1");
    outbox.flush(Duration::from_secs(1)).await;
    assert_eq!(
        metric(
            &metrics,
            r#"vigil_alert_publish_dropped_total{record="state"}"#
        ),
        0.0
    );
}

#[test]
fn a_failed_state_record_that_a_later_one_replaced_is_not_tried_again() {
    let metrics = SelfMetrics::default();
    let shared = Shared {
        queue: Mutex::new(Queue::default()),
        capacity: 10,
        arrived: Notify::new(),
        published: Notify::new(),
        failing: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        metrics: OutboxMetrics {
            dropped: metrics.register("dropped", "", Family::default()),
            retried: metrics.register("retried", "", Family::default()),
            queued: metrics.register("queued", "", Gauge::default()),
        },
    };
    let window = [state("f1", 1.0), state("f2", 1.0), state("f1", 2.0)]
        .into_iter()
        .map(|record| Queued {
            record,
            acknowledged: None,
        })
        .collect();
    let failed = settle(
        &shared,
        window,
        vec![Err(BusError::Closed), Err(BusError::Closed), Ok(())],
    );
    assert!(failed);
    let queue = shared.lock();
    let waiting: Vec<(String, f64)> = queue
        .waiting
        .iter()
        .map(|queued| match &queued.record {
            Outgoing::State(state) => (state.fingerprint.clone(), state.value),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(waiting, [("f2".to_owned(), 1.0)]);
}
