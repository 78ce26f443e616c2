//! The configuration as the agent loads it at start, from YAML: defaults, every
//! section, and errors that name the file, line and column or the field.

use super::host_metrics::default_disk_exclude;
use super::*;

const FULL: &str = r#"
resource: {id: web-1, host_name: web-1, attributes: {site: fra1}}
kafka: {brokers: "127.0.0.1:9092", topic_prefix: vigil}
data_dir: /var/lib/vigil-agent
http: {listen: "127.0.0.1:9464"}
logs:
  - {path: /var/log/app.log, dataset: app, partial_line_timeout: 2s, multiline: {start_pattern: '^\d{4}-'}}
  - path: /var/log/pods/**/*.log
    exclude: ['*.1']
    read_from: beginning
    ignore_older: 24h
  - {path: /var/log/syslog, file_events: false}
log_batch: {max_lines: 2000, max_bytes: 786432, flush_interval: 200ms, max_line_bytes: 65536}
host_metrics: {enabled: true, interval: 10s, proc_root: /proc}
snmp:
  targets:
    - {name: core1, address: "10.0.0.1:161", version: v2c, community: {env: PATH}, interval: 30s, timeout: 2s, retries: 1, metric_sets: [system, if]}
    - {name: edge, address: "10.0.0.3", community: public}
"#;

#[test]
fn a_full_configuration_loads() {
    let config = AgentConfig::from_yaml(FULL, "agent.yaml").unwrap();
    assert_eq!(config.resource.id, "web-1");
    assert_eq!(config.resource.attributes["site"], "fra1");
    assert_eq!(config.kafka.unwrap().brokers, "127.0.0.1:9092");
    assert_eq!(config.logs[2].dataset, "generic");
    assert_eq!(
        config
            .logs
            .iter()
            .map(|log| log.file_events)
            .collect::<Vec<_>>(),
        [true, true, false]
    );
    assert_eq!(config.logs[0].partial_line_timeout, Duration::from_secs(2));
    assert_eq!(config.logs[0].read_from, ReadFrom::End);
    assert_eq!(config.logs[0].ignore_older, None);
    let multiline = config.logs[0].multiline.as_ref().unwrap();
    assert_eq!(multiline.start_pattern.as_deref(), Some(r"^\d{4}-"));
    assert_eq!(
        (multiline.flush_timeout, multiline.max_lines),
        (Duration::from_secs(1), 500)
    );
    assert_eq!(config.logs[1].exclude, ["*.1"]);
    assert_eq!(config.logs[1].read_from, ReadFrom::Beginning);
    assert_eq!(
        config.logs[1].ignore_older,
        Some(Duration::from_secs(24 * 3600))
    );
    assert_eq!(config.log_batch.flush_interval, Duration::from_millis(200));
    assert_eq!(config.snmp.targets[0].interval, Duration::from_secs(30));
    assert_eq!(
        config.snmp.targets[1].community,
        Some(Community::Inline("public".into()))
    );
    assert_eq!(
        config.snmp.targets[1].metric_sets,
        [MetricSet::System, MetricSet::If]
    );
}

#[test]
fn an_empty_file_is_a_valid_configuration_of_defaults() {
    let config = AgentConfig::from_yaml("{}", "agent.yaml").unwrap();
    assert!(config.kafka.is_none());
    assert_eq!(config.resource.id, default_host_name());
    assert_eq!(config.log_batch, LogBatchConfig::default());
}

#[test]
fn an_unknown_key_is_named_with_file_line_and_column() {
    let yaml = "resource: {id: a}\ndata_dir: /tmp\ncolour: blue\n";
    let error = AgentConfig::from_yaml(yaml, "agent.yaml").unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("agent.yaml:3:1: unknown field `colour`, expected one of"),
        "{text}"
    );
    assert!(text.contains("data_dir"), "{text}");

    let nested = "snmp:\n  targets:\n    - name: a\n      address: b\n      comunity: x\n";
    let text = AgentConfig::from_yaml(nested, "/etc/vigil/agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with("/etc/vigil/agent.yaml:5:7: unknown field `comunity`"),
        "{text}"
    );
}

#[test]
fn a_bad_duration_is_located_and_explained() {
    let yaml = "log_batch:\n  flush_interval: 10x\n";
    let text = AgentConfig::from_yaml(yaml, "agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(text.starts_with("agent.yaml:2:"), "{text}");
    assert!(
        text.contains("invalid duration `10x`: unknown unit (expected ms, s, m, h, d or w)"),
        "{text}"
    );
}

fn invalid(yaml: &str) -> String {
    match AgentConfig::from_yaml(yaml, "agent.yaml").unwrap_err() {
        ConfigError::Invalid { place, cause } => {
            assert!(place.starts_with("agent.yaml"), "{place}");
            cause.to_string()
        }
        other => panic!("expected a validation error, got {other}"),
    }
}

#[test]
fn invalid_values_name_the_field() {
    let cases = [
        (
            "snmp: {targets: [{name: a, address: 'h:161', community: c, interval: 500ms}]}",
            "`snmp.targets[0].interval` must be at least 1s",
        ),
        (
            "snmp: {targets: [{name: a, address: 'h:161'}]}",
            "`snmp.targets[0].community` is required with version v2c",
        ),
        (
            "snmp: {targets: [{name: a, address: h, community: c}, {name: a, address: h, community: c}]}",
            "`snmp.targets[1].name` `a` is used by another target",
        ),
        (
            "snmp: {targets: [{name: a, address: h, version: v3, v3: {user: u, auth_protocol: sha}}]}",
            "`snmp.targets[0].v3.auth_password` is required with security_level auth_priv",
        ),
        (
            "snmp: {targets: [{name: a, address: h, community: {env: VIGIL_TEST_UNSET_COMMUNITY}}]}",
            "`snmp.targets[0].community` environment variable VIGIL_TEST_UNSET_COMMUNITY is not set",
        ),
        (
            "logs: [{path: relative.log}]",
            "`logs[0].path` must be an absolute path, not `relative.log`",
        ),
        (
            "logs: [{path: /a.log}, {path: /a.log}]",
            "`logs[1].path` repeats `logs[0].path` (`/a.log`)",
        ),
        (
            "logs: [{path: '/var/log/[a.log'}]",
            "`logs[0].path` is not a valid glob: Pattern syntax error near position 9: invalid range pattern",
        ),
        (
            "logs: [{path: /a.log, multiline: {start_pattern: 'a', continuation_pattern: 'b'}}]",
            "`logs[0].multiline` needs exactly one of `start_pattern` and `continuation_pattern`",
        ),
        (
            "logs: [{path: /a.log, ignore_older: 0}]",
            "`logs[0].ignore_older` must be longer than 0s",
        ),
        (
            "log_batch: {max_bytes: 4096, max_line_bytes: 4096}",
            "`log_batch.max_line_bytes` must be between 1 and `log_batch.max_bytes` (4096) so that one line always fits in a batch",
        ),
        (
            "host_metrics: {interval: 0s}",
            "`host_metrics.interval` must be at least 1s",
        ),
        (
            "kafka: {brokers: ''}",
            "`kafka.brokers` must list at least one broker",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(invalid(yaml), expected, "{yaml}");
    }
}

#[test]
fn timeouts_must_fit_in_the_interval() {
    let yaml = "snmp: {targets: [{name: a, address: h, community: c, interval: 2s, timeout: 1500ms, retries: 1}]}";
    assert_eq!(
        invalid(yaml),
        "`snmp.targets[0].timeout` times (retries + 1) is 3s, longer than the interval 2s; one poll must end before the next starts"
    );
}

#[test]
fn host_and_container_metrics_sections_load() {
    let yaml = "
host_metrics:
  interval: 15s
  proc_root: /host/proc
  mount_root: /host
  disks: {include: ['sd*', 'nvme*'], partitions: true}
  interfaces: {exclude: [lo, 'veth*']}
  filesystems: {exclude_types: [tmpfs]}
container_metrics: {interval: 30s, cgroup_root: /host/sys/fs/cgroup, include: [/, '/system.slice/*.service'], max_cgroups: 500}
";
    let config = AgentConfig::from_yaml(yaml, "agent.yaml").unwrap();
    let host = &config.host_metrics;
    assert_eq!(host.mount_root, Path::new("/host"));
    assert!(host.disks.partitions);
    assert_eq!(host.disks.exclude, default_disk_exclude());
    let disks = host.disks.matcher().unwrap();
    assert!(disks.selects("sda") && disks.selects("nvme0n1") && !disks.selects("vda"));
    let interfaces = host.interfaces.matcher().unwrap();
    assert!(interfaces.selects("eth0") && !interfaces.selects("lo"));
    assert!(!interfaces.selects("veth12ab"));
    assert_eq!(host.filesystems.exclude_types, ["tmpfs"]);
    let mounts = host.filesystems.mount_points().unwrap();
    assert!(mounts.selects("/") && mounts.selects("/srv/data"));
    assert!(!mounts.selects("/proc/sys/fs/binfmt_misc") && !mounts.selects("/dev"));
    let containers = &config.container_metrics;
    assert!(containers.enabled && containers.containers);
    assert_eq!(containers.interval, Duration::from_secs(30));
    assert_eq!(containers.max_cgroups, 500);
    assert_eq!(containers.include_globs().unwrap().len(), 2);
    assert_eq!(
        AgentConfig::from_yaml("{}", "agent.yaml")
            .unwrap()
            .container_metrics,
        ContainerMetricsConfig::default()
    );
}

#[test]
fn invalid_host_and_container_metrics_values_name_the_field() {
    let cases = [
        (
            "host_metrics: {proc_root: proc}",
            "`host_metrics.proc_root` must be an absolute path, not `proc`",
        ),
        (
            "host_metrics: {disks: {include: ['sd[']}}",
            "`host_metrics.disks.include[0]` is not a valid glob: Pattern syntax error near position 2: invalid range pattern",
        ),
        (
            "host_metrics: {interfaces: {exclude: [lo, 'eth[']}}",
            "`host_metrics.interfaces.exclude[1]` is not a valid glob: Pattern syntax error near position 3: invalid range pattern",
        ),
        (
            "host_metrics: {filesystems: {exclude_types: [tmpfs, '']}}",
            "`host_metrics.filesystems.exclude_types[1]` must not be empty",
        ),
        (
            "container_metrics: {interval: 100ms}",
            "`container_metrics.interval` must be at least 1s",
        ),
        (
            "container_metrics: {cgroup_root: sys/fs/cgroup}",
            "`container_metrics.cgroup_root` must be an absolute path, not `sys/fs/cgroup`",
        ),
        (
            "container_metrics: {include: [/, 'docker/*']}",
            "`container_metrics.include[1]` must start with `/` (the hierarchy's root), not `docker/*`",
        ),
        (
            "container_metrics: {max_cgroups: 0}",
            "`container_metrics.max_cgroups` must be at least 1",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(invalid(yaml), expected, "{yaml}");
    }
}

#[test]
fn inline_communities_are_never_printed() {
    let community = Community::Inline("s3cret".into());
    assert!(!format!("{community:?}").contains("s3cret"));
}

const CREDENTIALS: &str = r#"
snmp:
  credentials:
    core:
      community: {env: PATH}
      allowed_networks: [10.0.0.0/8, "2001:db8::/32"]
    secure:
      version: v3
      v3: {user: vigil, auth_protocol: sha, auth_password: {env: PATH}, priv_protocol: aes, priv_password: {env: PATH}}
  targets:
    - {name: core1, address: "10.0.0.1:161", credential: core}
    - {name: r2, address: "router2.example", credential: secure, version: v3}
"#;

#[test]
fn snmp_credentials_are_defined_once_and_named_by_targets() {
    let config = AgentConfig::from_yaml(CREDENTIALS, "agent.yaml").unwrap();
    let snmp = &config.snmp;
    let core = &snmp.credentials["core"];
    assert_eq!(core.version, SnmpVersion::V2c);
    let networks: Vec<String> = core
        .allowed_networks
        .iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    assert_eq!(networks, ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(snmp.credentials["secure"].version, SnmpVersion::V3);
    assert_eq!(snmp.targets[0].credential.as_deref(), Some("core"));
    assert_eq!(
        snmp.targets[1]
            .credential_in("", &snmp.credentials)
            .unwrap(),
        TargetCredential::Named {
            name: "secure".into(),
            credential: snmp.credentials["secure"].clone(),
        }
    );
    assert!(snmp.warnings().is_empty(), "{:?}", snmp.warnings());
}

#[test]
fn invalid_snmp_credentials_and_references_name_the_field() {
    let cases = [
        (
            "snmp: {credentials: {core: {community: {env: PATH}, allowed_networks: []}}}",
            "`snmp.credentials.core.allowed_networks` must list at least one network; leave it out to allow any address",
        ),
        (
            "snmp: {credentials: {core: {version: v1}}}",
            "`snmp.credentials.core.community` is required with version v1",
        ),
        (
            "snmp: {credentials: {core: {community: {env: VIGIL_TEST_UNSET_COMMUNITY}}}}",
            "`snmp.credentials.core.community` environment variable VIGIL_TEST_UNSET_COMMUNITY is not set",
        ),
        (
            "snmp: {credentials: {secure: {version: v3, v3: {user: u, auth_protocol: sha}}}}",
            "`snmp.credentials.secure.v3.auth_password` is required with security_level auth_priv",
        ),
        (
            "snmp: {credentials: {core: {community: c}}, targets: [{name: a, address: h, credential: nope}]}",
            "`snmp.targets[0].credential` `nope` is not one of the agent's `snmp.credentials` (core)",
        ),
        (
            "snmp: {targets: [{name: a, address: h, credential: core}]}",
            "`snmp.targets[0].credential` `core` is not one of the agent's `snmp.credentials` (none is defined)",
        ),
        (
            "snmp: {credentials: {core: {community: c}}, targets: [{name: a, address: h, credential: core, community: {env: PATH}}]}",
            "`snmp.targets[0].community` cannot be given with `credential`, which says how the device is reached",
        ),
        (
            "snmp: {credentials: {core: {community: c}}, targets: [{name: a, address: h, credential: core, version: v3}]}",
            "`snmp.targets[0].version` is v3, but credential `core` is v2c; leave `version` out, the credential sets it",
        ),
        (
            "snmp: {credentials: {core: {community: c, allowed_networks: [10.0.0.0/8]}}, targets: [{name: a, address: '192.0.2.1:161', credential: core}]}",
            "`snmp.targets[0].address` `192.0.2.1:161` is outside the `allowed_networks` of credential `core` (10.0.0.0/8)",
        ),
        (
            "snmp: {credentials: {core: {community: c, allowed_networks: ['2001:db8::/32']}}, targets: [{name: a, address: '::1', credential: core}]}",
            "`snmp.targets[0].address` `::1` is outside the `allowed_networks` of credential `core` (2001:db8::/32)",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(invalid(yaml), expected, "{yaml}");
    }
}

#[test]
fn a_bad_snmp_network_is_located_and_explained() {
    let cases = [
        (
            "10.0.0.1/8",
            "`10.0.0.1/8` has bits set past its prefix length; the network is `10.0.0.0/8`",
        ),
        (
            "10.0.0.0/33",
            "`10.0.0.0/33`: the prefix length must be a number from 0 to 32",
        ),
        ("lan", "`lan` is not a network such as `10.0.0.0/8`"),
    ];
    for (network, expected) in cases {
        let yaml = format!(
            "snmp:\n  credentials:\n    core:\n      community: c\n      allowed_networks: ['{network}']\n"
        );
        let text = AgentConfig::from_yaml(&yaml, "agent.yaml")
            .unwrap_err()
            .to_string();
        assert!(text.starts_with("agent.yaml:5:"), "{text}");
        assert!(text.contains(expected), "{text}");
    }
}

#[test]
fn snmp_networks_contain_their_addresses() {
    let contains = |network: &str, address: &str| {
        network
            .parse::<IpNetwork>()
            .unwrap()
            .contains(address.parse().unwrap())
    };
    assert!(contains("10.0.0.0/8", "10.255.0.1"));
    assert!(!contains("10.0.0.0/8", "11.0.0.1"));
    assert!(contains("10.0.0.0/8", "::ffff:10.1.2.3"));
    assert!(contains("192.0.2.7", "192.0.2.7"));
    assert!(!contains("192.0.2.7", "192.0.2.8"));
    assert!(contains("0.0.0.0/0", "203.0.113.9"));
    assert!(!contains("0.0.0.0/0", "2001:db8::1"));
    assert!(contains("2001:db8::/32", "2001:db8:ffff::1"));
    assert!(!contains("2001:db8::/32", "2001:db9::1"));
    assert!(contains("::/0", "::1"));
    assert!(!contains("::1/128", "127.0.0.1"));
}

#[test]
fn snmp_addresses_get_port_161_when_they_name_none() {
    let with_port =
        |address: &str| SnmpTarget::with_credential("t", address, "c").address_with_port();
    assert_eq!(with_port("10.0.0.1"), "10.0.0.1:161");
    assert_eq!(with_port("10.0.0.1:1161"), "10.0.0.1:1161");
    assert_eq!(with_port("core1.example"), "core1.example:161");
    assert_eq!(with_port("::1"), "[::1]:161");
    assert_eq!(with_port("[::1]:1161"), "[::1]:1161");
}

#[test]
fn inline_snmp_communities_and_unrestricted_credentials_are_warned_about() {
    let yaml = "
snmp:
  credentials:
    core: {community: public}
  targets:
    - {name: a, address: h, community: public}
    - {name: b, address: h, community: {env: PATH}}
";
    let config = AgentConfig::from_yaml(yaml, "agent.yaml").unwrap();
    assert_eq!(
        config.snmp.warnings(),
        [
            "`snmp.credentials.core.community` is given inline in the configuration file; prefer `{file: ...}` or `{env: ...}`",
            "`snmp.targets[0].community` is given inline in the configuration file; prefer `{file: ...}` or `{env: ...}`",
        ]
    );

    let yaml = "
snmp:
  credentials:
    core: {community: {env: PATH}}
    lan: {community: {env: PATH}, allowed_networks: [10.0.0.0/8]}
  etcd: {endpoints: ['http://127.0.0.1:2379']}
";
    let config = AgentConfig::from_yaml(yaml, "agent.yaml").unwrap();
    assert_eq!(
        config.snmp.warnings(),
        [
            "`snmp.credentials.core` has no `allowed_networks`: whoever can write the etcd targets can have it sent to any address"
        ]
    );
}

#[test]
fn a_sasl_password_without_tls_is_warned_about() {
    let password = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(password.path(), "s3cret\n").unwrap();
    let yaml = format!(
        "kafka:\n  brokers: 'kafka:9092'\n  sasl: {{mechanism: PLAIN, username: vigil, password: {{file: '{}'}}}}\n",
        password.path().display()
    );
    let config = AgentConfig::from_yaml(&yaml, "agent.yaml").unwrap();
    assert_eq!(
        config.warnings(),
        ["`kafka.sasl` (PLAIN) without `kafka.tls`: the password travels in plaintext"]
    );
}

#[test]
fn bad_parsers_are_located_and_name_the_field() {
    let error = |yaml: &str| {
        AgentConfig::from_yaml(yaml, "agent.yaml")
            .unwrap_err()
            .to_string()
    };
    let bad_regex = "logs:\n  - path: /var/log/app.log\n    parsers:\n      - json: {}\n      - regex: {patterns: ['^(?P<user.name>\\S+', '(?P<x>a)']}\n";
    let text = error(bad_regex);
    assert!(text.starts_with("agent.yaml:5:"), "{text}");
    assert!(
        text.contains("logs[0].parsers[1].regex.patterns[0]"),
        "{text}"
    );
    assert!(text.contains("unclosed group"), "{text}");

    let unknown_preset = "logs:\n  - path: /var/log/app.log\n    parsers: {preset: nginx_acess}\n";
    let text = error(unknown_preset);
    assert!(text.starts_with("agent.yaml:3:"), "{text}");
    assert!(text.contains("unknown variant `nginx_acess`"), "{text}");
    assert!(text.contains("nginx_access"), "{text}");

    let bad_zone = "logs:\n  - path: /var/log/syslog\n    parsers:\n      - syslog: {timezone: Europe/Atlantis}\n";
    let text = error(bad_zone);
    assert!(text.starts_with("agent.yaml:4:"), "{text}");
    assert!(
        text.contains("logs[0].parsers[0].syslog.timezone"),
        "{text}"
    );
    assert!(text.contains("Europe/Atlantis"), "{text}");

    let bad_stamp_zone = "logs:\n  - path: /var/log/app.log\n    parsers:\n      - json: {}\n      - timestamp: {field: time, timezone: Mars/Olympus}\n";
    let text = error(bad_stamp_zone);
    assert!(text.starts_with("agent.yaml:5:"), "{text}");
    assert!(
        text.contains("logs[0].parsers[1].timestamp.timezone"),
        "{text}"
    );
}

#[test]
fn log_file_bounds_load_with_their_defaults() {
    let yaml = "logs:\n  - {path: /var/log/a.log}\n  - {path: '/var/log/pods/**/*.log', max_open_files: 64, close_removed_after: 30s}\n";
    let config = AgentConfig::from_yaml(yaml, "agent.yaml").unwrap();
    assert_eq!(config.logs[0].max_open_files.get(), 1024);
    assert_eq!(config.logs[0].close_removed_after, Duration::from_secs(300));
    assert_eq!(config.logs[1].max_open_files.get(), 64);
    assert_eq!(config.logs[1].close_removed_after, Duration::from_secs(30));
}

#[test]
fn no_open_files_at_all_is_refused_at_its_place() {
    let yaml = "logs:\n  - {path: /var/log/a.log, max_open_files: 0}\n";
    let text = AgentConfig::from_yaml(yaml, "agent.yaml")
        .unwrap_err()
        .to_string();
    assert!(text.starts_with("agent.yaml:2:"), "{text}");
    assert!(
        text.contains("`max_open_files` must be at least 1"),
        "{text}"
    );
}
