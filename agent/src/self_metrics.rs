//! The agent's own counters, exposed on `/metrics` as `vigil_agent_*`: how many lines
//! each step of the data path read, sent, cut or failed to send, and how the SNMP
//! and the host and container metric sources fare.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use vigil_runtime::SelfMetrics;

/// Labels of `agent_snmp_polls`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct PollLabels {
    pub(crate) target: String,
    pub(crate) outcome: PollOutcome,
}

/// How one SNMP poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PollOutcome {
    Success,
    Failure,
}

impl EncodeLabelValue for PollOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Success => "success",
            Self::Failure => "failure",
        })
    }
}

/// Labels of `agent_log_file_lag_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct PathLabels {
    pub(crate) path: String,
}

/// Labels of `agent_metric_collection_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct CollectionLabels {
    /// `host` or `container`.
    pub(crate) collector: String,
    /// The part that failed: a file under /proc, `statvfs`, a cgroup controller.
    pub(crate) source: String,
}

/// Labels of `agent_batches_published`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct TopicLabels {
    pub(crate) topic: String,
}

/// Every self-metric of the agent, registered once and shared by its sources.
#[derive(Debug, Clone)]
pub(crate) struct AgentMetrics {
    pub(crate) log_lines_read: Counter,
    pub(crate) log_lines_sent: Counter,
    pub(crate) log_bytes_read: Counter,
    pub(crate) log_bytes_sent: Counter,
    pub(crate) log_lines_truncated: Counter,
    pub(crate) log_files_watched: Gauge,
    pub(crate) log_files_deleted: Counter,
    /// Per followed path: bytes of its file not read yet.
    pub(crate) log_file_lag_bytes: Family<PathLabels, Gauge>,
    pub(crate) log_publish_failures: Counter,
    pub(crate) checkpoint_writes: Counter,
    /// Unix time at which the checkpoint file was last known to match the
    /// acknowledged positions; its age is `time() - this` in PromQL.
    pub(crate) checkpoint_persisted: Gauge<f64, AtomicU64>,
    pub(crate) snmp_polls: Family<PollLabels, Counter>,
    pub(crate) metric_collection_errors: Family<CollectionLabels, Counter>,
    pub(crate) batches_published: Family<TopicLabels, Counter>,
}

impl AgentMetrics {
    pub(crate) fn register(registry: &SelfMetrics) -> Self {
        Self {
            log_lines_read: registry.register(
                "agent_log_lines_read",
                "Log lines read from files",
                Counter::default(),
            ),
            log_lines_sent: registry.register(
                "agent_log_lines_sent",
                "Log lines acknowledged by the bus",
                Counter::default(),
            ),
            log_bytes_read: registry.register(
                "agent_log_bytes_read",
                "Bytes read from log files",
                Counter::default(),
            ),
            log_bytes_sent: registry.register(
                "agent_log_bytes_sent",
                "Bytes of log files whose lines the bus acknowledged",
                Counter::default(),
            ),
            log_lines_truncated: registry.register(
                "agent_log_lines_truncated",
                "Log lines longer than log_batch.max_line_bytes, cut",
                Counter::default(),
            ),
            log_files_watched: registry.register(
                "agent_log_files_watched",
                "Configured log files currently open",
                Gauge::default(),
            ),
            log_files_deleted: registry.register(
                "agent_log_files_deleted",
                "Log files deleted while followed; each was read to its end, then closed",
                Counter::default(),
            ),
            log_file_lag_bytes: registry.register(
                "agent_log_file_lag_bytes",
                "Bytes of a followed log file not read yet: grows while the bus is slow or down",
                Family::default(),
            ),
            log_publish_failures: registry.register(
                "agent_log_publish_failures",
                "Log batches the bus failed to acknowledge (each is retried)",
                Counter::default(),
            ),
            checkpoint_writes: registry.register(
                "agent_checkpoint_writes",
                "Checkpoint files written",
                Counter::default(),
            ),
            checkpoint_persisted: registry.register(
                "agent_checkpoint_persisted_timestamp_seconds",
                "Unix time when the checkpoint file last matched the acknowledged positions",
                Gauge::default(),
            ),
            snmp_polls: registry.register(
                "agent_snmp_polls",
                "SNMP polls by target and outcome",
                Family::default(),
            ),
            metric_collection_errors: registry.register(
                "agent_metric_collection_errors",
                "Host and container metric sources that could not be read or parsed, by collector and source",
                Family::default(),
            ),
            batches_published: registry.register(
                "agent_batches_published",
                "Batches acknowledged by the bus, by topic",
                Family::default(),
            ),
        }
    }

    /// Counts one acknowledged batch on `topic`.
    pub(crate) fn published(&self, topic: &str) {
        self.batches_published
            .get_or_create(&TopicLabels {
                topic: topic.to_owned(),
            })
            .inc();
    }

    /// Counts one part of a host or container metrics collection that failed.
    pub(crate) fn collection_failed(&self, collector: &str, source: &str) {
        self.metric_collection_errors
            .get_or_create(&CollectionLabels {
                collector: collector.to_owned(),
                source: source.to_owned(),
            })
            .inc();
    }

    /// Counts one SNMP poll of `target`.
    pub(crate) fn polled(&self, target: &str, outcome: PollOutcome) {
        self.snmp_polls
            .get_or_create(&PollLabels {
                target: target.to_owned(),
                outcome,
            })
            .inc();
    }
}
