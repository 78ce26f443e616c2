//! How acknowledgements move the journal source's cursor: the shipper passes
//! the cursors of acknowledged batches here, in journal order, and the cursor
//! file is written from what this holds.

use crate::tailer::Progress;
use prometheus_client::metrics::counter::Counter;
use std::sync::{Arc, Mutex};

/// The newest acknowledged cursor and the one last written to the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct CursorState(Arc<Mutex<Cursors>>);

#[derive(Debug, Default)]
struct Cursors {
    acknowledged: Option<String>,
    written: Option<String>,
}

impl CursorState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cursors> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The acknowledged cursor if it was not written yet.
    pub(crate) fn unwritten(&self) -> Option<String> {
        let cursors = self.lock();
        (cursors.acknowledged != cursors.written)
            .then(|| cursors.acknowledged.clone())
            .flatten()
    }

    /// Records that `cursor` is in the file.
    pub(crate) fn written(&self, cursor: String) {
        self.lock().written = Some(cursor);
    }

    fn acknowledge(&self, cursor: String) {
        self.lock().acknowledged = Some(cursor);
    }
}

/// The journal source's side of the shipper: moves the cursor, counts entries.
#[derive(Debug)]
pub(crate) struct JournalProgress {
    pub(crate) state: CursorState,
    pub(crate) shipped: Counter,
}

impl std::fmt::Display for JournalProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("journal")
    }
}

impl Progress for JournalProgress {
    /// The cursor of the newest entry passed.
    type Position = String;

    fn acknowledged(&mut self, passed: Vec<String>, lines: u64) {
        self.shipped.inc_by(lines);
        if let Some(cursor) = passed.into_iter().next_back() {
            self.state.acknowledge(cursor);
        }
    }
}
