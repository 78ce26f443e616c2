//! Log checkpoints: for every tailed path, which file instance (device and inode)
//! and up to which byte its lines were acknowledged by the bus. The tailer resumes
//! from here after a restart, so a line is neither lost nor sent twice.
//!
//! The file is written atomically (a temporary file in the same directory,
//! `sync_all`, `rename`) in a versioned format, so that a crash mid-write never
//! leaves a half-written checkpoint and a later release can still read this one.

use prometheus_client::metrics::counter::Counter;
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

/// Identity of one file instance: a rotated-away file and its successor at the same
/// path differ, and lines are identified by (source id, offset) downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileIdentity {
    pub(crate) device: u64,
    pub(crate) inode: u64,
}

impl FileIdentity {
    pub(crate) fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }

    /// The `LogSource.source_id` of lines of this file: `<device>:<inode>`.
    pub(crate) fn source_id(self) -> String {
        format!("{}:{}", self.device, self.inode)
    }
}

/// Where reading a path resumes: every byte before `offset` of the file `identity`
/// was acknowledged.
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
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCheckpointV1 {
    path: PathBuf,
    source_id: String,
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

/// The checkpoints of every tailed path, shared by the file readers that update
/// them and the writer that persists them.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointStore {
    file: PathBuf,
    state: Arc<Mutex<StoreState>>,
}

#[derive(Debug, Default)]
struct StoreState {
    positions: BTreeMap<PathBuf, Position>,
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
        let (positions, problem) = match read_checkpoint_file(&file) {
            Ok(positions) => (positions, None),
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
                (BTreeMap::new(), Some(problem))
            }
            Err(other) => return Err(other),
        };
        let store = Self {
            file,
            state: Arc::new(Mutex::new(StoreState {
                positions,
                ..StoreState::default()
            })),
        };
        Ok((store, problem))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The acknowledged position of `path`, if any.
    pub(crate) fn get(&self, path: &Path) -> Option<Position> {
        self.lock().positions.get(path).copied()
    }

    /// Records that everything before `position` of `path` was acknowledged.
    pub(crate) fn set(&self, path: &Path, position: Position) {
        let mut state = self.lock();
        if state.positions.get(path) != Some(&position) {
            state.positions.insert(path.to_owned(), position);
            state.generation += 1;
        }
    }

    /// Writes the checkpoints if they changed since the last write; returns whether
    /// it wrote. Blocking: call from a blocking thread.
    pub(crate) fn write_if_changed(&self) -> Result<bool, CheckpointError> {
        let (snapshot, generation) = {
            let state = self.lock();
            if state.generation == state.written_generation && self.file.exists() {
                return Ok(false);
            }
            (encode(&state.positions), state.generation)
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

/// Writes `store` every `every` when it changed, until `stop`.
pub(crate) async fn write_periodically(
    store: CheckpointStore,
    every: Duration,
    writes: Counter,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = write_now(&store, &writes).await {
            tracing::warn!(%error, "checkpoints not written; retrying");
        }
    }
}

/// Writes `store` now if it changed, on a blocking thread.
pub(crate) async fn write_now(
    store: &CheckpointStore,
    writes: &Counter,
) -> Result<(), CheckpointError> {
    let writer = store.clone();
    let written = tokio::task::spawn_blocking(move || writer.write_if_changed())
        .await
        .map_err(|error| CheckpointError::Write {
            path: store.file.display().to_string(),
            cause: std::io::Error::other(error.to_string()),
        })??;
    if written {
        writes.inc();
    }
    Ok(())
}

fn encode(positions: &BTreeMap<PathBuf, Position>) -> Result<Vec<u8>, serde_json::Error> {
    let files = positions
        .iter()
        .map(|(path, position)| FileCheckpointV1 {
            path: path.clone(),
            source_id: position.identity.source_id(),
            device: position.identity.device,
            inode: position.identity.inode,
            offset: position.offset,
        })
        .collect();
    // Fails only for a path that is not UTF-8.
    serde_json::to_vec_pretty(&CheckpointFile::V1 { files })
}

/// Reads a checkpoint file; a missing file means no checkpoints yet.
fn read_checkpoint_file(file: &Path) -> Result<BTreeMap<PathBuf, Position>, CheckpointError> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
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
    let CheckpointFile::V1 { files } =
        serde_json::from_slice(&bytes).map_err(|error| corrupt(error.to_string()))?;
    let mut positions = BTreeMap::new();
    for entry in files {
        let identity = FileIdentity {
            device: entry.device,
            inode: entry.inode,
        };
        if identity.source_id() != entry.source_id {
            return Err(corrupt(format!(
                "entry for {} has source_id {} but device {} and inode {}",
                entry.path.display(),
                entry.source_id,
                entry.device,
                entry.inode
            )));
        }
        positions.insert(
            entry.path,
            Position {
                identity,
                offset: entry.offset,
            },
        );
    }
    Ok(positions)
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

    fn position(inode: u64, offset: u64) -> Position {
        Position {
            identity: FileIdentity { device: 8, inode },
            offset,
        }
    }

    #[test]
    fn checkpoints_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
        assert!(problem.is_none());
        store.set(Path::new("/var/log/a.log"), position(42, 1234));
        assert!(store.write_if_changed().unwrap());
        assert!(!store.write_if_changed().unwrap(), "nothing changed");

        let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.get(Path::new("/var/log/a.log")),
            Some(position(42, 1234))
        );
        assert!(!dir.path().join("checkpoints.json.tmp").exists());
    }

    #[test]
    fn the_format_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        store.set(Path::new("/a.log"), position(7, 10));
        store.write_if_changed().unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["version"], "1");
        assert_eq!(value["files"][0]["source_id"], "8:7");
        assert_eq!(value["files"][0]["offset"], 10);
    }

    #[test]
    fn a_write_replaces_the_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        store.set(Path::new("/a.log"), position(7, 10));
        store.write_if_changed().unwrap();
        // A temporary file left by a crash mid-write is simply overwritten.
        std::fs::write(dir.path().join("checkpoints.json.tmp"), b"{\"vers").unwrap();
        store.set(Path::new("/a.log"), position(7, 20));
        store.write_if_changed().unwrap();
        let (reopened, problem) = CheckpointStore::open(dir.path()).unwrap();
        assert!(problem.is_none());
        assert_eq!(reopened.get(Path::new("/a.log")), Some(position(7, 20)));
    }

    #[test]
    fn a_corrupt_file_is_reported_moved_aside_and_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE_NAME),
            b"{\"version\":\"1\",\"files\":[{",
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
        assert!(store.get(Path::new("/a.log")).is_none());
        assert!(dir.path().join("checkpoints.json.corrupt").exists());
        // The next write creates a fresh, valid file.
        assert!(store.write_if_changed().unwrap());
        assert!(CheckpointStore::open(dir.path()).unwrap().1.is_none());
    }

    #[test]
    fn an_unknown_version_is_corrupt_not_silently_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(&file, b"{\"version\":\"2\",\"files\":[]}").unwrap();
        let error = read_checkpoint_file(&file).unwrap_err().to_string();
        assert!(error.contains("unknown variant `2`"), "{error}");
    }
}
