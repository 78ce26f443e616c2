//! Log checkpoints: for every file instance tailed, the source id its lines
//! carry, what is known of its first bytes (its head, by which it is recognised)
//! and up to which byte its lines were acknowledged by the bus. The tailer resumes
//! from here after a restart, so a line is neither lost nor sent twice, also when
//! the file was renamed or copied (copytruncate) meanwhile.
//!
//! The file is written atomically (a temporary file in the same directory,
//! `sync_all`, `rename`) in a versioned format, so that a crash mid-write never
//! leaves a half-written checkpoint and a later release can still read this one.
//! A file too short to be recognised yet (no complete line) is remembered by
//! path, device and inode instead; version 1 (which knew only those) is still
//! read that way.
//!
//! Version 2 knew a file by the hash of its first line alone, which files with
//! the same header line share. Its entries are read as instances whose head is
//! that first line: each keeps its source id and offset for the file at the same
//! device and inode whose first line is unchanged, and its head is completed the
//! first time that file is read. A copy made while the agent was stopped for the
//! upgrade is not recognised as such and is read from its beginning.

use crate::self_metrics::AgentMetrics;
use format::{encode, read_checkpoint_file};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

const FILE_NAME: &str = "checkpoints.json";

/// Most file instances remembered per path: the live one and a few rotated ones,
/// so that the checkpoint file does not grow with every rotation.
const MAX_SOURCES_PER_PATH: usize = 4;

/// Bytes at most of a head: once a file holds this many, its head is complete and
/// recognises it wherever it is (a copy, a rename).
pub(crate) const HEAD_BYTES: usize = 1024;

/// The id of one file instance, as `LogSource.source_id` carries it (in hex):
/// downstream, document ids are derived from it and the line's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SourceId(pub(crate) u64);

impl SourceId {
    /// The id in hex, as lines and the checkpoint file carry it.
    pub(crate) fn hex(self) -> String {
        format!("{:016x}", self.0)
    }

    fn parse(hex: &str) -> Option<Self> {
        u64::from_str_radix(hex, 16)
            .ok()
            .filter(|_| hex.len() == 16)
            .map(Self)
    }
}

/// What is known of a file's first bytes: the file is recognised by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// The hash of the file's first `len` bytes; `len` is `HEAD_BYTES` once the
    /// file holds that many, all of the file before.
    Bytes { len: u16, hash: u64 },
    /// The hash of the file's first line with its newline (or of its first
    /// `HEAD_BYTES` if that line is longer), as format 2 recorded it; replaced by
    /// `Bytes` the first time the file is read again.
    FirstLine(u64),
}

impl Head {
    /// The head of a file starting with `prefix`: of its first `HEAD_BYTES` at most.
    pub(crate) fn of(prefix: &[u8]) -> Self {
        let prefix = &prefix[..prefix.len().min(HEAD_BYTES)];
        Self::Bytes {
            len: prefix.len() as u16,
            hash: xxhash_rust::xxh3::xxh3_64(prefix),
        }
    }

    /// Whether the head is complete: no other file starts with the same bytes
    /// unless it is a copy (or its first `HEAD_BYTES` are the same text).
    pub(crate) fn is_complete(self) -> bool {
        matches!(self, Self::Bytes { len, .. } if usize::from(len) == HEAD_BYTES)
    }

    /// Bytes of the file the head covers; 0 for a first-line head, whose length
    /// is not known.
    fn len(self) -> usize {
        match self {
            Self::Bytes { len, .. } => usize::from(len),
            Self::FirstLine(_) => 0,
        }
    }

    /// Whether a file starting with `prefix` (its first `HEAD_BYTES`, or all of it
    /// if shorter) has this head.
    pub(crate) fn matches(self, prefix: &[u8]) -> bool {
        match self {
            Self::Bytes { len, hash } => prefix
                .get(..usize::from(len))
                .is_some_and(|bytes| xxhash_rust::xxh3::xxh3_64(bytes) == hash),
            Self::FirstLine(hash) => {
                let prefix = &prefix[..prefix.len().min(HEAD_BYTES)];
                let end = match memchr::memchr(b'\n', prefix) {
                    Some(newline) => newline + 1,
                    None if prefix.len() == HEAD_BYTES => HEAD_BYTES,
                    None => return false,
                };
                xxhash_rust::xxh3::xxh3_64(&prefix[..end]) == hash
            }
        }
    }

    /// The more informative of two heads of one file: the one covering more bytes.
    pub(crate) fn longer(self, other: Self) -> Self {
        if other.len() > self.len() {
            other
        } else {
            self
        }
    }
}

/// Identity of one file instance: the id its lines carry, its head, and where it
/// lives now (device and inode) to tell a rename from a stranger at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    pub(crate) source: SourceId,
    pub(crate) head: Head,
    pub(crate) device: u64,
    pub(crate) inode: u64,
}

/// Where reading a file instance resumes: every byte before `offset` of the file
/// `identity` was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) identity: FileIdentity,
    pub(crate) offset: u64,
}

/// A file instance the store knows, with where it was last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub(crate) path: PathBuf,
    pub(crate) position: Position,
    /// Its content left the file at the recorded device and inode (that file was
    /// truncated or written again): it lives on only in a copy, if anywhere.
    pub(crate) detached: bool,
}

/// Checkpoints could not be read or written.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {path} could not be created: {cause}")]
    CreateDir { path: String, cause: std::io::Error },
    #[error("checkpoint file {path} could not be read: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error(
        "checkpoint file {path} is corrupt ({reason}); it was moved to {moved_to} and files are tailed from their end"
    )]
    Corrupt {
        path: String,
        reason: String,
        moved_to: String,
    },
    #[error("checkpoint file {path} could not be written: {cause}")]
    Write { path: String, cause: std::io::Error },
}

/// The checkpoints of every file instance, shared by the file readers that update
/// them and the writer that persists them.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointStore {
    file: PathBuf,
    /// No checkpoint file existed (or it was corrupt): the agent starts for the
    /// first time, and files already present start where `read_from` says.
    first_start: bool,
    state: Arc<Mutex<StoreState>>,
    /// Held while the file is written: writes from several threads (the periodic
    /// writer, a reader recording a new instance) neither share the temporary
    /// file nor land out of order.
    writing: Arc<Mutex<()>>,
}

/// One remembered file instance.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    position: Position,
    /// When it last changed, in store generations: pruning keeps the newest.
    changed: u64,
    /// The content left the file at the recorded location.
    detached: bool,
}

/// A position of a file without a complete line: too short yet, or from version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UnidentifiedEntry {
    device: u64,
    inode: u64,
    offset: u64,
}

#[derive(Debug, Default)]
struct StoreState {
    sources: BTreeMap<SourceId, Entry>,
    /// Files without a complete line by path; replaced by an identified entry once
    /// the same file (same device and inode) has one.
    unidentified: BTreeMap<PathBuf, UnidentifiedEntry>,
    /// Bumped on every change, so the writer knows whether there is anything new.
    generation: u64,
    written_generation: u64,
    /// Since when each recorded path was found gone, by the pruning that looks;
    /// not written: after a restart the grace starts again.
    missing_since: BTreeMap<PathBuf, Instant>,
}

impl CheckpointStore {
    /// Opens the checkpoints in `data_dir`, creating the directory if needed.
    ///
    /// A corrupt file is moved aside and reported as the second value; the store then
    /// starts empty, which tails every file from its end: lines may be missed, but
    /// nothing is sent again.
    pub(crate) fn open(
        data_dir: &Path,
    ) -> Result<(Self, Option<CheckpointError>), CheckpointError> {
        std::fs::create_dir_all(data_dir).map_err(|source| CheckpointError::CreateDir {
            path: data_dir.display().to_string(),
            cause: source,
        })?;
        let file = data_dir.join(FILE_NAME);
        let first_start = !file.exists();
        let (state, problem) = match read_checkpoint_file(&file) {
            Ok(state) => (state, None),
            Err(CheckpointError::Corrupt { path, reason, .. }) => {
                let aside = file.with_extension("json.corrupt");
                let moved_to = match std::fs::rename(&file, &aside) {
                    Ok(()) => aside.display().to_string(),
                    Err(error) => format!("nowhere ({error})"),
                };
                let problem = CheckpointError::Corrupt {
                    path,
                    reason,
                    moved_to,
                };
                (StoreState::default(), Some(problem))
            }
            Err(other) => return Err(other),
        };
        let store = Self {
            file,
            first_start: first_start || problem.is_some(),
            state: Arc::new(Mutex::new(state)),
            writing: Arc::default(),
        };
        Ok((store, problem))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the agent starts for the first time: no checkpoints were ever written.
    pub(crate) fn is_first_start(&self) -> bool {
        self.first_start
    }

    /// The known file instances whose head a file starting with `prefix` (its
    /// first `HEAD_BYTES`, or all of it if shorter) has, the most recently
    /// changed first.
    pub(crate) fn matching(&self, prefix: &[u8]) -> Vec<Known> {
        let state = self.lock();
        let mut found: Vec<&Entry> = state
            .sources
            .values()
            .filter(|entry| entry.position.identity.head.matches(prefix))
            .collect();
        found.sort_by_key(|entry| std::cmp::Reverse(entry.changed));
        found
            .into_iter()
            .map(|entry| Known {
                path: entry.path.clone(),
                position: entry.position,
                detached: entry.detached,
            })
            .collect()
    }

    /// The position most recently recorded for a file read at `path`.
    #[cfg(test)]
    pub(crate) fn latest_at(&self, path: &Path) -> Option<Position> {
        self.lock()
            .sources
            .values()
            .filter(|entry| entry.path == path)
            .max_by_key(|entry| entry.changed)
            .map(|entry| entry.position)
    }

    /// Whether any file was read at `path` before: then a file found there is read
    /// from its beginning rather than from its end.
    pub(crate) fn knows_path(&self, path: &Path) -> bool {
        let state = self.lock();
        state.unidentified.contains_key(path)
            || state.sources.values().any(|entry| entry.path == path)
    }

    /// The offset recorded for a file without a complete line at `path`, if the
    /// file there is still that one.
    pub(crate) fn unidentified_offset(&self, path: &Path, device: u64, inode: u64) -> Option<u64> {
        self.lock()
            .unidentified
            .get(path)
            .filter(|entry| entry.device == device && entry.inode == inode)
            .map(|entry| entry.offset)
    }

    /// Records a file at `path` that has no complete line yet, read up to `offset`.
    pub(crate) fn set_unidentified(&self, path: &Path, device: u64, inode: u64, offset: u64) {
        let entry = UnidentifiedEntry {
            device,
            inode,
            offset,
        };
        let mut state = self.lock();
        if state.unidentified.get(path) != Some(&entry) {
            state.unidentified.insert(path.to_owned(), entry);
            state.generation += 1;
        }
    }

    /// Records that everything before `position` of the file read at `path` was
    /// acknowledged. The head kept is the longer of the recorded and the given one:
    /// both describe the same instance. An instance detached from a file stays so
    /// when a late acknowledgement of that file arrives.
    pub(crate) fn set(&self, path: &Path, position: Position) {
        let mut state = self.lock();
        let identity = position.identity;
        let mut position = position;
        let mut detached = false;
        if let Some(entry) = state.sources.get(&identity.source) {
            position.identity.head = entry.position.identity.head.longer(identity.head);
            detached = entry.detached && same_location(entry.position.identity, identity);
        }
        let unchanged = state.sources.get(&identity.source).is_some_and(|entry| {
            entry.position == position && entry.path == path && entry.detached == detached
        });
        let superseded = state
            .unidentified
            .get(path)
            .is_some_and(|entry| entry.device == identity.device && entry.inode == identity.inode);
        if superseded {
            state.unidentified.remove(path);
        }
        if !unchanged || superseded {
            state.generation += 1;
            let changed = state.generation;
            state.sources.insert(
                identity.source,
                Entry {
                    path: path.to_owned(),
                    position,
                    changed,
                    detached,
                },
            );
        }
    }

    /// Records what more is known of the head of the instance `source`, if the
    /// store knows it; its position stays. Returns whether anything changed.
    pub(crate) fn extend_head(&self, source: SourceId, head: Head) -> bool {
        let mut state = self.lock();
        let Some(entry) = state.sources.get_mut(&source) else {
            return false;
        };
        let longer = entry.position.identity.head.longer(head);
        if longer == entry.position.identity.head {
            return false;
        }
        entry.position.identity.head = longer;
        state.generation += 1;
        true
    }

    /// Records that the content of the instance `identity` left its file (it was
    /// truncated or written again), unless the instance was since read elsewhere.
    pub(crate) fn detach(&self, identity: FileIdentity) {
        let mut state = self.lock();
        let Some(entry) = state.sources.get_mut(&identity.source) else {
            return;
        };
        if !entry.detached && same_location(entry.position.identity, identity) {
            entry.detached = true;
            state.generation += 1;
        }
    }

    /// Records that every instance recorded at `device` and `inode` but `keep`
    /// left that file: it holds other content now.
    pub(crate) fn detach_all_at(&self, device: u64, inode: u64, keep: Option<SourceId>) {
        let mut state = self.lock();
        let mut changed = false;
        for (source, entry) in &mut state.sources {
            let identity = entry.position.identity;
            if Some(*source) != keep
                && !entry.detached
                && identity.device == device
                && identity.inode == inode
            {
                entry.detached = true;
                changed = true;
            }
        }
        if changed {
            state.generation += 1;
        }
    }

    /// Forgets the instances, and the files without a complete line, recorded at
    /// paths found gone at every call for `grace` (so `Duration::ZERO` forgets
    /// at once), unless `in_use` says their file (device, inode) is open or
    /// waits to be followed: a file renamed away is found at its new path
    /// within the grace. Returns how many were forgotten.
    pub(crate) fn prune_vanished(
        &self,
        now: Instant,
        grace: Duration,
        in_use: impl Fn(u64, u64) -> bool,
    ) -> usize {
        let paths: BTreeSet<PathBuf> = {
            let state = self.lock();
            let remembered = state.sources.values().map(|entry| &entry.path);
            remembered
                .chain(state.unidentified.keys())
                .cloned()
                .collect()
        };
        let missing: BTreeSet<PathBuf> = paths
            .into_iter()
            .filter(|path| {
                matches!(std::fs::symlink_metadata(path), Err(error) if error.kind() == std::io::ErrorKind::NotFound)
            })
            .collect();
        let mut state = self.lock();
        state.missing_since.retain(|path, _| missing.contains(path));
        let mut expired = BTreeSet::new();
        for path in missing {
            let since = *state.missing_since.entry(path.clone()).or_insert(now);
            if now.duration_since(since) >= grace {
                expired.insert(path);
            }
        }
        let before = state.sources.len() + state.unidentified.len();
        state.sources.retain(|_, entry| {
            let identity = entry.position.identity;
            !expired.contains(&entry.path) || in_use(identity.device, identity.inode)
        });
        state
            .unidentified
            .retain(|path, entry| !expired.contains(path) || in_use(entry.device, entry.inode));
        let forgotten = before - state.sources.len() - state.unidentified.len();
        if forgotten > 0 {
            state.generation += 1;
        }
        forgotten
    }

    /// Records a new file instance read at `path` from `position` and writes the
    /// checkpoints at once, before any line carries its source id: an id that
    /// cannot be derived again from the file must survive a crash. Blocking.
    pub(crate) fn record_new(
        &self,
        path: &Path,
        position: Position,
    ) -> Result<(), CheckpointError> {
        self.set(path, position);
        self.write_if_changed().map(drop)
    }

    /// Writes the checkpoints if they changed since the last write; returns whether
    /// it wrote. Blocking: call from a blocking thread.
    pub(crate) fn write_if_changed(&self) -> Result<bool, CheckpointError> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (snapshot, generation) = {
            let mut state = self.lock();
            if state.generation == state.written_generation && self.file.exists() {
                return Ok(false);
            }
            prune(&mut state.sources);
            (encode(&state), state.generation)
        };
        let written = snapshot
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(&self.file, &bytes));
        written.map_err(|source| CheckpointError::Write {
            path: self.file.display().to_string(),
            cause: source,
        })?;
        let mut state = self.lock();
        state.written_generation = state.written_generation.max(generation);
        Ok(true)
    }
}

fn same_location(a: FileIdentity, b: FileIdentity) -> bool {
    (a.device, a.inode) == (b.device, b.inode)
}

/// Keeps the `MAX_SOURCES_PER_PATH` most recently changed entries of every path.
fn prune(sources: &mut BTreeMap<SourceId, Entry>) {
    let mut by_path: BTreeMap<&Path, Vec<(u64, SourceId)>> = BTreeMap::new();
    for (source, entry) in sources.iter() {
        by_path
            .entry(&entry.path)
            .or_default()
            .push((entry.changed, *source));
    }
    let mut stale = Vec::new();
    for entries in by_path.values_mut() {
        entries.sort_unstable_by(|a, b| b.cmp(a));
        stale.extend(entries.iter().skip(MAX_SOURCES_PER_PATH).map(|(_, s)| *s));
    }
    for source in stale {
        sources.remove(&source);
    }
}

/// Writes `store` every `every` when it changed, until `stop`.
pub(crate) async fn write_periodically(
    store: CheckpointStore,
    every: Duration,
    metrics: AgentMetrics,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = write_now(&store, &metrics).await {
            tracing::warn!(%error, "checkpoints not written; retrying");
        }
    }
}

/// Writes `store` now if it changed, on a blocking thread; either way the file
/// then matches the acknowledged positions, which the metrics record.
pub(crate) async fn write_now(
    store: &CheckpointStore,
    metrics: &AgentMetrics,
) -> Result<(), CheckpointError> {
    let writer = store.clone();
    let written = tokio::task::spawn_blocking(move || writer.write_if_changed())
        .await
        .map_err(|error| CheckpointError::Write {
            path: store.file.display().to_string(),
            cause: std::io::Error::other(error.to_string()),
        })??;
    if written {
        metrics.checkpoint_writes.inc();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics.checkpoint_persisted.set(now.as_secs_f64());
    Ok(())
}

/// Replaces `file` with `contents` so that readers see the old or the new contents,
/// never a mix, even across a crash.
fn write_atomically(file: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = file.with_extension("json.tmp");
    let mut handle = std::fs::File::create(&temporary)?;
    handle.write_all(contents)?;
    handle.sync_all()?;
    drop(handle);
    std::fs::rename(&temporary, file)?;
    if let Some(directory) = file.parent() {
        // Makes the rename itself durable.
        std::fs::File::open(directory)?.sync_all()?;
    }
    Ok(())
}

mod format;
#[cfg(test)]
mod tests;
