//! Assembly of the agent: starts the log tailer, the host and container metrics
//! collectors and the SNMP scheduler on one bus (the metric sources through the
//! metric spool), reports readiness, and shuts them down in two phases (stop
//! reading, then drain and write the last checkpoint and the spool).

use crate::checkpoint::{self, CheckpointError, CheckpointStore};
use crate::config::{AgentConfig, InvalidConfig, ResourceConfig};
use crate::container_metrics::ContainerCollector;
use crate::host_metrics::{self, HostCollector, MetricsOutput};
use crate::journald::{self, JournalContext};
use crate::self_metrics::AgentMetrics;
use crate::snmp;
use crate::spool::{self, SpoolError};
use crate::tailer::{self, TailerContext};
use std::time::Duration;
use thiserror::Error;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use vigil_proto::labels::label;
use vigil_proto::v1::{Resource, ResourceKind};
use vigil_runtime::{Bus, BusError, Health, SelfMetrics};

/// How often changed checkpoints are written while running.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Why the agent could not run.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("invalid agent configuration: {0}")]
    Config(InvalidConfig),
    #[error("{0}")]
    Checkpoint(CheckpointError),
    #[error("the bus cannot be used: {0}")]
    Bus(BusError),
    #[error("the metric spool cannot be used: {0}")]
    Spool(#[from] SpoolError),
}

impl From<InvalidConfig> for AgentError {
    fn from(error: InvalidConfig) -> Self {
        Self::Config(error)
    }
}

impl From<CheckpointError> for AgentError {
    fn from(error: CheckpointError) -> Self {
        Self::Checkpoint(error)
    }
}

impl From<BusError> for AgentError {
    fn from(error: BusError) -> Self {
        Self::Bus(error)
    }
}

/// The agent: its sources, on one bus.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    bus: Bus,
    metrics: SelfMetrics,
    health: Health,
}

impl Agent {
    /// An agent that publishes to `bus`, registers its self-metrics in `metrics`
    /// and reports readiness to `health`. `config.kafka` is not used here: the
    /// caller chose the bus.
    pub fn new(config: AgentConfig, bus: Bus, metrics: SelfMetrics, health: Health) -> Self {
        Self {
            config,
            bus,
            metrics,
            health,
        }
    }

    /// Runs every source until `shutdown` is cancelled, then stops reading, waits
    /// at most `shutdown_timeout` for in-flight batches to be acknowledged and
    /// writes the final checkpoint.
    ///
    /// Ready (`Health::set_ready(true)`) once every configured log file has its
    /// initial position and the other sources started.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let Self {
            config,
            bus,
            metrics: registry,
            health,
        } = self;
        config.validate()?;
        let metrics = AgentMetrics::register(&registry);
        let publisher = bus.publisher()?;
        let topics = bus.topics();
        let resource = host_resource(&config.resource);

        let (checkpoints, problem) = CheckpointStore::open(&config.data_dir)?;
        if let Some(problem) = problem {
            tracing::warn!(%problem, "starting without checkpoints");
        }
        let context = TailerContext {
            resource: resource.clone(),
            limits: config.log_batch,
            topic: topics.logs_raw(),
            publish: tailer::publish_to(publisher.clone(), topics.logs_raw()),
            checkpoints: checkpoints.clone(),
            metrics: metrics.clone(),
            shutdown_timeout: config.shutdown_timeout,
        };
        let mut log_tasks = tailer::start(&config.logs, &context, &shutdown);
        if let Some(journal) = &config.journald {
            let context = JournalContext {
                resource: resource.clone(),
                limits: config.log_batch,
                topic: topics.logs_raw(),
                publish: tailer::publish_to(publisher.clone(), topics.logs_raw()),
                metrics: metrics.clone(),
                data_dir: config.data_dir.clone(),
                shutdown_timeout: config.shutdown_timeout,
            };
            log_tasks.spawn(journald::run(journal.clone(), context, shutdown.clone()));
        }

        let (metric_spool, spool_task) = spool::open(
            &config.data_dir,
            &config.spool,
            topics.metrics_raw(),
            bus.clone(),
            metrics.clone(),
        )?;
        let spooling = tokio::spawn(spool_task.run(config.shutdown_timeout));
        let mut metric_tasks = JoinSet::new();
        let metrics_output = MetricsOutput {
            resource,
            spool: metric_spool.clone(),
            metrics: metrics.clone(),
        };
        if config.host_metrics.enabled {
            metric_tasks.spawn(host_metrics::run(
                "host",
                HostCollector::new(&config.host_metrics)?,
                config.host_metrics.interval,
                metrics_output.clone(),
                shutdown.clone(),
            ));
        }
        if config.container_metrics.enabled {
            metric_tasks.spawn(host_metrics::run(
                "container",
                ContainerCollector::new(&config.container_metrics)?,
                config.container_metrics.interval,
                metrics_output.clone(),
                shutdown.clone(),
            ));
        }
        // Only the sources may hold the spool's handle: it ends once they are gone.
        drop(metrics_output);
        metric_tasks.spawn(snmp::run(
            config.snmp.clone(),
            snmp::PollOutput {
                spool: metric_spool,
                agent_metrics: metrics.clone(),
                metrics: snmp::SnmpMetrics::register(&registry),
            },
            shutdown.clone(),
        ));
        let stop_writer = CancellationToken::new();
        let writer = tokio::spawn(checkpoint::write_periodically(
            checkpoints.clone(),
            CHECKPOINT_INTERVAL,
            metrics.clone(),
            stop_writer.clone(),
        ));

        health.set_ready(true);
        tracing::info!(
            resource = %config.resource.id,
            log_files = config.logs.len(),
            journald = config.journald.is_some(),
            snmp_targets = config.snmp.targets.len(),
            snmp_etcd = config.snmp.etcd.is_some(),
            host_metrics = config.host_metrics.enabled,
            container_metrics = config.container_metrics.enabled,
            "agent running"
        );
        shutdown.cancelled().await;
        health.set_ready(false);

        while let Some(joined) = log_tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a log file task failed");
            }
        }
        while let Some(joined) = metric_tasks.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "a metrics task failed");
            }
        }
        // The sources are gone and with them every handle of the spool, which now
        // waits for its batches in flight and ends.
        if let Err(error) = spooling.await {
            tracing::error!(%error, "the metric spool task failed");
        }
        stop_writer.cancel();
        if let Err(error) = writer.await {
            tracing::error!(%error, "the checkpoint writer failed");
        }
        checkpoint::write_now(&checkpoints, &metrics).await?;
        tracing::info!("agent stopped; checkpoints written");
        Ok(())
    }
}

/// The wire identity of the host.
fn host_resource(config: &ResourceConfig) -> Resource {
    Resource {
        id: config.id.clone(),
        kind: ResourceKind::Host as i32,
        host_name: config.host_name.clone(),
        attributes: config
            .attributes
            .iter()
            .map(|(name, value)| label(name, value))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ContainerMetricsConfig, HostMetricsConfig, LogFileConfig};
    use std::io::Write;
    use vigil_proto::Payload;
    use vigil_proto::labels::find;
    use vigil_proto::v1::{LogBatch, MetricBatch};

    fn fixture_proc(root: &std::path::Path) {
        std::fs::create_dir_all(root).unwrap();
        std::fs::write(root.join("uptime"), "100.5 80.0\n").unwrap();
        std::fs::write(root.join("loadavg"), "0.5 0.4 0.3 1/100 42\n").unwrap();
        std::fs::write(
            root.join("meminfo"),
            "MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable: 50 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        )
        .unwrap();
        std::fs::write(root.join("stat"), "cpu  1 2 3 4 5 6 7 8 0 0\n").unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_agent_ships_logs_and_host_metrics_and_checkpoints_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "history\n").unwrap();
        fixture_proc(&dir.path().join("proc"));
        let config = AgentConfig {
            resource: ResourceConfig {
                id: "web-1".into(),
                host_name: "web-1.example".into(),
                attributes: [("site".to_owned(), "fra1".to_owned())].into(),
            },
            data_dir: dir.path().join("data"),
            // No inotify thread racing the paused clock; the file exists already.
            logs: vec![LogFileConfig {
                file_events: false,
                ..LogFileConfig::new(&log, "app")
            }],
            host_metrics: HostMetricsConfig {
                enabled: true,
                interval: Duration::from_secs(10),
                proc_root: dir.path().join("proc"),
                ..HostMetricsConfig::default()
            },
            container_metrics: ContainerMetricsConfig {
                enabled: false,
                ..ContainerMetricsConfig::default()
            },
            ..AgentConfig::default()
        };
        let bus = Bus::in_memory();
        let topics = bus.topics();
        let mut logs = bus.subscribe("logs", &[topics.logs_raw()]).unwrap();
        let mut metrics = bus.subscribe("metrics", &[topics.metrics_raw()]).unwrap();
        let registry = SelfMetrics::default();
        let health = Health::default();
        let shutdown = CancellationToken::new();
        let agent = Agent::new(config, bus, registry.clone(), health.clone());
        let running = tokio::spawn(agent.run(shutdown.clone()));
        while !health.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"new line\n")
            .unwrap();
        let batch = LogBatch::from_payload(&logs.recv().await.unwrap().payload).unwrap();
        assert_eq!(batch.lines.len(), 1);
        assert_eq!(
            (batch.lines[0].offset, &batch.lines[0].message[..]),
            (8, &b"new line"[..])
        );
        let resource = batch.resource.unwrap();
        assert_eq!(resource.kind, ResourceKind::Host as i32);
        assert_eq!(resource.host_name, "web-1.example");

        let message = metrics.recv().await.unwrap();
        assert_eq!(message.key.as_deref(), Some(&b"web-1"[..]));
        let batch = MetricBatch::from_payload(&message.payload).unwrap();
        assert_eq!(
            find(&batch.resource.unwrap().attributes, "site"),
            Some("fra1")
        );
        assert!(
            batch
                .samples
                .iter()
                .any(|s| s.name == "host.memory.available_bytes")
        );
        assert!(batch.producer.starts_with("vigil-agent/"));

        shutdown.cancel();
        running.await.unwrap().unwrap();
        assert!(!health.is_ready());
        let checkpoints =
            std::fs::read_to_string(dir.path().join("data").join("checkpoints.json")).unwrap();
        assert!(checkpoints.contains("\"offset\": 17"), "{checkpoints}");
        let exposed = registry.encode();
        for expected in [
            "vigil_agent_log_lines_read_total 1",
            "vigil_agent_log_lines_sent_total 1",
            "vigil_agent_log_files_watched 0",
            "vigil_agent_batches_published_total{topic=\"vigil.logs.raw\"} 1",
        ] {
            assert!(
                exposed.contains(expected),
                "{expected} missing in\n{exposed}"
            );
        }
    }

    #[tokio::test]
    async fn an_invalid_configuration_is_refused() {
        let config = AgentConfig {
            shutdown_timeout: Duration::ZERO,
            ..AgentConfig::default()
        };
        let agent = Agent::new(
            config,
            Bus::in_memory(),
            SelfMetrics::default(),
            Health::default(),
        );
        let error = agent.run(CancellationToken::new()).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid agent configuration: `shutdown_timeout` must be longer than 0s"
        );
    }
}
