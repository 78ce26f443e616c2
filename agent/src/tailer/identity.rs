//! File identity, on the log data path between finding a file and reading it:
//! which known instance (source id and checkpoint) the content of a file
//! continues, or the identity of a new one, as the `file` module's docs describe.
//! Blocking file I/O, run on the follower's blocking thread.

use super::discovery::Sightings;
use super::file::Location;
use crate::checkpoint::{
    CheckpointStore, FileIdentity, HEAD_BYTES, Head, Known, Position, SourceId,
};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The first `HEAD_BYTES` of the open `file` (all of it if shorter), read without
/// moving its position.
pub(super) fn read_prefix(file: &File) -> std::io::Result<Vec<u8>> {
    let mut prefix = vec![0; HEAD_BYTES];
    let mut filled = 0;
    while filled < prefix.len() {
        let read = file.read_at(&mut prefix[filled..], filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    prefix.truncate(filled);
    Ok(prefix)
}

/// Whether a file starting with `prefix` can be identified: it holds a complete
/// line or a complete head. Before, its lines wait.
pub(super) fn is_identifiable(prefix: &[u8]) -> bool {
    prefix.len() >= HEAD_BYTES || memchr::memchr(b'\n', prefix).is_some()
}

/// The known instance that the file at `location`, `size` bytes long and starting
/// with `prefix`, continues, with the position to resume at; `None` for a new one.
///
/// A complete head recognises its instance anywhere; a shorter one in the same
/// file, or elsewhere once its content left that file (the copy of a
/// copytruncate). An instance in the same file whose checkpoint lies past the end
/// was truncated: what the file holds now is another one.
pub(super) fn known_instance(
    checkpoints: &CheckpointStore,
    sightings: &Sightings,
    path: &Path,
    prefix: &[u8],
    location: Location,
    size: u64,
) -> Option<Position> {
    let mut best: Option<(u8, Known)> = None;
    for known in checkpoints.matching(prefix) {
        let identity = known.position.identity;
        let here = location_of(identity) == location;
        if here && (known.detached || known.position.offset > size) {
            continue;
        }
        let rank = match (here, identity.head.is_complete()) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false)
                if matches!(identity.head, Head::Bytes { .. })
                    && (known.detached || content_left(&known, sightings)) =>
            {
                3
            }
            (false, false) => continue,
        };
        // Matches come newest first: the first of the best rank wins.
        if best.as_ref().is_none_or(|(best, _)| rank < *best) {
            best = Some((rank, known));
        }
    }
    let (_, known) = best?;
    let mut position = known.position;
    if position.offset > size {
        tracing::info!(
            path = %path.display(),
            copy_of = %known.path.display(),
            checkpoint = position.offset,
            size,
            "copy is shorter than its original's checkpoint; reading it from the beginning"
        );
        position.offset = 0;
    }
    position.identity.device = location.device;
    position.identity.inode = location.inode;
    Some(position)
}

/// Whether the content of `known` left the file it was last read from: that
/// file is found neither at the path it was read at nor where the last scan saw
/// it (it was deleted, or moved out of the globs), or it no longer starts with
/// the head (it was truncated, and maybe written again).
fn content_left(known: &Known, sightings: &Sightings) -> bool {
    let location = location_of(known.position.identity);
    let head = known.position.identity.head;
    let still_holds = |path: &Path| {
        File::open(path).is_ok_and(|file| {
            file.metadata()
                .is_ok_and(|metadata| Location::of(&metadata) == location)
                && read_prefix(&file).is_ok_and(|prefix| head.matches(&prefix))
        })
    };
    !(still_holds(&known.path)
        || sightings
            .path_of(location)
            .is_some_and(|seen| still_holds(&seen)))
}

fn location_of(identity: FileIdentity) -> Location {
    Location {
        device: identity.device,
        inode: identity.inode,
    }
}

/// Tells apart the new source ids made in one process within one clock tick.
static NEW_SOURCES: AtomicU64 = AtomicU64::new(0);

/// The identity of a new instance at `location` starting with `prefix`, and
/// whether it must be recorded before use.
///
/// A complete head names the content: its hash is the source id, which a copy
/// derives again. A shorter head is shared by files with the same first lines,
/// and by the next content of a file truncated and written again: such an
/// instance gets an id of its own, from its location and the time, which cannot
/// be derived again and so must be recorded before any line carries it.
pub(super) fn new_identity(prefix: &[u8], location: Location) -> (FileIdentity, bool) {
    let head = Head::of(prefix);
    let (source, unique) = match head {
        Head::Bytes { hash, .. } if head.is_complete() => (SourceId(hash), false),
        _ => {
            let mut seed = Vec::with_capacity(32);
            seed.extend_from_slice(&location.device.to_le_bytes());
            seed.extend_from_slice(&location.inode.to_le_bytes());
            seed.extend_from_slice(&crate::unix_nanos(SystemTime::now()).to_le_bytes());
            seed.extend_from_slice(&NEW_SOURCES.fetch_add(1, Ordering::Relaxed).to_le_bytes());
            (SourceId(xxhash_rust::xxh3::xxh3_64(&seed)), true)
        }
    };
    let identity = FileIdentity {
        source,
        head,
        device: location.device,
        inode: location.inode,
    };
    (identity, unique)
}
