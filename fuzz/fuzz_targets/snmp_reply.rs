//! Fuzzes the SNMP poller's handling of a device's replies, from their bytes (as
//! `snmp2` decodes them) to samples, in a poll of every built-in metric set and
//! a defined one: never a panic, every sample says what it is (a counter carries
//! a counter value, a gauge a gauge), and the batch of a poll is one the stages
//! accept. The input is the replies to the poll's requests in turn, each after
//! its length (two bytes, big-endian).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use vigil_agent::AgentConfig;
use vigil_agent::config::MetricSetDefinition;
use vigil_proto::Payload;
use vigil_proto::v1::{MetricBatch, MetricKind, Resource, sample};
use vigil_proto::view::MetricBatchView;

/// 2024-01-01, in nanoseconds since the Unix epoch.
const TIME: i64 = 1_704_067_200_000_000_000;

const CONFIG: &str = r#"
resource: {id: fuzz, host_name: fuzz}
snmp:
  metric_sets:
    cisco:
      scalars:
        - {name: cisco.cpu.busy_percent, oid: 1.3.6.1.4.1.9.9.109.1.1.1.1.8.1, unit: "%"}
      tables:
        - index_label: entry
          labels: [{name: entry.name, oid: 1.3.6.1.4.1.9.9.48.1.1.1.2}]
          columns:
            - {name: cisco.memory.used_bytes, oid: 1.3.6.1.4.1.9.9.48.1.1.1.5, unit: By}
            - {name: cisco.memory.free_bytes, oid: 1.3.6.1.4.1.9.9.48.1.1.1.6, unit: By}
"#;

static DEFINITIONS: LazyLock<std::collections::BTreeMap<String, MetricSetDefinition>> =
    LazyLock::new(|| {
        AgentConfig::from_yaml(CONFIG, "agent.yaml")
            .unwrap_or_else(|error| panic!("{error}"))
            .snmp
            .metric_sets
    });

/// The replies framed in `input`; a last one cut short keeps what is there.
fn replies(mut input: &[u8]) -> Vec<&[u8]> {
    let mut replies = Vec::new();
    while let [high, low, rest @ ..] = input {
        let length = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
        let (reply, after) = rest.split_at(length);
        replies.push(reply);
        input = after;
    }
    replies
}

fuzz_target!(|input: &[u8]| {
    let replies = replies(input);
    let Ok(samples) = vigil_agent::fuzzing::snmp_reply_samples(&replies, &DEFINITIONS, TIME) else {
        return;
    };
    for sample in &samples {
        let counter = matches!(sample.value, Some(sample::Value::Counter(_)));
        assert_eq!(
            sample.kind == MetricKind::Counter as i32,
            counter,
            "kind and value disagree: {sample:?}"
        );
        assert!(!sample.metric_set.is_empty(), "{sample:?}");
    }
    if samples.is_empty() {
        return;
    }
    let batch = MetricBatch {
        resource: Some(Resource {
            id: "core1".into(),
            host_name: "core1".into(),
            ..Resource::default()
        }),
        samples,
        producer: "fuzz".into(),
    };
    if let Err(reason) = batch.check() {
        panic!("the poller made a batch the stages refuse: {reason}");
    }
    let payload = batch.to_payload();
    if let Err(error) = MetricBatchView::decode(&payload) {
        panic!("the derive stage cannot read the poller's batch: {error}");
    }
});
