//! Elasticsearch's APIs as `setup` uses them: reading, putting and creating the
//! objects the index stage's documents need, and telling an API the server lacks from
//! an object it does not hold.

use super::progress::Change;
use super::{SetupError, SetupSummary};
use crate::index::http_client::{HttpEndpoint, snippet};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::io::Write;

/// What a GET found.
pub(super) enum Current {
    Missing,
    Present(Value),
    Unsupported {
        method: Method,
        url: String,
        status: StatusCode,
        snippet: String,
    },
}

/// Elasticsearch's APIs as setup uses them.
pub(super) struct Elasticsearch<'a> {
    pub(super) endpoint: &'a HttpEndpoint,
}

impl Elasticsearch<'_> {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>, String), SetupError> {
        let url = self.endpoint.url(path);
        let text = url.to_string();
        let mut request = self.endpoint.request(method, url);
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let (status, response) =
            self.endpoint
                .exchange(request)
                .await
                .map_err(|detail| SetupError::Transport {
                    url: text.clone(),
                    detail,
                })?;
        Ok((status, response, text))
    }

    pub(super) async fn get(&self, path: &str) -> Result<Current, SetupError> {
        let (status, body, url) = self.send(Method::GET, path, None).await?;
        if is_unsupported(status, &body) {
            return Ok(Current::Unsupported {
                method: Method::GET,
                url,
                status,
                snippet: snippet(&body),
            });
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(Current::Missing);
        }
        if !status.is_success() {
            return Err(SetupError::Status {
                what: format!("reading {path}"),
                method: Method::GET,
                url,
                status,
                snippet: snippet(&body),
            });
        }
        serde_json::from_slice(&body)
            .map(Current::Present)
            .map_err(|_| SetupError::Status {
                what: format!("reading {path}: the answer is not JSON"),
                method: Method::GET,
                url,
                status,
                snippet: snippet(&body),
            })
    }

    /// What the server holds at `path`, if anything, for a part it must support.
    pub(super) async fn present(
        &self,
        path: &str,
        part: &'static str,
    ) -> Result<Option<Value>, SetupError> {
        match self.get(path).await? {
            Current::Missing => Ok(None),
            Current::Present(value) => Ok(Some(value)),
            Current::Unsupported {
                method,
                url,
                status,
                snippet,
            } => Err(SetupError::Unsupported {
                part,
                method,
                url,
                status,
                snippet,
            }),
        }
    }

    /// Whether a part is supported, judging by a GET of one of its objects; an
    /// unsupported part is skipped when allowed, and an error otherwise.
    pub(super) fn supported(
        &self,
        part: &'static str,
        current: Current,
        skip_unsupported: bool,
        summary: &mut SetupSummary,
        progress: &mut dyn Write,
    ) -> Result<bool, SetupError> {
        let Current::Unsupported {
            method,
            url,
            status,
            snippet,
        } = current
        else {
            return Ok(true);
        };
        if !skip_unsupported {
            return Err(SetupError::Unsupported {
                part,
                method,
                url,
                status,
                snippet,
            });
        }
        writeln!(
            progress,
            "  {part:<20} skipped: not supported by this server ({method} {url} answered {status})"
        )?;
        summary.skipped.push(part);
        Ok(false)
    }

    pub(super) async fn put(
        &self,
        path: &str,
        body: &Value,
        part: &'static str,
    ) -> Result<(), SetupError> {
        let (status, response, url) = self.send(Method::PUT, path, Some(body)).await?;
        if is_unsupported(status, &response) {
            return Err(SetupError::Unsupported {
                part,
                method: Method::PUT,
                url,
                status,
                snippet: snippet(&response),
            });
        }
        if !status.is_success() {
            return Err(SetupError::Status {
                what: format!("installing {path}"),
                method: Method::PUT,
                url,
                status,
                snippet: snippet(&response),
            });
        }
        Ok(())
    }

    /// Puts `body` unless the server holds the same content (by hash).
    pub(super) async fn apply(
        &self,
        path: &str,
        body: &Value,
        exists: bool,
        existing_hash: Option<String>,
        hash: &str,
    ) -> Result<Change, SetupError> {
        if exists && existing_hash.as_deref() == Some(hash) {
            return Ok(Change::Unchanged);
        }
        let part = path_part(path);
        self.put(path, body, part).await?;
        Ok(if exists {
            Change::Updated
        } else {
            Change::Created
        })
    }

    pub(super) async fn create_data_stream(&self, name: &str) -> Result<(), SetupError> {
        let path = format!("_data_stream/{name}");
        let (status, response, url) = self.send(Method::PUT, &path, None).await?;
        if status.is_success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&response);
        if text.contains("resource_already_exists_exception") || text.contains("already exists as")
        {
            return Err(SetupError::IndexInTheWay {
                name: name.to_owned(),
            });
        }
        Err(SetupError::Status {
            what: format!("creating data stream {name}"),
            method: Method::PUT,
            url,
            status,
            snippet: snippet(&response),
        })
    }
}

fn path_part(path: &str) -> &'static str {
    if path.starts_with("_ilm/") {
        "lifecycle policies"
    } else if path.starts_with("_component_template/") {
        "component templates"
    } else if path.starts_with("_index_template/") {
        "index templates"
    } else {
        "data streams"
    }
}

/// Whether an answer says the server has no such API: Elasticsearch answers an
/// unknown endpoint with 400 "no handler found for uri", others with 404, 405 or
/// 501 and no Elasticsearch error object.
fn is_unsupported(status: StatusCode, body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    if text.contains("no handler found for uri") {
        return true;
    }
    match status {
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => true,
        StatusCode::NOT_FOUND => {
            let error = serde_json::from_slice::<Value>(body).ok();
            !error.is_some_and(|error| error["error"].is_object() || error["status"] == 404)
        }
        _ => false,
    }
}
