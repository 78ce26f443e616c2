//! Commit positions of the index stage: which messages from the bus are finished
//! (indexed or dead-lettered), so a partition's position moves only past those.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use vigil_runtime::Message;

/// Positions of the messages received, per partition, and which are finished: what
/// may be committed.
#[derive(Debug, Default)]
pub(super) struct Positions {
    partitions: HashMap<(String, i32), PartitionPositions>,
    /// Partitions with messages finished since their position was last looked at.
    touched: BTreeSet<(String, i32)>,
}

#[derive(Debug, Default)]
struct PartitionPositions {
    /// Offsets received and not finished, with how many copies (a rebalance can
    /// deliver a message again while its first copy is still being written).
    pending: BTreeMap<i64, u32>,
    /// The highest offset finished.
    highest_finished: Option<i64>,
    /// The last position committed.
    committed: Option<i64>,
}

impl Positions {
    pub(super) fn received(&mut self, message: &Message) {
        *self
            .partitions
            .entry((message.topic.clone(), message.partition))
            .or_default()
            .pending
            .entry(message.offset)
            .or_default() += 1;
    }

    pub(super) fn completed(&mut self, topic: &str, partition: i32, offset: i64) {
        let Some(positions) = self.partitions.get_mut(&(topic.to_owned(), partition)) else {
            return;
        };
        if let Some(copies) = positions.pending.get_mut(&offset) {
            *copies -= 1;
            if *copies == 0 {
                positions.pending.remove(&offset);
            }
        }
        positions.highest_finished = positions.highest_finished.max(Some(offset));
        self.touched.insert((topic.to_owned(), partition));
    }

    /// The positions to commit of the partitions whose messages finished since the
    /// last call, where they moved.
    pub(super) fn take_moved(&mut self) -> Vec<(String, i32, i64)> {
        std::mem::take(&mut self.touched)
            .into_iter()
            .filter_map(|(topic, partition)| {
                let next = self.position_to_commit(&topic, partition)?;
                Some((topic, partition, next))
            })
            .collect()
    }

    /// The position to commit for a partition, if it moved: the first offset not
    /// finished, so everything before it is.
    fn position_to_commit(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let positions = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        let after_finished = positions.highest_finished? + 1;
        let next = match positions.pending.first_key_value() {
            Some((&first_pending, _)) => first_pending.min(after_finished),
            None => after_finished,
        };
        if positions.committed == Some(next) {
            return None;
        }
        positions.committed = Some(next);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, partition: i32, offset: i64) -> Message {
        Message {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            payload: Default::default(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_position_is_committed_only_once_everything_before_it_is_finished() {
        let mut positions = Positions::default();
        for offset in 10..15 {
            positions.received(&message("t", 0, offset));
        }
        positions.received(&message("t", 1, 7));
        // Later batches finish first: nothing before them may be committed.
        positions.completed("t", 0, 13);
        positions.completed("t", 0, 14);
        assert_eq!(positions.position_to_commit("t", 0), Some(10));
        positions.completed("t", 0, 11);
        assert_eq!(
            positions.position_to_commit("t", 0),
            None,
            "10 is still pending"
        );
        positions.completed("t", 0, 10);
        assert_eq!(positions.position_to_commit("t", 0), Some(12));
        positions.completed("t", 0, 12);
        assert_eq!(positions.position_to_commit("t", 0), Some(15));
        assert_eq!(
            positions.position_to_commit("t", 1),
            None,
            "nothing finished there"
        );
        positions.completed("t", 1, 7);
        assert_eq!(positions.position_to_commit("t", 1), Some(8));
    }

    #[test]
    fn a_message_delivered_again_while_its_first_copy_is_written_holds_the_position() {
        let mut positions = Positions::default();
        for offset in 0..3 {
            positions.received(&message("t", 0, offset));
        }
        // A rebalance hands the partition back from its committed position.
        positions.received(&message("t", 0, 1));
        positions.completed("t", 0, 0);
        positions.completed("t", 0, 1);
        positions.completed("t", 0, 2);
        assert_eq!(
            positions.position_to_commit("t", 0),
            Some(1),
            "the second copy of 1 is not written yet"
        );
        positions.completed("t", 0, 1);
        assert_eq!(positions.position_to_commit("t", 0), Some(3));
    }
}
