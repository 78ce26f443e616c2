//! Secrets (SASL passwords, SNMPv3 keys, API keys) referenced from configuration by
//! file or environment variable, never written inline and never logged.

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::fmt;
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

/// A setting written inline where it need not be secret (a community such as
/// `public`, a webhook URL without a token), or read from a file or the
/// environment where it is: in YAML a string, or `{file: ...}` / `{env: ...}`.
/// Never printed by `Debug` either way.
#[derive(Clone, PartialEq, Eq)]
pub enum InlineOrSecret {
    /// Written in the configuration file.
    Inline(String),
    /// Read from a file or an environment variable.
    Secret(SecretRef),
}

impl InlineOrSecret {
    /// The value.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Self::Inline(value) => Ok(value.clone()),
            Self::Secret(secret) => secret.resolve(),
        }
    }
}

impl fmt::Debug for InlineOrSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::Secret(secret) => f.debug_tuple("Secret").field(secret).finish(),
        }
    }
}

impl<'de> Deserialize<'de> for InlineOrSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InlineOrSecretVisitor;

        impl<'de> Visitor<'de> for InlineOrSecretVisitor {
            type Value = InlineOrSecret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or a secret `{file: ...}` or `{env: ...}`")
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<InlineOrSecret, E> {
                Ok(InlineOrSecret::Inline(value.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<InlineOrSecret, A::Error> {
                SecretRef::deserialize(MapAccessDeserializer::new(map)).map(InlineOrSecret::Secret)
            }
        }

        deserializer.deserialize_any(InlineOrSecretVisitor)
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

    #[test]
    fn an_inline_value_is_never_printed() {
        let inline = InlineOrSecret::Inline("https://hooks.example/T0K3N".into());
        assert_eq!(format!("{inline:?}"), "Inline(<redacted>)");
        assert_eq!(inline.resolve().unwrap(), "https://hooks.example/T0K3N");
    }
}
