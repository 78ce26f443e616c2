//! Where the alert stage gets its rule files, and the derive stage its
//! definitions: an etcd prefix (pushed from git by `rules push` or `derive push`)
//! or a local folder (the all-in-one mode), both watched so a change applies
//! without a restart.
//!
//! Both sources produce the same thing, a map of file name to YAML text, which the
//! alert stage parses as one rule set; the source never judges the rules, so an
//! invalid push reaches the stage, which keeps its last good set.

use crate::rules::RuleError;
use etcd_client::{Compare, CompareOp, DeleteOptions, Txn, TxnOp};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vigil_runtime::etcd::EtcdSettings;

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
    pub fn watch(&self, shutdown: CancellationToken) -> anyhow::Result<RuleFilesWatch> {
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

fn watch_folder(dir: PathBuf, shutdown: CancellationToken) -> anyhow::Result<RuleFilesWatch> {
    let (changed_sender, mut changed) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // A full channel already means "re-read"; dropping the extra is fine.
            let _ = changed_sender.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let initial = read_folder(&dir)
        .map_err(|error| anyhow::anyhow!("rules folder {}: {error}", dir.display()))?;
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
) -> anyhow::Result<PushReport> {
    let prefix = settings.key_prefix(section.key());
    let mut client = settings.connect().await?;
    let (current, revision) = EtcdSettings::read_prefix(&mut client, &prefix).await?;
    let mut operations = Vec::new();
    let mut report = PushReport::default();
    for (name, text) in files {
        if current.get(name) != Some(text) {
            operations.push(TxnOp::put(format!("{prefix}{name}"), text.as_str(), None));
            report.written.push(name.clone());
        }
    }
    for name in current.keys().filter(|name| !files.contains_key(*name)) {
        operations.push(TxnOp::delete(
            format!("{prefix}{name}"),
            Some(DeleteOptions::new()),
        ));
        report.deleted.push(name.clone());
    }
    if operations.is_empty() {
        return Ok(report);
    }
    // Apply only if nobody changed the prefix since it was read.
    let guard = Compare::mod_revision(prefix.as_str(), CompareOp::Less, revision + 1).with_prefix();
    let response = client
        .txn(Txn::new().when(vec![guard]).and_then(operations))
        .await?;
    if !response.succeeded() {
        anyhow::bail!("files under {prefix} changed during the push; run it again");
    }
    Ok(report)
}

/// What a push changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    pub written: Vec<String>,
    pub deleted: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
