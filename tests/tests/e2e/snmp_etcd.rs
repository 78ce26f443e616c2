//! SNMP targets and metric sets kept in real etcd while a real agent polls real
//! snmpd: an added target and a changed metric set take effect within one
//! interval, and an invalid entry is reported by key and field while every other
//! target keeps polling.

use std::time::Duration;
use tokio::time::Instant;
use vigil_agent::config::SnmpConfig;
use vigil_runtime::etcd::EtcdSettings;
use vigil_tests::polling_agent::{PollingAgent, device_of, gauge, has_sample};
use vigil_tests::{TestServers, unique_name};

const INTERVAL: Duration = Duration::from_secs(2);
/// What a change may take beyond one interval: the etcd watch and one poll.
const SLACK: Duration = Duration::from_millis(1500);

fn target(address: &str, metric_sets: &str) -> String {
    format!(
        "{{address: '{address}', community: public, interval: 2s, timeout: 500ms, metric_sets: {metric_sets}}}"
    )
}

#[tokio::test]
async fn targets_and_metric_sets_follow_etcd_and_a_bad_entry_is_named() {
    let servers = TestServers::get();
    let prefix = format!("/{}", unique_name("snmp-etcd"));
    let settings = EtcdSettings::new(servers.etcd_endpoint(), prefix.clone());
    let keys = settings.key_prefix("snmp");
    let etcd = settings.connect().await.expect("etcd client");
    let address = servers.snmp_address();
    etcd.put(
        &format!("{keys}targets/core1"),
        &target(&address, "[system]"),
        None,
    )
    .await
    .unwrap();

    let mut agent = PollingAgent::start(SnmpConfig {
        etcd: Some(settings.clone()),
        ..SnmpConfig::default()
    });
    let first = agent
        .batch_of("core1", INTERVAL + SLACK * 2, |b| {
            gauge(b, "snmp.up") == Some(1.0)
        })
        .await;
    assert!(has_sample(&first, "system.uptime.ticks"));

    // A new target, using a metric set that is defined in etcd too.
    etcd.put(
        &format!("{keys}metric_sets/e2e"),
        "scalars: [{name: e2e.or_last_change, oid: 1.3.6.1.2.1.1.8.0}]",
        None,
    )
    .await
    .unwrap();
    let added = Instant::now();
    etcd.put(
        &format!("{keys}targets/edge2"),
        &target(&address, "[e2e]"),
        None,
    )
    .await
    .unwrap();
    agent
        .batch_of("edge2", INTERVAL + SLACK, |b| {
            has_sample(b, "e2e.or_last_change")
        })
        .await;
    assert!(
        added.elapsed() < INTERVAL + SLACK,
        "took {:?}",
        added.elapsed()
    );

    // The metric set changes: its targets poll the new OIDs from then on.
    let changed = Instant::now();
    etcd.put(
        &format!("{keys}metric_sets/e2e"),
        "scalars: [{name: e2e.contact_uptime, oid: 1.3.6.1.2.1.1.3.0}]",
        None,
    )
    .await
    .unwrap();
    agent
        .batch_of("edge2", INTERVAL + SLACK, |b| {
            has_sample(b, "e2e.contact_uptime") && !has_sample(b, "e2e.or_last_change")
        })
        .await;
    assert!(
        changed.elapsed() < INTERVAL + SLACK,
        "took {:?}",
        changed.elapsed()
    );

    // An invalid entry: named by key and field, and nothing else stops.
    etcd.put(
        &format!("{keys}targets/broken"),
        &format!("{{address: '{address}', community: public, interval: 500ms}}"),
        None,
    )
    .await
    .unwrap();
    let expected = format!("etcd key `{keys}targets/broken`: `interval` must be at least 1s");
    let until = Instant::now() + INTERVAL * 2;
    while !agent.log().contains(&expected) {
        let left = until.saturating_duration_since(Instant::now());
        agent
            .next_batch(&format!("the log line `{expected}`"), left)
            .await;
    }
    let line = agent
        .log()
        .lines()
        .find(|line| line.contains(&expected))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("the other SNMP targets keep polling"),
        "{line}"
    );
    let mut still_polling = std::collections::BTreeSet::new();
    while still_polling.len() < 2 {
        let batch = agent
            .next_batch("core1 and edge2 after the bad entry", INTERVAL + SLACK)
            .await;
        assert_ne!(device_of(&batch), "broken");
        if gauge(&batch, "snmp.up") == Some(1.0) {
            still_polling.insert(device_of(&batch).to_owned());
        }
    }
    let exposed = agent.registry.encode();
    assert!(
        exposed.contains("vigil_agent_snmp_config_entries_rejected 1"),
        "{exposed}"
    );
    assert!(
        exposed.contains("vigil_agent_snmp_targets_configured 2"),
        "{exposed}"
    );

    // Removing a target stops its polls.
    etcd.delete(&format!("{keys}targets/core1")).await.unwrap();
    let removed = Instant::now();
    while !agent
        .registry
        .encode()
        .contains("vigil_agent_snmp_targets_configured 1")
    {
        agent.next_batch("edge2 alone", INTERVAL + SLACK).await;
        assert!(
            removed.elapsed() < INTERVAL + SLACK,
            "core1 still configured"
        );
    }
    agent.stop().await;
}
