//! SNMP polling against a real net-snmp agent: v2c and v3 authPriv GETs of scalars,
//! the IF-MIB walk with interface names joined as labels, a clear error for a wrong
//! v3 password, and a timeout that names the silent target.

use std::net::UdpSocket;
use std::time::Duration;
use vigil_agent::config::{
    AuthProtocol, Community, MetricSet, PrivProtocol, SecurityLevel, SnmpTarget, SnmpV3Config,
};
use vigil_agent::poll_once;
use vigil_proto::labels::find;
use vigil_proto::v1::{MetricBatch, ValueType, sample};
use vigil_runtime::SecretRef;
use vigil_tests::TestServers;
use vigil_tests::process::new_work_dir;
use vigil_tests::servers::{
    SNMP_SYS_NAME, SNMP_V3_AUTH_PASSWORD, SNMP_V3_PRIV_PASSWORD, SNMP_V3_USER,
};

fn secret_file(name: &str, value: &str) -> SecretRef {
    let path = new_work_dir("snmp-secrets").join(name);
    std::fs::write(&path, value).unwrap();
    SecretRef {
        file: Some(path),
        env: None,
    }
}

fn v3_target(name: &str, auth_password: &str) -> SnmpTarget {
    SnmpTarget {
        metric_sets: vec![MetricSet::System, MetricSet::If],
        timeout: Duration::from_millis(500),
        retries: 0,
        ..SnmpTarget::v3(
            name,
            TestServers::get().snmp_address(),
            SnmpV3Config {
                user: SNMP_V3_USER.into(),
                security_level: SecurityLevel::AuthPriv,
                auth_protocol: Some(AuthProtocol::Sha),
                auth_password: Some(secret_file("auth", auth_password)),
                priv_protocol: Some(PrivProtocol::Aes),
                priv_password: Some(secret_file("priv", SNMP_V3_PRIV_PASSWORD)),
                context_name: None,
            },
        )
    }
}

fn assert_system_and_interfaces(batch: &MetricBatch, target: &str) {
    let resource = batch.resource.as_ref().unwrap();
    assert_eq!(resource.id, target);
    assert_eq!(find(&resource.attributes, "sysName"), Some(SNMP_SYS_NAME));
    let uptime = batch
        .samples
        .iter()
        .find(|s| s.name == "system.uptime.ticks")
        .expect("sysUpTime sampled");
    assert_eq!(uptime.value_type, ValueType::Timeticks as i32);
    let loopback_in = batch
        .samples
        .iter()
        .find(|s| s.name == "if.in.octets" && find(&s.labels, "ifName") == Some("lo"))
        .expect("ifHCInOctets of lo, labelled with its name");
    assert!(matches!(loopback_in.value, Some(sample::Value::Counter(_))));
    assert_eq!(find(&loopback_in.labels, "ifDescr"), Some("lo"));
    assert!(find(&loopback_in.labels, "ifIndex").is_some());
}

#[tokio::test]
async fn v2c_polls_scalars_and_walks_interfaces() {
    let servers = TestServers::get();
    let target = SnmpTarget {
        metric_sets: vec![MetricSet::System, MetricSet::If],
        ..SnmpTarget::v2c(
            "switch-v2c",
            servers.snmp_address(),
            Community::Inline(servers.snmp_community().into()),
        )
    };
    let batch = poll_once(&target).await.expect("v2c poll");
    assert_system_and_interfaces(&batch, "switch-v2c");
}

#[tokio::test]
async fn v3_auth_priv_polls_scalars_and_walks_interfaces() {
    let batch = poll_once(&v3_target("switch-v3", SNMP_V3_AUTH_PASSWORD))
        .await
        .expect("v3 authPriv poll");
    assert_system_and_interfaces(&batch, "switch-v3");
}

#[tokio::test]
async fn a_wrong_v3_password_is_an_authentication_error_naming_the_target() {
    let error = poll_once(&v3_target("switch-wrong-pass", "not-the-password"))
        .await
        .expect_err("a wrong password must fail");
    let message = error.to_string();
    assert!(
        message.starts_with("SNMPv3 authentication with target `switch-wrong-pass` failed"),
        "{message}"
    );
}

#[tokio::test]
async fn a_silent_target_times_out_with_its_name() {
    // A bound socket that never answers: a device that is down.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = SnmpTarget {
        timeout: Duration::from_millis(300),
        retries: 1,
        ..SnmpTarget::v2c(
            "silent-device",
            silent.local_addr().unwrap().to_string(),
            Community::Inline("public".into()),
        )
    };
    let message = poll_once(&target).await.expect_err("no answer").to_string();
    assert!(
        message.starts_with("target `silent-device` did not answer"),
        "{message}"
    );
}
