//! The agent's own counters, exposed on `/metrics` as `vigil_agent_*`: how many lines
//! each step of the data path read, sent, cut or failed to send, and how the SNMP
//! and the host and container metric sources fare, and what the metric spool holds
//! and had to drop.

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

/// Labels of `agent_log_bytes_lost`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct LossLabels {
    /// Why the bytes were never shipped: `closed_removed`, a deleted file closed
    /// unread after `close_removed_after`.
    pub(crate) reason: String,
}

/// Labels of `agent_log_parse_failures`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct ParseFailureLabels {
    pub(crate) dataset: String,
    /// The step that failed: `json`, `regex`, `timestamp`, ...
    pub(crate) parser: String,
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

/// Labels of `agent_spool_dropped_batches` and `agent_spool_dropped_samples`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct DropLabels {
    pub(crate) reason: DropReason,
}

/// Why the metric spool dropped batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DropReason {
    /// The spool reached `spool.max_bytes`; its oldest batches made room.
    Full,
    /// One batch larger than the whole spool.
    Oversized,
    /// The spool's file could not be written (a full or failing disk).
    Unwritable,
    /// A spooled record could not be read back; the rest of its segment went with it.
    Unreadable,
    /// The spool task had ended (the agent was stopping).
    Stopped,
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Full => "full",
            Self::Oversized => "oversized",
            Self::Unwritable => "unwritable",
            Self::Unreadable => "unreadable",
            Self::Stopped => "stopped",
        })
    }
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
    /// Files found but not followed: their entry's `max_open_files` is reached.
    pub(crate) log_files_waiting: Gauge,
    pub(crate) log_bytes_lost: Family<LossLabels, Counter>,
    /// Per followed path: bytes of its file not read yet.
    pub(crate) log_file_lag_bytes: Family<PathLabels, Gauge>,
    pub(crate) log_publish_failures: Counter,
    /// Log lines a parser step could not parse (shipped as they were).
    pub(crate) log_parse_failures: Family<ParseFailureLabels, Counter>,
    pub(crate) checkpoint_writes: Counter,
    /// Unix time at which the checkpoint file was last known to match the
    /// acknowledged positions; its age is `time() - this` in PromQL.
    pub(crate) checkpoint_persisted: Gauge<f64, AtomicU64>,
    pub(crate) snmp_polls: Family<PollLabels, Counter>,
    pub(crate) metric_collection_errors: Family<CollectionLabels, Counter>,
    pub(crate) batches_published: Family<TopicLabels, Counter>,
    pub(crate) spool_batches_written: Counter,
    pub(crate) spool_dropped_batches: Family<DropLabels, Counter>,
    pub(crate) spool_dropped_samples: Family<DropLabels, Counter>,
    pub(crate) spool_publish_failures: Counter,
    /// Bytes of damaged spool segments cut when the agent started.
    pub(crate) spool_cut_bytes: Counter,
    pub(crate) spool_bytes: Gauge,
    /// Batches in the spool not acknowledged yet.
    pub(crate) spool_batches: Gauge,
    pub(crate) journald_entries_read: Counter,
    pub(crate) journald_entries_shipped: Counter,
    /// Lines of journalctl's output that were no journal entry.
    pub(crate) journald_entries_invalid: Counter,
    pub(crate) journald_restarts: Counter,
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
                "Log files deleted while followed, then closed: read to their end, or unread after close_removed_after",
                Counter::default(),
            ),
            log_files_waiting: registry.register(
                "agent_log_files_waiting",
                "Log files found but not followed because max_open_files of their entry is reached",
                Gauge::default(),
            ),
            log_bytes_lost: registry.register(
                "agent_log_bytes_lost",
                "Bytes of log files never shipped, by reason (closed_removed: deleted and closed unread after close_removed_after)",
                Family::default(),
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
            log_parse_failures: registry.register(
                "agent_log_parse_failures",
                "Log lines a parser step could not parse, by dataset and step; each was shipped as it was, flagged log.parse_failure",
                Family::default(),
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
            spool_batches_written: registry.register(
                "agent_spool_batches_written",
                "Metric batches written to the spool on their way to the bus",
                Counter::default(),
            ),
            spool_dropped_batches: registry.register(
                "agent_spool_dropped_batches",
                "Metric batches the spool dropped, by reason (full: the oldest made room)",
                Family::default(),
            ),
            spool_dropped_samples: registry.register(
                "agent_spool_dropped_samples",
                "Samples in the metric batches the spool dropped, by reason",
                Family::default(),
            ),
            spool_publish_failures: registry.register(
                "agent_spool_publish_failures",
                "Spooled metric batches the bus did not acknowledge (each is sent again, in order)",
                Counter::default(),
            ),
            spool_cut_bytes: registry.register(
                "agent_spool_cut_bytes",
                "Bytes of damaged metric spool segments cut at start",
                Counter::default(),
            ),
            spool_bytes: registry.register(
                "agent_spool_bytes",
                "Bytes the metric spool's files take",
                Gauge::default(),
            ),
            spool_batches: registry.register(
                "agent_spool_batches",
                "Metric batches in the spool not acknowledged by the bus yet",
                Gauge::default(),
            ),
            journald_entries_read: registry.register(
                "agent_journald_entries_read",
                "Journal entries read from journalctl, filtered out ones included",
                Counter::default(),
            ),
            journald_entries_shipped: registry.register(
                "agent_journald_entries_shipped",
                "Journal entries acknowledged by the bus",
                Counter::default(),
            ),
            journald_entries_invalid: registry.register(
                "agent_journald_entries_invalid",
                "Lines of journalctl's output that were no readable journal entry (not JSON, no cursor, too long)",
                Counter::default(),
            ),
            journald_restarts: registry.register(
                "agent_journald_restarts",
                "Times journalctl ended or could not start and was started again",
                Counter::default(),
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

    /// Counts `batches` holding `samples` that the metric spool dropped.
    pub(crate) fn spool_dropped(&self, reason: DropReason, batches: u64, samples: u64) {
        let labels = DropLabels { reason };
        self.spool_dropped_batches
            .get_or_create(&labels)
            .inc_by(batches);
        self.spool_dropped_samples
            .get_or_create(&labels)
            .inc_by(samples);
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

    /// The parse failure counter of step `parser` of the entry of `dataset`.
    pub(crate) fn log_parse_failure(&self, dataset: &str, parser: &str) -> Counter {
        self.log_parse_failures
            .get_or_create(&ParseFailureLabels {
                dataset: dataset.to_owned(),
                parser: parser.to_owned(),
            })
            .clone()
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
