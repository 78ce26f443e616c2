//! The files `setup` installs, from `dashboards/` (shipped in the binary or read from a
//! folder): lifecycle policies, component and index templates, and Kibana's saved
//! objects, renamed for the configured indices before anything reaches Elasticsearch.

use super::SetupError;
use crate::index::documents::IndexNames;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The names the shipped files use for the three indices.
const DEFAULT_NAMES: [&str; 3] = ["vigil-logs", "vigil-metrics", "vigil-alerts"];

/// The files of `dashboards/`, compiled into the binary so `setup` works from
/// anywhere; `--dashboards DIR` reads a modified copy instead.
const SHIPPED: &[(&str, &str)] = &[
    (
        "lifecycle-policies/vigil-alerts.json",
        include_str!("../../../../dashboards/lifecycle-policies/vigil-alerts.json"),
    ),
    (
        "lifecycle-policies/vigil-logs.json",
        include_str!("../../../../dashboards/lifecycle-policies/vigil-logs.json"),
    ),
    (
        "lifecycle-policies/vigil-metrics.json",
        include_str!("../../../../dashboards/lifecycle-policies/vigil-metrics.json"),
    ),
    (
        "component-templates/vigil-alerts@custom.json",
        include_str!("../../../../dashboards/component-templates/vigil-alerts@custom.json"),
    ),
    (
        "component-templates/vigil-alerts@mappings.json",
        include_str!("../../../../dashboards/component-templates/vigil-alerts@mappings.json"),
    ),
    (
        "component-templates/vigil-ecs@mappings.json",
        include_str!("../../../../dashboards/component-templates/vigil-ecs@mappings.json"),
    ),
    (
        "component-templates/vigil-logs@custom.json",
        include_str!("../../../../dashboards/component-templates/vigil-logs@custom.json"),
    ),
    (
        "component-templates/vigil-logs@mappings.json",
        include_str!("../../../../dashboards/component-templates/vigil-logs@mappings.json"),
    ),
    (
        "component-templates/vigil-metrics@custom.json",
        include_str!("../../../../dashboards/component-templates/vigil-metrics@custom.json"),
    ),
    (
        "component-templates/vigil-metrics@mappings.json",
        include_str!("../../../../dashboards/component-templates/vigil-metrics@mappings.json"),
    ),
    (
        "index-templates/vigil-alerts.json",
        include_str!("../../../../dashboards/index-templates/vigil-alerts.json"),
    ),
    (
        "index-templates/vigil-logs.json",
        include_str!("../../../../dashboards/index-templates/vigil-logs.json"),
    ),
    (
        "index-templates/vigil-metrics.json",
        include_str!("../../../../dashboards/index-templates/vigil-metrics.json"),
    ),
    (
        "kibana/alerts.ndjson",
        include_str!("../../../../dashboards/kibana/alerts.ndjson"),
    ),
    (
        "kibana/containers.ndjson",
        include_str!("../../../../dashboards/kibana/containers.ndjson"),
    ),
    (
        "kibana/data-views.ndjson",
        include_str!("../../../../dashboards/kibana/data-views.ndjson"),
    ),
    (
        "kibana/host-overview.ndjson",
        include_str!("../../../../dashboards/kibana/host-overview.ndjson"),
    ),
    (
        "kibana/logs.ndjson",
        include_str!("../../../../dashboards/kibana/logs.ndjson"),
    ),
    (
        "kibana/network-devices.ndjson",
        include_str!("../../../../dashboards/kibana/network-devices.ndjson"),
    ),
];

/// The folders of `dashboards/` setup reads, and the extension of their files.
const FOLDERS: [(&str, &str); 4] = [
    ("lifecycle-policies", "json"),
    ("component-templates", "json"),
    ("index-templates", "json"),
    ("kibana", "ndjson"),
];

/// One file to install: its name (the file stem), where it came from, and its body.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Asset {
    pub(super) name: String,
    pub(super) path: String,
    pub(super) body: Value,
}

/// The files of one NDJSON saved objects export.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SavedObjects {
    pub(super) path: String,
    pub(super) objects: Vec<Value>,
}

/// What setup installs, read from `dashboards/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboards {
    pub(super) policies: Vec<Asset>,
    pub(super) component_templates: Vec<Asset>,
    pub(super) index_templates: Vec<Asset>,
    pub(super) saved_objects: Vec<SavedObjects>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
