//! Errors in rule files and rule-test files, each naming the file and, where known,
//! the line and column, so that a bad push to etcd or a failing CI check points at
//! the text to fix.

use serde_saphyr::{Location, MessageFormatter, UserMessageFormatter};
use std::fmt;
use thiserror::Error;

/// A rule file (or rule-test file) that cannot be used, and why.
#[derive(Debug, Error)]
pub enum RuleError {
    /// The file or folder could not be read.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Something at a known place in the file is wrong: YAML syntax, an unknown
    /// key, or a value that does not make sense (regex, duration, condition...).
    #[error("{file}:{line}:{column}: {message}")]
    At {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    /// Something about the file as a whole is wrong.
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

impl RuleError {
    /// The file the error is in.
    pub fn file(&self) -> &str {
        match self {
            RuleError::Io { file, .. }
            | RuleError::At { file, .. }
            | RuleError::File { file, .. } => file,
        }
    }

    /// An error at `location` of `file`; falls back to the whole file when the
    /// YAML parser could not say where.
    pub(crate) fn at(file: &str, location: Location, message: impl Into<String>) -> Self {
        if location == Location::UNKNOWN {
            RuleError::File {
                file: file.to_owned(),
                message: message.into(),
            }
        } else {
            RuleError::At {
                file: file.to_owned(),
                line: location.line(),
                column: location.column(),
                message: message.into(),
            }
        }
    }

    /// A YAML syntax or structure error (unknown key, wrong type...), with the
    /// parser's message written for a person rather than for a developer.
    pub(crate) fn yaml(file: &str, error: &serde_saphyr::Error) -> Self {
        let error = error.without_snippet();
        // One line: control characters (there should be none) become spaces.
        let message: String = UserMessageFormatter
            .format_message(error)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Self::at(file, error.location().unwrap_or(Location::UNKNOWN), message)
    }
}

/// All the errors of a rule or rule-test run, displayed one per line, as one
/// `std::error::Error` for callers that propagate it with `?`.
#[derive(Debug)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

impl From<Vec<RuleError>> for RuleErrors {
    fn from(errors: Vec<RuleError>) -> Self {
        RuleErrors(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_one_per_line() {
        let errors = RuleErrors(vec![
            RuleError::File {
                file: "a.yaml".into(),
                message: "broken".into(),
            },
            RuleError::At {
                file: "b.yaml".into(),
                line: 3,
                column: 5,
                message: "unknown field `x`".into(),
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "a.yaml: broken\nb.yaml:3:5: unknown field `x`"
        );
        assert_eq!(errors.0[1].file(), "b.yaml");
    }
}
