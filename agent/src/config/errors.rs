//! Why the configuration was refused: a file that cannot be read, YAML that does
//! not parse (located by file, line and column), or a value validation rejects,
//! named by its field. The agent reports it and stops before any source starts.

use std::fmt;
use thiserror::Error;

/// The configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{path}: {cause}")]
    Invalid { path: String, cause: InvalidConfig },
}

/// A value the types accept but the agent cannot work with; the message names the
/// field, for example "`snmp.targets[0].interval` must be at least 1s".
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct InvalidConfig {
    pub(super) message: String,
}

impl InvalidConfig {
    pub(super) fn field(field: impl fmt::Display, problem: impl fmt::Display) -> Self {
        Self {
            message: format!("`{field}` {problem}"),
        }
    }
}

/// `name` under `field`, or `name` alone when `field` is empty (an etcd entry,
/// whose errors are prefixed with its key instead).
pub(super) fn subfield(field: &str, name: &str) -> String {
    if field.is_empty() {
        name.to_owned()
    } else {
        format!("{field}.{name}")
    }
}
