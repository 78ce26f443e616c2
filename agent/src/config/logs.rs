//! The `logs` and `log_batch` sections: which files the log tailer follows, where
//! it starts reading them, how it joins physical lines into events, how many files
//! it holds open, and how many lines go into one batch for the logs topic.

use super::InvalidConfig;
use crate::parse::ParsersConfig;
use serde::{Deserialize, Deserializer};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

/// Log files to tail: one path or every file a glob matches.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogFileConfig {
    /// Absolute path or glob (`*`, `?`, `[a-z]`, `**` for any depth) of the files;
    /// they may not exist yet. Files are found through file-system events and a
    /// rescan every few seconds.
    pub path: PathBuf,
    /// Whether new files are found through file-system events (inotify) as well
    /// as by the rescan; `false` for file systems that send none or send them
    /// wrongly (NFS, some FUSE mounts), where only the rescan finds new files.
    #[serde(default = "default_file_events")]
    pub file_events: bool,
    /// Globs of files not to tail although `path` matches them (rotated copies one
    /// does not want, for example). Gzip-compressed files are never read.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where a file found at the first start, without checkpoint, is read from:
    /// `end` (its history is not shipped) or `beginning`. Files that appear later
    /// are always read from their beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Files not modified for longer than this are not tailed until they change.
    #[serde(default, deserialize_with = "optional_duration")]
    pub ignore_older: Option<Duration>,
    /// Dataset name, for routing and for `event.dataset` in the index.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// How long a last line without newline waits for it before it is shipped,
    /// with the field `log.partial`; the newline that may follow makes no line.
    #[serde(
        default = "default_partial_line_timeout",
        with = "vigil_config::duration"
    )]
    pub partial_line_timeout: Duration,
    /// Joins the physical lines of one event (a stack trace) into one log line.
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
    /// Parser steps each line goes through before it is shipped (`[{json: {}},
    /// {timestamp: {field: time}}]`), or a preset (`{preset: nginx_access}`).
    #[serde(default)]
    pub parsers: ParsersConfig,
    /// Most files of this entry followed at once, each holding a file descriptor;
    /// further files wait (counted in `agent_log_files_waiting`) and the most
    /// recently modified get the slots that free up.
    #[serde(
        default = "default_max_open_files",
        deserialize_with = "at_least_one_open_file"
    )]
    pub max_open_files: NonZeroUsize,
    /// How long a deleted file stays open while reading it is held up (the bus
    /// is down or slow): then it is closed so that its disk space is freed, and
    /// what it still held is lost, counted in
    /// `agent_log_bytes_lost_total{reason="closed_removed"}`.
    #[serde(
        default = "default_close_removed_after",
        with = "vigil_config::duration"
    )]
    pub close_removed_after: Duration,
}

/// How the physical lines of one event are recognised; exactly one pattern.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this regex starts an event; other lines continue it
    /// (`'^\d{4}-'` for lines starting with a date).
    #[serde(default)]
    pub start_pattern: Option<String>,
    /// A line matching this regex continues the event before it (`'^\s'`).
    #[serde(default)]
    pub continuation_pattern: Option<String>,
    /// How long an event waits for more lines before it is shipped.
    #[serde(
        default = "default_multiline_flush_timeout",
        with = "vigil_config::duration"
    )]
    pub flush_timeout: Duration,
    /// Most physical lines in one event; a longer one is shipped in parts.
    #[serde(default = "default_multiline_max_lines")]
    pub max_lines: usize,
}

/// Where a file already present at startup is read from.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// From its first byte.
    Beginning,
    /// From after its last complete line.
    #[default]
    End,
}

/// Limits of one log batch.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogBatchConfig {
    /// Most lines in one batch.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Most encoded bytes of lines in one batch; keep it below the producer's and
    /// the broker's `message.max.bytes` (librdkafka's default is 1000000).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// How long a batch that is not full waits for more lines before it is sent.
    #[serde(default = "default_flush_interval", with = "vigil_config::duration")]
    pub flush_interval: Duration,
    /// Longest line kept; the rest of a longer line is skipped and the line is
    /// flagged `truncated`. Must be smaller than `max_bytes` so a line always fits.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl Default for LogBatchConfig {
    fn default() -> Self {
        Self {
            max_lines: default_max_lines(),
            max_bytes: default_max_bytes(),
            flush_interval: default_flush_interval(),
            max_line_bytes: default_max_line_bytes(),
        }
    }
}

impl LogFileConfig {
    /// A file of dataset `dataset`.
    pub fn new(path: impl Into<PathBuf>, dataset: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            file_events: default_file_events(),
            exclude: Vec::new(),
            read_from: ReadFrom::default(),
            ignore_older: None,
            dataset: dataset.into(),
            partial_line_timeout: default_partial_line_timeout(),
            multiline: None,
            parsers: ParsersConfig::default(),
            max_open_files: default_max_open_files(),
            close_removed_after: default_close_removed_after(),
        }
    }
}

impl MultilineConfig {
    pub(super) fn validate(&self, field: &str) -> Result<(), InvalidConfig> {
        let (key, pattern) = match (&self.start_pattern, &self.continuation_pattern) {
            (Some(start), None) => ("start_pattern", start),
            (None, Some(continuation)) => ("continuation_pattern", continuation),
            _ => {
                return Err(InvalidConfig::field(
                    field,
                    "needs exactly one of `start_pattern` and `continuation_pattern`",
                ));
            }
        };
        if let Err(error) = regex::bytes::Regex::new(pattern) {
            return Err(InvalidConfig::field(
                format!("{field}.{key}"),
                format!("is not a valid regex: {error}"),
            ));
        }
        if self.max_lines == 0 {
            return Err(InvalidConfig::field(
                format!("{field}.max_lines"),
                "must be at least 1",
            ));
        }
        if self.flush_timeout < Duration::from_millis(1) {
            return Err(InvalidConfig::field(
                format!("{field}.flush_timeout"),
                "must be at least 1ms",
            ));
        }
        Ok(())
    }
}

impl LogBatchConfig {
    pub(super) fn validate(&self) -> Result<(), InvalidConfig> {
        if self.max_lines == 0 {
            return Err(InvalidConfig::field(
                "log_batch.max_lines",
                "must be at least 1",
            ));
        }
        if self.max_bytes < 1024 {
            return Err(InvalidConfig::field(
                "log_batch.max_bytes",
                "must be at least 1024",
            ));
        }
        if self.flush_interval < Duration::from_millis(1) {
            return Err(InvalidConfig::field(
                "log_batch.flush_interval",
                "must be at least 1ms",
            ));
        }
        if self.max_line_bytes == 0 || self.max_line_bytes >= self.max_bytes {
            return Err(InvalidConfig::field(
                "log_batch.max_line_bytes",
                format!(
                    "must be between 1 and `log_batch.max_bytes` ({}) so that one line always fits in a batch",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    vigil_config::duration::deserialize(deserializer).map(Some)
}

fn default_multiline_flush_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_multiline_max_lines() -> usize {
    500
}

fn default_partial_line_timeout() -> Duration {
    Duration::from_secs(5)
}

fn at_least_one_open_file<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<NonZeroUsize, D::Error> {
    let count = usize::deserialize(deserializer)?;
    NonZeroUsize::new(count).ok_or_else(|| {
        serde::de::Error::custom("`max_open_files` must be at least 1: no file could be followed")
    })
}

fn default_max_open_files() -> NonZeroUsize {
    NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN)
}

fn default_close_removed_after() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_file_events() -> bool {
    true
}

fn default_dataset() -> String {
    "generic".to_owned()
}

fn default_max_lines() -> usize {
    2000
}

fn default_max_bytes() -> usize {
    256 * 1024
}

fn default_flush_interval() -> Duration {
    Duration::from_millis(200)
}

fn default_max_line_bytes() -> usize {
    128 * 1024
}
