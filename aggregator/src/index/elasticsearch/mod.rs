//! The Elasticsearch sink: the index stage's bulk writes, the last hop of the data
//! path before Kibana.
//!
//! Each write is one `POST <url>/_bulk` of pre-serialized NDJSON with `create`
//! actions, so a document whose id already exists answers 409 and a redelivered batch
//! never makes a duplicate. Plain reqwest is enough: the official `elasticsearch`
//! crate adds nothing to posting bytes that are already NDJSON, and its typed API
//! would only add a dependency and a copy.
//!
//! Failures that can pass (connection errors, timeouts, 429, 5xx, bodies that are not
//! a bulk response, and the same per document) are retried with exponential backoff
//! and jitter until they succeed or shutdown, because the stage must not lose
//! documents; a retry carries only the documents that failed that way. Per-document
//! 4xx answers other than 409 and 429 are final and come back in the report, so the
//! stage can dead-letter the records they came from.
//!
//! Every request holds a permit of the client's [`AdaptiveConcurrency`] while it is
//! in flight, and tells it what the answer said about the cluster's load, so several
//! writes can share the cluster without overrunning it.
//!
//! The bulk body is built in [`bulk_request`] and the answer read in
//! [`bulk_response`]; this module holds the client and its retry loop.

mod bulk_request;
mod bulk_response;
mod health;

use super::concurrency::{AdaptiveConcurrency, ConcurrencySettings, Signal};
use super::documents::Document;
use super::http_client::{BulkClientError, ClientCertificate, ElasticsearchAuth, HttpEndpoint};
use super::sink::{ElasticsearchError, Outcome, SinkError, WriteReport};
use bulk_request::bulk_body;
use bulk_response::{ItemResult, parse_bulk_response};
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Only the parts of the bulk response the client reads, which keeps large responses small.
const BULK_FILTER_PATH: &str = "errors,items.*.status,items.*.error";

/// Settings of a [`BulkClient`].
#[derive(Debug, Clone, PartialEq)]
pub struct BulkClientConfig {
    /// Base URL of the cluster, for example `https://es.example:9200`.
    pub url: String,
    pub auth: ElasticsearchAuth,
    /// PEM file of CA certificates to trust in addition to the public roots, for
    /// clusters with their own CA.
    pub ca_file: Option<PathBuf>,
    /// Certificate and key to show a cluster that asks for one.
    pub client_certificate: Option<ClientCertificate>,
    /// Longest wait for one bulk response before it is retried.
    pub request_timeout: Duration,
    /// Wait before the first retry; it doubles on each further failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between retries.
    pub max_backoff: Duration,
    /// How many bulk requests may be in flight at once.
    pub concurrency: ConcurrencySettings,
}

impl BulkClientConfig {
    /// Defaults for the cluster at `url`: no authentication, public CA roots, 60 s
    /// request timeout, backoff from 100 ms doubling to 30 s, one to four requests in
    /// flight.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: ElasticsearchAuth::None,
            ca_file: None,
            client_certificate: None,
            request_timeout: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            concurrency: ConcurrencySettings::default(),
        }
    }
}

/// Writes documents to Elasticsearch with the bulk API.
#[derive(Debug)]
pub struct BulkClient {
    endpoint: HttpEndpoint,
    bulk_url: Url,
    /// The bulk URL without its query, for messages.
    bulk_url_text: String,
    initial_backoff: Duration,
    max_backoff: Duration,
    concurrency: Arc<AdaptiveConcurrency>,
}

impl BulkClient {
    /// Builds the client, reading secrets and the CA file now so that a wrong setting
    /// fails at startup rather than on the first write.
    pub fn new(config: BulkClientConfig) -> Result<Self, BulkClientError> {
        let endpoint = HttpEndpoint::new(
            "Elasticsearch",
            &config.url,
            &config.auth,
            config.ca_file.as_deref(),
            config.client_certificate.as_ref(),
            config.request_timeout,
        )?;
        let bulk_url_text = endpoint.url("_bulk").to_string();
        let bulk_url = endpoint.url(&format!("_bulk?filter_path={BULK_FILTER_PATH}"));
        Ok(Self {
            endpoint,
            bulk_url,
            bulk_url_text,
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            concurrency: AdaptiveConcurrency::new(config.concurrency),
        })
    }

    /// The connection to the cluster, for requests other than bulk writes.
    pub fn endpoint(&self) -> &HttpEndpoint {
        &self.endpoint
    }

    /// The base URL of the cluster.
    pub fn url(&self) -> &str {
        self.endpoint.base_url().as_str()
    }

    /// How many bulk requests are in flight, and how many may be.
    pub fn concurrency(&self) -> &Arc<AdaptiveConcurrency> {
        &self.concurrency
    }

    /// Writes `documents` with as many bulk requests as it takes: documents answered
    /// 429 or 5xx (or all of them, when the request fails that way or gets no answer)
    /// are sent again after a backoff with jitter, the others never.
    pub async fn write(
        &self,
        documents: &[Document],
        shutdown: &CancellationToken,
    ) -> Result<WriteReport, SinkError> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; documents.len()];
        let mut pending: Vec<usize> = (0..documents.len()).collect();
        let mut attempts = 0;
        let mut report = WriteReport::default();
        let mut backoff = self.initial_backoff;
        let mut last_failure = None;
        while !pending.is_empty() {
            let permit = tokio::select! {
                biased;
                permit = self.concurrency.acquire() => permit,
                () = shutdown.cancelled() => {
                    return Err(SinkError::Interrupted { attempts, last: last_failure });
                }
            };
            attempts += 1;
            let failure = match self.send(documents, &pending).await {
                Ok(results) => {
                    let mut to_retry = Vec::new();
                    let mut first_retry_reason = None;
                    let mut signal = Signal::Healthy;
                    for (&position, result) in pending.iter().zip(results) {
                        match result {
                            ItemResult::Final(outcome) => outcomes[position] = Some(outcome),
                            ItemResult::Retry { reason, throttled } => {
                                to_retry.push(position);
                                first_retry_reason.get_or_insert(reason);
                                signal = match (signal, throttled) {
                                    (_, true) | (Signal::Throttled, _) => Signal::Throttled,
                                    _ => Signal::ServerError,
                                };
                            }
                        }
                    }
                    permit.finish(signal);
                    pending = to_retry;
                    match first_retry_reason {
                        None => break,
                        Some(reason) => ElasticsearchError::DocumentsToRetry {
                            url: self.bulk_url_text.clone(),
                            count: pending.len(),
                            reason,
                        },
                    }
                }
                Err(error) => {
                    permit.finish(error.signal());
                    if !error.is_retryable() {
                        return Err(SinkError::Refused(error));
                    }
                    error
                }
            };
            report.retries += 1;
            report.documents_retried += pending.len() as u64;
            let delay = jittered(backoff);
            tracing::warn!(
                documents = pending.len(),
                attempt = attempts,
                retry_in = ?delay,
                error = %failure,
                "bulk write failed; retrying"
            );
            if shutdown.is_cancelled() {
                return Err(SinkError::Interrupted {
                    attempts,
                    last: Some(failure),
                });
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => {
                    return Err(SinkError::Interrupted { attempts, last: Some(failure) });
                }
            }
            last_failure = Some(failure);
            backoff = (backoff * 2).min(self.max_backoff);
        }
        report.outcomes = outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every document has an outcome once none is pending"))
            .collect();
        Ok(report)
    }

    /// One bulk request for the documents at `pending`.
    async fn send(
        &self,
        documents: &[Document],
        pending: &[usize],
    ) -> Result<Vec<ItemResult>, ElasticsearchError> {
        let body = bulk_body(documents, pending);
        let request = self
            .endpoint
            .request(reqwest::Method::POST, self.bulk_url.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        let (status, body) = self.endpoint.exchange(request).await.map_err(|detail| {
            ElasticsearchError::Transport {
                url: self.bulk_url_text.clone(),
                detail,
            }
        })?;
        parse_bulk_response(&self.bulk_url_text, status, &body, pending.len())
    }
}

/// `backoff` with its second half spread at random, so indexers (and requests of
/// one indexer) that failed together do not all retry at the same instant.
fn jittered(backoff: Duration) -> Duration {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    // SplitMix64 of the clock and a counter: distinct draws even within a nanosecond.
    let mut z = u64::from(nanos)
        .wrapping_add(SEQUENCE.fetch_add(1, Ordering::Relaxed))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let half = backoff / 2;
    half + half.mul_f64((z % 1024) as f64 / 1024.0)
}

#[cfg(test)]
mod tests;
