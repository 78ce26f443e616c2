//! The index stage's self-metrics: what it consumed from the bus, wrote, found
//! already written, dead-lettered and retried, and the bulk writer's concurrency.

use crate::index::document_sink::DocumentSink;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use vigil_runtime::SelfMetrics;

type ByLabel = Family<[(&'static str, String); 1], Counter>;

/// The stage's self-metrics.
#[derive(Debug)]
pub(super) struct IndexMetrics {
    pub(super) messages_consumed: ByLabel,
    pub(super) documents_written: ByLabel,
    pub(super) documents_duplicate: ByLabel,
    pub(super) dead_lettered: Family<[(&'static str, &'static str); 1], Counter>,
    pub(super) bulk_retries: Counter,
    pub(super) documents_retried: Counter,
    pub(super) receive_errors: Counter,
    pub(super) bulk_duration: Histogram,
}

impl IndexMetrics {
    pub(super) fn register(metrics: &SelfMetrics, sink: &DocumentSink) -> Self {
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
            messages_consumed: metrics.register(
                "index_messages_consumed",
                "Messages the index stage consumed, by topic",
                ByLabel::default(),
            ),
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
            dead_lettered: metrics.register(
                "index_dead_lettered",
                "Messages and refused records the index stage sent to its dead-letter topic, by reason",
                Family::default(),
            ),
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
            receive_errors: metrics.register(
                "index_receive_errors",
                "Errors consuming from the bus (broker unreachable, poll interval exceeded)",
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
