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
//! until they succeed or shutdown, because the stage must not lose documents.
//! Per-document 4xx answers other than 409 and 429 are final and come back in the
//! report, so the stage can dead-letter the message they came from.

use super::documents::Document;
use super::sink::{Outcome, SinkError, WriteReport};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Certificate, RequestBuilder, StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

impl BulkClientConfig {
    /// Defaults for the cluster at `url`: no authentication, public CA roots, 60 s
    /// request timeout, backoff from 100 ms doubling to 30 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: ElasticsearchAuth::None,
            ca_file: None,
            request_timeout: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A [`BulkClientConfig`] that cannot work.
#[derive(Debug, Error)]
pub enum BulkClientError {
    #[error("Elasticsearch URL `{url}` is invalid: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "Elasticsearch URL `{url}` must not hold credentials: configure basic auth or an API key read from a secret file or environment variable"
    )]
    CredentialsInUrl { url: String },
    #[error("Elasticsearch {what} could not be read: {source}")]
    Secret {
        what: &'static str,
        #[source]
        source: SecretError,
    },
    #[error("the Elasticsearch API key is not a valid HTTP header value")]
    InvalidApiKey,
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

/// An index template that could not be installed.
#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("index template {path} is not valid JSON: {source}")]
    InvalidJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("index template {path} could not be installed: {source}")]
    Request {
        path: String,
        #[source]
        source: ElasticsearchError,
    },
}

/// Writes documents to Elasticsearch with the bulk API.
#[derive(Debug)]
pub struct BulkClient {
    http: reqwest::Client,
    /// Base URL, ending in `/`.
    base_url: Url,
    bulk_url: Url,
    /// The bulk URL without its query, for messages.
    bulk_url_text: String,
    credentials: Credentials,
    initial_backoff: Duration,
    max_backoff: Duration,
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

impl BulkClient {
    /// Builds the client, reading secrets and the CA file now so that a wrong setting
    /// fails at startup rather than on the first write.
    pub fn new(config: BulkClientConfig) -> Result<Self, BulkClientError> {
        let mut base_url =
            Url::parse(&config.url).map_err(|error| BulkClientError::InvalidUrl {
                url: config.url.clone(),
                reason: error.to_string(),
            })?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(BulkClientError::InvalidUrl {
                url: config.url,
                reason: "the scheme must be http or https".into(),
            });
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            let _ = base_url.set_password(None);
            return Err(BulkClientError::CredentialsInUrl {
                url: base_url.to_string(),
            });
        }
        if !base_url.path().ends_with('/') {
            base_url.set_path(&format!("{}/", base_url.path()));
        }
        let joined = |path: &str| {
            base_url
                .join(path)
                .map_err(|error| BulkClientError::InvalidUrl {
                    url: config.url.clone(),
                    reason: error.to_string(),
                })
        };
        let bulk_url_text = joined("_bulk")?.to_string();
        let bulk_url = joined(&format!("_bulk?filter_path={BULK_FILTER_PATH}"))?;

        let credentials = match &config.auth {
            ElasticsearchAuth::None => Credentials::None,
            ElasticsearchAuth::Basic { username, password } => Credentials::Basic {
                username: username.clone(),
                password: password
                    .resolve()
                    .map_err(|source| BulkClientError::Secret {
                        what: "password",
                        source,
                    })?,
            },
            ElasticsearchAuth::ApiKey(key) => {
                let key = key.resolve().map_err(|source| BulkClientError::Secret {
                    what: "API key",
                    source,
                })?;
                let mut value = HeaderValue::from_str(&format!("ApiKey {key}"))
                    .map_err(|_| BulkClientError::InvalidApiKey)?;
                value.set_sensitive(true);
                Credentials::Header(value)
            }
        };

        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("vigil-aggregator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(config.request_timeout);
        if let Some(path) = &config.ca_file {
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
            bulk_url,
            bulk_url_text,
            credentials,
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
        })
    }

    /// The base URL of the cluster.
    pub fn url(&self) -> &str {
        self.base_url.as_str()
    }

    pub(crate) async fn write(
        &self,
        documents: &[Document],
        shutdown: &CancellationToken,
    ) -> Result<WriteReport, SinkError> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; documents.len()];
        let mut pending: Vec<usize> = (0..documents.len()).collect();
        let mut attempts = 0;
        let mut retries = 0;
        let mut backoff = self.initial_backoff;
        while !pending.is_empty() {
            attempts += 1;
            let failure = match self.send(documents, &pending).await {
                Ok(results) => {
                    let mut to_retry = Vec::new();
                    let mut first_retry_reason = None;
                    for (&position, result) in pending.iter().zip(results) {
                        match result {
                            ItemResult::Final(outcome) => outcomes[position] = Some(outcome),
                            ItemResult::Retry(reason) => {
                                to_retry.push(position);
                                first_retry_reason.get_or_insert(reason);
                            }
                        }
                    }
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
                Err(error) if error.is_retryable() => error,
                Err(error) => return Err(SinkError::Refused(error)),
            };
            if shutdown.is_cancelled() {
                return Err(SinkError::Interrupted {
                    attempts,
                    last: failure,
                });
            }
            let delay = jittered(backoff);
            tracing::warn!(
                documents = pending.len(),
                attempt = attempts,
                retry_in = ?delay,
                error = %failure,
                "bulk write failed; retrying"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => {
                    return Err(SinkError::Interrupted { attempts, last: failure });
                }
            }
            retries += 1;
            backoff = (backoff * 2).min(self.max_backoff);
        }
        Ok(WriteReport {
            outcomes: outcomes
                .into_iter()
                .map(|outcome| outcome.expect("every document has an outcome once none is pending"))
                .collect(),
            retries,
        })
    }

    /// One bulk request for the documents at `pending`.
    async fn send(
        &self,
        documents: &[Document],
        pending: &[usize],
    ) -> Result<Vec<ItemResult>, ElasticsearchError> {
        let body = bulk_body(documents, pending);
        let request = self
            .authorized(self.http.post(self.bulk_url.clone()))
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        let (status, body) = self.exchange(request, &self.bulk_url_text).await?;
        parse_bulk_response(&self.bulk_url_text, status, &body, pending.len())
    }

    /// Installs every `<name>.json` in `dir` as the composable index template `<name>`
    /// (`PUT _index_template/<name>`), in name order; returns the names installed.
    pub async fn install_index_templates(&self, dir: &Path) -> Result<Vec<String>, TemplateError> {
        let read_error = |path: &Path| {
            let path = path.display().to_string();
            move |source| TemplateError::Read { path, source }
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error(dir))? {
            let path = entry.map_err(read_error(dir))?.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "json")
            {
                paths.push(path);
            }
        }
        paths.sort();

        let mut installed = Vec::new();
        for path in paths {
            let body = std::fs::read(&path).map_err(read_error(&path))?;
            serde_json::from_slice::<Value>(&body).map_err(|source| {
                TemplateError::InvalidJson {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            let name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            let url = self
                .base_url
                .join(&format!("_index_template/{name}"))
                .expect("a template name is a valid relative URL");
            let request = self
                .authorized(self.http.put(url.clone()))
                .header(CONTENT_TYPE, "application/json")
                .body(body);
            let request_error = |source| TemplateError::Request {
                path: path.display().to_string(),
                source,
            };
            let (status, response) = self
                .exchange(request, url.as_str())
                .await
                .map_err(request_error)?;
            if !status.is_success() {
                return Err(request_error(ElasticsearchError::Status {
                    url: url.to_string(),
                    status,
                    snippet: snippet(&response),
                }));
            }
            tracing::info!(template = %name, "index template installed");
            installed.push(name);
        }
        Ok(installed)
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.credentials {
            Credentials::None => request,
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
            Credentials::Header(value) => request.header(AUTHORIZATION, value.clone()),
        }
    }

    /// Sends `request` and reads the whole response body.
    async fn exchange(
        &self,
        request: RequestBuilder,
        url: &str,
    ) -> Result<(StatusCode, Vec<u8>), ElasticsearchError> {
        let transport_error = |error: reqwest::Error| ElasticsearchError::Transport {
            url: url.to_owned(),
            detail: error_chain(&error.without_url()),
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport_error)?;
        Ok((status, body.to_vec()))
    }
}

/// What became of one document of a bulk request.
#[derive(Debug, PartialEq, Eq)]
enum ItemResult {
    Final(Outcome),
    /// Failed in a way that may pass (429, 5xx); the reason is for logs.
    Retry(String),
}

#[derive(Serialize)]
struct BulkAction<'a> {
    create: BulkTarget<'a>,
}

#[derive(Serialize)]
struct BulkTarget<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Vec<BTreeMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// The NDJSON body: a `create` action line and the document line for each document.
fn bulk_body(documents: &[Document], pending: &[usize]) -> Vec<u8> {
    let size = pending
        .iter()
        .map(|&position| {
            let document = &documents[position];
            document.body.len() + document.index.len() + document.id.len() + 40
        })
        .sum();
    let mut body = Vec::with_capacity(size);
    for &position in pending {
        let document = &documents[position];
        let action = BulkAction {
            create: BulkTarget {
                index: &document.index,
                id: &document.id,
            },
        };
        serde_json::to_writer(&mut body, &action)
            .expect("an action of two strings always serializes");
        body.push(b'\n');
        body.extend_from_slice(&document.body);
        body.push(b'\n');
    }
    body
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
                .into_values()
                .next()
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
        ItemResult::Retry(reason)
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

/// The start of a response body, for error messages.
fn snippet(body: &[u8]) -> String {
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

/// `backoff` with its second half spread by the clock, so indexers that failed
/// together do not all retry at the same instant.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    half + half.mul_f64(f64::from(nanos % 1000) / 1000.0)
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
                ItemResult::Retry(
                    "429 Too Many Requests: es_rejected_execution_exception: rejected execution of coordinating operation".into()
                ),
                ItemResult::Final(Outcome::Rejected {
                    reason: "400 Bad Request: mapper_parsing_exception: failed to parse field [log.offset] of type [long]; caused by illegal_argument_exception: For input string: \"x\"".into()
                }),
                ItemResult::Retry("503 Service Unavailable".into()),
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

    fn shipped_templates() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/index-templates")
    }

    #[test]
    fn the_shipped_templates_cover_the_default_indices() {
        let names = crate::index::IndexNames::default();
        for index in [&names.logs, &names.metrics, &names.alerts] {
            let path = shipped_templates().join(format!("{index}.json"));
            let template: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(
                template["index_patterns"],
                json!([format!("{index}*")]),
                "{index}"
            );
            let properties = &template["template"]["mappings"]["properties"];
            assert_eq!(properties["@timestamp"]["type"], "date", "{index}");
            assert_eq!(properties["labels"]["subobjects"], false, "{index}");
        }
    }

    #[tokio::test]
    async fn templates_are_installed_under_their_file_names() {
        let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = targets.clone();
        let server = FakeElasticsearch::start(move |request| {
            seen.lock().unwrap().push(request.target.clone());
            (200, r#"{"acknowledged":true}"#.into())
        })
        .await;
        let installed = client(&server.url)
            .install_index_templates(&shipped_templates())
            .await
            .unwrap();
        assert_eq!(installed, ["vigil-alerts", "vigil-logs", "vigil-metrics"]);
        assert_eq!(
            *targets.lock().unwrap(),
            [
                "PUT /_index_template/vigil-alerts",
                "PUT /_index_template/vigil-logs",
                "PUT /_index_template/vigil-metrics"
            ]
        );
    }
}
