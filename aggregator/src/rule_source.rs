//! Where the alert stage gets its rule files, and the derive stage its
//! definitions: an etcd prefix (pushed from git by `rules push` or `derive push`)
//! or a local folder (the all-in-one mode), both watched so a change applies
//! without a restart.
//!
//! Both sources produce the same thing, a map of file name to YAML text, which the
//! alert stage parses as one rule set; the source never judges the rules, so an
//! invalid push reaches the stage, which keeps its last good set.

use notify::{RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vigil_rules::RuleError;
use vigil_runtime::etcd::{EtcdError, EtcdSettings, TxnWrite};

/// Why rule files could not be watched, read or pushed.
#[derive(Debug, thiserror::Error)]
pub enum RuleSourceError {
    #[error("rules folder {folder}: {source}")]
    Folder {
        folder: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rules folder {folder}: file-system events unavailable: {source}")]
    Watch {
        folder: String,
        #[source]
        source: notify::Error,
    },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("files under {prefix} changed during the push; run it again")]
    ChangedDuringPush { prefix: String },
}

/// Rule file name → YAML text.
pub type RuleFiles = BTreeMap<String, String>;

/// The latest rule files; `None` until the source was read once.
pub type RuleFilesWatch = watch::Receiver<Option<Arc<RuleFiles>>>;

/// Which kind of files an etcd source holds, and so the key under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Alert rules, under `<prefix>/rules/`.
    Rules,
    /// Derive definitions, under `<prefix>/derive/`.
    Derive,
}

impl Section {
    /// The key below the deployment prefix.
    pub fn key(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::Derive => "derive",
        }
    }
}

/// A source of rule (or definition) files.
#[derive(Debug, Clone)]
pub enum RuleSource {
    /// Files under `<prefix>/<section>/` in etcd.
    Etcd(EtcdSettings, Section),
    /// `*.yaml` files in a folder (test files `*.test.yaml` excluded).
    Folder(PathBuf),
}

impl RuleSource {
    /// Starts watching; the receiver sees every new set of files until `shutdown`.
    pub fn watch(&self, shutdown: CancellationToken) -> Result<RuleFilesWatch, RuleSourceError> {
        match self {
            Self::Etcd(settings, section) => {
                Ok(settings.watch_prefix(settings.key_prefix(section.key()), shutdown))
            }
            Self::Folder(path) => watch_folder(path.clone(), shutdown),
        }
    }

    /// Human-readable origin, for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Etcd(settings, section) => format!(
                "etcd {} {}",
                settings.endpoints.join(","),
                settings.key_prefix(section.key())
            ),
            Self::Folder(path) => format!("folder {}", path.display()),
        }
    }
}

/// Whether `path` is a rule file (not a rule test file).
pub fn is_rule_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    (name.ends_with(".yaml") || name.ends_with(".yml"))
        && !name.ends_with(".test.yaml")
        && !name.ends_with(".test.yml")
        && !name.starts_with('.')
}

/// Reads every rule file of `dir`.
pub fn read_folder(dir: &Path) -> std::io::Result<RuleFiles> {
    let mut files = RuleFiles::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && is_rule_file(&path) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            files.insert(name.to_owned(), std::fs::read_to_string(&path)?);
        }
    }
    Ok(files)
}

fn watch_folder(
    dir: PathBuf,
    shutdown: CancellationToken,
) -> Result<RuleFilesWatch, RuleSourceError> {
    let (changed_sender, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already means "re-read"; dropping the extra is fine.
            let _ = changed_sender.try_send(());
        }
    })
    .and_then(|mut watcher| {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    })
    .map_err(|source| RuleSourceError::Watch {
        folder: dir.display().to_string(),
        source,
    })?;
    let initial = read_folder(&dir).map_err(|source| RuleSourceError::Folder {
        folder: dir.display().to_string(),
        source,
    })?;
    let (sender, receiver) = watch::channel(Some(Arc::new(initial)));
    tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = changed.recv() => {}
            }
            // Editors write in several steps; let them finish before reading.
            tokio::time::sleep(Duration::from_millis(150)).await;
            while changed.try_recv().is_ok() {}
            match read_folder(&dir) {
                Ok(files) => {
                    sender.send_if_modified(|current| {
                        let modified = current.as_deref() != Some(&files);
                        if modified {
                            *current = Some(Arc::new(files));
                        }
                        modified
                    });
                }
                Err(error) => {
                    tracing::warn!(folder = %dir.display(), %error, "rules folder unreadable; keeping the last rules");
                }
            }
        }
    });
    Ok(receiver)
}

/// Reads a folder and validates its files with `validate` (rules, derive
/// definitions); every error names its file, line and column.
pub fn check_folder<T>(
    dir: &Path,
    validate: impl FnOnce(&RuleFiles) -> Result<T, Vec<RuleError>>,
) -> Result<(RuleFiles, T), Vec<String>> {
    let files = read_folder(dir).map_err(|error| vec![format!("{}: {error}", dir.display())])?;
    let valid = validate(&files)
        .map_err(|errors| errors.iter().map(RuleError::to_string).collect::<Vec<_>>())?;
    Ok((files, valid))
}

/// Replaces the files of `section` in etcd with `files`, in one transaction: files
/// no longer present are deleted, so the stage sees exactly this set in one
/// revision.
pub async fn push_to_etcd(
    settings: &EtcdSettings,
    section: Section,
    files: &RuleFiles,
) -> Result<Vec<FileChange>, RuleSourceError> {
    let prefix = settings.key_prefix(section.key());
    let client = settings.connect().await?;
    let (current, revision) = EtcdSettings::read_prefix(&client, &prefix).await?;
    let changes = compare(&current, files);
    let writes: Vec<TxnWrite> = changes
        .iter()
        .map(|change| {
            let key = format!("{prefix}{}", change.name);
            match &change.after {
                Some(text) => TxnWrite::Put {
                    key,
                    value: text.clone(),
                },
                None => TxnWrite::Delete { key },
            }
        })
        .collect();
    if writes.is_empty() {
        return Ok(changes);
    }
    // Apply only if nobody changed the prefix since it was read.
    if !client
        .write_if_prefix_unchanged(&prefix, revision, &writes)
        .await?
    {
        return Err(RuleSourceError::ChangedDuringPush { prefix });
    }
    Ok(changes)
}

/// The files of `section` as etcd holds them now.
pub async fn read_from_etcd(
    settings: &EtcdSettings,
    section: Section,
) -> Result<RuleFiles, RuleSourceError> {
    let prefix = settings.key_prefix(section.key());
    let client = settings.connect().await?;
    let (current, _) = EtcdSettings::read_prefix(&client, &prefix).await?;
    Ok(current)
}

/// One file that differs between etcd and a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub name: String,
    /// The text in etcd; `None` when the file is new.
    pub before: Option<String>,
    /// The text in the folder; `None` when the file was deleted.
    pub after: Option<String>,
}

impl FileChange {
    /// `added`, `changed` or `deleted`.
    pub fn kind(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, _) => "added",
            (_, None) => "deleted",
            _ => "changed",
        }
    }

    /// The change as a line diff: `-` lines only in etcd, `+` lines only in the
    /// folder, with up to two unchanged lines around each change.
    pub fn diff(&self) -> String {
        let before: Vec<&str> = self
            .before
            .as_deref()
            .map_or(Vec::new(), |t| t.lines().collect());
        let after: Vec<&str> = self
            .after
            .as_deref()
            .map_or(Vec::new(), |t| t.lines().collect());
        let mut text = format!("--- etcd/{0}\n+++ folder/{0}\n", self.name);
        let lines = line_diff(&before, &after);
        let near_change = |index: usize| {
            let low = index.saturating_sub(2);
            let high = (index + 2).min(lines.len() - 1);
            lines[low..=high].iter().any(|(mark, _)| *mark != ' ')
        };
        let mut skipped = false;
        for (index, (mark, line)) in lines.iter().enumerate() {
            if near_change(index) {
                if skipped {
                    text.push_str("   ...\n");
                    skipped = false;
                }
                text.push_str(&format!("{mark}  {line}\n"));
            } else {
                skipped = true;
            }
        }
        text
    }
}

/// What a push of `wanted` over `current` changes, by file name.
pub fn compare(current: &RuleFiles, wanted: &RuleFiles) -> Vec<FileChange> {
    let names: std::collections::BTreeSet<&String> = current.keys().chain(wanted.keys()).collect();
    names
        .into_iter()
        .filter(|name| current.get(*name) != wanted.get(*name))
        .map(|name| FileChange {
            name: name.clone(),
            before: current.get(name).cloned(),
            after: wanted.get(name).cloned(),
        })
        .collect()
}

/// The lines of `before` and `after` marked ` ` (in both), `-` or `+`, from a
/// longest common subsequence (rule files are small).
fn line_diff<'a>(before: &[&'a str], after: &[&'a str]) -> Vec<(char, &'a str)> {
    let (n, m) = (before.len(), after.len());
    let mut common = vec![vec![0_u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if before[i] == after[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut lines = Vec::with_capacity(n.max(m));
    while i < n || j < m {
        if i < n && j < m && before[i] == after[j] {
            lines.push((' ', before[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || common[i + 1][j] >= common[i][j + 1]) {
            lines.push(('-', before[i]));
            i += 1;
        } else {
            lines.push(('+', after[j]));
            j += 1;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_shows_the_lines_that_differ_with_some_context() {
        let files = |text: &str| RuleFiles::from([("host.yaml".to_owned(), text.to_owned())]);
        let before = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let after = "a\nb\nc\nd\nE\nf\ng\nh\n";
        let changes = compare(&files(before), &files(after));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind(), "changed");
        assert_eq!(
            changes[0].diff(),
            "--- etcd/host.yaml\n+++ folder/host.yaml\n   ...\n   c\n   d\n-  e\n+  E\n   f\n   g\n"
        );
        let gone = compare(&files(before), &RuleFiles::new());
        assert_eq!(gone[0].kind(), "deleted");
        assert!(gone[0].diff().contains("-  a\n"));
        assert!(compare(&files(before), &files(before)).is_empty());
    }

    #[test]
    fn test_files_and_hidden_files_are_not_rule_files() {
        assert!(is_rule_file(Path::new("rules/host.yaml")));
        assert!(is_rule_file(Path::new("rules/host.yml")));
        assert!(!is_rule_file(Path::new("rules/host.test.yaml")));
        assert!(!is_rule_file(Path::new("rules/.host.yaml.swp")));
        assert!(!is_rule_file(Path::new("rules/README.md")));
    }

    #[tokio::test]
    async fn a_folder_change_is_seen_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "groups: []\n").unwrap();
        let shutdown = CancellationToken::new();
        let mut files = RuleSource::Folder(dir.path().to_owned())
            .watch(shutdown.clone())
            .unwrap();
        let first = files.borrow_and_update().clone().unwrap();
        assert_eq!(first.keys().collect::<Vec<_>>(), ["a.yaml"]);

        std::fs::write(dir.path().join("b.yaml"), "groups: []\n").unwrap();
        let second = loop {
            files.changed().await.unwrap();
            let current = files.borrow_and_update().clone().unwrap();
            if current.len() == 2 {
                break current;
            }
        };
        assert_eq!(second.keys().collect::<Vec<_>>(), ["a.yaml", "b.yaml"]);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_missing_folder_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("rules");
        let error = RuleSource::Folder(missing.clone())
            .watch(CancellationToken::new())
            .unwrap_err()
            .to_string();
        let expected = format!("rules folder {}: ", missing.display());
        assert!(error.starts_with(&expected), "{error}");
    }
}
