//! Kibana's saved objects API, the last step of `setup`: the data views,
//! visualisations, saved searches and dashboards of `dashboards/kibana` are imported
//! so the documents the index stage writes can be looked at right away.
//!
//! One `POST /api/saved_objects/_import?overwrite=true` per NDJSON file, as a
//! multipart upload with the `kbn-xsrf` header Kibana requires. Objects keep their
//! ids, so importing again replaces them instead of adding copies.

use super::http_client::{BulkClientError, ElasticsearchAuth, HttpEndpoint, snippet};
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// Boundary of the multipart body; it cannot occur in NDJSON lines of saved objects,
/// which are JSON and never hold a bare CR LF.
const BOUNDARY: &str = "vigil-saved-objects-7d1f3c9a";
/// Kibana imports large files slowly; give it time.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where Kibana is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KibanaConfig {
    /// Base URL, for example `https://kibana.example:5601`.
    pub url: String,
    pub auth: ElasticsearchAuth,
    pub ca_file: Option<std::path::PathBuf>,
    /// Kibana space to import into; the default space when `None`.
    pub space: Option<String>,
}

/// A saved objects import that failed.
#[derive(Debug, Error)]
pub enum KibanaError {
    #[error(transparent)]
    Config(#[from] BulkClientError),
    #[error("Kibana space `{0}` is not a valid space id (lowercase letters, digits, `_` and `-`)")]
    InvalidSpace(String),
    #[error("request to Kibana at {url} failed: {detail}")]
    Transport { url: String, detail: String },
    #[error("Kibana at {url} answered {status} to the import of {file}: {snippet}")]
    Status {
        url: String,
        file: String,
        status: reqwest::StatusCode,
        snippet: String,
    },
    #[error("Kibana imported {imported} of the {sent} saved objects of {file}: {errors}")]
    Incomplete {
        file: String,
        sent: usize,
        imported: usize,
        errors: String,
    },
}

/// Imports saved objects into one Kibana space.
#[derive(Debug)]
pub struct KibanaClient {
    endpoint: HttpEndpoint,
    /// `api/saved_objects/_import?overwrite=true`, under the space's prefix.
    import_path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportResponse {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    success_count: usize,
    #[serde(default)]
    errors: Vec<Value>,
}

impl KibanaClient {
    pub fn new(config: &KibanaConfig) -> Result<Self, KibanaError> {
        let endpoint = HttpEndpoint::new(
            "Kibana",
            &config.url,
            &config.auth,
            config.ca_file.as_deref(),
            None,
            IMPORT_TIMEOUT,
        )?;
        let prefix = match &config.space {
            None => String::new(),
            Some(space)
                if !space.is_empty()
                    && space.bytes().all(|byte| {
                        byte.is_ascii_lowercase()
                            || byte.is_ascii_digit()
                            || byte == b'_'
                            || byte == b'-'
                    }) =>
            {
                format!("s/{space}/")
            }
            Some(space) => return Err(KibanaError::InvalidSpace(space.clone())),
        };
        Ok(Self {
            endpoint,
            import_path: format!("{prefix}api/saved_objects/_import?overwrite=true"),
        })
    }

    /// The base URL of Kibana.
    pub fn url(&self) -> &str {
        self.endpoint.base_url().as_str()
    }

    /// Imports the saved objects of one NDJSON file (`file` names it in messages and
    /// in the upload); returns how many Kibana imported, which is all of them.
    pub async fn import(&self, file: &Path, ndjson: &str) -> Result<usize, KibanaError> {
        let name = file
            .file_name()
            .map_or_else(|| "saved-objects.ndjson".into(), |n| n.to_string_lossy());
        let sent = ndjson
            .lines()
            .filter(|line| !line.trim().is_empty())
            .count();
        let url = self.endpoint.url(&self.import_path);
        let url_text = url.to_string();
        let mut body = Vec::with_capacity(ndjson.len() + 256);
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/ndjson\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(ndjson.as_bytes());
        if !ndjson.ends_with('\n') {
            body.push(b'\n');
        }
        body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
        let request = self
            .endpoint
            .request(reqwest::Method::POST, url)
            .header(
                CONTENT_TYPE,
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .header("kbn-xsrf", "true")
            .body(body);
        let (status, response) =
            self.endpoint
                .exchange(request)
                .await
                .map_err(|detail| KibanaError::Transport {
                    url: url_text.clone(),
                    detail,
                })?;
        let status_error = || KibanaError::Status {
            url: url_text.clone(),
            file: file.display().to_string(),
            status,
            snippet: snippet(&response),
        };
        if !status.is_success() {
            return Err(status_error());
        }
        let parsed: ImportResponse =
            serde_json::from_slice(&response).map_err(|_| status_error())?;
        if !parsed.success || parsed.success_count != sent {
            return Err(KibanaError::Incomplete {
                file: file.display().to_string(),
                sent,
                imported: parsed.success_count,
                errors: describe_errors(&parsed.errors),
            });
        }
        Ok(parsed.success_count)
    }
}

/// `type id: error type (detail)`, for each object Kibana refused.
fn describe_errors(errors: &[Value]) -> String {
    if errors.is_empty() {
        return "Kibana named no error".to_owned();
    }
    errors
        .iter()
        .map(|error| {
            let kind = error["type"].as_str().unwrap_or("?");
            let id = error["id"].as_str().unwrap_or("?");
            let cause = &error["error"];
            let cause_type = cause["type"].as_str().unwrap_or("unknown");
            let detail = match cause_type {
                "missing_references" => cause["references"]
                    .as_array()
                    .map(|references| {
                        references
                            .iter()
                            .map(|r| {
                                format!(
                                    "{} {}",
                                    r["type"].as_str().unwrap_or("?"),
                                    r["id"].as_str().unwrap_or("?")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
                _ => cause["message"].as_str().unwrap_or_default().to_owned(),
            };
            if detail.is_empty() {
                format!("{kind} {id}: {cause_type}")
            } else {
                format!("{kind} {id}: {cause_type} ({detail})")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::fake_elasticsearch::FakeElasticsearch;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    fn config(url: &str) -> KibanaConfig {
        KibanaConfig {
            url: url.into(),
            auth: ElasticsearchAuth::None,
            ca_file: None,
            space: None,
        }
    }

    const OBJECTS: &str = concat!(
        r#"{"type":"index-pattern","id":"vigil-logs","attributes":{"title":"vigil-logs*"}}"#,
        "\n",
        r#"{"type":"search","id":"vigil-logs-all","attributes":{"title":"Logs"}}"#,
        "\n"
    );

    #[tokio::test]
    async fn a_file_is_uploaded_as_multipart_with_the_xsrf_header() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let requests = seen.clone();
        let server = FakeElasticsearch::start(move |request| {
            requests
                .lock()
                .unwrap()
                .push((request.target.clone(), request.body.clone()));
            (200, json!({"success": true, "successCount": 2}).to_string())
        })
        .await;
        let client = KibanaClient::new(&KibanaConfig {
            space: Some("ops".into()),
            ..config(&server.url)
        })
        .unwrap();
        let imported = client
            .import(Path::new("dashboards/kibana/logs.ndjson"), OBJECTS)
            .await
            .unwrap();
        assert_eq!(imported, 2);
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0].0,
            "POST /s/ops/api/saved_objects/_import?overwrite=true"
        );
        let body = &seen[0].1;
        assert!(
            body.starts_with(&format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"logs.ndjson\"\r\n")),
            "{body}"
        );
        assert!(body.contains(OBJECTS), "{body}");
        assert!(body.ends_with(&format!("\r\n--{BOUNDARY}--\r\n")), "{body}");
    }

    #[tokio::test]
    async fn refused_objects_are_named() {
        let server = FakeElasticsearch::start(|_| {
            (
                200,
                json!({
                    "success": false,
                    "successCount": 1,
                    "errors": [{
                        "id": "vigil-logs-all",
                        "type": "search",
                        "error": {"type": "missing_references", "references": [{"type": "index-pattern", "id": "vigil-logs"}]}
                    }]
                })
                .to_string(),
            )
        })
        .await;
        let client = KibanaClient::new(&config(&server.url)).unwrap();
        let error = client
            .import(Path::new("logs.ndjson"), OBJECTS)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "Kibana imported 1 of the 2 saved objects of logs.ndjson: search vigil-logs-all: missing_references (index-pattern vigil-logs)"
        );
    }

    #[tokio::test]
    async fn an_error_status_quotes_the_answer() {
        let server =
            FakeElasticsearch::start(|_| (401, r#"{"message":"unauthorized"}"#.into())).await;
        let client = KibanaClient::new(&config(&server.url)).unwrap();
        let error = client
            .import(Path::new("logs.ndjson"), OBJECTS)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with(r#"answered 401 Unauthorized to the import of logs.ndjson: {"message":"unauthorized"}"#),
            "{error}"
        );
    }

    #[test]
    fn a_space_id_with_a_slash_is_refused() {
        let error = KibanaClient::new(&KibanaConfig {
            space: Some("../x".into()),
            ..config("http://kibana:5601")
        })
        .unwrap_err();
        assert!(matches!(error, KibanaError::InvalidSpace(_)), "{error}");
    }
}
