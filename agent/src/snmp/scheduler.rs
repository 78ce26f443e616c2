//! The SNMP scheduler: one task per target, each on its own interval with a random
//! first-poll offset, all sharing a bounded number of poll slots. A target that
//! times out holds one slot for at most `timeout × (retries + 1)` and delays no
//! other target's schedule. Applying a new target list starts, restarts (when
//! changed) and stops tasks, leaving unchanged targets polling undisturbed.

use super::{PollOutput, TargetPoller};
use crate::config::{MetricSet, MetricSetDefinition, SnmpTarget, TargetCredential};
use crate::self_metrics::PollOutcome;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// A target with its credential and the definitions of the metric sets it uses:
/// what decides whether a running task must be restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PolledTarget {
    target: SnmpTarget,
    credential: TargetCredential,
    definitions: BTreeMap<String, MetricSetDefinition>,
}

impl PolledTarget {
    /// `target` polled with `credential`, with the definitions of its defined sets
    /// out of `definitions`.
    pub(crate) fn new(
        target: SnmpTarget,
        credential: TargetCredential,
        definitions: &BTreeMap<String, MetricSetDefinition>,
    ) -> Self {
        let definitions = target
            .metric_sets
            .iter()
            .filter_map(|set| match set {
                MetricSet::Defined(name) => definitions
                    .get(name)
                    .map(|definition| (name.clone(), definition.clone())),
                _ => None,
            })
            .collect();
        Self {
            target,
            credential,
            definitions,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.target.name
    }
}

/// The polling task of one target.
#[derive(Debug)]
struct Running {
    polled: PolledTarget,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs one polling task per target.
#[derive(Debug)]
pub(crate) struct Scheduler {
    /// Poll slots: a poll runs only while it holds one.
    slots: Arc<Semaphore>,
    output: PollOutput,
    shutdown: CancellationToken,
    running: HashMap<String, Running>,
}

impl Scheduler {
    pub(crate) fn new(
        max_in_flight: usize,
        output: PollOutput,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight.max(1))),
            output,
            shutdown,
            running: HashMap::new(),
        }
    }

    /// Makes `targets` the polled set: new targets start, changed ones restart,
    /// missing ones stop; unchanged ones keep their schedule and session.
    pub(crate) fn apply(&mut self, targets: Vec<PolledTarget>) {
        let mut wanted: HashMap<String, PolledTarget> = targets
            .into_iter()
            .map(|polled| (polled.name().to_owned(), polled))
            .collect();
        self.running.retain(|name, running| {
            let keep = wanted.get(name) == Some(&running.polled);
            if !keep {
                running.stop.cancel();
                let change = if wanted.contains_key(name) {
                    "changed"
                } else {
                    "removed"
                };
                tracing::info!(target_name = %name, change, "SNMP target stopped");
            }
            keep
        });
        wanted.retain(|name, _| !self.running.contains_key(name));
        for (name, polled) in wanted {
            tracing::info!(
                target_name = %name,
                address = %polled.target.address,
                credential = polled.target.credential.as_deref().unwrap_or("(its own)"),
                interval = %vigil_config::duration::format_duration(polled.target.interval),
                "SNMP target polling"
            );
            let stop = self.shutdown.child_token();
            let task = tokio::spawn(poll_forever(
                polled.clone(),
                self.slots.clone(),
                self.output.clone(),
                stop.clone(),
            ));
            self.running.insert(name, Running { polled, stop, task });
        }
        self.output.metrics.set_targets(self.running.len());
    }

    /// The SNMP self-metrics the tasks update.
    pub(crate) fn metrics(&self) -> &super::SnmpMetrics {
        &self.output.metrics
    }

    /// Stops every task and waits for them to end.
    pub(crate) async fn stop(self) {
        for running in self.running.values() {
            running.stop.cancel();
        }
        for (name, running) in self.running {
            if let Err(error) = running.task.await {
                tracing::error!(target_name = %name, %error, "an SNMP polling task failed");
            }
        }
        self.output.metrics.set_targets(0);
    }
}

/// Polls one target every interval until `stop`, spooling one batch per poll (the
/// spool never makes a poll wait for the bus); a failed poll sends `snmp.up` 0.
async fn poll_forever(
    polled: PolledTarget,
    slots: Arc<Semaphore>,
    output: PollOutput,
    stop: CancellationToken,
) {
    let target = polled.target;
    let mut ticker =
        tokio::time::interval_at(Instant::now() + first_poll_delay(&target), target.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut poller = TargetPoller::new(target.clone(), polled.credential, &polled.definitions);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            slot = slots.clone().acquire_owned() => slot,
        };
        let in_flight = output.metrics.poll_started();
        let started = Instant::now();
        let time = crate::unix_nanos(SystemTime::now());
        let polled = tokio::select! {
            () = stop.cancelled() => return,
            polled = poller.poll(time) => polled,
        };
        drop((in_flight, slot));
        let took = started.elapsed();
        let batch = match polled {
            Ok(samples) => {
                output
                    .agent_metrics
                    .polled(&target.name, PollOutcome::Success);
                tracing::debug!(
                    target_name = %target.name,
                    address = %target.address,
                    metric_sets = %target.metric_sets.iter().map(MetricSet::name).collect::<Vec<_>>().join(","),
                    samples = samples.len(),
                    took_ms = took.as_millis() as u64,
                    "SNMP poll done"
                );
                poller.finish(samples, true, took, time)
            }
            Err(error) => {
                output
                    .agent_metrics
                    .polled(&target.name, PollOutcome::Failure);
                output.metrics.poll_failed(&target.name, error.reason());
                tracing::warn!(
                    target_name = %target.name,
                    address = %target.address,
                    took_ms = took.as_millis() as u64,
                    %error,
                    "SNMP poll failed"
                );
                poller.finish(Vec::new(), false, took, time)
            }
        };
        output.spool.submit(&batch).await;
    }
}

/// A random delay below the target's interval, so that targets configured
/// together spread their polls over the interval instead of all polling at once.
fn first_poll_delay(target: &SnmpTarget) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(target.name.as_bytes());
    let spread = target.interval.as_millis() as u64;
    Duration::from_millis(hasher.finish() % spread.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Community;
    use crate::self_metrics::AgentMetrics;
    use crate::snmp::SnmpMetrics;
    use vigil_proto::Payload;
    use vigil_proto::v1::MetricBatch;
    use vigil_runtime::{Bus, SelfMetrics};

    #[test]
    fn the_first_poll_is_spread_within_the_interval() {
        let mut target = SnmpTarget::v2c("a", "h", Community::Inline("c".into()));
        target.interval = Duration::from_secs(1);
        for _ in 0..20 {
            assert!(first_poll_delay(&target) < Duration::from_secs(1));
        }
    }

    fn silent_target(name: &str, socket: &std::net::UdpSocket) -> SnmpTarget {
        let mut target = SnmpTarget::v2c(
            name,
            socket.local_addr().unwrap().to_string(),
            Community::Inline("public".into()),
        );
        target.interval = Duration::from_secs(1);
        target.timeout = Duration::from_millis(100);
        target.retries = 0;
        target.metric_sets = vec![MetricSet::System];
        target
    }

    fn polled(target: SnmpTarget) -> PolledTarget {
        let credential = target.credential_in("", &BTreeMap::new()).unwrap();
        PolledTarget::new(target, credential, &BTreeMap::new())
    }

    #[tokio::test]
    async fn applying_a_list_starts_changes_and_stops_targets() {
        let bus = Bus::in_memory();
        let mut batches = bus
            .subscribe("test", &[bus.topics().metrics_raw()])
            .unwrap();
        let registry = SelfMetrics::default();
        let agent_metrics = AgentMetrics::register(&registry);
        let data_dir = tempfile::tempdir().unwrap();
        let (spool, spool_task) = crate::spool::open(
            data_dir.path(),
            &crate::config::SpoolConfig::default(),
            bus.topics().metrics_raw(),
            bus.clone(),
            agent_metrics.clone(),
        )
        .unwrap();
        let spooling = tokio::spawn(spool_task.run(Duration::from_secs(1)));
        let output = PollOutput {
            spool,
            agent_metrics,
            metrics: SnmpMetrics::register(&registry),
        };
        let shutdown = CancellationToken::new();
        let mut scheduler = Scheduler::new(4, output, shutdown.clone());
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = polled(silent_target("a", &socket));
        let b = polled(silent_target("b", &socket));
        scheduler.apply(vec![a.clone(), b]);
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 2 {
            let message = batches.recv().await.unwrap();
            let batch = MetricBatch::from_payload(&message.payload).unwrap();
            seen.insert(batch.resource.unwrap().id);
        }
        assert!(
            registry
                .encode()
                .contains("vigil_agent_snmp_targets_configured 2")
        );
        let task_of_a = scheduler.running["a"].task.id();

        let mut changed = silent_target("a", &socket);
        changed.retries = 1;
        scheduler.apply(vec![a.clone(), polled(changed)]);
        assert_eq!(scheduler.running.len(), 1, "b removed, a replaced");
        assert_ne!(scheduler.running["a"].task.id(), task_of_a);
        let task_of_a = scheduler.running["a"].task.id();
        scheduler.apply(vec![scheduler.running["a"].polled.clone()]);
        assert_eq!(
            scheduler.running["a"].task.id(),
            task_of_a,
            "unchanged a kept"
        );
        assert!(
            registry
                .encode()
                .contains("vigil_agent_snmp_targets_configured 1")
        );
        scheduler.stop().await;
        spooling.await.unwrap();
    }
}
