//! Loading of YAML configuration files, so every config error reads the same way:
//! the file, the line and column, and what is wrong.

use serde::de::DeserializeOwned;
use std::path::Path;
use thiserror::Error;

/// A configuration file that could not be used.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}:{message}")]
    Parse { path: String, message: String },
}

/// A setting whose value serde accepted but the program cannot use, named by its
/// path in the file (`index.max_documents`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{field}` {problem}")]
pub struct InvalidSetting {
    pub field: String,
    pub problem: String,
}

impl InvalidSetting {
    /// `field` (without backticks) and what is wrong with it.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Reads and deserializes a YAML file; errors name the file, line and column.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    parse_yaml(&path.display().to_string(), &read_text(path)?)
}

/// The text of a configuration file; the error names it.
pub fn read_text(path: &Path) -> Result<String, ConfigFileError> {
    std::fs::read_to_string(path).map_err(|error| ConfigFileError::Read {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// `origin:line:column` of the setting `message` names first (see
/// [`crate::locate_setting_of`]), or `origin` alone when it is not written in `text`:
/// what a refused value's message is prefixed with.
pub fn setting_place(origin: &str, text: &str, message: &str) -> String {
    match crate::locate_setting_of(text, message) {
        Some(position) => format!("{origin}:{position}"),
        None => origin.to_owned(),
    }
}

/// Deserializes YAML text that came from `origin` (a file name, an etcd key).
pub fn parse_yaml<T: DeserializeOwned>(origin: &str, text: &str) -> Result<T, ConfigFileError> {
    serde_saphyr::from_str(text).map_err(|error| ConfigFileError::Parse {
        path: origin.to_owned(),
        message: located_message(&error),
    })
}

/// `line:column: message` for a YAML error, or ` message` when it has no location.
fn located_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    match error.location() {
        Some(location) => format!(
            "{}:{}: {}",
            location.line(),
            location.column(),
            first_line(&text)
        ),
        None => format!(" {}", first_line(&text)),
    }
}

/// The message without the `error: line N column M:` prefix and the source
/// snippet the YAML crate adds; the caller puts the location in front.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((location, message)) if location.contains(" column ") => message.to_owned(),
        _ => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        name: String,
        #[serde(with = "crate::duration")]
        interval: Duration,
    }

    #[test]
    fn unknown_keys_are_named_with_file_line_and_column() {
        let error = parse_yaml::<Example>("agent.yaml", "name: a\ninterval: 1s\ncolour: red\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("agent.yaml:3:1: unknown field `colour`"),
            "{error}"
        );
    }

    #[test]
    fn bad_values_are_located() {
        let error = parse_yaml::<Example>("agent.yaml", "name: a\ninterval: soon\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("agent.yaml:2:"), "{error}");
        assert!(error.contains("invalid duration `soon`"), "{error}");
    }
}
