//! The SNMP scheduler inside a running agent, against real snmpd: a healthy target
//! keeps its schedule beside a target that never answers and one that answers
//! garbage, and each failure is counted and explained by target.

use std::net::UdpSocket;
use std::time::Duration;
use tokio::time::Instant;
use vigil_agent::config::{Community, MetricSet, SnmpConfig, SnmpTarget};
use vigil_tests::TestServers;
use vigil_tests::polling_agent::{PollingAgent, device_of, gauge, has_sample};

fn target(name: &str, address: String) -> SnmpTarget {
    SnmpTarget {
        interval: Duration::from_secs(2),
        timeout: Duration::from_millis(900),
        retries: 1,
        metric_sets: vec![MetricSet::System, MetricSet::If],
        ..SnmpTarget::v2c(name, address, Community::Inline("public".into()))
    }
}

/// A UDP "device" that answers every request with bytes that are not SNMP.
fn garbage_device() -> (UdpSocket, std::thread::JoinHandle<()>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let answering = socket.try_clone().unwrap();
    let thread = std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while let Ok((_, peer)) = answering.recv_from(&mut buffer) {
            if answering
                .send_to(b"\x30\x03\x02\x01\x07 not an snmp message", peer)
                .is_err()
            {
                return;
            }
        }
    });
    (socket, thread)
}

#[tokio::test]
async fn a_silent_and_a_garbage_target_never_delay_a_healthy_one() {
    let servers = TestServers::get();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (garbage, _answering) = garbage_device();
    let interval = Duration::from_secs(2);
    let snmp = SnmpConfig {
        targets: vec![
            target("healthy", servers.snmp_address()),
            target("silent", silent.local_addr().unwrap().to_string()),
            target("garbage", garbage.local_addr().unwrap().to_string()),
        ],
        ..SnmpConfig::default()
    };
    let mut agent = PollingAgent::start(snmp);

    // The first poll comes within one interval (a random offset spreads targets).
    let mut arrivals = Vec::new();
    let mut failed = std::collections::BTreeSet::new();
    let until = Instant::now() + interval * 8;
    while arrivals.len() < 5 || failed.len() < 2 {
        let left = until.saturating_duration_since(Instant::now());
        let batch = agent.next_batch("5 healthy and 2 failed polls", left).await;
        match device_of(&batch) {
            "healthy" => {
                assert_eq!(gauge(&batch, "snmp.up"), Some(1.0));
                assert!(has_sample(&batch, "if.in.octets"));
                arrivals.push(Instant::now());
            }
            other => {
                assert_eq!(gauge(&batch, "snmp.up"), Some(0.0), "{other}");
                failed.insert(other.to_owned());
            }
        }
    }
    // Every interval, whatever the other two do: their failed polls each take
    // up to timeout × 2 = 1.8s.
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > interval / 2 && gap < interval + Duration::from_millis(700),
            "healthy batches {gap:?} apart, interval {interval:?}"
        );
    }

    let log = agent.log();
    assert!(
        log.contains("target `silent` did not answer GET of 1.3.6.1.2.1.1.3.0, 1.3.6.1.2.1.1.5.0 within 900ms (2 attempts; a wrong community looks the same)"),
        "{log}"
    );
    let garbage_line = log
        .lines()
        .find(|line| line.contains("target `garbage`"))
        .unwrap_or_else(|| panic!("no log line about `garbage`:\n{log}"));
    assert!(garbage_line.contains("SNMP poll failed"), "{garbage_line}");
    assert!(
        garbage_line.contains("target_name=garbage"),
        "{garbage_line}"
    );
    let exposed = agent.registry.encode();
    for expected in [
        "vigil_agent_snmp_poll_errors_total{target=\"silent\",reason=\"timeout\"}",
        "vigil_agent_snmp_targets_configured 3",
        "vigil_agent_snmp_polls_total{target=\"healthy\",outcome=\"success\"}",
    ] {
        assert!(
            exposed.contains(expected),
            "{expected} missing in\n{exposed}"
        );
    }
    agent.stop().await;
}
