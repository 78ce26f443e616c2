//! Loading of YAML configuration files and the duration syntax they share
//! (`250ms`, `30s`, `5m`, `1h30m`), so every config error reads the same way:
//! the file, the line and column, and what is wrong.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// A configuration file that could not be used.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}:{message}")]
    Parse { path: String, message: String },
}

/// Reads and deserializes a YAML file; errors name the file, line and column.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigFileError::Read {
        path: path.display().to_string(),
        reason: error.to_string(),
    })?;
    parse_yaml(&path.display().to_string(), &text)
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

/// Parses `250ms`, `30s`, `5m`, `1h30m`, `2d`: one or more number-unit pairs.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration (use e.g. 500ms, 30s, 5m, 1h30m)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(invalid()),
        };
        total += unit * u32::try_from(number).map_err(|_| invalid())?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Serde adapter for duration fields: `#[serde(deserialize_with = "duration")]`.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        name: String,
        #[serde(deserialize_with = "duration")]
        interval: Duration,
    }

    #[test]
    fn durations_parse_and_bad_ones_are_explained() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("5 minutes").unwrap_err(),
            "`5 minutes` is not a duration (use e.g. 500ms, 30s, 5m, 1h30m)"
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
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
        assert!(error.contains("`soon` is not a duration"), "{error}");
    }
}
