//! Unique names for per-test resources.
//!
//! Every test creates its own Kafka topics, etcd key prefixes and Elasticsearch
//! indices so that tests sharing one set of servers never see each other's data.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Returns `prefix` followed by the process id, a per-process counter and a random suffix.
///
/// The result, e.g. `logs.app-41235-7-3fa9c1`, is lowercase and uses only letters,
/// digits, `.`, `-` and `_`, so it is valid as a Kafka topic, an etcd key segment and
/// an Elasticsearch index name. Panics if `prefix` holds anything else, or starts with
/// a character Elasticsearch rejects at the start of an index name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let prefix = prefix.to_lowercase();
    assert!(
        prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
        "unique_name prefix `{prefix}` may only hold letters, digits, `.`, `-` and `_`"
    );
    assert!(
        !prefix.starts_with(['-', '_', '+', '.']),
        "unique_name prefix `{prefix}` must not start with `-`, `_`, `+` or `.`"
    );

    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u64(counter);
    let suffix = hasher.finish() & 0xff_ffff;

    format!("{prefix}-{}-{counter}-{suffix:06x}", process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_keep_the_prefix() {
        let first = unique_name("Logs.App");
        let second = unique_name("logs.app");
        assert_ne!(first, second);
        assert!(first.starts_with("logs.app-"), "{first}");
        assert_eq!(first, first.to_lowercase());
    }

    #[test]
    #[should_panic(expected = "may only hold")]
    fn rejects_characters_invalid_in_index_names() {
        unique_name("bad/name");
    }
}
