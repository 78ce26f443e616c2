//! The identity of a metric series inside the stages that keep state per series:
//! derive and the rules engine recognise each sample's series by a 64-bit hash of
//! its resource, name and labels, computed from the decoded view without building
//! owned label lists, and keep their per-series state in maps keyed by it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use xxhash_rust::xxh3::xxh3_64;

/// A map whose keys are already well-mixed 64-bit hashes (series ids, label
/// hashes): hashing them again would only cost time on the hot path.
pub type HashedMap<K, V> = HashMap<K, V, BuildHasherDefault<PassThroughHasher>>;

/// Hasher for keys that are themselves a hash: the key's `u64` is the hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    /// Only reached by keys other than a bare `u64`; folds their bytes in (FNV-1a)
    /// so that such a key still hashes correctly, if not as fast.
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Identity of one series inside a stage: a hash of its resource, metric name and
/// labels. Only ever held in memory, so the hash function may change between
/// releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u64);

impl SeriesId {
    /// The series of metric `name` with labels hashed to `labels_hash`
    /// ([`hash_labels`]) on the resource hashed to `resource_hash`.
    pub fn of(resource_hash: u64, name: &str, labels_hash: u64) -> SeriesId {
        SeriesId(resource_hash ^ labels_hash.rotate_left(23) ^ xxh3_64(name.as_bytes()))
    }
}

/// A hash of label pairs in their order, using `buffer` as scratch space.
pub fn hash_labels<'a>(
    buffer: &mut Vec<u8>,
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> u64 {
    buffer.clear();
    for (name, value) in labels {
        buffer.extend_from_slice(name.as_bytes());
        buffer.push(0xff);
        buffer.extend_from_slice(value.as_bytes());
        buffer.push(0xfe);
    }
    xxh3_64(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_cannot_trade_bytes() {
        let mut buffer = Vec::new();
        let one = hash_labels(&mut buffer, [("ab", "c")]);
        let other = hash_labels(&mut buffer, [("a", "bc")]);
        let split = hash_labels(&mut buffer, [("a", ""), ("b", "c")]);
        assert_ne!(one, other);
        assert_ne!(one, split);
        assert_eq!(one, hash_labels(&mut buffer, [("ab", "c")]));
    }

    #[test]
    fn a_series_differs_by_resource_name_and_labels() {
        let mut buffer = Vec::new();
        let labels = hash_labels(&mut buffer, [("cpu", "0")]);
        let base = SeriesId::of(1, "cpu.busy", labels);
        assert_ne!(base, SeriesId::of(2, "cpu.busy", labels));
        assert_ne!(base, SeriesId::of(1, "cpu.idle", labels));
        assert_ne!(
            base,
            SeriesId::of(1, "cpu.busy", hash_labels(&mut buffer, [("cpu", "1")]))
        );
    }
}
