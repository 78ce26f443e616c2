//! A stand-in for Kibana's saved objects import API, which `vigil-aggregator
//! setup` posts the dashboards to: it records every import and answers as Kibana
//! does when all objects were imported. No Kibana can run on the test machines.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::http_exchange::{HttpResponse, serve};

/// One import request as received.
#[derive(Debug, Clone, PartialEq)]
pub struct KibanaImport {
    /// Request target, e.g. `/api/saved_objects/_import?overwrite=true`.
    pub target: String,
    /// Header names (lowercased) and values.
    pub headers: Vec<(String, String)>,
    /// The `filename` of the uploaded part.
    pub file_name: String,
    /// The saved objects of the uploaded NDJSON, in order.
    pub objects: Vec<Value>,
}

impl KibanaImport {
    /// The value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The stand-in; it runs until the process ends.
#[derive(Debug, Clone)]
pub struct KibanaStandIn {
    port: u16,
    imports: Arc<Mutex<Vec<KibanaImport>>>,
}

impl KibanaStandIn {
    /// Starts the stand-in on a free port of 127.0.0.1.
    pub fn start() -> KibanaStandIn {
        let imports: Arc<Mutex<Vec<KibanaImport>>> = Arc::default();
        let recorded = Arc::clone(&imports);
        let port = serve("kibana stand-in", move |request| {
            let content_type = request
                .header("content-type")
                .unwrap_or_default()
                .to_owned();
            let Some(boundary) = content_type.split("boundary=").nth(1) else {
                return HttpResponse::json(
                    400,
                    json!({"message": "expected a multipart/form-data upload"}).to_string(),
                );
            };
            let body = String::from_utf8_lossy(&request.body);
            let Some((file_name, ndjson)) = file_part(&body, boundary) else {
                return HttpResponse::json(
                    400,
                    json!({"message": "no `file` part in the upload"}).to_string(),
                );
            };
            let objects: Vec<Value> = ndjson
                .lines()
                .filter(|line| !line.trim().is_empty())
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect();
            let results: Vec<Value> = objects
                .iter()
                .map(|object| json!({"type": object["type"], "id": object["id"]}))
                .collect();
            let count = objects.len();
            recorded
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(KibanaImport {
                    target: request.target.clone(),
                    headers: request.headers.clone(),
                    file_name,
                    objects,
                });
            HttpResponse::json(
                200,
                json!({"success": true, "successCount": count, "successResults": results})
                    .to_string(),
            )
        });
        KibanaStandIn { port, imports }
    }

    /// The base URL to give `setup`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every import received so far, oldest first.
    pub fn imports(&self) -> Vec<KibanaImport> {
        self.imports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The file name and content of the `file` part of a multipart body.
fn file_part(body: &str, boundary: &str) -> Option<(String, String)> {
    let delimiter = format!("--{}", boundary.trim_matches('"'));
    body.split(delimiter.as_str()).find_map(|part| {
        let (head, content) = part.split_once("\r\n\r\n")?;
        let disposition = head
            .lines()
            .find(|line| line.to_ascii_lowercase().starts_with("content-disposition"))?;
        if !disposition.contains("name=\"file\"") {
            return None;
        }
        let file_name = disposition
            .split("filename=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        Some((
            file_name,
            content.strip_suffix("\r\n").unwrap_or(content).to_owned(),
        ))
    })
}
