//! The loop of a metrics source: every interval it has a collector (host or
//! container) read once, counts and logs what failed, and hands the samples as
//! one `MetricBatch` of the host to the metric spool, on its way to the raw metrics
//! topic.

use super::Collector;
use crate::self_metrics::AgentMetrics;
use crate::spool::MetricSpool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use vigil_proto::v1::{MetricBatch, Resource};

/// Where the batches of a collector go, and what counts them.
#[derive(Debug, Clone)]
pub(crate) struct MetricsOutput {
    /// The host the batches are about; their Kafka key.
    pub(crate) resource: Resource,
    pub(crate) spool: MetricSpool,
    pub(crate) metrics: AgentMetrics,
}

/// Collects from `collector` every `interval` and spools one batch each time,
/// until `shutdown`; the spool never makes it wait for the bus, so a bus outage
/// costs no collection. `name` (`host`, `container`) says in logs and self-metrics
/// which source it is.
pub(crate) async fn run<C: Collector>(
    name: &'static str,
    collector: C,
    interval: Duration,
    output: MetricsOutput,
    shutdown: CancellationToken,
) {
    let MetricsOutput {
        resource,
        spool,
        metrics,
    } = output;
    let collector = Arc::new(collector);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let collecting = Arc::clone(&collector);
        let time = crate::unix_nanos(SystemTime::now());
        let Ok((samples, errors)) =
            tokio::task::spawn_blocking(move || collecting.collect(time)).await
        else {
            continue;
        };
        for error in errors {
            metrics.collection_failed(name, C::error_source(&error));
            tracing::warn!(%error, source = name, "metric not collected");
        }
        if samples.is_empty() {
            continue;
        }
        let batch = MetricBatch {
            resource: Some(resource.clone()),
            samples,
            producer: crate::PRODUCER.to_owned(),
        };
        spool.submit(&batch).await;
    }
}
