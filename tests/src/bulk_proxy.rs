//! A fault-injecting HTTP proxy in front of the Elasticsearch-API test server: it
//! forwards every request, except that chosen documents of `_bulk` requests are
//! answered 429 (`es_rejected_execution_exception`) instead of being forwarded, as
//! an overloaded Elasticsearch answers them. No real server can be made to reject
//! chosen documents on demand; everything else is the real server's answer.
//!
//! The proxy records the document ids of every bulk request it saw and which it
//! throttled, so a test can assert which documents were sent again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::http::with_client;
use crate::http_exchange::{HttpRequest, HttpResponse, serve};

/// Decides whether to throttle a document: its id and how many times the proxy
/// saw it before (0 the first time).
type Throttle = dyn Fn(&str, usize) -> bool + Send + Sync;

/// One bulk request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenBulk {
    /// Ids of all documents of the request, in order.
    pub ids: Vec<String>,
    /// Ids of the documents the proxy answered 429 instead of forwarding.
    pub throttled: Vec<String>,
}

/// The proxy; it runs until the process ends.
#[derive(Debug, Clone)]
pub struct BulkProxy {
    port: u16,
    state: Arc<ProxyState>,
}

struct ProxyState {
    upstream: String,
    throttle: Box<Throttle>,
    /// Times each document id was seen.
    seen: Mutex<HashMap<String, usize>>,
    bulks: Mutex<Vec<SeenBulk>>,
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl BulkProxy {
    /// Starts a proxy to `upstream` (a base URL) on a free port; `throttle` picks
    /// the documents answered 429.
    pub fn start(
        upstream: &str,
        throttle: impl Fn(&str, usize) -> bool + Send + Sync + 'static,
    ) -> BulkProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            throttle: Box::new(throttle),
            seen: Mutex::new(HashMap::new()),
            bulks: Mutex::new(Vec::new()),
        });
        let handler_state = Arc::clone(&state);
        let port = serve("bulk proxy", move |request| handler_state.handle(request));
        BulkProxy { port, state }
    }

    /// The base URL to give the client instead of the server's.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every bulk request seen so far, oldest first.
    pub fn bulk_requests(&self) -> Vec<SeenBulk> {
        lock(&self.state.bulks).clone()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ProxyState {
    fn handle(&self, request: HttpRequest) -> HttpResponse {
        let path = request.target.split('?').next().unwrap_or_default();
        if request.method == "POST" && path.ends_with("/_bulk") {
            self.bulk(request)
        } else {
            let content_type = request.header("content-type").map(str::to_owned);
            self.forward(
                &request.method,
                &request.target,
                content_type.as_deref(),
                request.body,
            )
        }
    }

    fn forward(
        &self,
        method: &str,
        target: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> HttpResponse {
        let url = format!("{}{target}", self.upstream);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let content_type = content_type.unwrap_or("application/json").to_owned();
        with_client(|http| {
            match http
                .request(method, &url)
                .header("content-type", content_type)
                .body(body)
                .send()
            {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = response.bytes().map(|b| b.to_vec()).unwrap_or_default();
                    HttpResponse::json(status, body)
                }
                Err(error) => HttpResponse::json(
                    502,
                    json!({"error": format!("proxy: upstream {url}: {error}")}).to_string(),
                ),
            }
        })
    }

    /// Throttles the chosen documents and forwards the rest, then merges the
    /// server's items with 429 items in the places of the throttled ones.
    fn bulk(&self, request: HttpRequest) -> HttpResponse {
        let text = String::from_utf8_lossy(&request.body).into_owned();
        let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
        let mut ids = Vec::new();
        let mut throttled_at = Vec::new();
        let mut forwarded = String::new();
        for (position, pair) in lines.chunks(2).enumerate() {
            let action: Value = serde_json::from_str(pair[0]).unwrap_or(Value::Null);
            let id = action
                .as_object()
                .and_then(|action| action.values().next())
                .and_then(|target| target["_id"].as_str())
                .unwrap_or_default()
                .to_owned();
            let times = {
                let mut seen = lock(&self.seen);
                let count = seen.entry(id.clone()).or_default();
                *count += 1;
                *count - 1
            };
            if (self.throttle)(&id, times) {
                throttled_at.push(position);
            } else {
                for line in pair {
                    forwarded.push_str(line);
                    forwarded.push('\n');
                }
            }
            ids.push(id);
        }
        lock(&self.bulks).push(SeenBulk {
            throttled: throttled_at.iter().map(|&p| ids[p].clone()).collect(),
            ids: ids.clone(),
        });

        let mut upstream_items = Vec::new();
        let mut upstream_errors = false;
        if !forwarded.is_empty() {
            let response = self.forward(
                "POST",
                &request.target,
                Some("application/x-ndjson"),
                forwarded.into_bytes(),
            );
            if response.status != 200 {
                return response;
            }
            let Ok(body) = serde_json::from_slice::<Value>(&response.body) else {
                return response;
            };
            upstream_errors = body["errors"].as_bool().unwrap_or(false);
            upstream_items = body["items"].as_array().cloned().unwrap_or_default();
        }
        let mut upstream_items = upstream_items.into_iter();
        let items: Vec<Value> = (0..ids.len())
            .map(|position| {
                if throttled_at.contains(&position) {
                    json!({"create": {"status": 429, "error": {
                        "type": "es_rejected_execution_exception",
                        "reason": "rejected execution of coordinating operation (injected by the test proxy)"
                    }}})
                } else {
                    upstream_items.next().unwrap_or(Value::Null)
                }
            })
            .collect();
        let errors = upstream_errors || !throttled_at.is_empty();
        HttpResponse::json(200, json!({"errors": errors, "items": items}).to_string())
    }
}
