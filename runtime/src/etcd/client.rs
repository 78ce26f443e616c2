//! etcd's v3 API over its JSON gateway (`POST /v3/...` on the client port): the few
//! calls Vigil makes to read, watch and write its configuration prefixes.
//!
//! The JSON gateway is served by every etcd since 3.4 beside gRPC. Speaking it over
//! HTTP keeps the build free of protoc and of a generated gRPC client; configuration
//! traffic is a handful of small requests and one long-lived watch per prefix.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Why an etcd request failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No answer, or an answer cut off; `detail` has the whole chain of causes.
    #[error("etcd {endpoint}: {detail}")]
    Transport { endpoint: String, detail: String },
    #[error("etcd {endpoint}: {path} answered {status}: {message}")]
    Server {
        endpoint: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("etcd {endpoint}: {path}: unexpected answer: {detail}")]
    Decode {
        endpoint: String,
        path: String,
        detail: String,
    },
    #[error("etcd TLS file {path}: {detail}")]
    TlsFile { path: String, detail: String },
    #[error("etcd client: {0}")]
    Setup(String),
    #[error("`etcd.password`: {0}")]
    Password(#[source] crate::secret::SecretError),
    #[error("etcd watch on {prefix} ended")]
    WatchEnded { prefix: String },
    #[error("etcd watch on {prefix} cancelled (compacted at revision {compact_revision})")]
    WatchCancelled {
        prefix: String,
        compact_revision: i64,
    },
}

/// TLS material for HTTPS endpoints, already read from its files.
#[derive(Debug, Default)]
pub struct ClientTls {
    pub ca_pem: Option<Vec<u8>>,
    /// Certificate and key, PEM, for client authentication.
    pub identity_pem: Option<Vec<u8>>,
}

/// A client for one etcd cluster: requests go to the first endpoint that answers.
#[derive(Debug)]
pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last; requests start there.
    current: AtomicUsize,
    /// The token from `auth/authenticate`, when etcd authentication is on.
    token: Option<String>,
}

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Put(KeyValue),
    Delete { key: Vec<u8> },
}

/// One write of a transaction.
#[derive(Debug, Clone)]
pub enum TxnWrite {
    Put { key: String, value: String },
    Delete { key: String },
}

/// Time to set up a connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a whole unary request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive, so that a watch on a peer that vanished fails instead of hanging.
const KEEPALIVE: Duration = Duration::from_secs(10);

impl EtcdClient {
    /// A client for `endpoints` (`http://` or `https://` URLs); authenticates first
    /// when `credentials` are given.
    pub async fn connect(
        endpoints: &[String],
        credentials: Option<(&str, &str)>,
        tls: ClientTls,
    ) -> Result<Self, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::Setup("no endpoint given".to_owned()));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(KEEPALIVE)
            .tcp_keepalive_interval(KEEPALIVE)
            .tcp_keepalive_retries(3)
            .no_proxy();
        if let Some(ca) = &tls.ca_pem {
            let certificate = reqwest::Certificate::from_pem(ca)
                .map_err(|error| EtcdError::Setup(format!("CA certificate: {error}")))?;
            builder = builder.add_root_certificate(certificate);
        }
        if let Some(identity) = &tls.identity_pem {
            let identity = reqwest::Identity::from_pem(identity)
                .map_err(|error| EtcdError::Setup(format!("client certificate: {error}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|error| EtcdError::Setup(error.to_string()))?;
        let mut client = Self {
            http,
            endpoints: endpoints
                .iter()
                .map(|endpoint| endpoint.trim_end_matches('/').to_owned())
                .collect(),
            current: AtomicUsize::new(0),
            token: None,
        };
        if let Some((name, password)) = credentials {
            let response: AuthenticateResponse = client
                .call(
                    "/v3/auth/authenticate",
                    &json!({"name": name, "password": password}),
                )
                .await?;
            client.token = Some(response.token);
        }
        Ok(client)
    }

    /// Every key starting with `prefix`, and the store's revision they were read at.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let response: RangeResponse = self
            .call(
                "/v3/kv/range",
                &json!({"key": encode(prefix), "range_end": encode(prefix_end(prefix))}),
            )
            .await?;
        let revision = response.header.revision;
        let pairs = response
            .kvs
            .into_iter()
            .map(WireKeyValue::into_key_value)
            .collect::<Result<_, _>>()
            .map_err(|detail| self.decode_error("/v3/kv/range", detail))?;
        Ok((pairs, revision))
    }

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        let response: RangeResponse = self
            .call("/v3/kv/range", &json!({"key": encode(key)}))
            .await?;
        match response.kvs.into_iter().next() {
            Some(pair) => pair
                .into_key_value()
                .map(|pair| Some(pair.value))
                .map_err(|detail| self.decode_error("/v3/kv/range", detail)),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`, bound to `lease` when given.
    pub async fn put(&self, key: &str, value: &str, lease: Option<i64>) -> Result<(), EtcdError> {
        let mut request = json!({"key": encode(key), "value": encode(value)});
        if let Some(lease) = lease {
            request["lease"] = Value::String(lease.to_string());
        }
        let _: Value = self.call("/v3/kv/put", &request).await?;
        Ok(())
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        let _: Value = self
            .call("/v3/kv/deleterange", &json!({"key": encode(key)}))
            .await?;
        Ok(())
    }

    /// A lease of `ttl_seconds`; keys put with it go when it ends.
    pub async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64, EtcdError> {
        let response: LeaseGrantResponse = self
            .call("/v3/lease/grant", &json!({"TTL": ttl_seconds.to_string()}))
            .await?;
        Ok(response.id)
    }

    /// Applies `writes` in one transaction, only if no key under `prefix` changed
    /// after `revision`. Returns whether they were applied.
    pub async fn write_if_prefix_unchanged(
        &self,
        prefix: &str,
        revision: i64,
        writes: &[TxnWrite],
    ) -> Result<bool, EtcdError> {
        let success: Vec<Value> = writes
            .iter()
            .map(|write| match write {
                TxnWrite::Put { key, value } => {
                    json!({"request_put": {"key": encode(key), "value": encode(value)}})
                }
                TxnWrite::Delete { key } => {
                    json!({"request_delete_range": {"key": encode(key)}})
                }
            })
            .collect();
        let request = json!({
            "compare": [{
                "target": "MOD",
                "result": "LESS",
                "key": encode(prefix),
                "range_end": encode(prefix_end(prefix)),
                "mod_revision": (revision + 1).to_string(),
            }],
            "success": success,
        });
        let response: TxnResponse = self.call("/v3/kv/txn", &request).await?;
        Ok(response.succeeded)
    }

    /// Follows every change under `prefix` from `start_revision` on.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<PrefixWatch, EtcdError> {
        let request = json!({"create_request": {
            "key": encode(prefix),
            "range_end": encode(prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let (endpoint, response) = self.send("/v3/watch", &request, None).await?;
        Ok(PrefixWatch {
            prefix: prefix.to_owned(),
            endpoint,
            response,
            buffer: Vec::new(),
        })
    }

    /// A unary call: the answer of the first endpoint that answers, decoded.
    async fn call<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, EtcdError> {
        let (endpoint, response) = self.send(path, body, Some(REQUEST_TIMEOUT)).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|error| transport_error(&endpoint, &error))?;
        serde_json::from_slice(&bytes).map_err(|error| EtcdError::Decode {
            endpoint,
            path: path.to_owned(),
            detail: error.to_string(),
        })
    }

    /// Sends `body` to `path`, trying the endpoints in turn from the one that
    /// answered last; an answer other than 200 is an error with etcd's message.
    async fn send(
        &self,
        path: &str,
        body: &Value,
        timeout: Option<Duration>,
    ) -> Result<(String, reqwest::Response), EtcdError> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last_error = None;
        for step in 0..self.endpoints.len() {
            let index = (first + step) % self.endpoints.len();
            let endpoint = &self.endpoints[index];
            let mut request = self.http.post(format!("{endpoint}{path}")).json(body);
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            if let Some(token) = &self.token {
                request = request.header(reqwest::header::AUTHORIZATION, token);
            }
            match request.send().await {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    let status = response.status();
                    if status.is_success() {
                        return Ok((endpoint.clone(), response));
                    }
                    let text = response.text().await.unwrap_or_default();
                    return Err(EtcdError::Server {
                        endpoint: endpoint.clone(),
                        path: path.to_owned(),
                        status: status.as_u16(),
                        message: server_message(&text),
                    });
                }
                Err(error) => last_error = Some(transport_error(endpoint, &error)),
            }
        }
        Err(last_error.unwrap_or_else(|| EtcdError::Setup("no endpoint given".to_owned())))
    }

    fn decode_error(&self, path: &str, detail: String) -> EtcdError {
        let endpoint = self.endpoints[self.current.load(Ordering::Relaxed)].clone();
        EtcdError::Decode {
            endpoint,
            path: path.to_owned(),
            detail,
        }
    }
}

/// A running watch: each [`PrefixWatch::next`] returns the events of one answer.
#[derive(Debug)]
pub struct PrefixWatch {
    prefix: String,
    endpoint: String,
    response: reqwest::Response,
    /// Bytes received after the last complete line.
    buffer: Vec<u8>,
}

impl PrefixWatch {
    /// The next batch of events (possibly empty, for etcd's own notices), or `None`
    /// when etcd closed the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<WatchEvent>>, EtcdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return self.decode(&line).map(Some);
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|error| transport_error(&self.endpoint, &error))?;
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => {
                    let line = std::mem::take(&mut self.buffer);
                    return self.decode(&line).map(Some);
                }
            }
        }
    }

    fn decode(&self, line: &[u8]) -> Result<Vec<WatchEvent>, EtcdError> {
        let decode_error = |detail: String| EtcdError::Decode {
            endpoint: self.endpoint.clone(),
            path: "/v3/watch".to_owned(),
            detail,
        };
        let message: WatchMessage =
            serde_json::from_slice(line).map_err(|error| decode_error(error.to_string()))?;
        let result = match (message.result, message.error) {
            (Some(result), _) => result,
            (None, Some(error)) => {
                return Err(EtcdError::Server {
                    endpoint: self.endpoint.clone(),
                    path: "/v3/watch".to_owned(),
                    status: 200,
                    message: error.message,
                });
            }
            (None, None) => return Err(decode_error("neither result nor error".to_owned())),
        };
        if result.canceled {
            return Err(EtcdError::WatchCancelled {
                prefix: self.prefix.clone(),
                compact_revision: result.compact_revision,
            });
        }
        result
            .events
            .into_iter()
            .map(|event| {
                let pair = event.kv.into_key_value()?;
                Ok(match event.kind.as_deref() {
                    None | Some("PUT") => WatchEvent::Put(pair),
                    Some("DELETE") => WatchEvent::Delete { key: pair.key },
                    Some(other) => return Err(format!("unknown event type `{other}`")),
                })
            })
            .collect::<Result<_, _>>()
            .map_err(decode_error)
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // A prefix of only 0xff bytes (or none): every key from it on.
    vec![0]
}

/// Keys and values travel base64-encoded (proto3's JSON mapping of bytes).
fn encode(bytes: impl AsRef<[u8]>) -> String {
    BASE64.encode(bytes)
}

/// A transport error with each of its causes, as reqwest's own message is terse.
fn transport_error(endpoint: &str, error: &reqwest::Error) -> EtcdError {
    let mut detail = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        detail.push_str(": ");
        detail.push_str(&inner.to_string());
        cause = inner.source();
    }
    EtcdError::Transport {
        endpoint: endpoint.to_owned(),
        detail,
    }
}

/// etcd's message from an error answer, or the answer itself.
fn server_message(text: &str) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        message: String,
        #[serde(default)]
        error: String,
    }
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) if !body.message.is_empty() => body.message,
        Ok(body) if !body.error.is_empty() => body.error,
        _ => text.trim().chars().take(200).collect(),
    }
}

/// int64 fields arrive as JSON strings (proto3's JSON mapping); numbers are taken too.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Text(String),
        Number(i64),
    }
    match Int64::deserialize(deserializer)? {
        Int64::Number(number) => Ok(number),
        Int64::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ResponseHeader {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Debug, Deserialize)]
struct WireKeyValue {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

impl WireKeyValue {
    fn into_key_value(self) -> Result<KeyValue, String> {
        let key = BASE64
            .decode(&self.key)
            .map_err(|error| format!("key is not base64: {error}"))?;
        let value = BASE64
            .decode(&self.value)
            .map_err(|error| format!("value is not base64: {error}"))?;
        Ok(KeyValue { key, value })
    }
}

#[derive(Debug, Deserialize)]
struct RangeResponse {
    #[serde(default)]
    header: ResponseHeader,
    #[serde(default)]
    kvs: Vec<WireKeyValue>,
}

#[derive(Debug, Deserialize)]
struct AuthenticateResponse {
    token: String,
}

#[derive(Debug, Deserialize)]
struct LeaseGrantResponse {
    #[serde(rename = "ID", deserialize_with = "int64")]
    id: i64,
}

#[derive(Debug, Deserialize)]
struct TxnResponse {
    #[serde(default)]
    succeeded: bool,
}

#[derive(Debug, Deserialize)]
struct WatchMessage {
    result: Option<WatchResult>,
    error: Option<WatchError>,
}

#[derive(Debug, Deserialize)]
struct WatchError {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct WatchResult {
    #[serde(default)]
    canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<WireEvent>,
}

#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    kv: WireKeyValue,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end("/vigil/rules/"), b"/vigil/rules0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn error_answers_give_etcds_message() {
        assert_eq!(
            server_message(
                r#"{"error":"etcdserver: user name is empty","message":"etcdserver: user name is empty","code":3}"#
            ),
            "etcdserver: user name is empty"
        );
        assert_eq!(server_message("502 Bad Gateway\n"), "502 Bad Gateway");
    }

    #[test]
    fn int64_fields_are_read_from_strings_and_numbers() {
        let header: ResponseHeader = serde_json::from_str(r#"{"revision":"42"}"#).unwrap();
        assert_eq!(header.revision, 42);
        let header: ResponseHeader = serde_json::from_str(r#"{"revision":7}"#).unwrap();
        assert_eq!(header.revision, 7);
        let error = serde_json::from_str::<ResponseHeader>(r#"{"revision":"x"}"#).unwrap_err();
        assert!(error.to_string().contains("invalid digit"), "{error}");
    }
}
