//! Reading rule files: YAML into raw serde structs that reject unknown keys, then a
//! validation step that builds the runtime [`RuleSet`] and reports every problem
//! with its file, line and column. Rule files come from a local folder (`rules/`,
//! all-in-one mode, CI) or from etcd (pushed by the rules CLI, watched by the alert
//! stage); both go through [`RuleSet::from_files`].
//!
//! `raw` holds the YAML mapping; `group` validates groups and the fields every
//! rule has, handing the rest to `metric` or `log`; `checker` collects the
//! errors and validates the fields several kinds share.

mod checker;
mod group;
mod log;
mod metric;
mod raw;

use super::error::RuleError;
use super::model::{Group, RuleSet};
pub use checker::Checker;
use raw::RawFile;
use serde::de::DeserializeOwned;
use serde_saphyr::Location;
use std::collections::BTreeMap;
use std::path::Path;

impl RuleSet {
    /// Parses and validates rule files given as file name -> YAML text. Either every
    /// file is valid, or all errors found are returned (each naming its file, line
    /// and column), so a bad push never half-applies.
    pub fn from_files(files: &BTreeMap<String, String>) -> Result<RuleSet, Vec<RuleError>> {
        let mut checker = Checker::default();
        let mut groups: Vec<Group> = Vec::new();
        let mut group_places: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in files {
            checker.file.clone_from(file);
            let raw: RawFile = match from_yaml(file, text) {
                Ok(Some(raw)) => raw,
                Ok(None) => continue,
                Err(error) => {
                    checker.errors.push(error);
                    continue;
                }
            };
            for raw_group in raw.groups {
                let location = raw_group.referenced;
                let name = raw_group.value.name.value.clone();
                if let Some(place) = group_places.get(&name) {
                    checker.fail::<()>(
                        raw_group.value.name.referenced,
                        format!("group `{name}` is already defined at {place}"),
                    );
                    continue;
                }
                group_places.insert(name, place(file, location));
                if let Some(group) = checker.group(raw_group.value) {
                    groups.push(group);
                }
            }
        }
        if checker.errors.is_empty() {
            Ok(RuleSet { groups })
        } else {
            Err(checker.errors)
        }
    }
}

/// Loads every rule file of a folder: `*.yaml` and `*.yml`, except rule-test files
/// (`*.test.yaml`, `*.test.yml`); each is named by its file name.
pub fn load_dir(dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
    let io_error = |source| {
        vec![RuleError::Io {
            file: dir.display().to_string(),
            source,
        }]
    };
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if !is_rule_file(name) || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|source| {
            vec![RuleError::Io {
                file: path.display().to_string(),
                source,
            }]
        })?;
        files.insert(name.to_owned(), text);
    }
    RuleSet::from_files(&files)
}

fn is_rule_file(name: &str) -> bool {
    (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(".test.yaml")
        && !name.ends_with(".test.yml")
}

/// Deserializes a YAML document, or `None` when the text holds no document at all
/// (only blank lines and comments).
pub fn from_yaml<T: DeserializeOwned>(file: &str, text: &str) -> Result<Option<T>, RuleError> {
    let blank = text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    });
    if blank {
        return Ok(None);
    }
    serde_saphyr::from_str(text)
        .map(Some)
        .map_err(|error| RuleError::yaml(file, &error))
}

/// `file:line:column`, to point at an earlier definition.
pub(crate) fn place(file: &str, location: Location) -> String {
    format!("{file}:{}:{}", location.line(), location.column())
}

#[cfg(test)]
mod tests;
