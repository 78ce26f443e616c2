use super::*;
use std::time::Instant;

/// Waits up to 30 s until `condition` holds on the delivery thread's counters.
fn wait_for(producer: &KafkaProducer, what: &str, condition: impl Fn(&WakeupState) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition(&producer.shared.wakeup.lock()) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn the_delivery_thread_polls_while_a_message_is_in_flight_and_not_after() {
    // A listener that accepts connections and never answers: a broker that says
    // nothing, so that the client has no error to report while the test watches.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = ClientConfig::new();
    config
        .set(
            "bootstrap.servers",
            silent.local_addr().unwrap().to_string(),
        )
        .set("message.timeout.ms", "300");
    let producer = KafkaProducer::new(&config).unwrap();

    let result = producer.send("t", "key", Some(b"x"), None).await;
    assert_eq!(
        result,
        Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageTimedOut
        )),
        "the delivery report of the message that timed out reached its send"
    );

    wait_for(&producer, "the thread waits idle", |state| {
        state.idle_checks >= 1
    });
    let (polls, checks) = {
        let state = producer.shared.wakeup.lock();
        (state.polls, state.idle_checks)
    };
    assert!(
        polls >= 1,
        "the thread polled while the message was in flight"
    );
    wait_for(&producer, "three more idle checks", |state| {
        state.idle_checks >= checks + 3
    });
    assert_eq!(
        producer.shared.wakeup.lock().polls,
        polls,
        "an idle producer does not poll"
    );
}

#[tokio::test]
async fn dropping_the_producer_stops_its_delivery_thread() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = ClientConfig::new();
    config.set(
        "bootstrap.servers",
        silent.local_addr().unwrap().to_string(),
    );
    let producer = KafkaProducer::new(&config).unwrap();
    let wakeup = Arc::clone(&producer.shared.wakeup);
    let delivery = producer.shared.delivery.as_ref().unwrap().thread().id();
    drop(producer);
    assert!(wakeup.lock().stop);
    assert_eq!(
        Arc::strong_count(&wakeup),
        1,
        "the delivery thread {delivery:?} ended and let go of its wakeup"
    );
}
