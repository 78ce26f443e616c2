//! Why the configuration was refused: a file that cannot be read, YAML that does
//! not parse (located by file, line and column), or a value validation rejects,
//! named by its field. The agent reports it and stops before any source starts.

use std::fmt;
use thiserror::Error;

/// The configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Not readable, or not YAML of the agent's configuration.
    #[error(transparent)]
    File(#[from] vigil_config::ConfigFileError),
    /// A value that parsed but cannot be used, at `file:line:column` of the
    /// setting it names (or the file alone when that setting is not written).
    #[error("{place}: {cause}")]
    Invalid { place: String, cause: InvalidConfig },
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
