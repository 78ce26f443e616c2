//! Document sinks: where the index stage writes its documents, Elasticsearch in a
//! deployment or NDJSON files in the all-in-one mode, behind one `write` so the stage
//! code is the same for both. A sink is shared by the stage's writes in flight.

use super::documents::Document;
use super::elasticsearch::{BulkClient, ElasticsearchError};
use super::ndjson::NdjsonSink;
use std::fmt;
use thiserror::Error;
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

fn last_error(error: Option<&ElasticsearchError>) -> String {
    error.map_or_else(String::new, |error| format!("; last error: {error}"))
}

impl fmt::Display for DocumentSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Elasticsearch(client) => write!(f, "Elasticsearch at {}", client.url()),
            Self::Ndjson(sink) => write!(f, "NDJSON files in {}", sink.dir().display()),
        }
    }
}

/// The final outcome of one document of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored now.
    Written,
    /// A document with this id was already stored (409): an earlier delivery of the
    /// same record, so nothing is lost.
    Duplicate,
    /// Refused for good (for example a mapping conflict); sending it again cannot help.
    Rejected { reason: String },
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// One outcome per document, in the order the documents were given.
    pub outcomes: Vec<Outcome>,
    /// How many times some documents had to be sent again.
    pub retries: u64,
    /// Documents sent again, summed over the retries.
    pub documents_retried: u64,
}

/// A write that did not finish.
#[derive(Debug, Error)]
pub enum SinkError {
    /// Elasticsearch refused the whole request in a way retrying cannot fix, such as
    /// wrong credentials.
    #[error("Elasticsearch refused the bulk request: {0}")]
    Refused(#[source] ElasticsearchError),
    /// Shutdown came while documents were waiting to be sent or sent again.
    #[error("stopped retrying on shutdown after {attempts} attempts{}", last_error(.last.as_ref()))]
    Interrupted {
        attempts: u64,
        #[source]
        last: Option<ElasticsearchError>,
    },
    #[error("could not write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
