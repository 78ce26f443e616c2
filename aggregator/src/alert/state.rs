//! The alert stage's side of the compacted alerts state topic: it writes the
//! state of every alert this instance evaluates (keyed by fingerprint, deleted
//! when the alert ends), and it reads the whole topic back at start and follows
//! it, so that alerts of an earlier run or of another instance resume where they
//! were when their series shows up here.
//!
//! A record also says when the pagers were last told that the alert fires; one
//! that fired but was never notified (the process died in between) is notified
//! when it resumes, so a crash neither pages twice nor loses a page. Records go
//! out through the stage's [`Outbox`], which retries them while Kafka is away.

use super::outbox::{Acknowledgement, Outbox, Outgoing};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vigil_proto::Payload;
use vigil_proto::v1::{AlertState, AlertStatus};
use vigil_runtime::Message;

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

/// How long writing state changes waits for Kafka's acknowledgement before the
/// stage goes on to notify anyway.
const ACKNOWLEDGEMENT_WAIT: Duration = Duration::from_secs(10);

/// The records this instance writes.
#[derive(Debug)]
pub(crate) struct StateStore {
    outbox: Outbox,
    /// The latest state written of each alert this instance evaluates.
    own: HashMap<String, AlertState>,
}

impl StateStore {
    pub(crate) fn new(outbox: Outbox) -> Self {
        Self {
            outbox,
            own: HashMap::new(),
        }
    }

    /// Writes state changes in order; a `RESOLVED` state deletes the record. The
    /// time of the last notification carries over from the previous state.
    /// Waits for Kafka's acknowledgement (so the pagers hear of a change only
    /// once it would survive a crash), but not longer than
    /// [`ACKNOWLEDGEMENT_WAIT`], and not at all while publishing is failing:
    /// then the records stay queued and paging goes on.
    pub(crate) async fn write(&mut self, changes: Vec<AlertState>) {
        let mut acknowledgements = Vec::with_capacity(changes.len());
        for mut state in changes {
            let fingerprint = state.fingerprint.clone();
            let record = if state.status == AlertStatus::Resolved as i32 {
                self.own.remove(&fingerprint);
                Outgoing::Tombstone(fingerprint)
            } else {
                if let Some(previous) = self.own.get(&fingerprint) {
                    state.notified_at_unix_nano = previous.notified_at_unix_nano;
                }
                self.own.insert(fingerprint, state.clone());
                Outgoing::State(state)
            };
            acknowledgements.push(self.outbox.send_acknowledged(record));
        }
        self.await_written(acknowledgements).await;
    }

    async fn await_written(&self, acknowledgements: Vec<Acknowledgement>) {
        if acknowledgements.is_empty() || self.outbox.is_failing() {
            return;
        }
        let written = futures::future::join_all(acknowledgements);
        if tokio::time::timeout(ACKNOWLEDGEMENT_WAIT, written)
            .await
            .is_err()
        {
            tracing::warn!(
                wait = ?ACKNOWLEDGEMENT_WAIT,
                "alert state not acknowledged in time; going on, the records stay queued"
            );
        }
    }

    /// Takes over a resumed alert's record, with the time it was last notified.
    pub(crate) fn adopt(&mut self, state: AlertState) {
        self.own.insert(state.fingerprint.clone(), state);
    }

    /// Records that the pagers were told at `at` that the alert fires.
    pub(crate) fn mark_notified(&mut self, fingerprint: &str, at: SystemTime) {
        let Some(state) = self.own.get_mut(fingerprint) else {
            return;
        };
        if state.status != AlertStatus::Firing as i32 {
            return;
        }
        state.notified_at_unix_nano = unix_nanos(at);
        // Its acknowledgement is not awaited: the page has gone out already.
        self.outbox.send(Outgoing::State(state.clone()));
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
