//! Reading back what Vigil wrote to Elasticsearch.
//!
//! Small blocking helpers over the Elasticsearch REST API: refresh, count, search and
//! listing every document of an index. The free functions use the shared
//! [`TestServers`](crate::TestServers); [`ElasticClient`] talks to any server.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::RequestBuilder;
use serde_json::{Value, json};

use crate::http::with_client;

/// How many hits one scroll page of [`ElasticClient::all_hits`] asks for.
const SCROLL_PAGE_SIZE: usize = 1000;
/// How long one request to the server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening a scroll may take: the test server snapshots the whole index.
const SCROLL_START_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the server keeps a scroll context between pages.
const SCROLL_KEEP_ALIVE: &str = "1m";

/// A blocking client for one Elasticsearch-API server.
#[derive(Debug, Clone)]
pub struct ElasticClient {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:40126`.
    base_url: String,
}

impl ElasticClient {
    /// A client for the server at `base_url`.
    pub fn new(base_url: impl Into<String>) -> ElasticClient {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        ElasticClient { base_url }
    }

    /// A client for the shared test server, starting the servers if needed.
    pub fn shared() -> ElasticClient {
        ElasticClient::new(crate::TestServers::get().elasticsearch_url())
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Makes everything indexed so far in `index` (a name or pattern) searchable.
    ///
    /// An index that does not exist yet is not an error.
    pub fn refresh(&self, index: &str) {
        self.call_allowing_missing(&format!("refresh {index}"), |http| {
            http.post(self.url(&format!("{index}/_refresh")))
        });
    }

    /// Refreshes `index` and counts its documents; 0 if the index does not exist yet.
    pub fn count(&self, index: &str) -> u64 {
        self.refresh(index);
        self.call_allowing_missing(&format!("count {index}"), |http| {
            http.get(self.url(&format!("{index}/_count")))
        })
        .map_or(0, |response| {
            response["count"]
                .as_u64()
                .unwrap_or_else(|| panic!("count of {index}: no `count` in {response}"))
        })
    }

    /// Runs a search with request `body` on `index` and returns the whole response.
    ///
    /// Does not refresh first; call [`refresh`](Self::refresh) to see recent writes.
    pub fn search(&self, index: &str, body: Value) -> Value {
        self.call(&format!("search {index}"), |http| {
            http.post(self.url(&format!("{index}/_search"))).json(&body)
        })
    }

    /// Refreshes `index` and returns the ids of all its documents, sorted.
    pub fn all_ids(&self, index: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .all_hits(index)
            .iter()
            .map(|hit| {
                hit["_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("hit without `_id` in {index}: {hit}"))
                    .to_owned()
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Refreshes `index` and returns all its hits (`_id`, `_index`, `_source`), by
    /// scrolling through it; empty if the index does not exist yet.
    pub fn all_hits(&self, index: &str) -> Vec<Value> {
        self.refresh(index);
        // Opening the scroll takes the test server seconds per 10,000 documents.
        let Some(mut page) = self.call_allowing_missing_within(
            &format!("scroll {index}"),
            SCROLL_START_TIMEOUT,
            |http| {
                http.post(self.url(&format!("{index}/_search?scroll={SCROLL_KEEP_ALIVE}")))
                    .json(&json!({ "size": SCROLL_PAGE_SIZE, "sort": ["_doc"] }))
            },
        ) else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        loop {
            let page_hits = page["hits"]["hits"]
                .as_array()
                .unwrap_or_else(|| panic!("scroll of {index}: no hits array in {page}"));
            if page_hits.is_empty() {
                break;
            }
            hits.extend(page_hits.iter().cloned());
            let scroll_id = page["_scroll_id"]
                .as_str()
                .unwrap_or_else(|| panic!("scroll of {index}: no `_scroll_id` in {page}"))
                .to_owned();
            page = self.call(&format!("scroll {index}"), |http| {
                http.post(self.url("_search/scroll")).json(&json!({
                    "scroll": SCROLL_KEEP_ALIVE,
                    "scroll_id": scroll_id,
                }))
            });
        }
        if let Some(scroll_id) = page["_scroll_id"].as_str() {
            self.call(&format!("clear scroll of {index}"), |http| {
                http.delete(self.url("_search/scroll"))
                    .json(&json!({ "scroll_id": scroll_id }))
            });
        }
        hits
    }

    /// Sends `actions` (action and source lines, as for the `_bulk` API) and returns
    /// the response; panics if the request fails, not if single items do.
    pub fn bulk(&self, actions: &[Value]) -> Value {
        let mut body = String::new();
        for action in actions {
            body.push_str(&action.to_string());
            body.push('\n');
        }
        self.call("bulk", |http| {
            http.post(self.url("_bulk"))
                .header("content-type", "application/x-ndjson")
                .body(body)
        })
    }

    /// Sends any request and returns its JSON response; panics on a non-2xx status.
    ///
    /// `request` receives the HTTP client; paths go through [`url`](Self::url).
    pub fn call(
        &self,
        what: &str,
        request: impl FnOnce(&reqwest::blocking::Client) -> RequestBuilder + Send,
    ) -> Value {
        match self.send(what, REQUEST_TIMEOUT, request) {
            (status, body) if status.is_success() => body,
            (status, body) => panic!("{what} at {}: HTTP {status}: {body}", self.base_url),
        }
    }

    /// The full URL of `path` (without a leading slash) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// Like [`call`](Self::call), but `None` when the server answers 404.
    fn call_allowing_missing(
        &self,
        what: &str,
        request: impl FnOnce(&reqwest::blocking::Client) -> RequestBuilder + Send,
    ) -> Option<Value> {
        self.call_allowing_missing_within(what, REQUEST_TIMEOUT, request)
    }

    /// Like [`call_allowing_missing`](Self::call_allowing_missing), waiting at most
    /// `timeout` for the answer.
    fn call_allowing_missing_within(
        &self,
        what: &str,
        timeout: Duration,
        request: impl FnOnce(&reqwest::blocking::Client) -> RequestBuilder + Send,
    ) -> Option<Value> {
        match self.send(what, timeout, request) {
            (StatusCode::NOT_FOUND, _) => None,
            (status, body) if status.is_success() => Some(body),
            (status, body) => panic!("{what} at {}: HTTP {status}: {body}", self.base_url),
        }
    }

    fn send(
        &self,
        what: &str,
        timeout: Duration,
        request: impl FnOnce(&reqwest::blocking::Client) -> RequestBuilder + Send,
    ) -> (StatusCode, Value) {
        with_client(|http| {
            let response = request(http)
                .timeout(timeout)
                .send()
                .unwrap_or_else(|error| panic!("{what} at {}: {error}", self.base_url));
            let status = response.status();
            let text = response.text().unwrap_or_else(|error| {
                panic!(
                    "{what} at {}: cannot read the response: {error}",
                    self.base_url
                )
            });
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, body)
        })
    }
}

/// Refreshes `index` on the shared server; see [`ElasticClient::refresh`].
pub fn refresh(index: &str) {
    ElasticClient::shared().refresh(index);
}

/// Counts the documents of `index` on the shared server; see [`ElasticClient::count`].
pub fn count(index: &str) -> u64 {
    ElasticClient::shared().count(index)
}

/// Searches `index` on the shared server; see [`ElasticClient::search`].
pub fn search(index: &str, body: Value) -> Value {
    ElasticClient::shared().search(index, body)
}

/// The sorted ids of all documents of `index` on the shared server; see
/// [`ElasticClient::all_ids`].
pub fn all_ids(index: &str) -> Vec<String> {
    ElasticClient::shared().all_ids(index)
}

/// All hits of `index` on the shared server; see [`ElasticClient::all_hits`].
pub fn all_hits(index: &str) -> Vec<Value> {
    ElasticClient::shared().all_hits(index)
}
