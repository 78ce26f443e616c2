//! The agent's metric spool on real servers: the broker is stopped for
//! [`OUTAGE`] while the agent polls host metrics and the test snmpd every second;
//! once the broker is back, every sample time of every series is in the index
//! exactly once, and the agent's memory stayed within its systemd unit's budget.
//!
//! The agent logs each batch it hands to its spool (resource and sample time, at
//! debug level), so after it stopped the test knows exactly which polls happened,
//! whatever the machine's load did to the schedule.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vigil_tests::consumer_group::wait_until_group_finished;
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::servers::KafkaBroker;
use vigil_tests::wait::wait_while_progressing;
use vigil_tests::{ChildProcess, TestServers, elastic, vigil_binary, wait_until};

/// How long the broker is down while the agent keeps polling.
const OUTAGE: Duration = Duration::from_secs(180);
/// Batches published before the broker is stopped, so both sources are flowing.
const BATCHES_BEFORE_OUTAGE: f64 = 6.0;
/// How long the spool may take to drain once it stopped making progress.
const DRAIN_STALL_LIMIT: Duration = Duration::from_secs(120);
/// The resource ids of the two sources.
const HOST: &str = "e2e-spool-host";
const SWITCH: &str = "e2e-spool-switch";

#[test]
fn metrics_polled_while_the_broker_is_down_are_all_indexed_once_afterwards() {
    let broker = KafkaBroker::start();
    let deployment = Deployment::on_broker("e2e-metric-spool", &broker);
    let [agent_port, index_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);
    let agent_config = write_agent_config(&deployment, &broker, agent_port);
    let mut agent = start_agent(&agent_config, agent_port);
    let raw_topic = deployment.topic("metrics.raw");

    wait_until(
        "the agent to publish metric batches",
        Duration::from_secs(60),
        || {
            (metric_value(agent_port, "vigil_agent_batches_published", &raw_topic)
                >= BATCHES_BEFORE_OUTAGE)
                .then_some(())
        },
    );
    broker.stop();
    let outage = Instant::now();
    eprintln!("metric_spool: broker stopped for {OUTAGE:?}");
    // The outage itself is what the test is about: there is no condition to await.
    std::thread::sleep(OUTAGE);
    let spooled = gauge(agent_port, "vigil_agent_spool_batches");
    assert!(
        spooled >= 2.0,
        "batches wait in the spool while the broker is down, found {spooled}\n{}",
        agent.log_tail()
    );
    broker.restart();
    eprintln!(
        "metric_spool: broker back after {:.1?} with {spooled} batches spooled",
        outage.elapsed()
    );

    // The spool drains, down to the few batches just polled and in flight.
    let spooled = spooled as u64;
    wait_while_progressing(
        "the spool to drain",
        spooled.saturating_sub(4),
        DRAIN_STALL_LIMIT,
        || spooled.saturating_sub(gauge(agent_port, "vigil_agent_spool_batches") as u64),
    );
    assert!(
        metric_value(agent_port, "vigil_agent_spool_publish_failures", "") > 0.0,
        "the outage was seen by the spool"
    );
    assert_eq!(
        metric_value(agent_port, "vigil_agent_spool_dropped_batches", ""),
        0.0,
        "nothing was dropped"
    );
    let peak_memory = peak_resident_bytes(agent.pid());
    agent.terminate();

    let polls = spooled_polls(agent.log_path());
    let batches: usize = polls.values().map(BTreeSet::len).sum();
    for resource in [HOST, SWITCH] {
        let times = polls.get(resource).map_or(0, BTreeSet::len);
        assert!(
            times as f64 > OUTAGE.as_secs_f64() / 2.0,
            "{resource} polled through the outage: only {times} polls\n{}",
            agent.log_tail()
        );
    }
    // The index stage commits a message once its documents are stored.
    wait_until_group_finished(
        &broker.bootstrap(),
        &format!("{}-index", deployment.prefix),
        &raw_topic,
        DRAIN_STALL_LIMIT,
    );

    let hits = elastic::all_hits(&deployment.metrics_index);
    let series = series_times(&hits);
    for resource in [HOST, SWITCH] {
        let expected = &polls[resource];
        let of_resource: Vec<_> = series.iter().filter(|(key, _)| key.0 == resource).collect();
        assert!(!of_resource.is_empty(), "no series of {resource} indexed");
        for (key, times) in of_resource {
            let distinct: BTreeSet<i64> = times.iter().copied().collect();
            let missing: Vec<&i64> = expected.difference(&distinct).take(5).collect();
            let unexpected: Vec<&i64> = distinct.difference(expected).take(5).collect();
            assert!(
                times.len() == expected.len() && missing.is_empty() && unexpected.is_empty(),
                "series {key:?}: {} documents for {} polls, {} distinct times; missing e.g. {missing:?}, not polled e.g. {unexpected:?}",
                times.len(),
                expected.len(),
                distinct.len(),
            );
        }
    }

    let budget = memory_budget();
    assert!(
        peak_memory <= budget,
        "the agent's peak resident memory {peak_memory} bytes exceeds the unit's MemoryMax of {budget} bytes"
    );
    eprintln!(
        "metric_spool: {batches} batches indexed once each; agent peak memory {} MiB of {} MiB",
        peak_memory >> 20,
        budget >> 20
    );
}

/// An agent config polling this host's metrics and the test snmpd every second,
/// with no logs and no container metrics.
fn write_agent_config(deployment: &Deployment, broker: &KafkaBroker, http_port: u16) -> PathBuf {
    let servers = TestServers::get();
    let text = format!(
        "resource: {{id: {HOST}, host_name: {HOST}}}\n\
         kafka:\n  brokers: '{brokers}'\n  topic_prefix: '{prefix}'\n\
         data_dir: '{data}'\nhttp:\n  listen: '127.0.0.1:{http_port}'\n\
         host_metrics: {{enabled: true, interval: 1s}}\ncontainer_metrics: {{enabled: false}}\n\
         snmp:\n  targets:\n    - {{name: {SWITCH}, address: '{snmp}', version: v2c, community: '{community}', interval: 1s, timeout: 500ms, retries: 1, metric_sets: [system, if]}}\n",
        brokers = broker.bootstrap(),
        prefix = deployment.prefix,
        data = deployment.work.join("agent-data").display(),
        snmp = servers.snmp_address(),
        community = servers.snmp_community(),
    );
    let path = deployment.work.join("agent.yaml");
    std::fs::write(&path, text).expect("agent config written");
    path
}

/// Starts `vigil-agent` logging JSON, with its spool at debug level so that each
/// batch handed to the spool is logged, and waits until it is ready.
fn start_agent(config: &Path, http_port: u16) -> ChildProcess {
    let mut command = Command::new(vigil_binary("vigil-agent"));
    command
        .arg("--config")
        .arg(config)
        .args(["--log-format", "json"])
        .env("VIGIL_LOG", "info,vigil_agent::spool=debug");
    let mut agent = ChildProcess::spawn("vigil-agent-spool", command);
    let url = format!("http://127.0.0.1:{http_port}/ready");
    wait_until("the agent to become ready", Duration::from_secs(60), || {
        if let Some(status) = agent.exit_status() {
            panic!("the agent exited with {status}:\n{}", agent.log_tail());
        }
        reqwest::blocking::get(&url)
            .is_ok_and(|r| r.status().is_success())
            .then_some(())
    });
    agent
}

/// The value of the unlabelled gauge `name` on the process's `/metrics`.
fn gauge(http_port: u16, name: &str) -> f64 {
    metric_value(http_port, &format!("{name} "), "")
}

/// Every batch the agent handed to its spool, from its log: sample times by
/// resource. A time logged twice would be a source polling twice in one instant.
fn spooled_polls(log: &Path) -> BTreeMap<String, BTreeSet<i64>> {
    let text = std::fs::read_to_string(log).expect("agent log readable");
    let mut polls: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if event["message"] != "metric batch spooled" {
            continue;
        }
        let resource = event["resource"].as_str().expect("resource logged");
        let time = event["time"].as_i64().expect("time logged");
        assert!(
            polls.entry(resource.to_owned()).or_default().insert(time),
            "{resource} handed two batches of time {time} to the spool"
        );
    }
    polls
}

/// A series: resource id, metric set and labels.
type SeriesKey = (String, String, String);

/// The sample times (Unix nanoseconds) of each series, one entry per document.
fn series_times(hits: &[Value]) -> BTreeMap<SeriesKey, Vec<i64>> {
    let mut series: BTreeMap<SeriesKey, Vec<i64>> = BTreeMap::new();
    for hit in hits {
        let source = &hit["_source"];
        let resource = source["vigil"]["resource"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("metric document without a resource id: {source}"));
        let metric_set = source["metricset"]["name"].as_str().unwrap_or_default();
        let timestamp = source["@timestamp"].as_str().unwrap_or_default();
        let time = chrono::DateTime::parse_from_rfc3339(timestamp)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or_else(|| panic!("`@timestamp` is not RFC 3339: {source}"));
        let key = (
            resource.to_owned(),
            metric_set.to_owned(),
            source["labels"].to_string(),
        );
        series.entry(key).or_default().push(time);
    }
    series
}

/// The peak resident memory (`VmHWM`) of process `pid`, in bytes.
fn peak_resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("/proc/{pid}/status unreadable: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

/// `MemoryMax` of the agent's systemd unit in packaging/, in bytes.
fn memory_budget() -> u64 {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/vigil-agent.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap_or_else(|error| panic!("{} unreadable: {error}", unit.display()));
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("MemoryMax="))
        .unwrap_or_else(|| panic!("no MemoryMax in {}", unit.display()))
        .trim();
    let (number, unit_shift) = match value.as_bytes().last() {
        Some(b'K') => (&value[..value.len() - 1], 10),
        Some(b'M') => (&value[..value.len() - 1], 20),
        Some(b'G') => (&value[..value.len() - 1], 30),
        _ => (value, 0),
    };
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("MemoryMax={value} is not a size"));
    number << unit_shift
}
