//! Tests of `setup` against a scripted Elasticsearch: a second run changes nothing,
//! a changed file is updated, and parts a server lacks fail or are skipped.

use super::*;
use crate::index::fake_elasticsearch::FakeElasticsearch;
use crate::index::{BulkClient, BulkClientConfig};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An Elasticsearch 8 with lifecycle policies and data streams, keeping what is
/// put, and the list of requests that changed something.
async fn elasticsearch_8() -> (FakeElasticsearch, Arc<Mutex<Vec<String>>>) {
    let stored: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let writes: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = writes.clone();
    let server = FakeElasticsearch::start(move |request| {
        let (method, path) = request.target.split_once(' ').unwrap();
        let mut stored = stored.lock().unwrap();
        if method == "PUT" {
            seen.lock().unwrap().push(request.target.clone());
            let body = serde_json::from_str(&request.body).unwrap_or(Value::Null);
            stored.insert(path.to_owned(), body);
            return (200, r#"{"acknowledged":true}"#.into());
        }
        let name = path.rsplit('/').next().unwrap();
        let Some(body) = stored.get(path) else {
            return (
                404,
                json!({"error": {"type": "resource_not_found_exception"}, "status": 404})
                    .to_string(),
            );
        };
        let answer = if path.starts_with("/_ilm/") {
            json!({name: {"version": 1, "policy": body["policy"]}})
        } else if path.starts_with("/_component_template/") {
            json!({"component_templates": [{"name": name, "component_template": body}]})
        } else if path.starts_with("/_index_template/") {
            json!({"index_templates": [{"name": name, "index_template": body}]})
        } else {
            json!({"data_streams": [{"name": name}]})
        };
        (200, answer.to_string())
    })
    .await;
    (server, writes)
}

async fn run(
    url: &str,
    dashboards: &Dashboards,
    skip_unsupported: bool,
) -> (Result<SetupSummary, SetupError>, String) {
    let client = BulkClient::new(BulkClientConfig::new(url)).unwrap();
    let targets = SetupTargets {
        elasticsearch: client.endpoint(),
        kibana: None,
        skip_unsupported,
    };
    let mut progress = Vec::new();
    let result = install(&targets, dashboards, &mut progress).await;
    (result, String::from_utf8(progress).unwrap())
}

#[tokio::test]
async fn a_second_run_changes_nothing_and_a_changed_file_is_updated() {
    let (server, writes) = elasticsearch_8().await;
    let dashboards = Dashboards::shipped();
    let (first, progress) = run(&server.url, &dashboards, false).await;
    let first = first.unwrap();
    assert_eq!(first.created, 3 + 7 + 3 + 3, "{progress}");
    assert!(first.skipped.is_empty());
    let installed = writes.lock().unwrap().clone();
    assert!(installed.contains(&"PUT /_data_stream/vigil-logs".to_owned()));
    assert!(
        progress.contains("  index template       vigil-metrics                    created"),
        "{progress}"
    );

    let (second, progress) = run(&server.url, &dashboards, false).await;
    let second = second.unwrap();
    assert_eq!((second.created, second.updated), (0, 0), "{progress}");
    assert_eq!(second.unchanged, 16);
    assert_eq!(
        writes.lock().unwrap().len(),
        installed.len(),
        "no request changed anything"
    );
    assert!(
        progress.ends_with("done: 0 created, 0 updated, 16 unchanged\n"),
        "{progress}"
    );

    // A new release changes a mapping: only that template is put again; a site's
    // own @custom template is never touched.
    let mut changed = dashboards.clone();
    changed.component_templates[1].body["_meta"]["description"] = json!("changed");
    changed.component_templates[0].body["template"] = json!({"settings": {"x": 1}});
    let (third, progress) = run(&server.url, &changed, false).await;
    assert_eq!(third.unwrap().updated, 1, "{progress}");
    assert_eq!(
        writes.lock().unwrap()[installed.len()..],
        ["PUT /_component_template/vigil-alerts@mappings"]
    );
}

#[tokio::test]
async fn parts_a_server_lacks_fail_the_setup_unless_skipping_is_asked_for() {
    // Like the Elasticsearch-compatible test server: templates, no lifecycle
    // policies, no data streams.
    let templates: Arc<Mutex<Vec<String>>> = Arc::default();
    let put = templates.clone();
    let server = FakeElasticsearch::start(move |request| {
        let (method, path) = request.target.split_once(' ').unwrap();
        if path.starts_with("/_ilm/") || path.starts_with("/_data_stream/") {
            return (
                400,
                format!(r#"{{"error":"no handler found for uri [{path}] and method [{method}]"}}"#),
            );
        }
        if method == "PUT" {
            put.lock().unwrap().push(request.body.clone());
            return (200, r#"{"acknowledged":true}"#.into());
        }
        (
            404,
            json!({"error": {"type": "resource_not_found_exception"}, "status": 404}).to_string(),
        )
    })
    .await;
    let dashboards = Dashboards::shipped();
    let (refused, progress) = run(&server.url, &dashboards, false).await;
    let message = refused.unwrap_err().to_string();
    assert!(
        message.starts_with("lifecycle policies: the server does not support them (GET "),
        "{message}"
    );
    assert!(
        message.ends_with("run setup with --skip-unsupported to install the rest without them"),
        "{message}"
    );
    assert!(templates.lock().unwrap().is_empty(), "{progress}");

    let (skipped, progress) = run(&server.url, &dashboards, true).await;
    let skipped = skipped.unwrap();
    assert_eq!(skipped.skipped, ["lifecycle policies", "data streams"]);
    assert_eq!(skipped.created, 7 + 3);
    assert!(
        progress.ends_with("; skipped: lifecycle policies, data streams\n"),
        "{progress}"
    );
    let index_templates: Vec<Value> = templates
        .lock()
        .unwrap()
        .iter()
        .map(|body| serde_json::from_str::<Value>(body).unwrap())
        .filter(|body| body.get("index_patterns").is_some())
        .collect();
    assert_eq!(index_templates.len(), 3);
    for template in index_templates {
        assert!(template.get("data_stream").is_none(), "{template}");
        assert!(
            template["template"]["settings"]["index"]
                .get("lifecycle")
                .is_none(),
            "{template}"
        );
    }
}
