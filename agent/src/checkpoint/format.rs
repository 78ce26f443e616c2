//! The checkpoint file on disk: its versioned JSON formats, how the store's state
//! is written in the newest and read from any of them. Part of the log data path's
//! resume-after-restart step.
//!
//! Paths are stored so that any file name round-trips, also one that is not UTF-8
//! (Linux names are bytes): such a path is written as `path_bytes`, its bytes in
//! hex, beside a readable `path` with the bytes that are not UTF-8 replaced.

use super::{
    CheckpointError, Entry, FileIdentity, HEAD_BYTES, Head, Position, SourceId, StoreState,
    UnidentifiedEntry,
};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

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
    /// the original of a copy was truncated; not UTF-8 bytes replaced when
    /// `path_bytes` is present.
    path: String,
    /// The path's bytes in hex, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_bytes: Option<String>,
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

/// A file without a complete line yet (formats 2 and 3; `path_bytes` only in 3).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnidentifiedV2 {
    path: String,
    /// The path's bytes in hex, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_bytes: Option<String>,
    device: u64,
    inode: u64,
    offset: u64,
}

/// The state in the newest format.
pub(super) fn encode(state: &StoreState) -> Result<Vec<u8>, serde_json::Error> {
    let files = state
        .sources
        .values()
        .map(|entry| {
            let identity = entry.position.identity;
            let (head_bytes, head_hash) = match identity.head {
                Head::Bytes { len, hash } => (Some(len), hash),
                Head::FirstLine(hash) => (None, hash),
            };
            let (path, path_bytes) = stored_path(&entry.path);
            FileCheckpointV3 {
                path,
                path_bytes,
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
        .map(|(path, entry)| {
            let (path, path_bytes) = stored_path(path);
            UnidentifiedV2 {
                path,
                path_bytes,
                device: entry.device,
                inode: entry.inode,
                offset: entry.offset,
            }
        })
        .collect();
    serde_json::to_vec_pretty(&CheckpointFile::V3 {
        files,
        unidentified,
    })
}

/// Reads a checkpoint file; a missing file means no checkpoints yet.
pub(super) fn read_checkpoint_file(file: &Path) -> Result<StoreState, CheckpointError> {
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
                    let path =
                        restored_path(entry.path, entry.path_bytes.as_deref()).map_err(&corrupt)?;
                    let source = hex(&path, "source_id", &entry.source_id)?;
                    let hash = hex(&path, "head_hash", &entry.head_hash)?.0;
                    let head = match entry.head_bytes {
                        Some(len) if (1..=HEAD_BYTES).contains(&usize::from(len)) => {
                            Head::Bytes { len, hash }
                        }
                        Some(len) => {
                            return Err(corrupt(format!(
                                "entry for {} has head_bytes {len}, not 1 to {HEAD_BYTES}",
                                path.display()
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
                    known.push((path, identity, entry.offset, entry.detached));
                }
                (known, unidentified)
            }
        };
    for entry in unidentified {
        let path = restored_path(entry.path, entry.path_bytes.as_deref()).map_err(&corrupt)?;
        state.unidentified.insert(
            path,
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

/// How `path` is stored: as text, and as hex bytes too when it is not UTF-8.
fn stored_path(path: &Path) -> (String, Option<String>) {
    match path.to_str() {
        Some(text) => (text.to_owned(), None),
        None => {
            let bytes = path.as_os_str().as_bytes();
            let hex = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            (path.to_string_lossy().into_owned(), Some(hex))
        }
    }
}

/// The path stored as `text` and, if present, `hex` bytes; the bytes win.
fn restored_path(text: String, hex: Option<&str>) -> Result<PathBuf, String> {
    let Some(hex) = hex else {
        return Ok(PathBuf::from(text));
    };
    let refused = || format!("entry for {text} has path_bytes `{hex}`, not hexadecimal bytes");
    if hex.len() % 2 != 0 {
        return Err(refused());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| {
            hex.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(refused)?;
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}
