//! The SNMP scheduler inside a running agent, against real snmpd: a healthy target
//! keeps its schedule beside a target that never answers and one that answers
//! garbage, and each failure is counted and explained by target.

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigil_agent::config::{Community, MetricSet, SnmpConfig, SnmpTarget};
use vigil_agent::{Agent, AgentConfig, AgentError};
use vigil_proto::Payload;
use vigil_proto::v1::{MetricBatch, sample};
use vigil_runtime::bus::Subscription;
use vigil_runtime::{Bus, Health, SelfMetrics};
use vigil_tests::TestServers;
use vigil_tests::process::new_work_dir;

/// An agent running in this test's runtime on the in-process bus, polling real
/// devices, with its log lines captured.
pub(crate) struct PollingAgent {
    batches: Subscription,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
    pub(crate) registry: SelfMetrics,
    log: Arc<Mutex<Vec<u8>>>,
    _log_guard: tracing::subscriber::DefaultGuard,
}

/// Collects formatted log lines; the agent's tasks run on the test's thread, so
/// a thread-local default subscriber sees them all.
#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PollingAgent {
    /// Starts an agent with `snmp` as its SNMP section and nothing else to do.
    /// Call from a current-thread runtime (`#[tokio::test]`).
    pub(crate) fn start(snmp: SnmpConfig) -> PollingAgent {
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = LogBuffer(log.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        let log_guard = tracing::subscriber::set_default(subscriber);
        let mut config = AgentConfig {
            data_dir: new_work_dir("snmp-agent"),
            snmp,
            ..AgentConfig::default()
        };
        config.host_metrics.enabled = false;
        let bus = Bus::in_memory();
        let batches = bus
            .subscribe("snmp-test", &[bus.topics().metrics_raw()])
            .expect("subscribe to the metrics topic");
        let registry = SelfMetrics::default();
        let shutdown = CancellationToken::new();
        let agent = Agent::new(config, bus, registry.clone(), Health::default());
        let task = tokio::spawn(agent.run(shutdown.clone()));
        PollingAgent {
            batches,
            shutdown,
            task,
            registry,
            log,
            _log_guard: log_guard,
        }
    }

    /// The next batch of any device, or a panic naming `what` after `deadline`.
    pub(crate) async fn next_batch(&mut self, what: &str, deadline: Duration) -> MetricBatch {
        let message = tokio::time::timeout(deadline, self.batches.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no SNMP batch within {deadline:?} waiting for {what}\n{}",
                    self.log()
                )
            })
            .expect("the bus is open");
        MetricBatch::from_payload(&message.payload).expect("a metric batch")
    }

    /// The next batch of `device` for which `accept` holds, within `deadline`.
    pub(crate) async fn batch_of(
        &mut self,
        device: &str,
        deadline: Duration,
        accept: impl Fn(&MetricBatch) -> bool,
    ) -> MetricBatch {
        let until = Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let batch = self
                .next_batch(&format!("a batch of `{device}`"), left)
                .await;
            if device_of(&batch) == device && accept(&batch) {
                return batch;
            }
        }
    }

    /// Everything the agent logged so far.
    pub(crate) fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("agent task").expect("agent run");
    }
}

pub(crate) fn device_of(batch: &MetricBatch) -> &str {
    batch
        .resource
        .as_ref()
        .map_or("", |resource| resource.id.as_str())
}

pub(crate) fn gauge(batch: &MetricBatch, name: &str) -> Option<f64> {
    batch
        .samples
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| match s.value {
            Some(sample::Value::Gauge(value)) => Some(value),
            _ => None,
        })
}

pub(crate) fn has_sample(batch: &MetricBatch, name: &str) -> bool {
    batch.samples.iter().any(|s| s.name == name)
}

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
