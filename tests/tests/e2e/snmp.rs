//! SNMP polling against a real net-snmp agent: v1, v2c and v3 authPriv GETs of
//! scalars (v3 also through a named credential), the IF-MIB walk with interface
//! names joined as labels, the HOST-RESOURCES and UCD sets under the host metric
//! names, a defined metric set, a clear error for a wrong v3 password, a timeout
//! that names the silent target, the message for a reply that is not SNMP, and the
//! warning `--check-config` gives for a community written inline.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::time::Duration;
use vigil_agent::config::{
    AuthProtocol, Community, MetricSet, MetricSetDefinition, PrivProtocol, SecurityLevel,
    SnmpCredential, SnmpTarget, SnmpV3Config, SnmpVersion,
};
use vigil_agent::poll_once;
use vigil_proto::labels::find;
use vigil_proto::v1::{MetricBatch, ValueType, sample};
use vigil_runtime::SecretRef;
use vigil_tests::process::new_work_dir;
use vigil_tests::servers::{
    SNMP_SYS_NAME, SNMP_V3_AUTH_PASSWORD, SNMP_V3_PRIV_PASSWORD, SNMP_V3_USER,
};
use vigil_tests::{TestServers, vigil_binary};

fn secret_file(name: &str, value: &str) -> SecretRef {
    let path = new_work_dir("snmp-secrets").join(name);
    std::fs::write(&path, value).unwrap();
    SecretRef {
        file: Some(path),
        env: None,
    }
}

fn v3_security(auth_password: &str) -> SnmpV3Config {
    SnmpV3Config {
        user: SNMP_V3_USER.into(),
        security_level: SecurityLevel::AuthPriv,
        auth_protocol: Some(AuthProtocol::Sha),
        auth_password: Some(secret_file("auth", auth_password)),
        priv_protocol: Some(PrivProtocol::Aes),
        priv_password: Some(secret_file("priv", SNMP_V3_PRIV_PASSWORD)),
        context_name: None,
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
            v3_security(auth_password),
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
    let batch = poll_once(&target, &BTreeMap::new(), &BTreeMap::new())
        .await
        .expect("v2c poll");
    assert_system_and_interfaces(&batch, "switch-v2c");
}

#[tokio::test]
async fn v3_auth_priv_polls_scalars_and_walks_interfaces() {
    let batch = poll_once(
        &v3_target("switch-v3", SNMP_V3_AUTH_PASSWORD),
        &BTreeMap::new(),
        &BTreeMap::new(),
    )
    .await
    .expect("v3 authPriv poll");
    assert_system_and_interfaces(&batch, "switch-v3");
}

#[tokio::test]
async fn v3_auth_priv_polls_through_a_named_credential() {
    let credentials = BTreeMap::from([(
        "secure".to_owned(),
        SnmpCredential {
            version: SnmpVersion::V3,
            community: None,
            v3: Some(v3_security(SNMP_V3_AUTH_PASSWORD)),
            allowed_networks: Some(vec!["127.0.0.0/8".parse().unwrap()]),
        },
    )]);
    let target = SnmpTarget {
        metric_sets: vec![MetricSet::System, MetricSet::If],
        timeout: Duration::from_millis(500),
        retries: 0,
        ..SnmpTarget::with_credential(
            "switch-v3-named",
            TestServers::get().snmp_address(),
            "secure",
        )
    };
    let batch = poll_once(&target, &credentials, &BTreeMap::new())
        .await
        .expect("v3 authPriv poll with the credential `secure`");
    assert_system_and_interfaces(&batch, "switch-v3-named");
}

#[tokio::test]
async fn a_wrong_v3_password_is_an_authentication_error_naming_the_target() {
    let error = poll_once(
        &v3_target("switch-wrong-pass", "not-the-password"),
        &BTreeMap::new(),
        &BTreeMap::new(),
    )
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
    let message = poll_once(&target, &BTreeMap::new(), &BTreeMap::new())
        .await
        .expect_err("no answer")
        .to_string();
    assert!(
        message.starts_with("target `silent-device` did not answer"),
        "{message}"
    );
}

fn v2c_target(name: &str, metric_sets: Vec<MetricSet>) -> SnmpTarget {
    let servers = TestServers::get();
    SnmpTarget {
        metric_sets,
        ..SnmpTarget::v2c(
            name,
            servers.snmp_address(),
            Community::Inline(servers.snmp_community().into()),
        )
    }
}

fn samples_named<'a>(batch: &'a MetricBatch, name: &str) -> Vec<&'a vigil_proto::v1::Sample> {
    batch.samples.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn v1_walks_interfaces_with_getnext() {
    let target = SnmpTarget {
        version: Some(SnmpVersion::V1),
        ..v2c_target("switch-v1", vec![MetricSet::System, MetricSet::If])
    };
    let batch = poll_once(&target, &BTreeMap::new(), &BTreeMap::new())
        .await
        .expect("v1 poll");
    assert_system_and_interfaces(&batch, "switch-v1");
    // v1 has no Counter64: the 32-bit ifTable counters stand in.
    let loopback_in = samples_named(&batch, "if.in.octets")[0];
    assert_eq!(loopback_in.value_type, ValueType::Counter32 as i32);
}

#[tokio::test]
async fn interfaces_carry_packets_errors_speed_and_status() {
    let batch = poll_once(
        &v2c_target("switch-if", vec![MetricSet::If]),
        &BTreeMap::new(),
        &BTreeMap::new(),
    )
    .await
    .expect("poll");
    for name in [
        "if.in.octets",
        "if.out.octets",
        "if.in.packets",
        "if.out.packets",
        "if.in.errors",
        "if.out.errors",
        "if.in.discards",
        "if.out.discards",
        "if.speed.bits_per_second",
        "if.oper.status",
    ] {
        let lo = samples_named(&batch, name)
            .into_iter()
            .find(|s| find(&s.labels, "ifName") == Some("lo"));
        assert!(lo.is_some(), "{name} of lo missing");
    }
    let octets = samples_named(&batch, "if.in.octets")[0];
    assert_eq!(octets.value_type, ValueType::Counter64 as i32);
    let status = samples_named(&batch, "if.oper.status")[0];
    assert_eq!(status.value, Some(sample::Value::Gauge(1.0)), "lo is up");
}

#[tokio::test]
async fn host_resources_and_ucd_use_the_host_metric_names() {
    let target = v2c_target("server-hr", vec![MetricSet::HostResources, MetricSet::Ucd]);
    let batch = poll_once(&target, &BTreeMap::new(), &BTreeMap::new())
        .await
        .expect("poll");
    let root = samples_named(&batch, "host.fs.size_bytes")
        .into_iter()
        .find(|s| find(&s.labels, "mountpoint") == Some("/"))
        .expect("hrStorage fixed disk `/` as host.fs.size_bytes{mountpoint=\"/\"}");
    assert!(matches!(root.value, Some(sample::Value::Gauge(size)) if size > 0.0));
    assert_eq!(root.metric_set, "host_resources");
    assert!(
        samples_named(&batch, "host.storage.size_bytes")
            .iter()
            .any(|s| find(&s.labels, "type") == Some("ram")),
        "physical memory as host.storage.size_bytes{{type=ram}}"
    );
    // hrProcessorLoad (host.cpu.load_percent) appears only once net-snmp has
    // averaged a minute of load; its conversion is tested beside the code.
    for name in [
        "host.load.1m",
        "host.load.15m",
        "host.memory.total_bytes",
        "host.memory.free_bytes",
        "host.swap.total_bytes",
    ] {
        assert_eq!(samples_named(&batch, name).len(), 1, "{name}");
    }
    let ticks = samples_named(&batch, "host.cpu.ticks");
    let idle = ticks
        .iter()
        .find(|s| find(&s.labels, "mode") == Some("idle"))
        .expect("host.cpu.ticks{mode=idle}");
    assert!(matches!(idle.value, Some(sample::Value::Counter(_))));
    assert_eq!(idle.value_type, ValueType::Counter32 as i32);
}

#[tokio::test]
async fn a_defined_metric_set_reads_scalars_and_joins_table_labels() {
    let definition: MetricSetDefinition = serde_json::from_value(serde_json::json!({
        "scalars": [{"name": "e2e.or_last_change", "oid": "1.3.6.1.2.1.1.8.0"}],
        "tables": [{
            "index_label": "ifIndex",
            "labels": [{"name": "ifName", "oid": "1.3.6.1.2.1.31.1.1.1.1"}],
            "columns": [{"name": "e2e.if.mtu", "oid": "1.3.6.1.2.1.2.2.1.4", "unit": "By"}]
        }]
    }))
    .expect("definition");
    let definitions = BTreeMap::from([("e2e".to_owned(), definition)]);
    let target = v2c_target("switch-defined", vec![MetricSet::named("e2e")]);
    let batch = poll_once(&target, &BTreeMap::new(), &definitions)
        .await
        .expect("poll");
    assert_eq!(samples_named(&batch, "e2e.or_last_change").len(), 1);
    let mtu = samples_named(&batch, "e2e.if.mtu")
        .into_iter()
        .find(|s| find(&s.labels, "ifName") == Some("lo"))
        .expect("the MTU of lo, labelled with its name");
    assert_eq!(mtu.metric_set, "e2e");
    assert_eq!(mtu.value_type, ValueType::Integer as i32);
}

#[tokio::test]
async fn a_reply_that_is_not_snmp_is_a_protocol_error_naming_the_target() {
    let device = UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = device.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while let Ok((_, peer)) = device.recv_from(&mut buffer) {
            let _ = device.send_to(b"\x30\x03\x02\x01\x07 not an snmp message", peer);
        }
    });
    let target = SnmpTarget {
        timeout: Duration::from_millis(300),
        retries: 0,
        ..SnmpTarget::v2c("broken-device", address, Community::Inline("public".into()))
    };
    let message = poll_once(&target, &BTreeMap::new(), &BTreeMap::new())
        .await
        .expect_err("garbage is no answer")
        .to_string();
    assert!(
        message.starts_with(
            "target `broken-device`: GET of 1.3.6.1.2.1.1.3.0, 1.3.6.1.2.1.1.5.0 failed: "
        ),
        "{message}"
    );
}

#[test]
fn check_config_warns_of_a_community_written_inline() {
    let dir = new_work_dir("snmp-check-config");
    let path = dir.join("agent.yaml");
    std::fs::write(
        &path,
        "kafka: {brokers: '127.0.0.1:9092'}\nsnmp:\n  credentials:\n    core: {community: public}\n  targets:\n    - {name: core1, address: '10.0.0.1', credential: core}\n",
    )
    .unwrap();
    let output = std::process::Command::new(vigil_binary("vigil-agent"))
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .expect("vigil-agent runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "warning: {}: `snmp.credentials.core.community` is given inline in the configuration file; prefer `{{file: ...}}` or `{{env: ...}}`",
            path.display()
        )
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("core1 at 10.0.0.1 (credential core, every 30s"),
        "{stdout}"
    );
    assert!(!stdout.contains("public"), "{stdout}");
}
