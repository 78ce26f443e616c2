//! A scripted stand-in for Elasticsearch's HTTP API in unit tests of the index stage:
//! each request is answered by a closure, so tests can make it stumble on purpose.
//! Integration tests use a real Elasticsearch-compatible server instead.

use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the fake server saw it.
#[derive(Debug)]
pub(crate) struct Request {
    /// Method and path, for example `PUT /_index_template/vigil-logs`.
    pub(crate) target: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: String,
}

impl Request {
    /// Documents in a bulk body: an action line and a document line each.
    pub(crate) fn documents(&self) -> usize {
        self.body.lines().count() / 2
    }
}

type Respond = dyn Fn(&Request) -> (u16, String) + Send + Sync;

#[derive(Debug)]
pub(crate) struct FakeElasticsearch {
    pub(crate) url: String,
}

impl FakeElasticsearch {
    /// Serves on a free loopback port until the test's runtime ends; `respond` gives
    /// the status and body of every answer.
    pub(crate) async fn start(
        respond: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let respond: Arc<Respond> = Arc::new(respond);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, respond.clone()));
            }
        });
        Self { url }
    }
}

/// Answers one request and closes the connection.
async fn answer(mut stream: TcpStream, respond: Arc<Respond>) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    while received.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
    let request_line = head.lines().next().unwrap_or_default();
    let request = Request {
        target: request_line
            .rsplit_once(' ')
            .map_or(request_line, |(target, _version)| target)
            .to_owned(),
        authorization: header("authorization"),
        body: String::from_utf8_lossy(&received[head_end..head_end + length]).into_owned(),
    };
    let (status, body) = respond(&request);
    let response = format!(
        "HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A bulk response with one `create` item per status, with an error for failures.
pub(crate) fn bulk_response(statuses: &[u16]) -> String {
    let items: Vec<_> = statuses
        .iter()
        .map(|&status| match status {
            200..=299 => json!({"create": {"status": status}}),
            409 => json!({"create": {"status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": "version conflict, document already exists"}}}),
            429 => json!({"create": {"status": 429, "error": {
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation"}}}),
            _ => json!({"create": {"status": status, "error": {
                "type": "mapper_parsing_exception",
                "reason": "failed to parse field [log.offset] of type [long]"}}}),
        })
        .collect();
    json!({"errors": statuses.iter().any(|s| !(200..300).contains(s)), "items": items}).to_string()
}
