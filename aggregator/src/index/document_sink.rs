//! Document sinks: where the index stage writes its documents, Elasticsearch in a
//! deployment or NDJSON files in the all-in-one mode, behind one `write` so the stage
//! code is the same for both. A sink is shared by the stage's writes in flight.
//!
//! This sits above both writers; what a write reports is defined in `sink`.

use super::documents::Document;
use super::elasticsearch::BulkClient;
use super::ndjson::NdjsonSink;
use super::sink::{SinkError, WriteReport};
use std::fmt;
use tokio_util::sync::CancellationToken;

/// Where documents go.
#[derive(Debug)]
pub enum DocumentSink {
    Elasticsearch(BulkClient),
    Ndjson(NdjsonSink),
}

impl DocumentSink {
    /// Writes `documents` and reports what became of each one.
    ///
    /// Transient failures are retried until they succeed or `shutdown` is cancelled;
    /// the report only holds final outcomes. Documents of an `Err` may or may not have
    /// been written, which deterministic ids make harmless when they are sent again.
    pub async fn write(
        &self,
        documents: &[Document],
        shutdown: &CancellationToken,
    ) -> Result<WriteReport, SinkError> {
        match self {
            Self::Elasticsearch(client) => client.write(documents, shutdown).await,
            Self::Ndjson(sink) => sink.write(documents).await,
        }
    }

    /// How many writes may usefully run at once: the client's most requests in
    /// flight, or one for files, whose lines must keep the order of the bus.
    pub fn max_writes_in_flight(&self) -> usize {
        match self {
            Self::Elasticsearch(client) => client.concurrency().settings().max.max(1),
            Self::Ndjson(_) => 1,
        }
    }
}

impl fmt::Display for DocumentSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Elasticsearch(client) => write!(f, "Elasticsearch at {}", client.url()),
            Self::Ndjson(sink) => write!(f, "NDJSON files in {}", sink.dir().display()),
        }
    }
}
