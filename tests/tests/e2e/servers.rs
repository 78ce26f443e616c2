//! Smoke tests of the harness: every test server really answers.
//!
//! If one of these fails, end-to-end test failures elsewhere say nothing about Vigil.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::json;
use vigil_runtime::etcd::EtcdSettings;
use vigil_tests::elastic::ElasticClient;
use vigil_tests::servers::{
    KafkaBroker, SNMP_SYS_NAME, SNMP_V2C_ARGS, SNMP_V3_AUTH_PASSWORD, SNMP_V3_AUTH_PRIV_ARGS,
    SYS_UPTIME_OID,
};
use vigil_tests::{TestServers, unique_name, wait_until};

#[tokio::test]
async fn etcd_stores_and_returns_a_key() {
    let endpoint = TestServers::get().etcd_endpoint();
    let client = EtcdSettings::new(endpoint, "/smoke")
        .connect()
        .await
        .expect("connect to etcd");
    let key = format!("/{}/greeting", unique_name("smoke"));
    client.put(&key, "hello", None).await.expect("put");
    let value = client.get(&key).await.expect("get");
    assert_eq!(value.as_deref(), Some(b"hello".as_slice()));
}

#[test]
fn snmp_v2c_get_returns_sys_uptime() {
    let agent = TestServers::get().snmp();
    let line = agent
        .snmpget(&SNMP_V2C_ARGS, SYS_UPTIME_OID)
        .expect("v2c snmpget");
    assert!(line.contains("Timeticks"), "{line}");
}

#[test]
fn snmp_v3_auth_priv_get_returns_sys_uptime() {
    let agent = TestServers::get().snmp();
    let line = agent
        .snmpget(&SNMP_V3_AUTH_PRIV_ARGS, SYS_UPTIME_OID)
        .expect("v3 authPriv snmpget");
    assert!(line.contains("Timeticks"), "{line}");
}

#[test]
fn snmp_v3_with_a_wrong_auth_password_fails() {
    let agent = TestServers::get().snmp();
    let wrong_args: Vec<&str> = SNMP_V3_AUTH_PRIV_ARGS
        .iter()
        .map(|arg| {
            if *arg == SNMP_V3_AUTH_PASSWORD {
                "wrongpass123"
            } else {
                arg
            }
        })
        .collect();
    let error = agent
        .snmpget(&wrong_args, SYS_UPTIME_OID)
        .expect_err("a wrong password must be refused");
    assert!(error.contains("Authentication failure"), "{error}");
}

#[test]
fn snmp_agent_serves_system_interfaces_and_host_resources() {
    let agent = TestServers::get().snmp();
    let get = |oid: &str| {
        agent
            .snmpget(&SNMP_V2C_ARGS, oid)
            .unwrap_or_else(|error| panic!("get {oid}: {error}"))
    };
    // SNMPv2-MIB::sysName.0
    assert!(get("1.3.6.1.2.1.1.5.0").contains(SNMP_SYS_NAME));
    // IF-MIB::ifDescr.1 and ifXTable's ifName.1: the loopback interface.
    assert!(get("1.3.6.1.2.1.2.2.1.2.1").contains("\"lo\""));
    assert!(get("1.3.6.1.2.1.31.1.1.1.1.1").contains("\"lo\""));
    // HOST-RESOURCES-MIB::hrSystemUptime.0 and hrMemorySize.0
    assert!(get("1.3.6.1.2.1.25.1.1.0").contains("Timeticks"));
    assert!(get("1.3.6.1.2.1.25.2.2.0").contains("INTEGER"));
}

#[test]
fn kafka_topic_carries_a_message_from_producer_to_consumer() {
    let servers = TestServers::get();
    let topic = unique_name("smoke.kafka");
    servers.create_topic(&topic, 3);
    produce(&servers.kafka_bootstrap(), &topic, &["hello"]);
    assert_eq!(
        consume(&servers.kafka_bootstrap(), &topic, 1),
        vec!["hello"]
    );
}

#[test]
fn kafka_broker_keeps_topics_and_messages_across_a_restart() {
    let broker = KafkaBroker::start();
    let topic = unique_name("smoke.restart");
    broker.create_topic(&topic, 1);
    produce(&broker.bootstrap(), &topic, &["before"]);
    broker.restart();
    produce(&broker.bootstrap(), &topic, &["after"]);
    assert_eq!(
        consume(&broker.bootstrap(), &topic, 2),
        vec!["before", "after"]
    );
}

#[test]
fn elasticsearch_bulk_creates_are_counted_and_listed() {
    let elastic = ElasticClient::shared();
    let index = unique_name("smoke-es");
    // More documents than one scroll page, so that listing has to page.
    let ids: Vec<String> = (0..2500).map(|n| format!("doc-{n:05}")).collect();
    let actions: Vec<_> = ids
        .iter()
        .flat_map(|id| {
            [
                json!({"create": {"_index": index, "_id": id}}),
                json!({"n": id}),
            ]
        })
        .collect();
    let response = elastic.bulk(&actions);
    assert_eq!(response["errors"], json!(false), "{response}");

    assert_eq!(elastic.count(&index), 2500);
    assert_eq!(elastic.all_ids(&index), ids);

    let duplicate = elastic.bulk(&actions[..2]);
    assert_eq!(
        duplicate["items"][0]["create"]["status"],
        json!(409),
        "{duplicate}"
    );

    let found = elastic.search(&index, json!({"query": {"term": {"_id": "doc-00007"}}}));
    assert_eq!(found["hits"]["hits"][0]["_source"]["n"], json!("doc-00007"));
}

#[test]
fn elasticsearch_count_of_a_missing_index_is_zero() {
    let index = unique_name("smoke-missing");
    assert_eq!(vigil_tests::elastic::count(&index), 0);
    assert!(vigil_tests::elastic::all_ids(&index).is_empty());
}

fn produce(bootstrap: &str, topic: &str, payloads: &[&str]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .expect("create producer");
    for payload in payloads {
        producer
            .send(BaseRecord::<(), str>::to(topic).payload(payload))
            .map_err(|(error, _)| error)
            .expect("enqueue message");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("deliver messages");
}

fn consume(bootstrap: &str, topic: &str, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // Tansu holds a JoinGroup for about the rebalance timeout; keep it short.
        .set("max.poll.interval.ms", "10000")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("create consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut payloads = Vec::new();
    wait_until(
        &format!("{expected} messages on {topic}"),
        Duration::from_secs(60),
        || {
            if let Some(message) = consumer.poll(Duration::from_millis(500)) {
                let message = message.expect("consume");
                let payload = message.payload_view::<str>().and_then(Result::ok);
                payloads.push(payload.unwrap_or_default().to_owned());
            }
            (payloads.len() >= expected).then(|| payloads.clone())
        },
    )
}
