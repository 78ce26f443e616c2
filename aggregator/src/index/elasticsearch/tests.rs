//! Tests of the bulk writer, the index stage's last hop before Elasticsearch: bulk
//! bodies, reading bulk responses, retries, credentials and the concurrency limit,
//! against a scripted Elasticsearch.

use super::*;
use crate::index::fake_elasticsearch::{FakeElasticsearch, bulk_response};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use vigil_runtime::SecretRef;

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
    let results = parse_bulk_response(URL, StatusCode::OK, body.to_string().as_bytes(), 5).unwrap();
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
    let delays: std::collections::BTreeSet<Duration> = (0..50).map(|_| jittered(backoff)).collect();
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
    let results = parse_bulk_response(URL, StatusCode::OK, body.to_string().as_bytes(), 1).unwrap();
    assert_eq!(results, vec![ItemResult::Final(Outcome::Written)]);
    let nameless = json!({"items": [{"other": {"status": 201}}]});
    let error =
        parse_bulk_response(URL, StatusCode::OK, nameless.to_string().as_bytes(), 1).unwrap_err();
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
