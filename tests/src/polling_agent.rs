//! An agent polling SNMP devices inside the test's own runtime, on the in-process
//! bus, with its log lines captured: for tests of the SNMP scheduler that read the
//! batches it publishes and what it logged.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vigil_agent::config::SnmpConfig;
use vigil_agent::{Agent, AgentConfig, AgentError};
use vigil_proto::Payload;
use vigil_proto::v1::{MetricBatch, sample};
use vigil_runtime::bus::Subscription;
use vigil_runtime::{Bus, Health, SelfMetrics};

use crate::process::new_work_dir;

/// An agent running in this test's runtime on the in-process bus, polling real
/// devices, with its log lines captured.
#[derive(Debug)]
pub struct PollingAgent {
    batches: Subscription,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
    /// The agent's self-metrics.
    pub registry: SelfMetrics,
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
    pub fn start(snmp: SnmpConfig) -> PollingAgent {
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
    pub async fn next_batch(&mut self, what: &str, deadline: Duration) -> MetricBatch {
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
    pub async fn batch_of(
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
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Stops the agent and waits until its run ended without an error.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("agent task").expect("agent run");
    }
}

/// The device `batch` is of: the id of its resource, empty without one.
pub fn device_of(batch: &MetricBatch) -> &str {
    batch
        .resource
        .as_ref()
        .map_or("", |resource| resource.id.as_str())
}

/// The value of the gauge `name` in `batch`, if it has one.
pub fn gauge(batch: &MetricBatch, name: &str) -> Option<f64> {
    batch
        .samples
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| match s.value {
            Some(sample::Value::Gauge(value)) => Some(value),
            _ => None,
        })
}

/// Whether `batch` has a sample of `name`.
pub fn has_sample(batch: &MetricBatch, name: &str) -> bool {
    batch.samples.iter().any(|s| s.name == name)
}
