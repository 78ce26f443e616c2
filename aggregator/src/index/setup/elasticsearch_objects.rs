//! The Elasticsearch part of `setup`, before the index stage's first bulk write:
//! lifecycle policies, component templates, index templates and data streams, each
//! compared by content hash with what the cluster holds and put only when it differs.

use super::dashboards::Dashboards;
use super::elasticsearch_api::{Current, Elasticsearch};
use super::progress::{Change, report};
use super::{SetupError, SetupSummary};
use crate::index::http_client::HttpEndpoint;
use serde_json::Value;
use std::io::Write;
use xxhash_rust::xxh3::xxh3_128;

/// Where an object's content hash is kept.
const HASH_KEY: &str = "vigil_content_hash";

/// Installs the lifecycle policies, component templates, index templates and data
/// streams of `dashboards`, in that order, printing a line per object to `progress`.
pub(super) async fn install_elasticsearch_objects(
    endpoint: &HttpEndpoint,
    dashboards: &Dashboards,
    skip_unsupported: bool,
    summary: &mut SetupSummary,
    progress: &mut dyn Write,
) -> Result<(), SetupError> {
    let es = Elasticsearch { endpoint };
    let mut index_templates = dashboards.index_templates.clone();

    // Lifecycle policies.
    let policies_supported = match dashboards.policies.first() {
        None => true,
        Some(first) => {
            let current = es.get(&format!("_ilm/policy/{}", first.name)).await?;
            es.supported(
                "lifecycle policies",
                current,
                skip_unsupported,
                summary,
                progress,
            )?
        }
    };
    if policies_supported {
        for policy in &dashboards.policies {
            let body = with_hash(&policy.body, &["policy", "_meta"]);
            let path = format!("_ilm/policy/{}", policy.name);
            let current = es.present(&path, "lifecycle policies").await?;
            let existing = current
                .as_ref()
                .and_then(|value| hash_at(&value[&policy.name], &["policy", "_meta"]));
            let change = es
                .apply(
                    &path,
                    &body,
                    current.is_some(),
                    existing,
                    &body_hash(&body, &["policy", "_meta"]),
                )
                .await?;
            report(progress, summary, "lifecycle policy", &policy.name, change)?;
        }
    } else {
        for template in &mut index_templates {
            if let Some(index) = template.body["template"]["settings"]["index"].as_object_mut() {
                index.remove("lifecycle");
            }
        }
    }

    // Component templates, then the index templates that compose them.
    for template in &dashboards.component_templates {
        let path = format!("_component_template/{}", template.name);
        let current = es.present(&path, "component templates").await?;
        let listed = current.as_ref().map(|value| {
            named(&value["component_templates"], &template.name)["component_template"].clone()
        });
        let change = if template.name.ends_with("@custom") {
            match listed {
                Some(_) => Change::Unchanged,
                None => {
                    es.put(&path, &template.body, "component templates").await?;
                    Change::Created
                }
            }
        } else {
            let body = with_hash(&template.body, &["_meta"]);
            let existing = listed.as_ref().and_then(|value| hash_at(value, &["_meta"]));
            es.apply(
                &path,
                &body,
                listed.is_some(),
                existing,
                &body_hash(&body, &["_meta"]),
            )
            .await?
        };
        report(
            progress,
            summary,
            "component template",
            &template.name,
            change,
        )?;
    }

    let streams: Vec<String> = index_templates
        .iter()
        .filter(|template| template.body.get("data_stream").is_some())
        .map(|template| template.name.clone())
        .collect();
    let streams_supported = match streams.first() {
        None => true,
        Some(first) => {
            let current = es.get(&format!("_data_stream/{first}")).await?;
            es.supported("data streams", current, skip_unsupported, summary, progress)?
        }
    };
    if !streams_supported {
        for template in &mut index_templates {
            if let Some(fields) = template.body.as_object_mut() {
                fields.remove("data_stream");
            }
        }
    }
    for template in &index_templates {
        let path = format!("_index_template/{}", template.name);
        let body = with_hash(&template.body, &["_meta"]);
        let current = es.present(&path, "index templates").await?;
        let existing = current.as_ref().and_then(|value| {
            hash_at(
                &named(&value["index_templates"], &template.name)["index_template"],
                &["_meta"],
            )
        });
        let change = es
            .apply(
                &path,
                &body,
                current.is_some(),
                existing,
                &body_hash(&body, &["_meta"]),
            )
            .await?;
        report(progress, summary, "index template", &template.name, change)?;
    }

    if streams_supported {
        for name in &streams {
            let path = format!("_data_stream/{name}");
            let change = match es.get(&path).await? {
                Current::Present(_) => Change::Unchanged,
                Current::Missing => {
                    es.create_data_stream(name).await?;
                    Change::Created
                }
                Current::Unsupported {
                    method,
                    url,
                    status,
                    snippet,
                } => {
                    return Err(SetupError::Unsupported {
                        part: "data streams",
                        method,
                        url,
                        status,
                        snippet,
                    });
                }
            };
            report(progress, summary, "data stream", name, change)?;
        }
    }
    Ok(())
}

/// The element of a `[{"name": …}, …]` list with `name`, or null.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The hash of `body` without a hash, as kept under `meta_path`.
fn body_hash(body: &Value, meta_path: &[&str]) -> String {
    hash_at(body, meta_path).unwrap_or_default()
}

/// `body` with the hash of its content under `meta_path` (`_meta` or `policy._meta`).
fn with_hash(body: &Value, meta_path: &[&str]) -> Value {
    let hash = format!("{:032x}", xxh3_128(body.to_string().as_bytes()));
    let mut hashed = body.clone();
    let mut meta = &mut hashed;
    for key in meta_path {
        meta = meta
            .as_object_mut()
            .expect("templates and policies are JSON objects")
            .entry(*key)
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(HASH_KEY.to_owned(), Value::String(hash));
    }
    hashed
}

fn hash_at(value: &Value, meta_path: &[&str]) -> Option<String> {
    let mut meta = value;
    for key in meta_path {
        meta = meta.get(key)?;
    }
    meta.get(HASH_KEY)?.as_str().map(str::to_owned)
}
