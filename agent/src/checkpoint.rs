//! Log checkpoints: for every file instance tailed, identified by the fingerprint of
//! its first line, up to which byte its lines were acknowledged by the bus. The
//! tailer resumes from here after a restart, so a line is neither lost nor sent
//! twice, also when the file was renamed or copied (copytruncate) meanwhile.
//!
//! The file is written atomically (a temporary file in the same directory,
//! `sync_all`, `rename`) in a versioned format, so that a crash mid-write never
//! leaves a half-written checkpoint and a later release can still read this one.
//! A file too short to have a fingerprint yet is remembered by path, device and
//! inode instead; version 1 (which knew only those) is still read that way.

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

/// Bytes at most that make up a fingerprint.
pub(crate) const FINGERPRINT_BYTES: usize = 1024;

/// A hash of a file's first line (with its newline), or of its first
/// `FINGERPRINT_BYTES` if that line is longer: it names the content, so a renamed
/// or copied file keeps it and a new file in a reused inode does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Fingerprint(pub(crate) u64);

impl Fingerprint {
    /// The fingerprint of a file starting with `head`, or `None` while `head` holds
    /// neither a newline nor `FINGERPRINT_BYTES` bytes (the file is too short yet).
    pub(crate) fn of_head(head: &[u8]) -> Option<Self> {
        let head = &head[..head.len().min(FINGERPRINT_BYTES)];
        let end = match memchr::memchr(b'\n', head) {
            Some(newline) => newline + 1,
            None if head.len() == FINGERPRINT_BYTES => FINGERPRINT_BYTES,
            None => return None,
        };
        Some(Self(xxhash_rust::xxh3::xxh3_64(&head[..end])))
    }

    /// The `LogSource.source_id` of lines of this content: the hash in hex.
    pub(crate) fn source_id(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Identity of one file instance: its content's fingerprint, and where it lives
/// now (device and inode) to notice cheaply that a path leads to another file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    pub(crate) fingerprint: Fingerprint,
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

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheckpointV2 {
    /// Where the file was last read, for people and for pruning.
    path: PathBuf,
    /// The fingerprint in hex, as lines of this file carry it.
    source_id: String,
    device: u64,
    inode: u64,
    offset: u64,
}

/// A file without a fingerprint yet.
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
}

/// One remembered file instance.
#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    position: Position,
    /// When it last changed, in store generations: pruning keeps the newest.
    changed: u64,
}

/// A position of a file without fingerprint: too short yet, or from version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UnidentifiedEntry {
    device: u64,
    inode: u64,
    offset: u64,
}

#[derive(Debug, Default)]
struct StoreState {
    sources: BTreeMap<Fingerprint, Entry>,
    /// Files without fingerprint by path; replaced by a fingerprinted entry once
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

    /// The acknowledged position of the file instance with `fingerprint`, if any.
    pub(crate) fn get(&self, fingerprint: Fingerprint) -> Option<Position> {
        self.lock()
            .sources
            .get(&fingerprint)
            .map(|entry| entry.position)
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

    /// The offset recorded for a file without fingerprint at `path`, if the file
    /// there is still that one.
    pub(crate) fn unidentified_offset(&self, path: &Path, device: u64, inode: u64) -> Option<u64> {
        self.lock()
            .unidentified
            .get(path)
            .filter(|entry| entry.device == device && entry.inode == inode)
            .map(|entry| entry.offset)
    }

    /// Records a file at `path` that has no fingerprint yet, read up to `offset`.
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
    /// acknowledged.
    pub(crate) fn set(&self, path: &Path, position: Position) {
        let mut state = self.lock();
        let unchanged = state
            .sources
            .get(&position.identity.fingerprint)
            .is_some_and(|entry| entry.position == position && entry.path == path);
        let identity = position.identity;
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
                position.identity.fingerprint,
                Entry {
                    path: path.to_owned(),
                    position,
                    changed,
                },
            );
        }
    }

    /// Writes the checkpoints if they changed since the last write; returns whether
    /// it wrote. Blocking: call from a blocking thread.
    pub(crate) fn write_if_changed(&self) -> Result<bool, CheckpointError> {
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

/// Keeps the `MAX_SOURCES_PER_PATH` most recently changed entries of every path.
fn prune(sources: &mut BTreeMap<Fingerprint, Entry>) {
    let mut by_path: BTreeMap<&Path, Vec<(u64, Fingerprint)>> = BTreeMap::new();
    for (fingerprint, entry) in sources.iter() {
        by_path
            .entry(&entry.path)
            .or_default()
            .push((entry.changed, *fingerprint));
    }
    let mut stale = Vec::new();
    for entries in by_path.values_mut() {
        entries.sort_unstable_by(|a, b| b.cmp(a));
        stale.extend(entries.iter().skip(MAX_SOURCES_PER_PATH).map(|(_, f)| *f));
    }
    for fingerprint in stale {
        sources.remove(&fingerprint);
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
        .map(|entry| FileCheckpointV2 {
            path: entry.path.clone(),
            source_id: entry.position.identity.fingerprint.source_id(),
            device: entry.position.identity.device,
            inode: entry.position.identity.inode,
            offset: entry.position.offset,
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
    serde_json::to_vec_pretty(&CheckpointFile::V2 {
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
    let mut state = StoreState::default();
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
        }
        CheckpointFile::V2 {
            files,
            unidentified,
        } => {
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
            for (changed, entry) in (0..).zip(files) {
                let fingerprint = u64::from_str_radix(&entry.source_id, 16)
                    .ok()
                    .filter(|_| entry.source_id.len() == 16)
                    .map(Fingerprint)
                    .ok_or_else(|| {
                        corrupt(format!(
                            "entry for {} has source_id `{}`, not a 16-digit hexadecimal fingerprint",
                            entry.path.display(),
                            entry.source_id
                        ))
                    })?;
                let position = Position {
                    identity: FileIdentity {
                        fingerprint,
                        device: entry.device,
                        inode: entry.inode,
                    },
                    offset: entry.offset,
                };
                state.sources.insert(
                    fingerprint,
                    Entry {
                        path: entry.path,
                        position,
                        changed,
                    },
                );
            }
            state.generation = state.sources.len() as u64;
            state.written_generation = state.generation;
        }
    }
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

    fn position(fingerprint: u64, inode: u64, offset: u64) -> Position {
        Position {
            identity: FileIdentity {
                fingerprint: Fingerprint(fingerprint),
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
        assert_eq!(reopened.get(Fingerprint(1)), Some(position(1, 42, 1234)));
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
        assert_eq!(value["version"], "2");
        assert_eq!(value["files"][0]["source_id"], "0000000000000abc");
        assert_eq!(value["files"][0]["inode"], 7);
        assert_eq!(value["files"][0]["offset"], 10);
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
    fn a_file_without_fingerprint_is_remembered_by_path() {
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
    fn a_copy_is_found_by_its_fingerprint_and_old_instances_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        for fingerprint in 0..10 {
            store.set(Path::new("/a.log"), position(fingerprint, fingerprint, 5));
        }
        store.set(Path::new("/a.log.1"), position(100, 3, 7));
        store.write_if_changed().unwrap();
        let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get(Fingerprint(100)), Some(position(100, 3, 7)));
        let kept: Vec<u64> = (0..10)
            .filter(|&f| reopened.get(Fingerprint(f)).is_some())
            .collect();
        assert_eq!(kept, [6, 7, 8, 9]);
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
        assert_eq!(reopened.get(Fingerprint(1)), Some(position(1, 7, 20)));
    }

    #[test]
    fn a_corrupt_file_is_reported_moved_aside_and_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"{\"version\":\"2\",\"files\":[{",
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
    fn an_unknown_version_is_corrupt_not_silently_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(&file, b"{\"version\":\"3\",\"files\":[]}").unwrap();
        let error = read_checkpoint_file(&file).err().unwrap().to_string();
        assert!(error.contains("unknown variant `3`"), "{error}");
    }

    #[test]
    fn fingerprints_wait_for_a_newline_or_enough_bytes() {
        assert_eq!(Fingerprint::of_head(b""), None);
        assert_eq!(Fingerprint::of_head(b"short"), None);
        let line = Fingerprint::of_head(b"first\n").unwrap();
        assert_eq!(Fingerprint::of_head(b"first\nsecond\n"), Some(line));
        assert_ne!(Fingerprint::of_head(b"other\n"), Some(line));
        let long = vec![b'x'; FINGERPRINT_BYTES - 1];
        assert_eq!(Fingerprint::of_head(&long), None);
        let mut longer = vec![b'x'; FINGERPRINT_BYTES + 10];
        let full = Fingerprint::of_head(&longer).unwrap();
        longer.push(b'\n');
        assert_eq!(Fingerprint::of_head(&longer), Some(full));
    }
}
