//! How far a stage's consumer group has come on a topic: the offsets it committed
//! against the topic's end, read from the broker outside the group. A stage commits
//! a message only once it is done with it (the index stage: once its documents are
//! stored), so a group that committed up to the end has finished every message.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::Duration;

use crate::wait_while_progressing;

/// How long one request to the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages on `topic` and how many of them `group` committed, summed over the
/// partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupProgress {
    committed: u64,
    end: u64,
}

/// A reader of the offsets `group` committed, outside the group.
fn committed_offsets_reader(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("create a reader of committed offsets")
}

/// Reads the progress of the group of `reader` on `topic`.
fn group_progress(reader: &BaseConsumer, group: &str, topic: &str) -> GroupProgress {
    let metadata = reader
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .unwrap_or_else(|error| panic!("metadata of {topic}: {error}"));
    let mut partitions = TopicPartitionList::new();
    let mut progress = GroupProgress {
        committed: 0,
        end: 0,
    };
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = reader
            .fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)
            .unwrap_or_else(|error| panic!("watermarks of {topic}/{}: {error}", partition.id()));
        progress.end += u64::try_from(high).unwrap_or(0);
        partitions.add_partition(topic, partition.id());
    }
    let committed = reader
        .committed_offsets(partitions, REQUEST_TIMEOUT)
        .unwrap_or_else(|error| panic!("offsets {group} committed on {topic}: {error}"));
    for element in committed.elements() {
        if let Offset::Offset(offset) = element.offset() {
            progress.committed += u64::try_from(offset).unwrap_or(0);
        }
    }
    progress
}

/// Waits until `group` has committed every message on `topic` now, for as long as
/// its commits keep moving; panics once they stalled for `stall_limit`.
pub fn wait_until_group_finished(bootstrap: &str, group: &str, topic: &str, stall_limit: Duration) {
    let reader = committed_offsets_reader(bootstrap, group);
    let end = group_progress(&reader, group, topic).end;
    wait_while_progressing(
        &format!("consumer group {group} to commit all {end} messages of {topic}"),
        end,
        stall_limit,
        || group_progress(&reader, group, topic).committed,
    );
}
