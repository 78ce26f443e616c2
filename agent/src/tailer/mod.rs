//! The log tailer: the source of the log data path. For every configured path it
//! follows the file, ships new lines as `LogBatch`es to the logs topic and moves the
//! path's checkpoint once the bus acknowledged them.
//!
//! Where reading starts: at a checkpoint if there is one; at the end of a file that
//! existed when the agent started and has none (its history is not shipped); at
//! the beginning of a file that appeared later, or that replaced the one being read
//! (the old one is read to its end first). Files are polled; a later version will
//! be woken by file-system events and add globs and rotated-file discovery.

mod file;
mod lines;
mod shipper;

use crate::checkpoint::CheckpointStore;
use crate::config::{LogBatchConfig, LogFileConfig};
use crate::self_metrics::AgentMetrics;
use file::{Emitted, FileTail, ReadProgress, SourceTemplate, StartAt, identity_at};
use shipper::Shipper;
pub(crate) use shipper::{PublishBatch, publish_to};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use vigil_proto::v1::Resource;

/// How often files are checked for new lines, truncation and replacement.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What the tailer needs besides the list of files.
#[derive(Clone)]
pub(crate) struct TailerContext {
    pub(crate) resource: Resource,
    pub(crate) limits: LogBatchConfig,
    pub(crate) topic: String,
    pub(crate) publish: PublishBatch,
    pub(crate) checkpoints: CheckpointStore,
    pub(crate) metrics: AgentMetrics,
    pub(crate) shutdown_timeout: Duration,
}

impl std::fmt::Debug for TailerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailerContext")
            .field("topic", &self.topic)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The state of one configured path.
#[derive(Debug)]
enum FileState {
    /// No file open: it does not exist (yet), or could not be opened. `next_start`
    /// says where to start once it can be.
    Closed {
        next_start: StartAt,
    },
    Open(Box<FileTail>),
}

/// Follows one configured path.
#[derive(Debug)]
struct Follower {
    template: Arc<SourceTemplate>,
    limits: LogBatchConfig,
    state: FileState,
    shipper: Shipper,
    metrics: AgentMetrics,
    /// The last error reported, so that a persistent one is logged once.
    last_error: Option<String>,
}

/// Takes the initial position of every configured file, then follows each in its
/// own task until `shutdown`; returns once the positions are taken, with the tasks.
///
/// A file with a checkpoint resumes there; one without starts at its end; one that
/// does not exist yet will be read from its beginning once it appears.
pub(crate) fn start(
    files: &[LogFileConfig],
    context: &TailerContext,
    shutdown: &CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for file in files {
        let template = Arc::new(SourceTemplate {
            path: file.path.clone(),
            dataset: file.dataset.clone(),
            resource: context.resource.clone(),
        });
        let next_start = match context.checkpoints.get(&file.path) {
            Some(position) => StartAt::Checkpoint(position),
            None => match identity_at(&file.path) {
                Ok(None) => StartAt::Beginning,
                Ok(Some(_)) | Err(_) => StartAt::End,
            },
        };
        let mut follower = Follower {
            template,
            limits: context.limits,
            state: FileState::Closed { next_start },
            shipper: Shipper::new(
                file.path.clone(),
                context.topic.clone(),
                Arc::clone(&context.publish),
                context.checkpoints.clone(),
                context.metrics.clone(),
            ),
            metrics: context.metrics.clone(),
            last_error: None,
        };
        follower.open_if_present();
        tasks.spawn(follower.run(shutdown.clone(), context.shutdown_timeout));
    }
    tasks
}

impl Follower {
    async fn run(mut self, shutdown: CancellationToken, shutdown_timeout: Duration) {
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                attempt = self.shipper.next_attempt(), if self.shipper.has_in_flight() => {
                    self.shipper.on_attempt(attempt);
                }
                _ = ticker.tick() => self.poll().await,
            }
        }
        self.stop(shutdown_timeout).await;
    }

    /// Reads what is new, if the bus keeps up, and handles truncation and replacement.
    async fn poll(&mut self) {
        let room = self.shipper.room();
        if room == 0 {
            return;
        }
        let FileState::Open(tail) = std::mem::replace(
            &mut self.state,
            FileState::Closed {
                next_start: StartAt::Beginning,
            },
        ) else {
            self.open_if_present();
            return;
        };
        let now = Instant::now();
        let read = tokio::task::spawn_blocking(move || {
            let mut tail = tail;
            let mut out = Vec::new();
            let result = tail.read(room, now, &mut out);
            (tail, out, result)
        })
        .await;
        let (mut tail, mut out, result) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(path = %self.template.path.display(), %error, "file reader failed; reopening the file at its checkpoint");
                self.metrics.log_files_watched.dec();
                self.state = FileState::Closed {
                    next_start: self
                        .shipper
                        .acknowledged()
                        .map_or(StartAt::Beginning, StartAt::Checkpoint),
                };
                return;
            }
        };
        match result {
            Ok(progress) => {
                self.count(progress);
                self.last_error = None;
                if progress.at_end {
                    tail.flush_if_due(now, &mut out);
                    self.shipper.submit(out);
                    self.check_replacement(*tail, now);
                    return;
                }
            }
            Err(error) => self.report(&error),
        }
        self.shipper.submit(out);
        self.state = FileState::Open(tail);
    }

    /// At the end of the open file: if another file now has its path, finishes this
    /// one and opens the new one from its beginning; if the file was deleted,
    /// finishes and closes it (so its space is freed); otherwise keeps following it,
    /// also when it was renamed away: the writer may still append to it.
    fn check_replacement(&mut self, tail: FileTail, now: Instant) {
        let ended = match identity_at(&self.template.path) {
            Ok(Some(identity)) if identity != tail.identity() => {
                tracing::info!(path = %self.template.path.display(), "file was replaced; reading the new one from the beginning");
                true
            }
            Ok(None) => match tail.is_deleted() {
                Ok(deleted) => deleted,
                Err(error) => {
                    self.report(&error);
                    false
                }
            },
            Ok(Some(_)) => false,
            Err(error) => {
                self.report(&error);
                false
            }
        };
        if !ended {
            self.state = FileState::Open(Box::new(tail));
            return;
        }
        let mut out = Vec::new();
        let progress = tail.finish(now, &mut out);
        self.count(progress);
        self.shipper.submit(out);
        self.metrics.log_files_watched.dec();
        self.state = FileState::Closed {
            next_start: StartAt::Beginning,
        };
        self.open_if_present();
    }

    /// Opens the closed file if it exists now.
    fn open_if_present(&mut self) {
        let FileState::Closed { next_start } = self.state else {
            return;
        };
        match FileTail::open(Arc::clone(&self.template), next_start, self.limits) {
            Ok((tail, position)) => {
                tracing::debug!(path = %self.template.path.display(), offset = position.offset, "following file");
                self.metrics.log_files_watched.inc();
                self.shipper.submit(vec![Emitted::Restart(position)]);
                self.state = FileState::Open(Box::new(tail));
                self.last_error = None;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => self.report(&error),
        }
    }

    /// First stop reading, then send what was read and wait for the acknowledgements,
    /// at most `timeout`; the checkpoint keeps what was acknowledged.
    async fn stop(mut self, timeout: Duration) {
        if let FileState::Open(tail) = &mut self.state {
            let mut out = Vec::new();
            tail.take_batch(&mut out);
            self.shipper.submit(out);
            self.metrics.log_files_watched.dec();
        }
        if tokio::time::timeout(timeout, self.shipper.drain())
            .await
            .is_err()
        {
            tracing::warn!(
                path = %self.template.path.display(),
                "shutdown timeout reached with log batches unacknowledged; they are sent again after the restart"
            );
        }
    }

    fn count(&self, progress: ReadProgress) {
        self.metrics.log_lines_read.inc_by(progress.lines);
        self.metrics.log_bytes_read.inc_by(progress.bytes);
        self.metrics
            .log_lines_truncated
            .inc_by(progress.truncated_lines);
    }

    fn report(&mut self, error: &std::io::Error) {
        let message = error.to_string();
        if self.last_error.as_ref() != Some(&message) {
            tracing::warn!(path = %self.template.path.display(), %error, "log file could not be read; retrying");
            self.last_error = Some(message);
        }
    }
}

#[cfg(test)]
mod tests;
