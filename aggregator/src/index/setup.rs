//! `vigil-aggregator setup`: what Elasticsearch and Kibana need before the index
//! stage writes its first document, installed from `dashboards/`.
//!
//! In order: index lifecycle policies, component templates (the mappings), index
//! templates (which compose them, with `data_stream` and the lifecycle policy), the
//! data streams themselves, and Kibana's saved objects. Every Elasticsearch object
//! carries a hash of its content in `_meta.vigil_content_hash`; an object whose hash
//! matches is left alone, so running setup again changes nothing, and an object of
//! an older release is replaced. `<index>@custom` component templates are created
//! empty and never changed: they are where a site adds its own mappings.
//!
//! A server without lifecycle policies or data streams (an Elasticsearch-compatible
//! server, or a cluster without the feature) stops setup with an error naming the
//! part, unless `skip_unsupported` is set: then the part is skipped, said so, and the
//! index templates are installed without it.

use super::documents::IndexNames;
use super::elasticsearch::{BulkClient, HttpEndpoint, snippet};
use super::kibana::{KibanaClient, KibanaError};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_128;

/// Where an object's content hash is kept.
const HASH_KEY: &str = "vigil_content_hash";
/// The names the shipped files use for the three indices.
const DEFAULT_NAMES: [&str; 3] = ["vigil-logs", "vigil-metrics", "vigil-alerts"];

/// The files of `dashboards/`, compiled into the binary so `setup` works from
/// anywhere; `--dashboards DIR` reads a modified copy instead.
const SHIPPED: &[(&str, &str)] = &[
    (
        "lifecycle-policies/vigil-alerts.json",
        include_str!("../../../dashboards/lifecycle-policies/vigil-alerts.json"),
    ),
    (
        "lifecycle-policies/vigil-logs.json",
        include_str!("../../../dashboards/lifecycle-policies/vigil-logs.json"),
    ),
    (
        "lifecycle-policies/vigil-metrics.json",
        include_str!("../../../dashboards/lifecycle-policies/vigil-metrics.json"),
    ),
    (
        "component-templates/vigil-alerts@custom.json",
        include_str!("../../../dashboards/component-templates/vigil-alerts@custom.json"),
    ),
    (
        "component-templates/vigil-alerts@mappings.json",
        include_str!("../../../dashboards/component-templates/vigil-alerts@mappings.json"),
    ),
    (
        "component-templates/vigil-ecs@mappings.json",
        include_str!("../../../dashboards/component-templates/vigil-ecs@mappings.json"),
    ),
    (
        "component-templates/vigil-logs@custom.json",
        include_str!("../../../dashboards/component-templates/vigil-logs@custom.json"),
    ),
    (
        "component-templates/vigil-logs@mappings.json",
        include_str!("../../../dashboards/component-templates/vigil-logs@mappings.json"),
    ),
    (
        "component-templates/vigil-metrics@custom.json",
        include_str!("../../../dashboards/component-templates/vigil-metrics@custom.json"),
    ),
    (
        "component-templates/vigil-metrics@mappings.json",
        include_str!("../../../dashboards/component-templates/vigil-metrics@mappings.json"),
    ),
    (
        "index-templates/vigil-alerts.json",
        include_str!("../../../dashboards/index-templates/vigil-alerts.json"),
    ),
    (
        "index-templates/vigil-logs.json",
        include_str!("../../../dashboards/index-templates/vigil-logs.json"),
    ),
    (
        "index-templates/vigil-metrics.json",
        include_str!("../../../dashboards/index-templates/vigil-metrics.json"),
    ),
    (
        "kibana/alerts.ndjson",
        include_str!("../../../dashboards/kibana/alerts.ndjson"),
    ),
    (
        "kibana/containers.ndjson",
        include_str!("../../../dashboards/kibana/containers.ndjson"),
    ),
    (
        "kibana/data-views.ndjson",
        include_str!("../../../dashboards/kibana/data-views.ndjson"),
    ),
    (
        "kibana/host-overview.ndjson",
        include_str!("../../../dashboards/kibana/host-overview.ndjson"),
    ),
    (
        "kibana/logs.ndjson",
        include_str!("../../../dashboards/kibana/logs.ndjson"),
    ),
    (
        "kibana/network-devices.ndjson",
        include_str!("../../../dashboards/kibana/network-devices.ndjson"),
    ),
];

/// The folders of `dashboards/` setup reads, and the extension of their files.
const FOLDERS: [(&str, &str); 4] = [
    ("lifecycle-policies", "json"),
    ("component-templates", "json"),
    ("index-templates", "json"),
    ("kibana", "ndjson"),
];

/// A setup that did not finish.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("could not read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    InvalidJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: no file to install; expected lifecycle-policies/, component-templates/, index-templates/ and kibana/"
    )]
    Empty { path: String },
    #[error("request to {url} failed: {detail}")]
    Transport { url: String, detail: String },
    #[error("{what}: {method} {url} answered {status}: {snippet}")]
    Status {
        what: String,
        method: Method,
        url: String,
        status: StatusCode,
        snippet: String,
    },
    #[error(
        "{part}: the server does not support them ({method} {url} answered {status}: {snippet}); run setup with --skip-unsupported to install the rest without them"
    )]
    Unsupported {
        part: &'static str,
        method: Method,
        url: String,
        status: StatusCode,
        snippet: String,
    },
    #[error(
        "data stream {name}: an index named {name} already exists (created before setup ran); reindex its documents into the data stream and delete it, or configure another index name"
    )]
    IndexInTheWay { name: String },
    #[error(transparent)]
    Kibana(#[from] KibanaError),
    #[error("could not write progress: {0}")]
    Progress(#[from] std::io::Error),
}

/// One file to install: its name (the file stem), where it came from, and its body.
#[derive(Debug, Clone, PartialEq)]
struct Asset {
    name: String,
    path: String,
    body: Value,
}

/// The files of one NDJSON saved objects export.
#[derive(Debug, Clone, PartialEq)]
struct SavedObjects {
    path: String,
    objects: Vec<Value>,
}

/// What setup installs, read from `dashboards/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboards {
    policies: Vec<Asset>,
    component_templates: Vec<Asset>,
    index_templates: Vec<Asset>,
    saved_objects: Vec<SavedObjects>,
}

impl Dashboards {
    /// The files shipped with this release.
    pub fn shipped() -> Self {
        Self::from_files(
            SHIPPED
                .iter()
                .map(|(path, text)| (PathBuf::from(path), (*text).to_owned())),
        )
        .expect("the shipped dashboards are valid JSON; a unit test reads them")
    }

    /// The files of a `dashboards/` folder.
    pub fn from_dir(dir: &Path) -> Result<Self, SetupError> {
        let mut files = Vec::new();
        for (folder, extension) in FOLDERS {
            let folder = dir.join(folder);
            let read_error = |source| SetupError::Read {
                path: folder.display().to_string(),
                source,
            };
            let entries = match std::fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(read_error(error)),
            };
            for entry in entries {
                let path = entry.map_err(read_error)?.path();
                if path.extension().is_some_and(|e| e == extension) {
                    let text =
                        std::fs::read_to_string(&path).map_err(|source| SetupError::Read {
                            path: path.display().to_string(),
                            source,
                        })?;
                    files.push((path, text));
                }
            }
        }
        if files.is_empty() {
            return Err(SetupError::Empty {
                path: dir.display().to_string(),
            });
        }
        Self::from_files(files)
    }

    fn from_files(files: impl IntoIterator<Item = (PathBuf, String)>) -> Result<Self, SetupError> {
        let mut dashboards = Self {
            policies: Vec::new(),
            component_templates: Vec::new(),
            index_templates: Vec::new(),
            saved_objects: Vec::new(),
        };
        for (path, text) in files {
            let display = path.display().to_string();
            let invalid = |source| SetupError::InvalidJson {
                path: display.clone(),
                source,
            };
            let folder = path
                .parent()
                .and_then(Path::file_name)
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            if folder == "kibana" {
                let objects = text
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(|line| serde_json::from_str(line).map_err(invalid))
                    .collect::<Result<_, _>>()?;
                dashboards.saved_objects.push(SavedObjects {
                    path: display.clone(),
                    objects,
                });
                continue;
            }
            let asset = Asset {
                name,
                path: display.clone(),
                body: serde_json::from_str(&text).map_err(invalid)?,
            };
            match folder.as_str() {
                "lifecycle-policies" => dashboards.policies.push(asset),
                "component-templates" => dashboards.component_templates.push(asset),
                "index-templates" => dashboards.index_templates.push(asset),
                _ => {}
            }
        }
        for assets in [
            &mut dashboards.policies,
            &mut dashboards.component_templates,
            &mut dashboards.index_templates,
        ] {
            assets.sort_by(|a, b| a.name.cmp(&b.name));
        }
        // Data views first: the other files refer to them.
        dashboards
            .saved_objects
            .sort_by_key(|file| (!file.path.ends_with("data-views.ndjson"), file.path.clone()));
        Ok(dashboards)
    }

    /// The same files for indices named `names` instead of the defaults: template,
    /// policy and data view names and ids, index patterns and `<index>@…` component
    /// template names follow.
    pub fn for_indices(&self, names: &IndexNames) -> Self {
        let renames: Vec<(&str, &str)> = DEFAULT_NAMES
            .into_iter()
            .zip([
                names.logs.as_str(),
                names.metrics.as_str(),
                names.alerts.as_str(),
            ])
            .collect();
        let mut renamed = self.clone();
        for asset in renamed
            .policies
            .iter_mut()
            .chain(&mut renamed.component_templates)
            .chain(&mut renamed.index_templates)
        {
            asset.name = rename(&asset.name, &renames).unwrap_or_else(|| asset.name.clone());
            rename_strings(&mut asset.body, &renames);
        }
        for file in &mut renamed.saved_objects {
            for object in &mut file.objects {
                rename_strings(object, &renames);
            }
        }
        renamed
    }

    /// Every field a saved object refers to: aggregation fields, saved search
    /// columns and sorts, and the fields of `field : value` in queries and filters.
    pub fn saved_object_fields(&self) -> std::collections::BTreeSet<String> {
        let mut fields = std::collections::BTreeSet::new();
        for object in self.saved_objects.iter().flat_map(|file| &file.objects) {
            collect_saved_object_fields(object, &mut fields);
        }
        fields
    }

    /// Every field the templates map, as dotted paths (`labels.ifName`,
    /// `metrics.if.in.octets`), with its type.
    pub fn mapped_fields(&self) -> std::collections::BTreeMap<String, String> {
        let mut fields = std::collections::BTreeMap::new();
        for template in &self.component_templates {
            if let Some(properties) =
                template.body["template"]["mappings"]["properties"].as_object()
            {
                collect_mapped_fields("", properties, &mut fields);
            }
        }
        fields
    }

    /// How many saved objects there are, over all files.
    pub fn saved_object_count(&self) -> usize {
        self.saved_objects
            .iter()
            .map(|file| file.objects.len())
            .sum()
    }
}

/// `text` renamed: a default index name alone, followed by `*` (a pattern) or by
/// `@…` (a component template) becomes the configured one.
fn rename(text: &str, renames: &[(&str, &str)]) -> Option<String> {
    renames.iter().find_map(|(from, to)| {
        let rest = text.strip_prefix(from)?;
        (rest.is_empty() || rest == "*" || rest.starts_with('@')).then(|| format!("{to}{rest}"))
    })
}

fn rename_strings(value: &mut Value, renames: &[(&str, &str)]) {
    match value {
        Value::String(text) => {
            if let Some(renamed) = rename(text, renames) {
                *text = renamed;
            }
        }
        Value::Array(values) => values
            .iter_mut()
            .for_each(|value| rename_strings(value, renames)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|value| rename_strings(value, renames)),
        _ => {}
    }
}

fn collect_mapped_fields(
    prefix: &str,
    properties: &serde_json::Map<String, Value>,
    fields: &mut std::collections::BTreeMap<String, String>,
) {
    for (name, mapping) in properties {
        let path = format!("{prefix}{name}");
        if let Some(inner) = mapping["properties"].as_object() {
            collect_mapped_fields(&format!("{path}."), inner, fields);
        }
        if let Some(kind) = mapping["type"].as_str() {
            fields.insert(path, kind.to_owned());
        }
    }
}

fn collect_saved_object_fields(object: &Value, fields: &mut std::collections::BTreeSet<String>) {
    let attributes = &object["attributes"];
    let embedded = |key: &str| -> Option<Value> {
        attributes[key]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
    };
    if let Some(field) = attributes["timeFieldName"].as_str() {
        fields.insert(field.to_owned());
    }
    if let Some(columns) = attributes["columns"].as_array() {
        fields.extend(columns.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if let Some(sorts) = attributes["sort"].as_array() {
        for sort in sorts {
            if let Some(field) = sort[0].as_str() {
                fields.insert(field.to_owned());
            }
        }
    }
    if let Some(state) = embedded("visState") {
        for aggregation in state["aggs"].as_array().into_iter().flatten() {
            for key in ["field", "sortField"] {
                if let Some(field) = aggregation["params"][key].as_str() {
                    fields.insert(field.to_owned());
                }
            }
        }
    }
    let search_source = attributes["kibanaSavedObjectMeta"]["searchSourceJSON"]
        .as_str()
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    if let Some(source) = search_source {
        if let Some(query) = source["query"]["query"].as_str() {
            query_fields(query, fields);
        }
        for filter in source["filter"].as_array().into_iter().flatten() {
            if let Some(field) = filter["meta"]["key"].as_str() {
                fields.insert(field.to_owned());
            }
        }
    }
}

/// The fields of `field : value` terms of a KQL query.
fn query_fields(query: &str, fields: &mut std::collections::BTreeSet<String>) {
    let mut rest = query;
    while let Some(colon) = rest.find(':') {
        let before = rest[..colon].trim_end();
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@')))
            .map_or(0, |position| position + 1);
        let field = &before[start..];
        if !field.is_empty() {
            fields.insert(field.to_owned());
        }
        rest = &rest[colon + 1..];
    }
}

/// What setup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupSummary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Parts the server does not support, skipped on request.
    pub skipped: Vec<&'static str>,
    /// Saved objects Kibana imported.
    pub saved_objects: usize,
}

/// Where setup installs.
#[derive(Debug)]
pub struct SetupTargets<'a> {
    pub elasticsearch: &'a BulkClient,
    /// `None`: Kibana is not configured and its part is left out.
    pub kibana: Option<&'a KibanaClient>,
    /// Skip lifecycle policies and data streams on servers without them.
    pub skip_unsupported: bool,
}

/// What a GET found.
enum Current {
    Missing,
    Present(Value),
    Unsupported {
        method: Method,
        url: String,
        status: StatusCode,
        snippet: String,
    },
}

/// How an object compares with what the server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Updated,
    Unchanged,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        }
    }
}

/// Installs `dashboards` (already renamed for the configured indices), printing a
/// line per object to `progress`.
pub async fn install(
    targets: &SetupTargets<'_>,
    dashboards: &Dashboards,
    progress: &mut dyn Write,
) -> Result<SetupSummary, SetupError> {
    let es = Elasticsearch {
        endpoint: targets.elasticsearch.endpoint(),
    };
    let mut summary = SetupSummary::default();
    let mut index_templates = dashboards.index_templates.clone();
    writeln!(progress, "Elasticsearch at {}", targets.elasticsearch.url())?;

    // Lifecycle policies.
    let policies_supported = match dashboards.policies.first() {
        None => true,
        Some(first) => {
            let current = es.get(&format!("_ilm/policy/{}", first.name)).await?;
            es.supported(
                "lifecycle policies",
                current,
                targets.skip_unsupported,
                &mut summary,
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
            report(
                progress,
                &mut summary,
                "lifecycle policy",
                &policy.name,
                change,
            )?;
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
            &mut summary,
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
            es.supported(
                "data streams",
                current,
                targets.skip_unsupported,
                &mut summary,
                progress,
            )?
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
        report(
            progress,
            &mut summary,
            "index template",
            &template.name,
            change,
        )?;
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
            report(progress, &mut summary, "data stream", name, change)?;
        }
    }

    match targets.kibana {
        Some(kibana) => {
            writeln!(progress, "Kibana at {}", kibana.url())?;
            for file in &dashboards.saved_objects {
                let ndjson: String = file
                    .objects
                    .iter()
                    .map(|object| format!("{object}\n"))
                    .collect();
                let imported = kibana.import(Path::new(&file.path), &ndjson).await?;
                summary.saved_objects += imported;
                let name = Path::new(&file.path)
                    .file_name()
                    .map_or_else(|| file.path.clone(), |n| n.to_string_lossy().into_owned());
                writeln!(
                    progress,
                    "  {:<20} {:<32} {imported} imported",
                    "saved objects", name
                )?;
            }
        }
        None => writeln!(
            progress,
            "Kibana: no URL configured (`index.kibana.url` or --kibana-url); saved objects not imported"
        )?,
    }

    write!(
        progress,
        "done: {} created, {} updated, {} unchanged",
        summary.created, summary.updated, summary.unchanged
    )?;
    if targets.kibana.is_some() {
        write!(
            progress,
            ", {} saved objects imported",
            summary.saved_objects
        )?;
    }
    if summary.skipped.is_empty() {
        writeln!(progress)?;
    } else {
        writeln!(progress, "; skipped: {}", summary.skipped.join(", "))?;
    }
    Ok(summary)
}

fn report(
    progress: &mut dyn Write,
    summary: &mut SetupSummary,
    kind: &str,
    name: &str,
    change: Change,
) -> Result<(), SetupError> {
    match change {
        Change::Created => summary.created += 1,
        Change::Updated => summary.updated += 1,
        Change::Unchanged => summary.unchanged += 1,
    }
    writeln!(progress, "  {kind:<20} {name:<32} {}", change.as_str())?;
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

/// Elasticsearch's APIs as setup uses them.
struct Elasticsearch<'a> {
    endpoint: &'a HttpEndpoint,
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

    async fn get(&self, path: &str) -> Result<Current, SetupError> {
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
    async fn present(&self, path: &str, part: &'static str) -> Result<Option<Value>, SetupError> {
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
    fn supported(
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

    async fn put(&self, path: &str, body: &Value, part: &'static str) -> Result<(), SetupError> {
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
    async fn apply(
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

    async fn create_data_stream(&self, name: &str) -> Result<(), SetupError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::BulkClientConfig;
    use crate::index::fake_elasticsearch::FakeElasticsearch;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    fn dashboards_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
    }

    /// Names and bodies, without the paths they were read from.
    fn contents(dashboards: &Dashboards) -> Vec<(String, Value)> {
        let assets = dashboards
            .policies
            .iter()
            .chain(&dashboards.component_templates)
            .chain(&dashboards.index_templates)
            .map(|asset| (asset.name.clone(), asset.body.clone()));
        let objects = dashboards.saved_objects.iter().map(|file| {
            let name = Path::new(&file.path).file_name().unwrap();
            (
                name.to_string_lossy().into_owned(),
                Value::Array(file.objects.clone()),
            )
        });
        assets.chain(objects).collect()
    }

    #[test]
    fn the_built_in_files_are_those_of_the_dashboards_folder() {
        let folder = Dashboards::from_dir(&dashboards_dir()).unwrap();
        assert_eq!(contents(&Dashboards::shipped()), contents(&folder));
        assert_eq!(
            folder.saved_objects[0].path,
            dashboards_dir()
                .join("kibana/data-views.ndjson")
                .display()
                .to_string(),
            "data views are imported first"
        );
    }

    #[test]
    fn every_field_a_saved_object_uses_is_mapped() {
        let dashboards = Dashboards::shipped();
        let mapped = dashboards.mapped_fields();
        let used = dashboards.saved_object_fields();
        assert!(used.len() > 30, "{used:?}");
        let unmapped: Vec<&String> = used.iter().filter(|f| !mapped.contains_key(*f)).collect();
        assert!(unmapped.is_empty(), "not in the templates: {unmapped:?}");
        assert_eq!(mapped["metrics.if.in.octets"], "unsigned_long");
        assert_eq!(mapped["metrics.host.cpu.utilisation_percent"], "double");
        assert_eq!(mapped["labels.container.id"], "keyword");
    }

    #[test]
    fn saved_objects_refer_only_to_shipped_objects() {
        let dashboards = Dashboards::shipped();
        let objects: Vec<&Value> = dashboards
            .saved_objects
            .iter()
            .flat_map(|file| &file.objects)
            .collect();
        let ids: Vec<(&str, &str)> = objects
            .iter()
            .map(|o| (o["type"].as_str().unwrap(), o["id"].as_str().unwrap()))
            .collect();
        for object in &objects {
            for reference in object["references"].as_array().unwrap() {
                let target = (
                    reference["type"].as_str().unwrap(),
                    reference["id"].as_str().unwrap(),
                );
                assert!(
                    ids.contains(&target),
                    "{} refers to {target:?}",
                    object["id"]
                );
            }
        }
        let titles: Vec<&str> = objects
            .iter()
            .filter(|o| o["type"] == "dashboard")
            .map(|o| o["attributes"]["title"].as_str().unwrap())
            .collect();
        assert_eq!(
            titles,
            [
                "Vigil: alerts",
                "Vigil: containers",
                "Vigil: hosts",
                "Vigil: logs",
                "Vigil: network devices"
            ]
        );
    }

    #[test]
    fn other_index_names_rename_templates_policies_and_data_views() {
        let names = IndexNames {
            logs: "prod-logs".into(),
            metrics: "prod-metrics".into(),
            alerts: "prod-alerts".into(),
        };
        let renamed = Dashboards::shipped().for_indices(&names);
        let template = renamed
            .index_templates
            .iter()
            .find(|t| t.name == "prod-logs")
            .unwrap();
        assert_eq!(template.body["index_patterns"], json!(["prod-logs*"]));
        assert_eq!(
            template.body["composed_of"],
            json!([
                "vigil-ecs@mappings",
                "prod-logs@mappings",
                "prod-logs@custom"
            ])
        );
        assert_eq!(
            template.body["template"]["settings"]["index"]["lifecycle"]["name"],
            "prod-logs"
        );
        assert!(renamed.policies.iter().any(|p| p.name == "prod-metrics"));
        assert!(
            renamed
                .component_templates
                .iter()
                .any(|t| t.name == "prod-alerts@mappings")
        );
        let data_view = &renamed.saved_objects[0].objects[0];
        assert_eq!(data_view["id"], "prod-logs");
        assert_eq!(data_view["attributes"]["title"], "prod-logs*");
        // Ids that only start with an index name stay.
        assert!(
            renamed
                .saved_objects
                .iter()
                .flat_map(|f| &f.objects)
                .any(|o| o["id"] == "vigil-logs-all")
        );
    }

    #[test]
    fn kql_field_names_are_found() {
        let mut fields = std::collections::BTreeSet::new();
        query_fields(
            r#"not vigil.alert.status : "pending" and message:(error or fatal) and labels.container.id : *"#,
            &mut fields,
        );
        assert_eq!(
            fields.into_iter().collect::<Vec<_>>(),
            ["labels.container.id", "message", "vigil.alert.status"]
        );
    }

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
            elasticsearch: &client,
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
                    format!(
                        r#"{{"error":"no handler found for uri [{path}] and method [{method}]"}}"#
                    ),
                );
            }
            if method == "PUT" {
                put.lock().unwrap().push(request.body.clone());
                return (200, r#"{"acknowledged":true}"#.into());
            }
            (
                404,
                json!({"error": {"type": "resource_not_found_exception"}, "status": 404})
                    .to_string(),
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
}
