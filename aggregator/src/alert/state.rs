//! The alert stage's side of the compacted alerts state topic: it writes the
//! state of every alert this instance evaluates (keyed by fingerprint, deleted
//! when the alert ends), and it reads the whole topic back at start and follows
//! it, so that alerts of an earlier run or of another instance resume where they
//! were when their series shows up here.
//!
//! A record also says when the pagers were last told that the alert fires; one
//! that fired but was never notified (the process died in between) is notified
//! when it resumes, so a crash neither pages twice nor loses a page.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_proto::Payload;
use vigil_proto::v1::{AlertState, AlertStatus};
use vigil_runtime::{Message, Publisher};

use vigil_config::duration::unix_nanos;
use vigil_rules::Source;

/// What a record read from the state topic means to this instance.
#[derive(Debug)]
pub(crate) enum Record {
    /// The state of an alert another instance (or an earlier run) evaluated.
    Foreign(AlertState),
    /// The alert with this fingerprint ended.
    Ended(String),
    /// A record this instance wrote itself, or one it cannot read.
    Ignored,
}

/// The records this instance writes.
#[derive(Debug)]
pub(crate) struct StateStore {
    topic: String,
    publisher: Publisher,
    /// The latest state written of each alert this instance evaluates.
    own: HashMap<String, AlertState>,
}

impl StateStore {
    pub(crate) fn new(topic: String, publisher: Publisher) -> Self {
        Self {
            topic,
            publisher,
            own: HashMap::new(),
        }
    }

    /// Writes state changes in order; a `RESOLVED` state deletes the record. The
    /// time of the last notification carries over from the previous state.
    pub(crate) async fn write(&mut self, changes: Vec<AlertState>) {
        for mut state in changes {
            let fingerprint = state.fingerprint.clone();
            let written = if state.status == AlertStatus::Resolved as i32 {
                self.own.remove(&fingerprint);
                self.publisher
                    .publish_tombstone(&self.topic, &fingerprint)
                    .await
            } else {
                if let Some(previous) = self.own.get(&fingerprint) {
                    state.notified_at_unix_nano = previous.notified_at_unix_nano;
                }
                let written = self.publisher.publish_batch(&self.topic, &state).await;
                self.own.insert(fingerprint.clone(), state);
                written
            };
            if let Err(error) = written {
                tracing::error!(%error, topic = %self.topic, %fingerprint, "alert state could not be written");
            }
        }
    }

    /// Takes over a resumed alert's record, with the time it was last notified.
    pub(crate) fn adopt(&mut self, state: AlertState) {
        self.own.insert(state.fingerprint.clone(), state);
    }

    /// Records that the pagers were told at `at` that the alert fires.
    pub(crate) async fn mark_notified(&mut self, fingerprint: &str, at: SystemTime) {
        let Some(state) = self.own.get_mut(fingerprint) else {
            return;
        };
        if state.status != AlertStatus::Firing as i32 {
            return;
        }
        state.notified_at_unix_nano = unix_nanos(at);
        let state = state.clone();
        if let Err(error) = self.publisher.publish_batch(&self.topic, &state).await {
            tracing::error!(%error, topic = %self.topic, %fingerprint, "alert state could not be written");
        }
    }

    /// Hands back the records of alerts whose series no longer arrive here.
    pub(crate) fn release(&mut self, owned: &dyn Fn(&Source) -> bool) -> Vec<AlertState> {
        let released: Vec<String> = self
            .own
            .iter()
            .filter(|(_, state)| !owned(&source_of(state)))
            .map(|(fingerprint, _)| fingerprint.clone())
            .collect();
        released
            .into_iter()
            .filter_map(|fingerprint| self.own.remove(&fingerprint))
            .collect()
    }

    /// What `message` from the state topic means here.
    pub(crate) fn read(&self, message: &Message) -> Record {
        let Some(fingerprint) = message
            .key
            .as_ref()
            .map(|key| String::from_utf8_lossy(key).into_owned())
        else {
            return Record::Ignored;
        };
        if self.own.contains_key(&fingerprint) {
            return Record::Ignored;
        }
        if message.payload.is_empty() {
            return Record::Ended(fingerprint);
        }
        match AlertState::from_payload(&message.payload) {
            Ok(state) => Record::Foreign(state),
            Err(error) => {
                tracing::warn!(%error, %fingerprint, offset = message.offset, "unreadable alert state skipped");
                Record::Ignored
            }
        }
    }
}

/// Where the series of the alert `state` describes arrives.
pub(crate) fn source_of(state: &AlertState) -> Source {
    Source::new(&state.source_topic, state.source_partition)
}

/// The wall-clock time a record stores in Unix nanoseconds.
pub(crate) fn system_time(unix_nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_nanos.max(0) as u64)
}
