//! The `spool` section: how much disk the agent's metric spool may take under
//! `data_dir`, where metric batches wait while Kafka cannot take them.

use super::InvalidConfig;
use serde::{Deserialize, Deserializer};

/// The smallest spool accepted: a few minutes of one host's metrics.
const MIN_SPOOL_BYTES: u64 = 1024 * 1024;

/// The metric spool: batches of the host, container and SNMP sources wait here,
/// in order, until Kafka acknowledged them.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Most bytes the spool's files take; when a new batch does not fit, the oldest
    /// batches are dropped and counted. A number of bytes or a size such as `256MiB`.
    #[serde(default = "default_max_bytes", deserialize_with = "byte_size")]
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
        }
    }
}

impl SpoolConfig {
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_bytes < MIN_SPOOL_BYTES {
            return Err(InvalidConfig::field(
                "spool.max_bytes",
                format!("must be at least 1MiB, not {} bytes", self.max_bytes),
            ));
        }
        Ok(())
    }
}

fn default_max_bytes() -> u64 {
    256 * 1024 * 1024
}

/// A size as written in the file: a number of bytes, or a number with one of the
/// suffixes `B`, `KiB`, `MiB`, `GiB`.
#[derive(Deserialize)]
#[serde(untagged)]
enum WrittenSize {
    Bytes(u64),
    Text(String),
}

fn byte_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match WrittenSize::deserialize(deserializer)? {
        WrittenSize::Bytes(bytes) => Ok(bytes),
        WrittenSize::Text(text) => parse_byte_size(&text).map_err(serde::de::Error::custom),
    }
}

/// Parses `256MiB`, `512 KiB`, `1GiB` or `1048576`.
pub(crate) fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}` has the unknown unit `{other}`; write bytes, KiB, MiB or GiB"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(multiplier))
        .ok_or_else(|| format!("`{text}` is not a size such as `256MiB`"))
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;

    #[test]
    fn sizes_are_bytes_or_binary_units_and_default_to_256_mib() {
        let max_bytes =
            |yaml: &str| AgentConfig::from_yaml(yaml, "agent.yaml").map(|c| c.spool.max_bytes);
        assert_eq!(max_bytes("{}").unwrap(), 256 << 20);
        assert_eq!(max_bytes("spool: {max_bytes: 2097152}").unwrap(), 2 << 20);
        assert_eq!(max_bytes("spool: {max_bytes: 64MiB}").unwrap(), 64 << 20);
        assert_eq!(max_bytes("spool: {max_bytes: 2 GiB}").unwrap(), 2 << 30);
        assert_eq!(max_bytes("spool: {max_bytes: 4096KiB}").unwrap(), 4 << 20);
    }

    #[test]
    fn a_bad_size_is_refused_naming_the_field() {
        let error = |yaml: &str| {
            AgentConfig::from_yaml(yaml, "agent.yaml")
                .unwrap_err()
                .to_string()
        };
        let too_small = error("spool:\n  max_bytes: 512KiB\n");
        assert!(
            too_small.ends_with("`spool.max_bytes` must be at least 1MiB, not 524288 bytes"),
            "{too_small}"
        );
        assert!(too_small.starts_with("agent.yaml:2:"), "{too_small}");
        let unit = error("spool: {max_bytes: 256MB}");
        assert!(
            unit.contains("`256MB` has the unknown unit `MB`; write bytes, KiB, MiB or GiB"),
            "{unit}"
        );
        let unknown = error("spool: {size: 1GiB}");
        assert!(unknown.contains("size"), "{unknown}");
    }
}
