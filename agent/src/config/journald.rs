//! The `journald` section: whether the agent reads the systemd journal, which
//! entries it ships (units, priority) and where it starts the first time. The
//! journal source of the data path is built from it.

use super::{InvalidConfig, ReadFrom};
use serde::Deserialize;
use std::path::PathBuf;

/// The systemd journal as a log source, read through `journalctl`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JournaldConfig {
    /// Journal directory to read (`journalctl --directory`), for example a
    /// container's or one written by `systemd-journal-remote`; absent: the
    /// system journal of this host.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Units whose entries are shipped (`journalctl --unit`, globs allowed);
    /// empty: every unit.
    #[serde(default)]
    pub units: Vec<String>,
    /// Units whose entries are not shipped (compared with `_SYSTEMD_UNIT`).
    #[serde(default)]
    pub exclude_units: Vec<String>,
    /// The least severe priority shipped (`info` ships everything but `debug`);
    /// absent: every entry, also those without a priority.
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Dataset name, for routing and for `event.dataset` in the index.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Where the first start reads from when no cursor was saved yet: `end` (the
    /// journal's history is not shipped) or `beginning`.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// The `journalctl` program to run.
    #[serde(default = "default_journalctl_path")]
    pub journalctl_path: PathBuf,
}

/// A syslog severity, as the journal's `PRIORITY` field holds it (0 to 7).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Emerg,
    Alert,
    Crit,
    #[serde(alias = "err")]
    Error,
    #[serde(alias = "warn")]
    Warning,
    Notice,
    Info,
    Debug,
}

impl Priority {
    /// Every priority, by its number.
    pub const ALL: [Priority; 8] = [
        Self::Emerg,
        Self::Alert,
        Self::Crit,
        Self::Error,
        Self::Warning,
        Self::Notice,
        Self::Info,
        Self::Debug,
    ];

    /// The priority numbered `number` in the journal, if one is.
    pub fn from_number(number: u64) -> Option<Self> {
        usize::try_from(number)
            .ok()
            .and_then(|index| Self::ALL.get(index))
            .copied()
    }

    /// Its number in the journal: 0 for `emerg` to 7 for `debug`.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Its name as `log.level` carries it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Emerg => "emerg",
            Self::Alert => "alert",
            Self::Crit => "crit",
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Notice => "notice",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

impl Default for JournaldConfig {
    fn default() -> Self {
        Self {
            directory: None,
            units: Vec::new(),
            exclude_units: Vec::new(),
            priority: None,
            dataset: default_dataset(),
            read_from: ReadFrom::default(),
            journalctl_path: default_journalctl_path(),
        }
    }
}

impl JournaldConfig {
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        if let Some(directory) = &self.directory
            && !directory.is_absolute()
        {
            return Err(InvalidConfig::field(
                "journald.directory",
                format!("must be an absolute path, not `{}`", directory.display()),
            ));
        }
        for (list, units) in [
            ("units", &self.units),
            ("exclude_units", &self.exclude_units),
        ] {
            for (index, unit) in units.iter().enumerate() {
                if unit.trim().is_empty() || unit.chars().any(char::is_control) {
                    return Err(InvalidConfig::field(
                        format!("journald.{list}[{index}]"),
                        format!("must be a unit name, not `{}`", unit.escape_debug()),
                    ));
                }
            }
        }
        for (index, pattern) in self.exclude_units.iter().enumerate() {
            if let Err(error) = glob::Pattern::new(pattern) {
                return Err(InvalidConfig::field(
                    format!("journald.exclude_units[{index}]"),
                    format!("is not a valid glob: {error}"),
                ));
            }
        }
        if let Some(unit) = self
            .units
            .iter()
            .find(|unit| self.exclude_units.contains(unit))
        {
            return Err(InvalidConfig::field(
                "journald.exclude_units",
                format!("excludes `{unit}`, which `journald.units` includes"),
            ));
        }
        if self.dataset.trim().is_empty() {
            return Err(InvalidConfig::field(
                "journald.dataset",
                "must not be empty",
            ));
        }
        if self.journalctl_path.as_os_str().is_empty() {
            return Err(InvalidConfig::field(
                "journald.journalctl_path",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

fn default_dataset() -> String {
    "journald".to_owned()
}

fn default_journalctl_path() -> PathBuf {
    PathBuf::from("journalctl")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    #[test]
    fn a_journald_section_loads_with_its_defaults() {
        let yaml = "journald:\n  units: [nginx.service]\n  priority: warn\n";
        let config = AgentConfig::from_yaml(yaml, "agent.yaml").unwrap();
        let journald = config.journald.unwrap();
        assert_eq!(journald.units, ["nginx.service"]);
        assert_eq!(journald.priority, Some(Priority::Warning));
        assert_eq!(journald.dataset, "journald");
        assert_eq!(journald.read_from, ReadFrom::End);
        assert_eq!(journald.journalctl_path, PathBuf::from("journalctl"));
        assert_eq!(journald.directory, None);
        assert!(
            AgentConfig::from_yaml("{}", "agent.yaml")
                .unwrap()
                .journald
                .is_none()
        );
    }

    #[test]
    fn an_unknown_priority_is_named_with_file_line_and_column() {
        let yaml = "journald:\n  priority: loud\n";
        let text = AgentConfig::from_yaml(yaml, "agent.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("agent.yaml:2:13: unknown variant `loud`"),
            "{text}"
        );
    }

    #[test]
    fn invalid_settings_are_located_and_named() {
        for (yaml, expected) in [
            (
                "journald:\n  directory: journal\n",
                "agent.yaml:2:14: `journald.directory` must be an absolute path, not `journal`",
            ),
            (
                "journald:\n  units: [a.service, '']\n",
                "agent.yaml:2:22: `journald.units[1]` must be a unit name, not ``",
            ),
            (
                "journald:\n  units: [a.service]\n  exclude_units: [a.service]\n",
                "agent.yaml:3:18: `journald.exclude_units` excludes `a.service`, which `journald.units` includes",
            ),
            (
                "journald:\n  exclude_units: ['[a']\n",
                "agent.yaml:2:19: `journald.exclude_units[0]` is not a valid glob",
            ),
            (
                "journald:\n  dataset: ' '\n",
                "agent.yaml:2:12: `journald.dataset` must not be empty",
            ),
        ] {
            let text = AgentConfig::from_yaml(yaml, "agent.yaml")
                .unwrap_err()
                .to_string();
            assert!(text.starts_with(expected), "{yaml}: {text}");
        }
    }

    #[test]
    fn priorities_are_numbered_as_the_journal_numbers_them() {
        assert_eq!(Priority::from_number(0), Some(Priority::Emerg));
        assert_eq!(Priority::from_number(6), Some(Priority::Info));
        assert_eq!(Priority::from_number(8), None);
        assert_eq!(Priority::Debug.number(), 7);
        assert_eq!(Priority::Error.name(), "error");
    }
}
