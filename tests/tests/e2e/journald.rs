//! The journald source against a real journal, written by systemd's own
//! `systemd-journal-remote` and read by the agent through journalctl: entries of
//! several units and priorities reach the index with their fields, filtered by
//! unit and priority; a restarted agent reads on after its cursor without gap or
//! duplicate, and the cursor does not move while the broker is down.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::journal::{JournalEntry, TestJournal, journald_agent_config};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::servers::KafkaBroker;
use vigil_tests::{elastic, wait_until};

const INDEX_DEADLINE: Duration = Duration::from_secs(90);

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// A field the agent set on the document, as text: at its ECS place, or under
/// `fields` where the index keeps fields its template does not map.
fn field(hit: &Value, name: &str) -> Option<String> {
    let source = &hit["_source"];
    let text = |value: &Value| match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    };
    text(name.split('.').fold(source, |value, part| &value[part]))
        .or_else(|| text(&source["fields"][name]))
}

fn message(hit: &Value) -> String {
    hit["_source"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the index holds `expected` documents, then returns every hit.
fn indexed(deployment: &Deployment, expected: usize) -> Vec<Value> {
    wait_until(
        &format!("{expected} journal entries indexed"),
        INDEX_DEADLINE,
        || (elastic::count(&deployment.logs_index) >= expected as u64).then_some(()),
    );
    elastic::all_hits(&deployment.logs_index)
}

/// Entries of three units at every priority; `round` tells them apart.
fn entries(round: &str) -> Vec<JournalEntry> {
    let mut entries = Vec::new();
    for unit in ["nginx.service", "cron.service", "ssh.service"] {
        for priority in [2, 4, 6, 7] {
            entries.push(JournalEntry::new(
                unit,
                priority,
                format!("{round} {unit} priority {priority}").as_bytes(),
            ));
        }
    }
    entries
}

/// The messages of `entries` that the agent of these tests ships: units nginx and
/// cron (ssh is excluded), priority info or more severe.
fn shipped(entries: &[JournalEntry]) -> BTreeSet<String> {
    entries
        .iter()
        .filter_map(|entry| {
            let value = |name: &str| {
                entry
                    .fields
                    .iter()
                    .find(|(field, _)| field == name)
                    .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
            };
            let unit = value("_SYSTEMD_UNIT")?;
            let priority: u8 = value("PRIORITY")?.parse().ok()?;
            (unit != "ssh.service" && priority <= 6).then(|| value("MESSAGE"))?
        })
        .collect()
}

/// How many of `entries` journalctl prints to the agent of these tests: those of
/// priority info or more severe (it filters units and priority; the agent
/// excludes units).
fn printed(entries: &[JournalEntry]) -> usize {
    entries
        .iter()
        .filter(|entry| {
            entry
                .fields
                .iter()
                .any(|(name, value)| name == "PRIORITY" && value.as_slice() <= b"6".as_slice())
        })
        .count()
}

fn settings(journal: &TestJournal) -> String {
    format!(
        "directory: '{}', units: [nginx.service, cron.service, ssh.service], exclude_units: ['ssh.*'], \
         priority: info, dataset: e2e.journal, read_from: beginning",
        journal.directory.display()
    )
}

/// Kills the journalctl the agent of process `agent_pid` runs.
fn kill_journalctl(agent_pid: u32) {
    let children: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc readable")
        .filter_map(|entry| {
            let pid = entry.ok()?.file_name().into_string().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (name, rest) = stat.split_once(") ")?;
            let parent = rest.split(' ').nth(1)?;
            (name.ends_with("(journalctl") && parent == agent_pid.to_string()).then_some(pid)
        })
        .collect();
    assert_eq!(children.len(), 1, "one journalctl runs under the agent");
    let status = std::process::Command::new("kill")
        .arg(&children[0])
        .status()
        .expect("kill runs");
    assert!(status.success(), "journalctl {} killed", children[0]);
}

fn saved_cursor(data_dir: &Path) -> String {
    let text = std::fs::read_to_string(data_dir.join("journald-cursor.json"))
        .expect("journal cursor file written");
    let file: Value = serde_json::from_str(&text).expect("cursor file is JSON");
    file["cursor"].as_str().expect("a cursor").to_owned()
}

#[test]
fn journal_entries_are_indexed_with_their_fields_filtered_and_resumed_after_a_restart() {
    let deployment = Deployment::new("e2e-journald");
    let [agent_port, index_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);
    let mut journal = TestJournal::create(&deployment.work.join("journal"));

    let first_time = now_micros();
    let mut written = entries("first");
    written.push(
        JournalEntry::new("nginx.service", 3, b"bytes \xff\xfe not text")
            .with("CODE_FILE", b"src/main.c"),
    );
    journal.append(&written, first_time);
    let config = journald_agent_config(&deployment, "agent", &settings(&journal), agent_port);
    let mut agent = deployment.start_agent(&config, agent_port);

    let mut expected = shipped(&written);
    let binary_message = "bytes \u{fffd}\u{fffd} not text";
    let hits = indexed(&deployment, expected.len());
    let found: BTreeSet<String> = hits.iter().map(message).collect();
    assert_eq!(found, expected, "units and priorities filtered");

    let error = hits
        .iter()
        .find(|hit| message(hit) == "first nginx.service priority 2")
        .expect("the crit entry of nginx");
    for (name, value) in [
        ("log.level", "crit"),
        ("log.syslog.severity.code", "2"),
        ("process.pid", "4242"),
        ("host.hostname", "journal-host"),
        ("systemd.unit", "nginx.service"),
        ("log.syslog.facility.code", "3"),
        ("log.syslog.appname", "nginx"),
    ] {
        assert_eq!(
            field(error, name).as_deref(),
            Some(value),
            "{name} of {error}"
        );
    }
    assert_eq!(error["_source"]["event"]["dataset"], "e2e.journal");
    // The crit entry of nginx is the first written: stamped `first_time`.
    let entry_time = chrono::DateTime::from_timestamp_micros(first_time as i64)
        .expect("a time")
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(
        error["_source"]["@timestamp"], entry_time,
        "the event time is the entry's"
    );
    let binary = hits
        .iter()
        .find(|hit| message(hit) == binary_message)
        .expect("the entry with a binary message");
    assert_eq!(
        field(binary, "journald.CODE_FILE").as_deref(),
        Some("src/main.c")
    );
    assert_eq!(binary["_source"]["tags"][0], "invalid_utf8");
    assert_eq!(field(binary, "log.level").as_deref(), Some("error"));

    // Appended while the agent runs.
    let second = entries("second");
    journal.append(&second, now_micros());
    expected.extend(shipped(&second));
    indexed(&deployment, expected.len());

    // journalctl killed: the agent starts it again after the last entry it read.
    kill_journalctl(agent.pid());
    wait_until("journalctl started again", INDEX_DEADLINE, || {
        (metric_value(agent_port, "vigil_agent_journald_restarts", "") >= 1.0).then_some(())
    });
    let after_kill = entries("after-kill");
    journal.append(&after_kill, now_micros());
    expected.extend(shipped(&after_kill));
    indexed(&deployment, expected.len());

    // Appended while it is stopped: read after the restart from its cursor.
    agent.terminate();
    let third = entries("third");
    journal.append(&third, now_micros());
    expected.extend(shipped(&third));
    let mut agent = deployment.start_agent(&config, agent_port);
    let hits = indexed(&deployment, expected.len());
    wait_until("the restarted agent to ship", INDEX_DEADLINE, || {
        (metric_value(agent_port, "vigil_agent_journald_entries_shipped", "") > 0.0).then_some(())
    });
    let messages: Vec<String> = hits.iter().map(message).collect();
    let distinct: BTreeSet<String> = messages.iter().cloned().collect();
    assert_eq!(distinct, expected, "no entry lost across the restart");
    assert_eq!(messages.len(), expected.len(), "no entry indexed twice");
    assert_eq!(
        metric_value(agent_port, "vigil_agent_journald_entries_shipped", "") as usize,
        shipped(&third).len(),
        "the restarted agent shipped only what was new"
    );
    agent.terminate();
}

#[test]
fn the_journal_cursor_stays_while_the_broker_is_down() {
    let broker = KafkaBroker::start();
    let deployment = Deployment::on_broker("e2e-journald-outage", &broker);
    let [agent_port, index_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);
    let mut journal = TestJournal::create(&deployment.work.join("journal"));
    let before = entries("before");
    journal.append(&before, now_micros());
    let config = journald_agent_config(&deployment, "agent", &settings(&journal), agent_port);
    let data_dir = deployment.work.join("agent-data");
    let mut agent = deployment.start_agent(&config, agent_port);
    let mut expected = shipped(&before);
    indexed(&deployment, expected.len());
    // The last entry journalctl prints is the last of priority info or above,
    // numbered by its place in the journal file.
    let last_printed = before
        .iter()
        .rposition(|entry| printed(std::slice::from_ref(entry)) == 1)
        .expect("an entry printed")
        + 1;
    let acknowledged = wait_until("the cursor saved at the last entry", INDEX_DEADLINE, || {
        std::fs::read_to_string(data_dir.join("journald-cursor.json"))
            .ok()
            .filter(|text| text.contains(&format!(";i={last_printed:x};")))
            .map(|_| saved_cursor(&data_dir))
    });

    broker.stop();
    let during = entries("during");
    journal.append(&during, now_micros());
    wait_until("the agent to read the new entries", INDEX_DEADLINE, || {
        (metric_value(agent_port, "vigil_agent_journald_entries_read", "") as usize
            >= printed(&before) + printed(&during))
        .then_some(())
    });
    // Stopping writes the last cursor the broker acknowledged.
    agent.terminate();
    assert_eq!(
        saved_cursor(&data_dir),
        acknowledged,
        "the cursor did not pass entries the broker never acknowledged"
    );

    broker.restart();
    expected.extend(shipped(&during));
    let agent = deployment.start_agent(&config, agent_port);
    let hits = indexed(&deployment, expected.len());
    let messages: Vec<String> = hits.iter().map(message).collect();
    let distinct: BTreeSet<String> = messages.iter().cloned().collect();
    assert_eq!(
        distinct, expected,
        "the entries of the outage shipped after it"
    );
    assert_eq!(messages.len(), expected.len(), "none twice");
    drop(agent);
}
