//! The log tailer: the source of the log data path. It finds the files of every
//! configured path or glob, follows each, ships new lines as `LogBatch`es to the
//! logs topic and moves the file's checkpoint once the bus acknowledged them.
//!
//! Where reading starts: at the checkpoint of the file's fingerprint if there is
//! one (so a file renamed or copied keeps its position, and a stranger in a reused
//! inode does not inherit one); at the end of a file present at the agent's first
//! start (its history is not shipped; `read_from` may say otherwise); at the
//! beginning of any other file: one that appeared later, also while the agent was
//! stopped, or that replaced the one being read (the old one is read to its end
//! first). Open files are polled; new
//! files are found on file-system events and by a periodic rescan.
//!
//! Rotation: a file renamed while open is read to its end through its handle; if
//! the glob also matches its new name it is not opened twice (its location is
//! held), and once released its fingerprint's checkpoint says it was read. A
//! rotated copy (copytruncate) has the fingerprint of the original, so only what
//! was not read of it yet is shipped. A deleted file is read to its end, closed and
//! forgotten. While the bus holds reading up, a deleted file stays open at most
//! `close_removed_after`; then it is closed to free its space and its unread
//! bytes are counted as lost.
//!
//! Bounds: each `logs[]` entry follows at most `max_open_files` files at once.
//! Files are opened in the scan's order (by path); only when an entry's files do
//! not all fit do its most recently modified ones get the slots, and the others
//! wait for a follower to end. The checkpoints of files whose path is gone are
//! forgotten after a grace period, or at once for the paths the agent's first
//! scan does not reach.

mod discovery;
mod file;
pub(crate) mod fuzzing;
mod identity;
mod lines;
mod multiline;
mod shipper;
pub(crate) mod wire;

use crate::checkpoint::CheckpointStore;
use crate::config::{LogBatchConfig, LogFileConfig};
use crate::parse::Chain;
use crate::self_metrics::{AgentMetrics, LossLabels, PathLabels};
use discovery::{Discovery, Found};
use file::{Emitted, FileTail, Location, ReadProgress, SourceTemplate, StartAt, location_at};
use multiline::MultilineRule;
use prometheus_client::metrics::gauge::Gauge;
use shipper::Shipper;
pub(crate) use shipper::{Delivery, EncodedBatch, Progress, PublishBatch, publish_to};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use vigil_proto::v1::Resource;

/// How often files are checked for new lines, truncation and replacement.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often the globs are expanded again, in case a file-system event was missed.
const RESCAN_INTERVAL: Duration = Duration::from_secs(5);

/// How long the path of a file with a checkpoint must be gone, with the file
/// neither open nor waiting, before its checkpoint is forgotten: long enough for
/// a file renamed away to be found at its new path first.
const VANISHED_CHECKPOINT_GRACE: Duration = Duration::from_secs(10 * 60);

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

/// The state of one followed path.
#[derive(Debug)]
enum FileState {
    /// No file open: it was replaced or deleted, or could not be opened.
    /// `next_start` says where to start once it can be.
    Closed {
        next_start: StartAt,
    },
    Open(Box<FileTail>),
}

/// The locations of the files held open by followers: a path that leads to one of
/// them (the file was renamed within the glob) is not opened a second time.
#[derive(Debug, Clone, Default)]
struct HeldFiles(Arc<Mutex<HashSet<Location>>>);

impl HeldFiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Location>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn contains(&self, location: Location) -> bool {
        self.lock().contains(&location)
    }
}

/// Follows one path.
#[derive(Debug)]
struct Follower {
    template: Arc<SourceTemplate>,
    limits: LogBatchConfig,
    state: FileState,
    shipper: Shipper,
    checkpoints: CheckpointStore,
    metrics: AgentMetrics,
    held: HeldFiles,
    /// The location of the open file, registered in `held`.
    holding: Option<Location>,
    /// Locations of files closed with batches still unacknowledged: held until the
    /// shipper is idle, so that a scan does not read them again meanwhile.
    releasing: Vec<Location>,
    /// The last error reported, so that a persistent one is logged once.
    last_error: Option<String>,
    /// The last read stopped because the in-flight limit was reached, not at the
    /// end of the file: read on as soon as an acknowledgement makes room, instead
    /// of waiting for the next poll tick.
    behind: bool,
    /// This path's series of `agent_log_file_lag_bytes`.
    lag: Gauge,
    /// How long a deleted file stays open while reading it is held up.
    close_removed_after: Duration,
    /// Since when the open file is known to be deleted while reading was held up.
    deleted_since: Option<Instant>,
}

/// Finds files and runs one follower per file.
#[derive(Debug)]
struct Tailer {
    files: Vec<LogFileConfig>,
    /// The compiled `multiline` rule of each of `files`.
    rules: Vec<Option<Arc<MultilineRule>>>,
    context: TailerContext,
    discovery: Discovery,
    followers: JoinSet<PathBuf>,
    /// Paths with a follower, and the index of their `logs[]` entry, by task.
    followed: HashMap<tokio::task::Id, (PathBuf, usize)>,
    /// Files found but not followed, as their entry's `max_open_files` is
    /// reached: where each starts, as decided when it was first found.
    waiting: HashMap<PathBuf, Found>,
    held: HeldFiles,
    shutdown: CancellationToken,
    /// Wakes the tailer for a rescan on file-system events; kept alive with it.
    _watcher: Option<notify::RecommendedWatcher>,
    woken: mpsc::Receiver<()>,
}

/// Finds the configured files and takes the initial position of each, then
/// follows them, and the files that appear later, until `shutdown`; returns once
/// the initial positions are taken, with the task.
///
/// A file with a checkpoint resumes there; one without starts at its end (or as
/// `read_from` says) unless a file was read at its path before; one that appears
/// later is read from its beginning.
pub(crate) fn start(
    files: &[LogFileConfig],
    context: &TailerContext,
    shutdown: &CancellationToken,
) -> JoinSet<()> {
    let discovery = Discovery::new(files);
    let (wake, woken) = mpsc::channel(1);
    // Watching starts before the first scan, so that no file created in between
    // waits for the rescan.
    let watcher = watch(&discovery, wake);
    let mut tailer = Tailer {
        files: files.to_vec(),
        rules: files
            .iter()
            .map(|file| {
                file.multiline
                    .as_ref()
                    .and_then(MultilineRule::new)
                    .map(Arc::new)
            })
            .collect(),
        context: context.clone(),
        discovery,
        followers: JoinSet::new(),
        followed: HashMap::new(),
        waiting: HashMap::new(),
        held: HeldFiles::default(),
        shutdown: shutdown.clone(),
        _watcher: watcher,
        woken,
    };
    tailer.rescan(true);
    // What the first scan neither opened nor queued is gone or out of reach: the
    // checkpoints of its vanished paths need no grace.
    tailer.prune_checkpoints(Duration::ZERO);
    let mut tasks = JoinSet::new();
    tasks.spawn(tailer.run());
    tasks
}

/// Wakes the tailer on creations and renames in the directories globs may match
/// in (of the entries with `file_events`); without it (too many watches, a
/// directory missing, events turned off) the rescan still finds new files, later.
fn watch(discovery: &Discovery, wake: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher, event::ModifyKind};
    let roots = discovery.watch_roots();
    if roots.is_empty() {
        return None;
    }
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(
                event.kind,
                EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(_))
            )
        {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = wake.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "file-system events unavailable; new log files are found by rescanning");
            return None;
        }
    };
    for (root, recursive) in roots {
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        if let Err(error) = watcher.watch(&root, mode) {
            tracing::debug!(directory = %root.display(), %error, "directory not watched; its new log files are found by rescanning");
        }
    }
    Some(watcher)
}

impl Tailer {
    async fn run(mut self) {
        let mut rescan =
            tokio::time::interval_at(Instant::now() + RESCAN_INTERVAL, RESCAN_INTERVAL);
        rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                Some(joined) = self.followers.join_next_with_id(), if !self.followers.is_empty() => {
                    self.forget(joined);
                }
                Some(()) = self.woken.recv() => self.rescan(false),
                _ = rescan.tick() => {
                    self.rescan(false);
                    self.prune_checkpoints(VANISHED_CHECKPOINT_GRACE);
                }
            }
        }
        while let Some(joined) = self.followers.join_next_with_id().await {
            self.forget(joined);
        }
    }

    /// Starts a follower for every file found that has none, in the scan's
    /// order, as far as its entry's `max_open_files` allows; the files left over
    /// wait for a slot.
    fn rescan(&mut self, startup: bool) {
        let followed: HashSet<&PathBuf> = self.followed.values().map(|(path, _)| path).collect();
        let held = &self.held;
        let mut found =
            self.discovery
                .scan(startup, &self.context.checkpoints, |path, location| {
                    followed.contains(&path.to_path_buf()) || held.contains(location)
                });
        for file in &mut found {
            // A file keeps the start decided when it was first found, also if
            // that was at the agent's first start and it waited since.
            if let Some(earlier) = self.waiting.get(&file.path) {
                file.start = earlier.start;
            }
        }
        let mut free: Vec<usize> = self
            .files
            .iter()
            .map(|file| file.max_open_files.get())
            .collect();
        for (_, config) in self.followed.values() {
            free[*config] = free[*config].saturating_sub(1);
        }
        let (follow, wait) = share_slots(found, &free);
        for file in follow {
            self.follow(file);
        }
        if wait.len() > self.waiting.len() {
            tracing::warn!(
                waiting = wait.len(),
                "log files wait for a free slot: `max_open_files` of their `logs[]` entry is reached"
            );
        }
        self.waiting = wait
            .into_iter()
            .map(|file| (file.path.clone(), file))
            .collect();
        self.context
            .metrics
            .log_files_waiting
            .set(i64::try_from(self.waiting.len()).unwrap_or(i64::MAX));
    }

    /// Forgets the checkpoints of files whose path is gone for `grace`, except
    /// those open or waiting to be followed.
    fn prune_checkpoints(&self, grace: Duration) {
        let waiting: HashSet<Location> = self.waiting.values().map(|file| file.location).collect();
        let held = &self.held;
        let forgotten = self.context.checkpoints.prune_vanished(
            Instant::now().into_std(),
            grace,
            |device, inode| {
                let location = Location { device, inode };
                held.contains(location) || waiting.contains(&location)
            },
        );
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                "checkpoints of log files whose path is gone were forgotten"
            );
        }
    }

    fn follow(&mut self, found: Found) {
        let config = &self.files[found.config];
        let context = &self.context;
        let template = Arc::new(SourceTemplate {
            path: found.path.clone(),
            dataset: config.dataset.clone(),
            resource: context.resource.clone(),
            partial_line_timeout: config.partial_line_timeout,
            multiline: self.rules[found.config].clone(),
            parsers: Chain::new(&config.parsers, &config.dataset, &context.metrics),
            sightings: self.discovery.sightings(),
        });
        let mut follower = Follower {
            template,
            limits: context.limits,
            state: FileState::Closed {
                next_start: found.start,
            },
            shipper: Shipper::new(
                found.path.clone(),
                context.topic.clone(),
                Arc::clone(&context.publish),
                context.checkpoints.clone(),
                context.metrics.clone(),
            ),
            checkpoints: context.checkpoints.clone(),
            metrics: context.metrics.clone(),
            held: self.held.clone(),
            holding: None,
            releasing: Vec::new(),
            last_error: None,
            behind: false,
            lag: context
                .metrics
                .log_file_lag_bytes
                .get_or_create(&lag_labels(&found.path))
                .clone(),
            close_removed_after: config.close_removed_after,
            deleted_since: None,
        };
        follower.open_if_present();
        let task = self
            .followers
            .spawn(follower.run(self.shutdown.clone(), context.shutdown_timeout));
        self.followed.insert(task.id(), (found.path, found.config));
    }

    /// Forgets an ended follower; its slot goes to a waiting file at once.
    fn forget(&mut self, joined: Result<(tokio::task::Id, PathBuf), tokio::task::JoinError>) {
        match joined {
            Ok((id, path)) => {
                tracing::debug!(path = %path.display(), "log file gone; no longer followed");
                self.followed.remove(&id);
            }
            Err(error) => {
                if let Some((path, _)) = self.followed.remove(&error.id()) {
                    tracing::error!(path = %path.display(), %error, "log file follower failed; the file is found again by the next scan");
                }
            }
        }
        if !self.waiting.is_empty() && !self.shutdown.is_cancelled() {
            self.rescan(false);
        }
    }
}

impl Follower {
    /// Follows the path until shutdown, or until its file is gone and everything
    /// read from it was acknowledged; returns the path.
    async fn run(mut self, shutdown: CancellationToken, shutdown_timeout: Duration) -> PathBuf {
        let (lag, labels) = (
            self.metrics.log_file_lag_bytes.clone(),
            lag_labels(&self.template.path),
        );
        let forget_lag = move || lag.remove(&labels);
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                attempt = self.shipper.next_attempt(), if self.shipper.has_in_flight() => {
                    self.shipper.on_attempt(attempt);
                    self.release_if_idle();
                    if self.behind {
                        self.poll().await;
                    }
                }
                _ = ticker.tick() => {
                    self.poll().await;
                    if self.is_gone() {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = self.shipper.drain() => {
                                self.release_if_idle();
                                forget_lag();
                                return self.template.path.clone();
                            }
                        }
                    }
                }
            }
        }
        let path = self.template.path.clone();
        self.stop(shutdown_timeout).await;
        forget_lag();
        path
    }

    /// No file is open and none is at the path any more.
    fn is_gone(&self) -> bool {
        matches!(self.state, FileState::Closed { .. })
            && matches!(location_at(&self.template.path), Ok(None))
    }

    /// Registers the location of the file just opened.
    fn hold(&mut self, location: Location) {
        self.held.lock().insert(location);
        self.holding = Some(location);
    }

    /// Releases the location of the file just closed once what was read of it is
    /// acknowledged.
    fn release(&mut self) {
        self.releasing.extend(self.holding.take());
        self.release_if_idle();
    }

    fn release_if_idle(&mut self) {
        if !self.releasing.is_empty() && self.shipper.is_idle() {
            let mut held = self.held.lock();
            for location in self.releasing.drain(..) {
                held.remove(&location);
            }
        }
    }

    /// Reads what is new, if the bus keeps up, and handles truncation and replacement.
    async fn poll(&mut self) {
        self.measure_lag();
        let room = self.shipper.room();
        if room == 0 {
            self.close_if_deleted_long_ago();
            return;
        }
        self.deleted_since = None;
        self.behind = false;
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
                self.release();
                self.state = FileState::Closed {
                    next_start: StartAt::Beginning,
                };
                return;
            }
        };
        match result {
            Ok(progress) => {
                self.count(progress);
                self.last_error = None;
                if progress.at_end {
                    self.count(tail.flush_if_due(now, &mut out));
                    if let Err(error) = tail.restart_if_rewritten(&mut out) {
                        self.report(&error);
                    }
                    self.shipper.submit(out);
                    self.check_replacement(*tail, now);
                    return;
                }
                self.behind = true;
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
        let ended = match location_at(&self.template.path) {
            Ok(Some(location)) if location != tail.location() => {
                tracing::info!(path = %self.template.path.display(), "file was replaced; reading the new one from the beginning");
                true
            }
            Ok(None) => match tail.is_deleted() {
                Ok(deleted) => {
                    if deleted {
                        tracing::info!(path = %self.template.path.display(), "file was deleted; it was read to its end and is closed");
                        self.metrics.log_files_deleted.inc();
                    }
                    deleted
                }
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
        self.release();
        self.state = FileState::Closed {
            next_start: StartAt::Beginning,
        };
        self.open_if_present();
    }

    /// While the bus holds reading up: closes the open file once it has been
    /// deleted for `close_removed_after`, although it was not read to its end, so
    /// that its disk space is freed. What was read is still shipped; what was
    /// not is lost, counted and logged.
    fn close_if_deleted_long_ago(&mut self) {
        let FileState::Open(tail) = &self.state else {
            return;
        };
        if !tail.is_deleted().unwrap_or(false) {
            self.deleted_since = None;
            return;
        }
        let now = Instant::now();
        let since = *self.deleted_since.get_or_insert(now);
        if now.duration_since(since) < self.close_removed_after {
            return;
        }
        let FileState::Open(tail) = std::mem::replace(
            &mut self.state,
            FileState::Closed {
                next_start: StartAt::Beginning,
            },
        ) else {
            return;
        };
        let lost = tail.unread_bytes().unwrap_or(0);
        tracing::warn!(
            path = %self.template.path.display(),
            lost_bytes = lost,
            after = ?self.close_removed_after,
            "file was deleted and could not be read to its end in time; it is closed and its unread bytes are lost"
        );
        self.metrics
            .log_bytes_lost
            .get_or_create(&LossLabels {
                reason: "closed_removed".into(),
            })
            .inc_by(lost);
        self.metrics.log_files_deleted.inc();
        let mut out = Vec::new();
        let progress = tail.finish(now, &mut out);
        self.count(progress);
        self.shipper.submit(out);
        self.metrics.log_files_watched.dec();
        self.release();
        self.deleted_since = None;
    }

    /// Opens the closed file if it exists now.
    fn open_if_present(&mut self) {
        let FileState::Closed { next_start } = self.state else {
            return;
        };
        match FileTail::open(
            Arc::clone(&self.template),
            next_start,
            self.limits,
            &self.checkpoints,
        ) {
            Ok((tail, position)) => {
                tracing::debug!(
                    path = %self.template.path.display(),
                    offset = position.map(|position| position.offset),
                    "following file"
                );
                self.metrics.log_files_watched.inc();
                self.hold(tail.location());
                self.shipper
                    .submit(position.map(Emitted::Mark).into_iter().collect());
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
            self.release();
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

    /// Sets the lag gauge of the path: what its open file holds beyond the read
    /// position (nothing when no file is open).
    fn measure_lag(&self) {
        let unread = match &self.state {
            FileState::Open(tail) => tail.unread_bytes().unwrap_or(0),
            FileState::Closed { .. } => 0,
        };
        self.lag.set(i64::try_from(unread).unwrap_or(i64::MAX));
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

/// Which of `found` (in scan order) are followed now, with `free` slots per
/// `logs[]` entry, and which wait: all files of an entry when they fit, else its
/// most recently modified. Both keep the scan's order.
fn share_slots(found: Vec<Found>, free: &[usize]) -> (Vec<Found>, Vec<Found>) {
    let mut admitted = vec![true; found.len()];
    for (config, &slots) in free.iter().enumerate() {
        let mut files: Vec<usize> = (0..found.len())
            .filter(|&index| found[index].config == config)
            .collect();
        if files.len() <= slots {
            continue;
        }
        files.sort_by(|&a, &b| {
            found[b]
                .modified
                .cmp(&found[a].modified)
                .then_with(|| found[a].path.cmp(&found[b].path))
        });
        for &index in &files[slots..] {
            admitted[index] = false;
        }
    }
    let (follow, wait): (Vec<_>, Vec<_>) = found
        .into_iter()
        .zip(admitted)
        .partition(|(_, admitted)| *admitted);
    let files = |pairs: Vec<(Found, bool)>| pairs.into_iter().map(|(file, _)| file).collect();
    (files(follow), files(wait))
}

/// The labels of the lag series of `path`.
fn lag_labels(path: &std::path::Path) -> PathLabels {
    PathLabels {
        path: path.display().to_string(),
    }
}

#[cfg(test)]
mod tests;
