//! SNMP targets and metric sets kept in real etcd while a real agent polls real
//! snmpd: an added target and a changed metric set take effect within one
//! interval, and an invalid entry is reported by key and field while every other
//! target keeps polling. Targets name a credential of the agent's own
//! configuration; one that brings its own community, or points a credential
//! outside its networks, is refused and nothing reaches its address.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use vigil_agent::config::{Community, SnmpConfig, SnmpCredential, SnmpVersion};
use vigil_runtime::SecretRef;
use vigil_runtime::etcd::EtcdSettings;
use vigil_tests::polling_agent::{PollingAgent, device_of, gauge, has_sample};
use vigil_tests::process::new_work_dir;
use vigil_tests::{TestServers, unique_name};

const INTERVAL: Duration = Duration::from_secs(2);
/// What a change may take beyond one interval: the etcd watch and one poll.
const SLACK: Duration = Duration::from_millis(1500);

fn target(address: &str, metric_sets: &str) -> String {
    format!(
        "{{address: '{address}', credential: e2e, interval: 2s, timeout: 500ms, metric_sets: {metric_sets}}}"
    )
}

/// A file holding `value`, as the agent's local secrets are kept.
fn secret_file(name: &str, value: &str) -> std::path::PathBuf {
    let path = new_work_dir("snmp-etcd-secrets").join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path
}

/// The agent's SNMP section: targets from etcd under `settings`, and the
/// credential `e2e`, snmpd's community from `community_file`, for 127.0.0.1 only.
fn config(settings: &EtcdSettings, community_file: &Path) -> SnmpConfig {
    let e2e = SnmpCredential {
        version: SnmpVersion::V2c,
        community: Some(Community::Secret(SecretRef {
            file: Some(community_file.to_owned()),
            env: None,
        })),
        v3: None,
        allowed_networks: Some(vec!["127.0.0.1/32".parse().unwrap()]),
    };
    SnmpConfig {
        credentials: BTreeMap::from([("e2e".to_owned(), e2e)]),
        etcd: Some(settings.clone()),
        ..SnmpConfig::default()
    }
}

/// Waits (reading batches meanwhile) until the agent logged `expected`, and
/// returns the line.
async fn logged(agent: &mut PollingAgent, expected: &str) -> String {
    let until = Instant::now() + INTERVAL * 2;
    while !agent.log().contains(expected) {
        let left = until.saturating_duration_since(Instant::now());
        agent
            .next_batch(&format!("the log line `{expected}`"), left)
            .await;
    }
    agent
        .log()
        .lines()
        .find(|line| line.contains(expected))
        .map(str::to_owned)
        .unwrap_or_default()
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

    let community = secret_file("community", servers.snmp_community());
    let mut agent = PollingAgent::start(config(&settings, &community));
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
        &format!("{{address: '{address}', credential: e2e, interval: 500ms}}"),
        None,
    )
    .await
    .unwrap();
    let expected = format!("etcd key `{keys}targets/broken`: `interval` must be at least 1s");
    let line = logged(&mut agent, &expected).await;
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

// Regression: an etcd target could say `community: {file: ...}` and an address
// of its writer's choice, and the agent sent that local secret there in the clear.
#[tokio::test]
async fn an_etcd_target_cannot_have_a_local_secret_sent_to_its_address() {
    let servers = TestServers::get();
    let prefix = format!("/{}", unique_name("snmp-etcd-secret"));
    let settings = EtcdSettings::new(servers.etcd_endpoint(), prefix.clone());
    let keys = settings.key_prefix("snmp");
    let etcd = settings.connect().await.expect("etcd client");
    let community = secret_file("community", servers.snmp_community());
    let local_secret = "e2e-l0cal-s3cret";
    let secret_path = secret_file("other-secret", local_secret);
    // Where the writer of etcd would like the secret to go: outside 127.0.0.1/32.
    let collector = UdpSocket::bind("127.0.0.2:0").unwrap();
    collector.set_nonblocking(true).unwrap();
    let collector_address = collector.local_addr().unwrap().to_string();

    let mut agent = PollingAgent::start(config(&settings, &community));
    etcd.put(
        &format!("{keys}targets/core1"),
        &target(&servers.snmp_address(), "[system]"),
        None,
    )
    .await
    .unwrap();
    etcd.put(
        &format!("{keys}targets/thief"),
        &format!(
            "{{address: '{collector_address}', community: {{file: '{}'}}, interval: 2s, timeout: 500ms}}",
            secret_path.display()
        ),
        None,
    )
    .await
    .unwrap();
    etcd.put(
        &format!("{keys}targets/stray"),
        &format!(
            "{{address: '{collector_address}', credential: e2e, interval: 2s, timeout: 500ms}}"
        ),
        None,
    )
    .await
    .unwrap();

    let thief = logged(
        &mut agent,
        &format!("etcd key `{keys}targets/thief`: `community` is refused: targets in etcd carry no secrets nor references to them; name a `credential` instead (one of the agent's `snmp.credentials`: e2e)"),
    )
    .await;
    assert!(thief.contains("WARN"), "{thief}");
    logged(
        &mut agent,
        &format!("etcd key `{keys}targets/stray`: `address` `{collector_address}` is outside the `allowed_networks` of credential `e2e` (127.0.0.1/32)"),
    )
    .await;

    // The target naming the local credential is polled, and nothing else is.
    let until = Instant::now() + INTERVAL * 2 + SLACK;
    let mut polled = 0;
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(batch) =
            tokio::time::timeout(left, agent.next_batch("core1", INTERVAL + SLACK)).await
        else {
            break;
        };
        assert_eq!(device_of(&batch), "core1");
        if gauge(&batch, "snmp.up") == Some(1.0) {
            polled += 1;
        }
    }
    assert!(
        polled >= 2,
        "core1 polled {polled} time(s)\n{}",
        agent.log()
    );
    let exposed = agent.registry.encode();
    assert!(
        exposed.contains("vigil_agent_snmp_config_entries_rejected 2"),
        "{exposed}"
    );
    assert!(
        exposed.contains("vigil_agent_snmp_targets_configured 1"),
        "{exposed}"
    );
    let mut buffer = [0; 2048];
    match collector.recv_from(&mut buffer) {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the refused targets' address received {other:?}"),
    }
    assert!(!agent.log().contains(local_secret), "{}", agent.log());
    agent.stop().await;
}
