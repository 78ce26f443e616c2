//! Crash safety of log shipping: an agent SIGKILLed mid-stream and restarted
//! loses no line and, thanks to content-derived document ids, duplicates none.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{elastic, wait_until};

const LINES: usize = 10_000;
const KILLS: usize = 2;

#[test]
fn agent_killed_mid_stream_loses_no_line_and_duplicates_none() {
    let deployment = Deployment::new("e2e-restart");
    let [agent_port, index_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    let index_config = deployment.aggregator_config("index", index_port);
    let _index = deployment.start_stage("index", &index_config, index_port);

    let log_path = deployment.work.join("app.log");
    std::fs::File::create(&log_path).unwrap();
    let agent_config = deployment.agent_config("agent", &log_path, agent_port, false);
    let mut agent = deployment.start_agent(&agent_config, agent_port);

    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    let mut expected = BTreeSet::new();
    let chunk = LINES / (KILLS + 1);
    for round in 0..=KILLS {
        for number in round * chunk..if round == KILLS {
            LINES
        } else {
            (round + 1) * chunk
        } {
            let text = format!(
                "restart round {round} line {number:05} {}",
                "x".repeat(number % 50)
            );
            writeln!(log, "{text}").unwrap();
            expected.insert(text);
        }
        log.flush().unwrap();
        if round < KILLS {
            // Kill once this agent process has shipped something, typically while
            // more batches are in flight and before its checkpoint caught up.
            wait_until("the agent to ship lines", Duration::from_secs(60), || {
                (metric_value(agent_port, "vigil_agent_log_lines_sent", "") > 0.0).then_some(())
            });
            agent.kill_hard();
            agent = deployment.start_agent(&agent_config, agent_port);
        }
    }

    wait_until("every line indexed", Duration::from_secs(120), || {
        (elastic::count(&deployment.logs_index) >= LINES as u64).then_some(())
    });
    let hits = elastic::all_hits(&deployment.logs_index);
    let messages: Vec<String> = hits
        .iter()
        .filter_map(|h| h["_source"]["message"].as_str().map(str::to_owned))
        .collect();
    let distinct: BTreeSet<String> = messages.iter().cloned().collect();
    assert_eq!(messages.len(), LINES, "no duplicate documents");
    assert_eq!(distinct, expected, "no line lost, every line intact");
}
