//! The all-in-one mode as a newcomer runs it: no servers, no configuration; host
//! metrics and a shipped example alert show up within a minute, documents land in
//! NDJSON files, and editing a rule file changes behaviour without a restart.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::process::new_work_dir;
use vigil_tests::{ChildProcess, vigil_binary, wait_until};

fn output_of(process: &ChildProcess) -> String {
    std::fs::read_to_string(process.log_path()).unwrap_or_default()
}

fn wait_for_output(process: &mut ChildProcess, what: &str, needle: &str, deadline: Duration) {
    wait_until(what, deadline, || {
        if let Some(status) = process.exit_status() {
            panic!("all-in-one exited with {status}:\n{}", process.log_tail());
        }
        output_of(process).contains(needle).then_some(())
    });
}

fn ndjson_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every NDJSON line is JSON"))
        .collect()
}

#[test]
fn all_in_one_shows_metrics_and_alerts_and_applies_rule_edits_live() {
    let work = new_work_dir("all-in-one");
    let rules = work.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, rules.join(path.file_name().unwrap())).unwrap();
    }
    let data = work.join("data");
    let definitions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../derive");
    let port = free_tcp_ports(1)[0];
    let mut command = Command::new(vigil_binary("vigil-all-in-one"));
    command
        .arg("--data-dir")
        .arg(&data)
        .arg("--rules")
        .arg(&rules)
        .arg("--definitions")
        .arg(&definitions)
        .args([
            "--http",
            &format!("127.0.0.1:{port}"),
            "--host-interval",
            "1",
        ]);
    let mut process = ChildProcess::spawn("all-in-one", command);

    let minute = Duration::from_secs(60);
    wait_for_output(&mut process, "host metrics printed", "metrics  ", minute);
    wait_for_output(
        &mut process,
        "the Watchdog example alert firing",
        "ALERT FIRING   Watchdog",
        minute,
    );
    wait_for_output(
        &mut process,
        "the ErrorBurst example alert firing",
        "ALERT FIRING   ErrorBurst",
        minute,
    );

    let documents = data.join("documents");
    let logs = ndjson_lines(&documents.join("vigil-logs.ndjson"));
    assert!(
        logs.iter().any(|doc| doc["message"]
            .as_str()
            .is_some_and(|m| m.contains("payment gateway timeout"))
            && doc["log"]["level"] == "error"),
        "the example log's lines are indexed, parsed by the json preset"
    );
    let metrics = ndjson_lines(&documents.join("vigil-metrics.ndjson"));
    assert!(
        metrics
            .iter()
            .any(|doc| doc["metrics"]["host.load.1m"].is_number())
    );
    // The derive stage turned CPU ticks and memory gauges into percentages.
    let percent = |name: &str| {
        metrics
            .iter()
            .filter_map(|doc| doc["metrics"][name].as_f64())
            .collect::<Vec<f64>>()
    };
    let cpu = percent("host.cpu.utilisation_percent");
    assert!(!cpu.is_empty(), "CPU utilisation is derived from ticks");
    assert!(cpu.iter().all(|p| (0.0..=100.0).contains(p)), "{cpu:?}");
    let memory = percent("host.memory.used_percent");
    assert!(
        !memory.is_empty() && memory.iter().all(|p| *p > 0.0 && *p < 100.0),
        "{memory:?}"
    );
    let alerts = ndjson_lines(&documents.join("vigil-alerts.ndjson"));
    assert!(alerts.iter().any(|doc| doc["rule"]["name"] == "Watchdog"));

    // Edit the shipped rule so its condition can never hold: it resolves, live.
    let host_rules = rules.join("host.yaml");
    let text = std::fs::read_to_string(&host_rules).unwrap();
    assert!(text.contains("condition: value >= 0"));
    std::fs::write(
        &host_rules,
        text.replace("condition: value >= 0", "condition: value < 0"),
    )
    .unwrap();
    wait_for_output(
        &mut process,
        "Watchdog resolved after the edit",
        "ALERT RESOLVED Watchdog",
        minute,
    );

    // A broken edit is reported with its location and the last good rules stay.
    std::fs::write(rules.join("broken.yaml"), "groups: [\n").unwrap();
    wait_for_output(
        &mut process,
        "the broken rule file reported",
        "broken.yaml:",
        minute,
    );
    assert!(process.is_running());

    let status = process.terminate();
    assert!(
        status.success(),
        "SIGTERM ends the all-in-one mode cleanly: {status}"
    );
}
