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

use super::concurrency::{AdaptiveConcurrency, ConcurrencySettings, Signal};
use super::documents::Document;
use super::sink::{Outcome, SinkError, WriteReport};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Certificate, RequestBuilder, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use vigil_runtime::SecretRef;
use vigil_runtime::secret::SecretError;

/// How long connecting to Elasticsearch may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a response body quoted in error messages.
const SNIPPET_CHARS: usize = 200;
/// Only the parts of the bulk response the client reads, which keeps large responses small.
const BULK_FILTER_PATH: &str = "errors,items.*.status,items.*.error";

/// How to authenticate to Elasticsearch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ElasticsearchAuth {
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        username: String,
        password: SecretRef,
    },
    /// An API key in its encoded form (the `encoded` field Elasticsearch returns).
    ApiKey(SecretRef),
}

/// Settings of a [`BulkClient`].
#[derive(Debug, Clone, PartialEq)]
pub struct BulkClientConfig {
    /// Base URL of the cluster, for example `https://es.example:9200`.
    pub url: String,
    pub auth: ElasticsearchAuth,
    /// PEM file of CA certificates to trust in addition to the public roots, for
    /// clusters with their own CA.
    pub ca_file: Option<PathBuf>,
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
            request_timeout: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            concurrency: ConcurrencySettings::default(),
        }
    }
}

/// A [`BulkClientConfig`] that cannot work.
#[derive(Debug, Error)]
pub enum BulkClientError {
    #[error("{service} URL `{url}` is invalid: {reason}")]
    InvalidUrl {
        service: &'static str,
        url: String,
        reason: String,
    },
    #[error(
        "{service} URL `{url}` must not hold credentials: configure basic auth or an API key read from a secret file or environment variable"
    )]
    CredentialsInUrl { service: &'static str, url: String },
    #[error("{service} {what} could not be read: {source}")]
    Secret {
        service: &'static str,
        what: &'static str,
        #[source]
        source: SecretError,
    },
    #[error("the {service} API key is not a valid HTTP header value")]
    InvalidApiKey { service: &'static str },
    #[error("CA certificate file {path} could not be used: {reason}")]
    CaFile { path: String, reason: String },
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
}

/// One request to Elasticsearch that failed.
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

impl ElasticsearchError {
    /// What the failure says about the cluster's load.
    fn signal(&self) -> Signal {
        match self {
            Self::Transport { .. } => Signal::Unreachable,
            Self::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
                Signal::Throttled
            }
            Self::Status { status, .. } if !status.is_server_error() => Signal::Healthy,
            Self::Status { .. }
            | Self::Malformed { .. }
            | Self::ItemCount { .. }
            | Self::DocumentsToRetry { .. } => Signal::ServerError,
        }
    }

    /// Whether sending the same request again can succeed.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => is_retryable_status(*status),
            Self::Transport { .. }
            | Self::Malformed { .. }
            | Self::ItemCount { .. }
            | Self::DocumentsToRetry { .. } => true,
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

/// An HTTP API (Elasticsearch's or Kibana's): its base URL, client and credentials.
#[derive(Debug)]
pub(crate) struct HttpEndpoint {
    http: reqwest::Client,
    /// Base URL, ending in `/`.
    base_url: Url,
    credentials: Credentials,
}

/// Resolved secrets; never printed.
enum Credentials {
    None,
    Basic { username: String, password: String },
    Header(HeaderValue),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Basic { .. } => "Basic(..)",
            Self::Header(_) => "ApiKey(..)",
        })
    }
}

impl HttpEndpoint {
    /// Checks the URL and builds the client, reading secrets and the CA file now so
    /// that a wrong setting fails at startup rather than on the first request;
    /// `service` names the API in errors.
    pub(crate) fn new(
        service: &'static str,
        url: &str,
        auth: &ElasticsearchAuth,
        ca_file: Option<&Path>,
        request_timeout: Duration,
    ) -> Result<Self, BulkClientError> {
        let invalid = |reason: String| BulkClientError::InvalidUrl {
            service,
            url: url.to_owned(),
            reason,
        };
        let mut base_url = Url::parse(url).map_err(|error| invalid(error.to_string()))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".into()));
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            let _ = base_url.set_password(None);
            return Err(BulkClientError::CredentialsInUrl {
                service,
                url: base_url.to_string(),
            });
        }
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }

        let credentials = match auth {
            ElasticsearchAuth::None => Credentials::None,
            ElasticsearchAuth::Basic { username, password } => Credentials::Basic {
                username: username.clone(),
                password: password
                    .resolve()
                    .map_err(|source| BulkClientError::Secret {
                        service,
                        what: "password",
                        source,
                    })?,
            },
            ElasticsearchAuth::ApiKey(key) => {
                let key = key.resolve().map_err(|source| BulkClientError::Secret {
                    service,
                    what: "API key",
                    source,
                })?;
                let mut value = HeaderValue::from_str(&format!("ApiKey {key}"))
                    .map_err(|_| BulkClientError::InvalidApiKey { service })?;
                value.set_sensitive(true);
                Credentials::Header(value)
            }
        };

        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("vigil-aggregator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request_timeout);
        if let Some(path) = ca_file {
            let ca_error = |reason: String| BulkClientError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|error| ca_error(error.to_string()))?;
            let certificates =
                Certificate::from_pem_bundle(&pem).map_err(|error| ca_error(error.to_string()))?;
            if certificates.is_empty() {
                return Err(ca_error("it holds no PEM certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|error| BulkClientError::Client(error_chain(&error)))?;
        Ok(Self {
            http,
            base_url,
            credentials,
        })
    }

    /// The base URL, ending in `/`.
    pub(crate) fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// `path` (relative, such as `_index_template/x`) joined to the base URL.
    pub(crate) fn url(&self, path: &str) -> Url {
        self.base_url
            .join(path)
            .expect("paths built from names are valid relative URLs")
    }

    /// A request to `url` with the endpoint's credentials.
    pub(crate) fn request(&self, method: reqwest::Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.credentials {
            Credentials::None => request,
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
            Credentials::Header(value) => request.header(AUTHORIZATION, value.clone()),
        }
    }

    /// Sends `request` and reads the whole response body; `Err` is the transport
    /// failure, with its causes.
    pub(crate) async fn exchange(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let response = request
            .send()
            .await
            .map_err(|error| error_chain(&error.without_url()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| error_chain(&error.without_url()))?;
        Ok((status, body.to_vec()))
    }
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
    pub(crate) fn endpoint(&self) -> &HttpEndpoint {
        &self.endpoint
    }

    /// The base URL of the cluster.
    pub fn url(&self) -> &str {
        self.endpoint.base_url.as_str()
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

/// What became of one document of a bulk request.
#[derive(Debug, PartialEq, Eq)]
enum ItemResult {
    Final(Outcome),
    /// Failed in a way that may pass (429, 5xx); the reason is for logs.
    Retry {
        reason: String,
        throttled: bool,
    },
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<BulkItemEntry>,
}

/// One item of a bulk response: `{"create": {...}}` (or the item of another action).
#[derive(Deserialize)]
struct BulkItemEntry {
    #[serde(alias = "index", alias = "update", alias = "delete")]
    create: Option<BulkItem>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// The NDJSON body: a `create` action line and the document line for each document.
fn bulk_body(documents: &[Document], pending: &[usize]) -> Vec<u8> {
    const ACTION_START: &[u8] = br#"{"create":{"_index":"#;
    const ID_KEY: &[u8] = br#","_id":"#;
    let size = pending
        .iter()
        .map(|&position| {
            let document = &documents[position];
            document.body.len()
                + document.index.len()
                + document.id.len()
                + ACTION_START.len()
                + ID_KEY.len()
                + 8
        })
        .sum();
    let mut body = Vec::with_capacity(size);
    for &position in pending {
        let document = &documents[position];
        body.extend_from_slice(ACTION_START);
        push_json_string(&mut body, &document.index);
        body.extend_from_slice(ID_KEY);
        push_json_string(&mut body, &document.id);
        body.extend_from_slice(b"}}\n");
        body.extend_from_slice(&document.body);
        body.push(b'\n');
    }
    body
}

/// `text` as a JSON string; index names and hex ids need no escaping, so they are
/// copied as they are.
fn push_json_string(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .any(|byte| byte < 0x20 || byte == b'"' || byte == b'\\')
    {
        serde_json::to_writer(&mut *out, text).expect("a string always serializes");
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// Reads a bulk response: one result per document sent, in order.
fn parse_bulk_response(
    url: &str,
    status: StatusCode,
    body: &[u8],
    sent: usize,
) -> Result<Vec<ItemResult>, ElasticsearchError> {
    if !status.is_success() {
        return Err(ElasticsearchError::Status {
            url: url.to_owned(),
            status,
            snippet: snippet(body),
        });
    }
    let malformed = |reason: String| ElasticsearchError::Malformed {
        url: url.to_owned(),
        status,
        reason,
        snippet: snippet(body),
    };
    let response: BulkResponse =
        serde_json::from_slice(body).map_err(|error| malformed(error.to_string()))?;
    if response.items.len() != sent {
        return Err(ElasticsearchError::ItemCount {
            url: url.to_owned(),
            sent,
            received: response.items.len(),
        });
    }
    response
        .items
        .into_iter()
        .map(|item| {
            let item = item
                .create
                .ok_or_else(|| malformed("an item names no action".into()))?;
            Ok(item_result(&item))
        })
        .collect()
}

fn item_result(item: &BulkItem) -> ItemResult {
    let status = StatusCode::from_u16(item.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_success() {
        return ItemResult::Final(Outcome::Written);
    }
    if status == StatusCode::CONFLICT {
        return ItemResult::Final(Outcome::Duplicate);
    }
    let reason = match &item.error {
        Some(error) => format!("{status}: {}", describe_error(error)),
        None => status.to_string(),
    };
    if is_retryable_status(status) {
        ItemResult::Retry {
            reason,
            throttled: status == StatusCode::TOO_MANY_REQUESTS,
        }
    } else {
        ItemResult::Final(Outcome::Rejected { reason })
    }
}

fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// `type: reason; caused by type: reason` from an Elasticsearch error object.
fn describe_error(error: &Value) -> String {
    let mut parts = Vec::new();
    let mut current = Some(error);
    while let Some(error) = current.take() {
        match error {
            Value::Object(fields) => {
                let kind = fields.get("type").and_then(Value::as_str);
                let reason = fields.get("reason").and_then(Value::as_str);
                parts.push(match (kind, reason) {
                    (Some(kind), Some(reason)) => format!("{kind}: {reason}"),
                    (Some(text), None) | (None, Some(text)) => text.to_owned(),
                    (None, None) => error.to_string(),
                });
                current = fields.get("caused_by");
            }
            Value::String(text) => parts.push(text.clone()),
            other => parts.push(other.to_string()),
        }
    }
    parts.join("; caused by ")
}

/// The start of a response body, for error messages (also Kibana's and those of
/// `setup`).
pub(super) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An error and its causes, `: `-separated (reqwest's own message omits the cause,
/// such as "connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
mod tests {
    use super::*;
    use crate::index::fake_elasticsearch::{FakeElasticsearch, bulk_response};
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const URL: &str = "http://es.test:9200/_bulk";

    fn document(id: &str) -> Document {
        Document {
            index: "vigil-logs".into(),
            id: id.into(),
            body: br#"{"message":"x"}"#.to_vec(),
            origin: 0,
            record: 0,
        }
    }

    fn client(url: &str) -> BulkClient {
        BulkClient::new(BulkClientConfig {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            ..BulkClientConfig::new(url)
        })
        .unwrap()
    }

    #[test]
    fn conflicts_are_duplicates_throttling_is_retried_and_mapping_errors_are_final() {
        let body = json!({
            "errors": true,
            "items": [
                {"create": {"status": 201}},
                {"create": {"status": 409, "error": {
                    "type": "version_conflict_engine_exception",
                    "reason": "[a]: version conflict, document already exists (current version [1])"}}},
                {"create": {"status": 429, "error": {
                    "type": "es_rejected_execution_exception",
                    "reason": "rejected execution of coordinating operation"}}},
                {"create": {"status": 400, "error": {
                    "type": "mapper_parsing_exception",
                    "reason": "failed to parse field [log.offset] of type [long]",
                    "caused_by": {"type": "illegal_argument_exception", "reason": "For input string: \"x\""}}}},
                {"create": {"status": 503}},
            ]
        });
        let results =
            parse_bulk_response(URL, StatusCode::OK, body.to_string().as_bytes(), 5).unwrap();
        assert_eq!(
            results,
            vec![
                ItemResult::Final(Outcome::Written),
                ItemResult::Final(Outcome::Duplicate),
                ItemResult::Retry {
                    reason: "429 Too Many Requests: es_rejected_execution_exception: rejected execution of coordinating operation".into(),
                    throttled: true,
                },
                ItemResult::Final(Outcome::Rejected {
                    reason: "400 Bad Request: mapper_parsing_exception: failed to parse field [log.offset] of type [long]; caused by illegal_argument_exception: For input string: \"x\"".into()
                }),
                ItemResult::Retry {
                    reason: "503 Service Unavailable".into(),
                    throttled: false,
                },
            ]
        );
    }

    #[test]
    fn a_body_that_is_not_json_names_the_url_and_quotes_the_body() {
        let error = parse_bulk_response(
            URL,
            StatusCode::OK,
            b"<html><body>502 Bad Gateway from the proxy</body></html>",
            1,
        )
        .unwrap_err();
        assert!(error.is_retryable());
        let message = error.to_string();
        assert!(
            message.starts_with(
                "Elasticsearch at http://es.test:9200/_bulk answered 200 OK with a body that is not a bulk response (expected value at line 1 column 1): <html><body>502 Bad Gateway"
            ),
            "{message}"
        );

        let long = "x".repeat(1000);
        let error = parse_bulk_response(URL, StatusCode::OK, long.as_bytes(), 1).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with(&format!("{}…", "x".repeat(200))),
            "{error}"
        );
    }

    #[test]
    fn whole_request_failures_are_retried_unless_they_are_client_errors() {
        let failure = |status| parse_bulk_response(URL, status, b"{}", 1).unwrap_err();
        assert!(failure(StatusCode::TOO_MANY_REQUESTS).is_retryable());
        assert!(failure(StatusCode::BAD_GATEWAY).is_retryable());
        let unauthorized = failure(StatusCode::UNAUTHORIZED);
        assert!(!unauthorized.is_retryable());
        assert_eq!(
            unauthorized.to_string(),
            "Elasticsearch at http://es.test:9200/_bulk answered 401 Unauthorized: {}"
        );
        let short = parse_bulk_response(URL, StatusCode::OK, br#"{"items":[]}"#, 2).unwrap_err();
        assert_eq!(
            short.to_string(),
            "Elasticsearch at http://es.test:9200/_bulk answered 0 bulk items for 2 documents"
        );
    }

    #[test]
    fn the_bulk_body_creates_each_document_under_its_id() {
        let documents = [document("a"), document("b"), document("c")];
        let body = String::from_utf8(bulk_body(&documents, &[0, 2])).unwrap();
        assert_eq!(
            body,
            "{\"create\":{\"_index\":\"vigil-logs\",\"_id\":\"a\"}}\n{\"message\":\"x\"}\n\
             {\"create\":{\"_index\":\"vigil-logs\",\"_id\":\"c\"}}\n{\"message\":\"x\"}\n"
        );
    }

    #[test]
    fn urls_with_credentials_or_other_schemes_are_refused() {
        let error =
            BulkClient::new(BulkClientConfig::new("https://elastic:changeme@es:9200")).unwrap_err();
        assert!(!error.to_string().contains("changeme"), "{error}");
        assert!(matches!(error, BulkClientError::CredentialsInUrl { .. }));
        let error = BulkClient::new(BulkClientConfig::new("es:9200")).unwrap_err();
        assert!(
            matches!(error, BulkClientError::InvalidUrl { .. }),
            "{error}"
        );
        let client = client("http://es:9200/prefix");
        assert_eq!(client.bulk_url_text, "http://es:9200/prefix/_bulk");
    }

    #[tokio::test]
    async fn failed_requests_and_documents_are_retried_until_they_succeed() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let server = FakeElasticsearch::start(move |request| {
            match seen.fetch_add(1, Ordering::SeqCst) {
                0 => (200, "<html>gateway hiccup</html>".into()),
                1 => (429, r#"{"error":"too many requests"}"#.into()),
                2 => {
                    assert_eq!(request.documents(), 3);
                    (200, bulk_response(&[201, 429, 400]))
                }
                _ => {
                    // Only the throttled document is sent again.
                    assert_eq!(request.documents(), 1);
                    assert!(request.body.contains(r#""_id":"b""#), "{}", request.body);
                    (200, bulk_response(&[409]))
                }
            }
        })
        .await;
        let sink = client(&server.url);
        let report = sink
            .write(
                &[document("a"), document("b"), document("c")],
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert_eq!(report.retries, 3);
        assert_eq!(report.documents_retried, 3 + 3 + 1);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(report.outcomes[0], Outcome::Written);
        assert_eq!(report.outcomes[1], Outcome::Duplicate);
        assert!(
            matches!(&report.outcomes[2], Outcome::Rejected { reason } if reason.contains("mapper_parsing_exception")),
            "{:?}",
            report.outcomes[2]
        );
    }

    #[tokio::test]
    async fn shutdown_stops_the_retries() {
        let server = FakeElasticsearch::start(|_| (503, "unavailable".into())).await;
        let sink = client(&server.url);
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let error = sink.write(&[document("a")], &shutdown).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("stopped retrying on shutdown after"),
            "{message}"
        );
        assert!(
            message.contains("answered 503 Service Unavailable: unavailable"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn credentials_are_sent_with_every_request() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("api-key");
        std::fs::write(&key_file, "c2VjcmV0\n").unwrap();
        let server = FakeElasticsearch::start(|request| {
            assert_eq!(request.authorization.as_deref(), Some("ApiKey c2VjcmV0"));
            (200, bulk_response(&[201]))
        })
        .await;
        let sink = BulkClient::new(BulkClientConfig {
            auth: ElasticsearchAuth::ApiKey(SecretRef {
                file: Some(key_file),
                env: None,
            }),
            ..BulkClientConfig::new(&server.url)
        })
        .unwrap();
        assert!(!format!("{sink:?}").contains("c2VjcmV0"));
        let report = sink
            .write(&[document("a")], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.outcomes, vec![Outcome::Written]);
    }

    #[test]
    fn jitter_spreads_the_second_half_of_the_backoff() {
        let backoff = Duration::from_millis(800);
        let delays: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| jittered(backoff)).collect();
        assert!(delays.len() > 10, "{delays:?}");
        assert!(
            delays
                .iter()
                .all(|delay| (Duration::from_millis(400)..=backoff).contains(delay)),
            "{delays:?}"
        );
    }

    #[test]
    fn ids_and_index_names_that_need_escaping_are_escaped() {
        let odd = Document {
            index: "vigil-logs".into(),
            id: "a\"b".into(),
            body: b"{}".to_vec(),
            origin: 0,
            record: 0,
        };
        let body = String::from_utf8(bulk_body(&[odd], &[0])).unwrap();
        assert_eq!(
            body,
            "{\"create\":{\"_index\":\"vigil-logs\",\"_id\":\"a\\\"b\"}}\n{}\n"
        );
        let action: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
        assert_eq!(action["create"]["_id"], "a\"b");
    }

    #[test]
    fn items_of_other_actions_are_read_too() {
        let body = json!({"errors": false, "items": [{"index": {"status": 201}}]});
        let results =
            parse_bulk_response(URL, StatusCode::OK, body.to_string().as_bytes(), 1).unwrap();
        assert_eq!(results, vec![ItemResult::Final(Outcome::Written)]);
        let nameless = json!({"items": [{"other": {"status": 201}}]});
        let error = parse_bulk_response(URL, StatusCode::OK, nameless.to_string().as_bytes(), 1)
            .unwrap_err();
        assert!(
            error.to_string().contains("an item names no action"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn throttled_documents_lower_the_concurrency_limit() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let server = FakeElasticsearch::start(move |request| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                (200, bulk_response(&vec![429; request.documents()]))
            } else {
                (200, bulk_response(&vec![201; request.documents()]))
            }
        })
        .await;
        let sink = BulkClient::new(BulkClientConfig {
            initial_backoff: Duration::from_millis(1),
            concurrency: ConcurrencySettings {
                initial: 4,
                max: 4,
                latency_factor: 3.0,
            },
            ..BulkClientConfig::new(&server.url)
        })
        .unwrap();
        let report = sink
            .write(&[document("a"), document("b")], &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(report.outcomes, vec![Outcome::Written; 2]);
        assert_eq!((report.retries, report.documents_retried), (1, 2));
        assert_eq!(sink.concurrency().limit(), 2);
        let metrics = sink.concurrency().metrics();
        assert_eq!(
            metrics
                .decreases
                .get_or_create(&[("cause", "throttled")])
                .get(),
            1
        );
        assert_eq!(metrics.in_flight.get(), 0);
    }
}
