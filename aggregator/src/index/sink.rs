//! What a write of the index stage's documents reports, whichever sink took them
//! (Elasticsearch's bulk API or NDJSON files): the outcome of each document, the
//! retries it took, and the errors of a write that did not finish. Both writers
//! answer in these terms, and the stage reads them without knowing which wrote.

use reqwest::StatusCode;
use thiserror::Error;

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

fn last_error(error: Option<&ElasticsearchError>) -> String {
    error.map_or_else(String::new, |error| format!("; last error: {error}"))
}

/// One request to Elasticsearch that failed, as a [`SinkError`] carries it; the bulk
/// writer judges from it whether to retry and what it says about the cluster's load.
#[derive(Debug, Error)]
pub enum ElasticsearchError {
    #[error("request to Elasticsearch at {url} failed: {detail}")]
    Transport { url: String, detail: String },
    #[error("Elasticsearch at {url} answered {status}: {snippet}")]
    Status {
        url: String,
        status: StatusCode,
        snippet: String,
    },
    #[error(
        "Elasticsearch at {url} answered {status} with a body that is not a bulk response ({reason}): {snippet}"
    )]
    Malformed {
        url: String,
        status: StatusCode,
        reason: String,
        snippet: String,
    },
    #[error("Elasticsearch at {url} answered {received} bulk items for {sent} documents")]
    ItemCount {
        url: String,
        sent: usize,
        received: usize,
    },
    #[error(
        "Elasticsearch at {url} asked to retry {count} documents, the first because of {reason}"
    )]
    DocumentsToRetry {
        url: String,
        count: usize,
        reason: String,
    },
}
