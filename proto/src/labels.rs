//! Label lists and content identity: the stable hashes behind Elasticsearch
//! document ids and alert fingerprints.
//!
//! Ids are derived from what a record is (resource, source, offset or timestamp,
//! labels), never from when it was sent, so a redelivered batch lands on the same
//! ids and never makes a duplicate.

use crate::v1::Label;
use xxhash_rust::xxh3::Xxh3;

/// A label from anything string-like.
pub fn label(name: impl Into<String>, value: impl Into<String>) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

/// The value of the label called `name`, if present.
pub fn find<'a>(labels: &'a [Label], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// Builds a 128-bit content hash from identity parts, rendered as 32 hex digits.
///
/// Each part is length-prefixed so that `("ab", "c")` and `("a", "bc")` differ.
#[derive(Default)]
pub struct ContentId {
    hasher: Xxh3,
}

impl std::fmt::Debug for ContentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentId").finish_non_exhaustive()
    }
}

impl ContentId {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one identity part.
    pub fn part(mut self, bytes: impl AsRef<[u8]>) -> Self {
        let bytes = bytes.as_ref();
        self.hasher.update(&(bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
        self
    }

    /// Adds a label set, independent of the order the labels were given in.
    pub fn labels(mut self, labels: &[Label]) -> Self {
        let mut sorted: Vec<&Label> = labels.iter().collect();
        sorted.sort_by(|a, b| (&a.name, &a.value).cmp(&(&b.name, &b.value)));
        for label in sorted {
            self = self.part(&label.name).part(&label.value);
        }
        self
    }

    pub fn finish(self) -> String {
        format!("{:032x}", self.hasher.digest128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_content_not_on_label_order() {
        let a = [label("ifName", "eth0"), label("mode", "user")];
        let b = [label("mode", "user"), label("ifName", "eth0")];
        assert_eq!(
            ContentId::new().part("h").labels(&a).finish(),
            ContentId::new().part("h").labels(&b).finish()
        );
        assert_ne!(
            ContentId::new().part("ab").part("c").finish(),
            ContentId::new().part("a").part("bc").finish()
        );
        assert_eq!(ContentId::new().part("x").finish().len(), 32);
    }
}
