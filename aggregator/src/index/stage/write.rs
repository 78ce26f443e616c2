//! Writing one batch of the index stage: its documents go to the sink, what the sink
//! refused goes to the dead-letter topic, and the outcome is counted, before the
//! stage may commit the batch's messages.

use super::Shared;
use super::batch::Batch;
use super::dead_letter::{publish_dead_letter, rejected_record};
use crate::index::sink::{Outcome, SinkError};
use crate::stage::StageError;
use std::collections::HashMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How the write of a batch ended.
#[derive(Debug)]
pub(super) enum WriteOutcome {
    /// Every record of the batch is in the sink or in the dead-letter topic.
    Done,
    /// Shutdown came first; nothing of the batch may be committed.
    Abandoned,
    /// The sink refused the write for good; the stage stops.
    Failed(StageError),
}

/// Writes the documents of `batch`, dead-letters what the sink refused, and counts.
pub(super) async fn write_batch(
    shared: &Shared,
    batch: &Batch,
    shutdown: &CancellationToken,
) -> WriteOutcome {
    let mut dead_letters = Vec::new();
    if !batch.documents.is_empty() {
        let started = Instant::now();
        let report = match shared.sink.write(&batch.documents, shutdown).await {
            Ok(report) => report,
            Err(error @ SinkError::Interrupted { .. }) => {
                tracing::warn!(
                    messages = batch.messages.len(),
                    %error,
                    "shut down before the batch was written; its messages stay uncommitted and will be consumed again"
                );
                return WriteOutcome::Abandoned;
            }
            Err(source) => {
                return WriteOutcome::Failed(StageError::IndexWrite {
                    documents: batch.documents.len(),
                    sink: shared.sink.to_string(),
                    source,
                });
            }
        };
        let metrics = &shared.metrics;
        metrics
            .bulk_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.bulk_retries.inc_by(report.retries);
        metrics.documents_retried.inc_by(report.documents_retried);
        let mut written: HashMap<&str, u64> = HashMap::new();
        let mut duplicates: HashMap<&str, u64> = HashMap::new();
        for (document, outcome) in batch.documents.iter().zip(&report.outcomes) {
            match outcome {
                Outcome::Written => *written.entry(&document.index).or_default() += 1,
                Outcome::Duplicate => *duplicates.entry(&document.index).or_default() += 1,
                Outcome::Rejected { reason } => {
                    dead_letters.push(rejected_record(shared, batch, document, reason));
                }
            }
        }
        for (index, count) in written {
            metrics
                .documents_written
                .get_or_create(&[("index", index.to_owned())])
                .inc_by(count);
        }
        for (index, count) in duplicates {
            metrics
                .documents_duplicate
                .get_or_create(&[("index", index.to_owned())])
                .inc_by(count);
        }
    }
    for dead_letter in dead_letters {
        if !publish_dead_letter(shared, &dead_letter, shutdown).await {
            return WriteOutcome::Abandoned;
        }
        shared
            .metrics
            .dead_lettered
            .get_or_create(&[("reason", "rejected".to_owned())])
            .inc();
    }
    WriteOutcome::Done
}
