//! The SNMP poller's own metrics on the agent's `/metrics`: polls in flight,
//! targets configured, failures by target and reason, and configuration entries
//! rejected, so that an operator sees a silent device or a bad etcd entry without
//! reading logs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use vigil_runtime::SelfMetrics;

/// Labels of `agent_snmp_poll_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PollErrorLabels {
    target: String,
    /// `timeout`, `authentication`, `protocol`, `error_status`, `connect`, `config`.
    reason: String,
}

/// Every SNMP self-metric, registered once and shared by the scheduler's tasks.
#[derive(Debug, Clone)]
pub(crate) struct SnmpMetrics {
    polls_in_flight: Gauge,
    targets_configured: Gauge,
    poll_errors: Family<PollErrorLabels, Counter>,
    config_rejected: Gauge,
}

impl SnmpMetrics {
    pub(crate) fn register(registry: &SelfMetrics) -> Self {
        Self {
            polls_in_flight: registry.register(
                "agent_snmp_polls_in_flight",
                "SNMP polls running now (at most snmp.max_polls_in_flight)",
                Gauge::default(),
            ),
            targets_configured: registry.register(
                "agent_snmp_targets_configured",
                "SNMP targets being polled",
                Gauge::default(),
            ),
            poll_errors: registry.register(
                "agent_snmp_poll_errors",
                "Failed SNMP polls by target and reason (timeout, authentication, ...)",
                Family::default(),
            ),
            config_rejected: registry.register(
                "agent_snmp_config_entries_rejected",
                "SNMP targets and metric sets in etcd currently rejected as invalid",
                Gauge::default(),
            ),
        }
    }

    /// Marks a poll as started until the returned guard is dropped.
    pub(crate) fn poll_started(&self) -> InFlight {
        self.polls_in_flight.inc();
        InFlight(self.polls_in_flight.clone())
    }

    pub(crate) fn set_targets(&self, count: usize) {
        self.targets_configured.set(count as i64);
    }

    pub(crate) fn poll_failed(&self, target: &str, reason: &str) {
        self.poll_errors
            .get_or_create(&PollErrorLabels {
                target: target.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub(crate) fn set_rejected(&self, count: usize) {
        self.config_rejected.set(count as i64);
    }
}

/// A poll in flight; counted until dropped, however the poll ends.
#[derive(Debug)]
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
