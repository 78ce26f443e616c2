//! The index stage's self-metrics: what it wrote, found already written,
//! dead-lettered and retried, and the bulk writer's concurrency (what it consumed
//! is counted by the stage loop).

use crate::index::document_sink::DocumentSink;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use vigil_runtime::SelfMetrics;

type ByLabel = Family<[(&'static str, String); 1], Counter>;

/// The stage's self-metrics.
#[derive(Debug)]
pub(super) struct IndexMetrics {
    pub(super) documents_written: ByLabel,
    pub(super) documents_duplicate: ByLabel,
    /// The stage loop's dead-letter counter, by reason: refused records count as
    /// `rejected`.
    pub(super) dead_lettered: ByLabel,
    pub(super) bulk_retries: Counter,
    pub(super) documents_retried: Counter,
    pub(super) bulk_duration: Histogram,
}

impl IndexMetrics {
    /// Registers the metrics of the stage and of `sink`; `dead_lettered` is the
    /// stage loop's counter, shared.
    pub(super) fn register(
        metrics: &SelfMetrics,
        sink: &DocumentSink,
        dead_lettered: ByLabel,
    ) -> Self {
        if let DocumentSink::Elasticsearch(client) = sink {
            let concurrency = client.concurrency().metrics();
            metrics.register(
                "index_bulk_concurrency_limit",
                "Bulk requests the index stage may have in flight now (adaptive: halves when Elasticsearch pushes back, grows while it keeps up)",
                concurrency.limit.clone(),
            );
            metrics.register(
                "index_bulk_requests_in_flight",
                "Bulk requests waiting for Elasticsearch's answer",
                concurrency.in_flight.clone(),
            );
            metrics.register(
                "index_bulk_concurrency_decreases",
                "Pushbacks from Elasticsearch that halved the bulk concurrency limit (or held it at one), by cause: throttled, server_error, unreachable, latency",
                concurrency.decreases.clone(),
            );
        }
        Self {
            documents_written: metrics.register(
                "index_documents_written",
                "Documents the index stage stored, by index",
                ByLabel::default(),
            ),
            documents_duplicate: metrics.register(
                "index_documents_duplicate",
                "Documents that were already stored (redeliveries answered with 409), by index",
                ByLabel::default(),
            ),
            dead_lettered,
            bulk_retries: metrics.register(
                "index_bulk_retries",
                "Bulk requests sent again after a transient failure",
                Counter::default(),
            ),
            documents_retried: metrics.register(
                "index_documents_retried",
                "Documents sent again after a 429, a 5xx or a failed request",
                Counter::default(),
            ),
            bulk_duration: metrics.register(
                "index_bulk_duration_seconds",
                "Time to write one batch, retries included",
                Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            ),
        }
    }
}
