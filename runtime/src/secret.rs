//! Secrets (SASL passwords, SNMPv3 keys, API keys) referenced from configuration by
//! file or environment variable, never written inline and never logged.

use serde::Deserialize;
use std::path::PathBuf;
use thiserror::Error;

/// Where a secret comes from: exactly one of `file` or `env`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Path of a file holding the secret (trailing newline ignored).
    pub file: Option<PathBuf>,
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
}

/// A secret could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a secret needs exactly one of `file` or `env`")]
    Ambiguous,
    #[error("secret file {path} could not be read: {reason}")]
    File { path: String, reason: String },
    #[error("environment variable {name} is not set")]
    Env { name: String },
}

impl SecretRef {
    /// Reads the secret's value.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match (&self.file, &self.env) {
            (Some(path), None) => std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|error| SecretError::File {
                    path: path.display().to_string(),
                    reason: error.to_string(),
                }),
            (None, Some(name)) => {
                std::env::var(name).map_err(|_| SecretError::Env { name: name.clone() })
            }
            _ => Err(SecretError::Ambiguous),
        }
    }
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRef")
            .field("file", &self.file)
            .field("env", &self.env)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_or_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        let from_file = SecretRef {
            file: Some(path),
            env: None,
        };
        assert_eq!(from_file.resolve().unwrap(), "s3cret");

        let missing = SecretRef {
            file: None,
            env: Some("VIGIL_TEST_SECRET_THAT_IS_NOT_SET".into()),
        };
        assert_eq!(
            missing.resolve().unwrap_err().to_string(),
            "environment variable VIGIL_TEST_SECRET_THAT_IS_NOT_SET is not set"
        );
        let both = SecretRef {
            file: Some("/x".into()),
            env: Some("Y".into()),
        };
        assert_eq!(both.resolve().unwrap_err(), SecretError::Ambiguous);
    }
}
