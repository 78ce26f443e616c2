//! Discovery: which files the log data path tails. Expands the configured paths and
//! globs (with `**`), drops excluded, compressed and long-idle files, and decides
//! where a file without checkpoint starts: at the agent's very first start as
//! `read_from` says; otherwise from its beginning (it appeared while the agent was
//! stopped or since it started).
//!
//! Scans are cheap directory walks; the tailer runs one at startup, on file-system
//! events (creations and renames in the watched directories) and periodically as
//! the safety net for events that were missed.

use super::file::{Location, StartAt};
use crate::checkpoint::CheckpointStore;
use crate::config::{LogFileConfig, ReadFrom};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The first bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// How paths are matched: `*` and `?` stay within one directory, `**` spans any.
const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A file a scan found, to be followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) path: PathBuf,
    /// Index of the `logs[]` entry that matched it.
    pub(crate) config: usize,
    /// Where it starts if it has no checkpoint.
    pub(crate) start: StartAt,
    /// Where it lives when found.
    pub(crate) location: Location,
    /// When it was last modified, as found: over `max_open_files`, the most
    /// recently modified are followed first.
    pub(crate) modified: SystemTime,
}

/// Where the last scan saw every regular file the globs match, by location,
/// followed or not: the file readers look there for the original of a copy that
/// was renamed since it was read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sightings(Arc<Mutex<HashMap<Location, PathBuf>>>);

impl Sightings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Location, PathBuf>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The path the last scan saw the file at `location` at.
    pub(crate) fn path_of(&self, location: Location) -> Option<PathBuf> {
        self.lock().get(&location).cloned()
    }
}

/// One `logs[]` entry, compiled.
#[derive(Debug)]
struct Source {
    pattern: String,
    excludes: Vec<glob::Pattern>,
    read_from: ReadFrom,
    ignore_older: Option<std::time::Duration>,
    file_events: bool,
}

/// Finds the files of every `logs[]` entry.
#[derive(Debug)]
pub(crate) struct Discovery {
    sources: Vec<Source>,
    /// Files skipped as not modified for `ignore_older`, with where they lived and
    /// their size then: once they change, reading starts at that size.
    idle: HashMap<PathBuf, (Location, u64)>,
    sightings: Sightings,
}

impl Discovery {
    /// Compiles `files`; patterns were checked by the configuration, an invalid one
    /// matches nothing.
    pub(crate) fn new(files: &[LogFileConfig]) -> Self {
        let sources = files
            .iter()
            .map(|file| Source {
                pattern: file.path.to_string_lossy().into_owned(),
                excludes: file
                    .exclude
                    .iter()
                    .filter_map(|exclude| glob::Pattern::new(exclude).ok())
                    .collect(),
                read_from: file.read_from,
                ignore_older: file.ignore_older,
                file_events: file.file_events,
            })
            .collect();
        Self {
            sources,
            idle: HashMap::new(),
            sightings: Sightings::default(),
        }
    }

    /// Where the last scan saw the files; shared with the file readers.
    pub(crate) fn sightings(&self) -> Sightings {
        self.sightings.clone()
    }

    /// The files to follow now, except those `followed` says are followed already
    /// (by path, or by location for a file renamed while open). `startup` is the
    /// first scan: at the agent's first start, a file without checkpoint at a path
    /// never read then starts as `read_from` says. Every file matched is recorded
    /// in the sightings before the files found are returned to be opened.
    pub(crate) fn scan(
        &mut self,
        startup: bool,
        checkpoints: &CheckpointStore,
        followed: impl Fn(&Path, Location) -> bool,
    ) -> Vec<Found> {
        let now = SystemTime::now();
        let mut found: Vec<Found> = Vec::new();
        let mut seen: HashMap<Location, PathBuf> = HashMap::new();
        for (config, source) in self.sources.iter().enumerate() {
            let paths = match glob::glob_with(&source.pattern, MATCH) {
                Ok(paths) => paths,
                Err(error) => {
                    tracing::warn!(pattern = %source.pattern, %error, "log path is not a valid glob");
                    continue;
                }
            };
            for path in paths {
                let path = match path {
                    Ok(path) => path,
                    Err(error) => {
                        tracing::debug!(%error, "a directory could not be searched for log files");
                        continue;
                    }
                };
                if found.iter().any(|other| other.path == path)
                    || is_excluded(&path, &source.excludes)
                {
                    continue;
                }
                let Ok(metadata) = std::fs::metadata(&path) else {
                    continue;
                };
                let location = Location::of(&metadata);
                if !metadata.is_file() {
                    continue;
                }
                seen.entry(location).or_insert_with(|| path.clone());
                if followed(&path, location) {
                    continue;
                }
                let modified = metadata.modified().unwrap_or(now);
                let age = now.duration_since(modified).unwrap_or_default();
                if source.ignore_older.is_some_and(|limit| age > limit) {
                    self.idle.entry(path).or_insert((location, metadata.len()));
                    continue;
                }
                if is_compressed(&path) {
                    continue;
                }
                let start = match self.idle.remove(&path) {
                    Some((was, size)) if was == location => StartAt::At(size),
                    _ if startup
                        && checkpoints.is_first_start()
                        && !checkpoints.knows_path(&path) =>
                    {
                        match source.read_from {
                            ReadFrom::Beginning => StartAt::Beginning,
                            ReadFrom::End => StartAt::End,
                        }
                    }
                    _ => StartAt::Beginning,
                };
                found.push(Found {
                    path,
                    config,
                    start,
                    location,
                    modified,
                });
            }
        }
        *self.sightings.lock() = seen;
        found
    }

    /// The directories whose changes may bring new files, and whether their
    /// subdirectories matter too; only of the entries with `file_events`.
    pub(crate) fn watch_roots(&self) -> Vec<(PathBuf, bool)> {
        let mut roots: Vec<(PathBuf, bool)> = Vec::new();
        for source in self.sources.iter().filter(|source| source.file_events) {
            let root = watch_root(Path::new(&source.pattern));
            if let Some(existing) = roots.iter_mut().find(|(path, _)| *path == root.0) {
                existing.1 |= root.1;
            } else {
                roots.push(root);
            }
        }
        roots
    }
}

/// The deepest directory of `pattern` without glob characters, and whether the
/// rest of the pattern reaches below its direct children.
fn watch_root(pattern: &Path) -> (PathBuf, bool) {
    let is_glob = |component: &Component<'_>| {
        component
            .as_os_str()
            .to_string_lossy()
            .contains(['*', '?', '['])
    };
    let components: Vec<Component<'_>> = pattern.components().collect();
    let literal = components
        .iter()
        .take_while(|component| !is_glob(component))
        .count();
    if literal == components.len() {
        let parent = pattern.parent().unwrap_or(Path::new("/")).to_owned();
        return (parent, false);
    }
    let root: PathBuf = components[..literal].iter().collect();
    (root, components.len() - literal > 1)
}

fn is_excluded(path: &Path, excludes: &[glob::Pattern]) -> bool {
    let name = path.file_name().map(Path::new);
    excludes.iter().any(|exclude| {
        exclude.matches_path_with(path, MATCH)
            || name.is_some_and(|name| exclude.matches_path_with(name, MATCH))
    })
}

/// Whether the file is gzip-compressed: by its name, or by its first bytes.
fn is_compressed(path: &Path) -> bool {
    if path.extension().is_some_and(|extension| extension == "gz") {
        return true;
    }
    let mut magic = [0; 2];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| magic == GZIP_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &Path) -> LogFileConfig {
        LogFileConfig::new(path, "app")
    }

    fn paths(found: &[Found]) -> Vec<String> {
        let mut names: Vec<String> = found
            .iter()
            .map(|found| found.path.display().to_string())
            .collect();
        names.sort();
        names
    }

    fn store(dir: &Path) -> CheckpointStore {
        CheckpointStore::open(&dir.join("data")).unwrap().0
    }

    #[test]
    fn globs_with_double_stars_exclusions_and_no_compressed_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("logs");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        for name in [
            "top.log",
            "a/one.log",
            "a/b/two.log",
            "a/b/two.log.1",
            "a/skip.log",
        ] {
            std::fs::write(root.join(name), "x\n").unwrap();
        }
        std::fs::write(root.join("a/old.log.gz"), "x\n").unwrap();
        std::fs::write(root.join("a/hidden.log"), [0x1f, 0x8b, 8, 0]).unwrap();
        let mut file = config(&root.join("**/*.log"));
        file.exclude = vec!["skip.*".into()];
        let mut discovery = Discovery::new(&[file]);
        let found = discovery.scan(true, &store(dir.path()), |_, _| false);
        let root = root.display();
        assert_eq!(
            paths(&found),
            [
                format!("{root}/a/b/two.log"),
                format!("{root}/a/one.log"),
                format!("{root}/top.log")
            ]
        );
        assert!(found.iter().all(|found| found.start == StartAt::End));
    }

    #[test]
    fn files_found_after_startup_start_at_their_beginning_and_read_from_is_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "x\n").unwrap();
        let mut file = config(&path);
        file.read_from = ReadFrom::Beginning;
        let checkpoints = store(dir.path());
        let startup = Discovery::new(&[file]).scan(true, &checkpoints, |_, _| false);
        assert_eq!(startup[0].start, StartAt::Beginning);
        let mut discovery = Discovery::new(&[config(&path)]);
        let later = discovery.scan(false, &checkpoints, |_, _| false);
        assert_eq!(later[0].start, StartAt::Beginning);
        let followed = discovery.scan(false, &checkpoints, |found, _| found == path);
        assert!(followed.is_empty());
    }

    #[test]
    fn long_idle_files_are_skipped_until_they_change_then_read_from_where_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old\n").unwrap();
        let file = std::fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - std::time::Duration::from_secs(7200))
            .unwrap();
        let mut config = config(&path);
        config.ignore_older = Some(std::time::Duration::from_secs(3600));
        let mut discovery = Discovery::new(&[config]);
        let checkpoints = store(dir.path());
        assert!(discovery.scan(true, &checkpoints, |_, _| false).is_empty());
        std::io::Write::write_all(&mut &file, b"new\n").unwrap();
        let found = discovery.scan(false, &checkpoints, |_, _| false);
        assert_eq!(found[0].start, StartAt::At(4));
    }

    #[test]
    fn watch_roots_stop_at_the_first_glob() {
        assert_eq!(
            watch_root(Path::new("/var/log/app.log")),
            (PathBuf::from("/var/log"), false)
        );
        assert_eq!(
            watch_root(Path::new("/var/log/*.log")),
            (PathBuf::from("/var/log"), false)
        );
        assert_eq!(
            watch_root(Path::new("/var/log/pods/**/*.log")),
            (PathBuf::from("/var/log/pods"), true)
        );
    }

    #[test]
    fn entries_without_file_events_are_not_watched() {
        let mut quiet = LogFileConfig::new("/mnt/nfs/*.log", "nfs");
        quiet.file_events = false;
        let files = [
            LogFileConfig::new("/var/log/app/*.log", "app"),
            quiet,
            LogFileConfig::new("/var/log/app/**/*.log", "nested"),
        ];
        assert_eq!(
            Discovery::new(&files).watch_roots(),
            [(PathBuf::from("/var/log/app"), true)]
        );
    }
}
