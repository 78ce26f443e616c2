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
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// The on-disk format, tagged with its version.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum CheckpointFile {
    #[serde(rename = "1")]
    V1 { files: Vec<FileCheckpointV1> },
    #[serde(rename = "2")]
    V2 {
        files: Vec<FileCheckpointV2>,
        #[serde(default)]
        unidentified: Vec<UnidentifiedV2>,
    },
    #[serde(rename = "3")]
    V3 {
        files: Vec<FileCheckpointV3>,
        #[serde(default)]
        unidentified: Vec<UnidentifiedV2>,
    },
}

/// A file entry of format 1, frozen as released: its `source_id` is
/// `<device>:<inode>`, where format 2 has the fingerprint, so the two entry types
/// stay separate even while their fields look alike.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheckpointV1 {
    path: PathBuf,
    source_id: String,
    device: u64,
    inode: u64,
    offset: u64,
}

/// A file entry of format 2, frozen as released: its `source_id` is the hash of
/// the file's first line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheckpointV2 {
    path: PathBuf,
    source_id: String,
    device: u64,
    inode: u64,
    offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheckpointV3 {
    /// Where the file was last read, for people, for pruning and to tell whether
    /// the original of a copy was truncated.
    path: PathBuf,
    /// The id its lines carry, in hex.
    source_id: String,
    /// Bytes the head covers; absent for a first-line head taken over from
    /// format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    head_bytes: Option<u16>,
    /// The hash of the head, in hex.
    head_hash: String,
    device: u64,
    inode: u64,
    offset: u64,
    /// The content left the file at `device` and `inode`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    detached: bool,
}

/// A file without a complete line yet (formats 2 and 3).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnidentifiedV2 {
    path: PathBuf,
    device: u64,
    inode: u64,
    offset: u64,
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

fn encode(state: &StoreState) -> Result<Vec<u8>, serde_json::Error> {
    let files = state
        .sources
        .values()
        .map(|entry| {
            let identity = entry.position.identity;
            let (head_bytes, head_hash) = match identity.head {
                Head::Bytes { len, hash } => (Some(len), hash),
                Head::FirstLine(hash) => (None, hash),
            };
            FileCheckpointV3 {
                path: entry.path.clone(),
                source_id: identity.source.hex(),
                head_bytes,
                head_hash: SourceId(head_hash).hex(),
                device: identity.device,
                inode: identity.inode,
                offset: entry.position.offset,
                detached: entry.detached,
            }
        })
        .collect();
    let unidentified = state
        .unidentified
        .iter()
        .map(|(path, entry)| UnidentifiedV2 {
            path: path.clone(),
            device: entry.device,
            inode: entry.inode,
            offset: entry.offset,
        })
        .collect();
    // Fails only for a path that is not UTF-8.
    serde_json::to_vec_pretty(&CheckpointFile::V3 {
        files,
        unidentified,
    })
}

/// Reads a checkpoint file; a missing file means no checkpoints yet.
fn read_checkpoint_file(file: &Path) -> Result<StoreState, CheckpointError> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(StoreState::default());
        }
        Err(source) => {
            return Err(CheckpointError::Read {
                path: file.display().to_string(),
                cause: source,
            });
        }
    };
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: file.display().to_string(),
        reason,
        moved_to: String::new(),
    };
    let hex = |path: &Path, field: &str, value: &str| {
        SourceId::parse(value).ok_or_else(|| {
            corrupt(format!(
                "entry for {} has {field} `{value}`, not 16 hexadecimal digits",
                path.display()
            ))
        })
    };
    let mut state = StoreState::default();
    let (files, unidentified) =
        match serde_json::from_slice(&bytes).map_err(|error| corrupt(error.to_string()))? {
            CheckpointFile::V1 { files } => {
                for entry in files {
                    if format!("{}:{}", entry.device, entry.inode) != entry.source_id {
                        return Err(corrupt(format!(
                            "entry for {} has source_id {} but device {} and inode {}",
                            entry.path.display(),
                            entry.source_id,
                            entry.device,
                            entry.inode
                        )));
                    }
                    state.unidentified.insert(
                        entry.path,
                        UnidentifiedEntry {
                            device: entry.device,
                            inode: entry.inode,
                            offset: entry.offset,
                        },
                    );
                }
                return Ok(state);
            }
            CheckpointFile::V2 {
                files,
                unidentified,
            } => {
                let mut known = Vec::new();
                for entry in files {
                    let fingerprint = hex(&entry.path, "source_id", &entry.source_id)?;
                    let identity = FileIdentity {
                        source: fingerprint,
                        head: Head::FirstLine(fingerprint.0),
                        device: entry.device,
                        inode: entry.inode,
                    };
                    known.push((entry.path, identity, entry.offset, false));
                }
                (known, unidentified)
            }
            CheckpointFile::V3 {
                files,
                unidentified,
            } => {
                let mut known = Vec::new();
                for entry in files {
                    let source = hex(&entry.path, "source_id", &entry.source_id)?;
                    let hash = hex(&entry.path, "head_hash", &entry.head_hash)?.0;
                    let head = match entry.head_bytes {
                        Some(len) if (1..=HEAD_BYTES).contains(&usize::from(len)) => {
                            Head::Bytes { len, hash }
                        }
                        Some(len) => {
                            return Err(corrupt(format!(
                                "entry for {} has head_bytes {len}, not 1 to {HEAD_BYTES}",
                                entry.path.display()
                            )));
                        }
                        None => Head::FirstLine(hash),
                    };
                    let identity = FileIdentity {
                        source,
                        head,
                        device: entry.device,
                        inode: entry.inode,
                    };
                    known.push((entry.path, identity, entry.offset, entry.detached));
                }
                (known, unidentified)
            }
        };
    for entry in unidentified {
        state.unidentified.insert(
            entry.path,
            UnidentifiedEntry {
                device: entry.device,
                inode: entry.inode,
                offset: entry.offset,
            },
        );
    }
    for (changed, (path, identity, offset, detached)) in (0..).zip(files) {
        state.sources.insert(
            identity.source,
            Entry {
                path,
                position: Position { identity, offset },
                changed,
                detached,
            },
        );
    }
    state.generation = state.sources.len() as u64;
    state.written_generation = state.generation;
    Ok(state)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn position(source: u64, inode: u64, offset: u64) -> Position {
        Position {
            identity: FileIdentity {
                source: SourceId(source),
                head: Head::of(b"time,level,message\n"),
                device: 8,
                inode,
            },
            offset,
        }
    }

    #[test]
    fn checkpoints_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
        assert!(problem.is_none());
        assert!(store.is_first_start());
        store.set(Path::new("/var/log/a.log"), position(1, 42, 1234));
        assert!(store.write_if_changed().unwrap());
        assert!(!store.write_if_changed().unwrap(), "nothing changed");

        let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
        assert!(!reopened.is_first_start());
        assert_eq!(
            reopened.matching(b"time,level,message\n1,INFO,x\n"),
            [Known {
                path: "/var/log/a.log".into(),
                position: position(1, 42, 1234),
                detached: false,
            }]
        );
        assert_eq!(
            reopened.latest_at(Path::new("/var/log/a.log")),
            Some(position(1, 42, 1234))
        );
        assert!(!dir.path().join("checkpoints.json.tmp").exists());
    }

    #[tokio::test]
    async fn the_metrics_record_writes_and_when_the_file_was_last_current() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        let metrics = AgentMetrics::register(&vigil_runtime::SelfMetrics::default());
        assert_eq!(metrics.checkpoint_persisted.get(), 0.0);
        store.set(Path::new("/a.log"), position(1, 7, 10));
        write_now(&store, &metrics).await.unwrap();
        let first = metrics.checkpoint_persisted.get();
        assert!(first > 1.7e9, "a Unix time: {first}");
        assert_eq!(metrics.checkpoint_writes.get(), 1);
        // Unchanged positions: nothing to write, but the file is still current.
        write_now(&store, &metrics).await.unwrap();
        assert_eq!(metrics.checkpoint_writes.get(), 1);
        assert!(metrics.checkpoint_persisted.get() >= first);
    }

    #[test]
    fn the_format_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        store.set(Path::new("/a.log"), position(0xabc, 7, 10));
        store.write_if_changed().unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["version"], "3");
        let file = &value["files"][0];
        assert_eq!(file["source_id"], "0000000000000abc");
        assert_eq!(file["head_bytes"], 19);
        let hash = xxhash_rust::xxh3::xxh3_64(b"time,level,message\n");
        assert_eq!(file["head_hash"], format!("{hash:016x}"));
        assert_eq!(file["inode"], 7);
        assert_eq!(file["offset"], 10);
    }

    #[test]
    fn version_1_offsets_are_taken_over_by_the_same_file_at_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            br#"{"version":"1","files":[{"path":"/a.log","source_id":"8:7","device":8,"inode":7,"offset":10}]}"#,
        )
        .unwrap();
        let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
        assert!(problem.is_none());
        assert_eq!(
            store.unidentified_offset(Path::new("/a.log"), 8, 7),
            Some(10)
        );
        assert_eq!(store.unidentified_offset(Path::new("/a.log"), 8, 9), None);
        assert_eq!(store.unidentified_offset(Path::new("/b.log"), 8, 7), None);
        assert!(store.knows_path(Path::new("/a.log")));
        store.set(Path::new("/a.log"), position(1, 7, 12));
        assert_eq!(store.unidentified_offset(Path::new("/a.log"), 8, 7), None);
        assert!(store.knows_path(Path::new("/a.log")));
    }

    #[test]
    fn version_2_entries_keep_their_source_id_with_their_first_line_as_head() {
        let dir = tempfile::tempdir().unwrap();
        let first_line = xxhash_rust::xxh3::xxh3_64(b"time,level,message\n");
        std::fs::write(
            dir.path().join(FILE_NAME),
            format!(
                r#"{{"version":"2","files":[{{"path":"/a.csv","source_id":"{first_line:016x}","device":8,"inode":7,"offset":30}}],"unidentified":[]}}"#
            ),
        )
        .unwrap();
        let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
        assert!(problem.is_none(), "{problem:?}");
        let taken_over = Position {
            identity: FileIdentity {
                source: SourceId(first_line),
                head: Head::FirstLine(first_line),
                device: 8,
                inode: 7,
            },
            offset: 30,
        };
        assert_eq!(
            store.matching(b"time,level,message\n1,INFO,x\n"),
            [Known {
                path: "/a.csv".into(),
                position: taken_over,
                detached: false,
            }]
        );
        assert!(store.matching(b"time,level\n").is_empty());
        assert!(store.matching(b"time,level,message").is_empty());

        // Read again, the file's head replaces its first line; the format moves on.
        let mut read_again = taken_over;
        read_again.identity.head = Head::of(b"time,level,message\n1,INFO,x\n");
        store.set(Path::new("/a.csv"), read_again);
        store.write_if_changed().unwrap();
        let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(reopened.latest_at(Path::new("/a.csv")), Some(read_again));
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains(r#""version": "3""#), "{text}");
    }

    #[test]
    fn a_first_line_head_carried_over_survives_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        let mut legacy = position(5, 7, 30);
        legacy.identity.head = Head::FirstLine(5);
        store.set(Path::new("/a.csv"), legacy);
        store.write_if_changed().unwrap();
        let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(reopened.latest_at(Path::new("/a.csv")), Some(legacy));
    }

    #[test]
    fn the_recorded_head_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        let path = Path::new("/a.csv");
        let short = position(1, 7, 19);
        store.set(path, short);
        let longer = Head::of(b"time,level,message\n1,INFO,x\n");
        store.extend_head(SourceId(1), longer);
        assert_eq!(store.latest_at(path).unwrap().identity.head, longer);
        // An acknowledgement of a batch read before the head grew keeps it.
        let mut acknowledged = short;
        acknowledged.offset = 28;
        store.set(path, acknowledged);
        let latest = store.latest_at(path).unwrap();
        assert_eq!((latest.identity.head, latest.offset), (longer, 28));
        // Nothing is known of an instance the store does not hold.
        store.extend_head(SourceId(2), longer);
        assert!(store.matching(b"time,level,message\n1,INFO,x\n").len() == 1);
    }

    #[test]
    fn a_new_instance_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        store
            .record_new(Path::new("/a.csv"), position(9, 7, 0))
            .unwrap();
        let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.latest_at(Path::new("/a.csv")),
            Some(position(9, 7, 0))
        );
    }

    #[test]
    fn a_file_without_a_complete_line_is_remembered_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        store.set_unidentified(Path::new("/empty.log"), 8, 3, 0);
        store.write_if_changed().unwrap();
        let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
        assert!(reopened.knows_path(Path::new("/empty.log")));
        assert_eq!(
            reopened.unidentified_offset(Path::new("/empty.log"), 8, 3),
            Some(0)
        );
    }

    #[test]
    fn old_instances_of_a_path_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        for source in 0..10 {
            store.set(Path::new("/a.log"), position(source, source, 5));
        }
        store.set(Path::new("/a.log.1"), position(100, 3, 7));
        store.write_if_changed().unwrap();
        let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
        let mut kept: Vec<u64> = reopened
            .matching(b"time,level,message\n")
            .iter()
            .map(|known| known.position.identity.source.0)
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, [6, 7, 8, 9, 100]);
        assert_eq!(
            reopened.latest_at(Path::new("/a.log")),
            Some(position(9, 9, 5))
        );
    }

    #[test]
    fn a_write_replaces_the_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        store.set(Path::new("/a.log"), position(1, 7, 10));
        store.write_if_changed().unwrap();
        // A temporary file left by a crash mid-write is simply overwritten.
        std::fs::write(dir.path().join("checkpoints.json.tmp"), b"{\"vers").unwrap();
        store.set(Path::new("/a.log"), position(1, 7, 20));
        store.write_if_changed().unwrap();
        let (reopened, problem) = CheckpointStore::open(dir.path()).unwrap();
        assert!(problem.is_none());
        assert_eq!(
            reopened.latest_at(Path::new("/a.log")),
            Some(position(1, 7, 20))
        );
    }

    #[test]
    fn a_corrupt_file_is_reported_moved_aside_and_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"{\"version\":\"3\",\"files\":[{",
        )
        .unwrap();
        let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
        let message = problem.expect("corruption is reported").to_string();
        assert!(
            message.starts_with(&format!(
                "checkpoint file {} is corrupt (",
                dir.path().join(FILE_NAME).display()
            )),
            "{message}"
        );
        assert!(
            message.ends_with("checkpoints.json.corrupt and files are tailed from their end"),
            "{message}"
        );
        assert!(store.latest_at(Path::new("/a.log")).is_none());
        assert!(dir.path().join("checkpoints.json.corrupt").exists());
        // The next write creates a fresh, valid file.
        assert!(store.write_if_changed().unwrap());
        assert!(CheckpointStore::open(dir.path()).unwrap().1.is_none());
    }

    #[test]
    fn a_head_of_impossible_length_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(
            &file,
            br#"{"version":"3","files":[{"path":"/a.log","source_id":"0000000000000001","head_bytes":2000,"head_hash":"0000000000000002","device":8,"inode":7,"offset":10}]}"#,
        )
        .unwrap();
        let error = read_checkpoint_file(&file).err().unwrap().to_string();
        assert!(
            error.contains("entry for /a.log has head_bytes 2000, not 1 to 1024"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_version_is_corrupt_not_silently_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(&file, b"{\"version\":\"4\",\"files\":[]}").unwrap();
        let error = read_checkpoint_file(&file).err().unwrap().to_string();
        assert!(error.contains("unknown variant `4`"), "{error}");
    }

    #[test]
    fn heads_cover_the_first_kibibyte_and_first_line_heads_the_first_line() {
        let csv = b"time,level,message\n1,INFO,x\n";
        let head = Head::of(csv);
        assert!(head.matches(csv));
        assert!(head.matches(&[&csv[..], b"2,INFO,y\n"].concat()));
        assert!(!head.matches(b"time,level,message\n1,INFO,y\n"));
        assert!(!head.matches(&csv[..20]), "a file shorter than the head");
        assert!(!head.is_complete());

        let long = vec![b'x'; HEAD_BYTES + 10];
        let complete = Head::of(&long);
        assert!(complete.is_complete());
        assert_eq!(complete, Head::of(&long[..HEAD_BYTES]));
        assert_eq!(head.longer(complete), complete);
        assert_eq!(complete.longer(head), complete);

        let first_line = Head::FirstLine(xxhash_rust::xxh3::xxh3_64(b"time,level,message\n"));
        assert!(first_line.matches(csv));
        assert!(!first_line.matches(b"time,level,message"), "no newline yet");
        assert!(!first_line.matches(b"other\n"));
        assert_eq!(first_line.longer(head), head);
        let long_line = Head::FirstLine(xxhash_rust::xxh3::xxh3_64(&long[..HEAD_BYTES]));
        assert!(long_line.matches(&long));
    }
}
