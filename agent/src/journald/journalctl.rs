//! The `journalctl` process the journal source reads from: its command line,
//! which says where to start and which entries to print, and a reader of its
//! output that hands out one JSON entry per line with bounded memory.

use crate::config::{JournaldConfig, ReadFrom};
use std::process::Stdio;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::process::{Child, Command};

/// Where a `journalctl` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    /// At the entry of this cursor, which is printed again (or, if the journal
    /// no longer holds it, at the oldest entry after it).
    Cursor(String),
    /// Where `read_from` says: the first entry, or after the last one.
    Fresh(ReadFrom),
}

/// The arguments of a `journalctl` that follows the journal of `config` from `start`.
pub(crate) fn arguments(config: &JournaldConfig, start: &Start) -> Vec<String> {
    let mut arguments = vec![
        "--follow".to_owned(),
        "--all".to_owned(),
        "--output=json".to_owned(),
        "--quiet".to_owned(),
    ];
    if let Some(directory) = &config.directory {
        arguments.push(format!("--directory={}", directory.display()));
    }
    for unit in &config.units {
        arguments.push(format!("--unit={unit}"));
    }
    if let Some(priority) = config.priority {
        arguments.push(format!("--priority=0..{}", priority.number()));
    }
    arguments.push(match start {
        Start::Cursor(cursor) => format!("--cursor={cursor}"),
        Start::Fresh(ReadFrom::Beginning) => "--no-tail".to_owned(),
        Start::Fresh(ReadFrom::End) => "--lines=0".to_owned(),
    });
    arguments
}

/// Starts `journalctl` with its output and errors piped to the agent.
pub(crate) fn spawn(config: &JournaldConfig, start: &Start) -> std::io::Result<Child> {
    Command::new(&config.journalctl_path)
        .args(arguments(config, start))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// What the reader found next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// A line, in `LineReader::line`.
    Line,
    /// A line longer than the limit, skipped; how many bytes it had.
    TooLong(usize),
    /// The output ended.
    End,
}

/// Splits output into lines of at most `limit` bytes. Cancel-safe: a line read
/// in part when the caller stops waiting is completed by the next call.
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    inner: R,
    limit: usize,
    /// The line so far, and after `Read::Line` the whole line.
    pub(crate) line: Vec<u8>,
    /// Bytes of the current line, kept or not.
    length: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, limit: usize) -> Self {
        Self {
            inner,
            limit,
            line: Vec::new(),
            length: 0,
        }
    }

    /// Reads up to the end of the next line.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Read> {
        if self.length == 0 {
            self.line.clear();
        }
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                self.length = 0;
                return Ok(Read::End);
            }
            let (part, used, complete) = match memchr::memchr(b'\n', available) {
                Some(newline) => (&available[..newline], newline + 1, true),
                None => (available, available.len(), false),
            };
            self.length += part.len();
            if self.length <= self.limit {
                self.line.extend_from_slice(part);
            } else {
                self.line.clear();
            }
            self.inner.consume(used);
            if complete {
                let length = std::mem::take(&mut self.length);
                return Ok(if length <= self.limit {
                    Read::Line
                } else {
                    Read::TooLong(length)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Priority;

    #[test]
    fn the_command_line_carries_the_filters_and_the_start() {
        let config = JournaldConfig {
            directory: Some("/var/log/journal/remote".into()),
            units: vec!["nginx.service".into(), "cron*".into()],
            priority: Some(Priority::Warning),
            ..JournaldConfig::default()
        };
        assert_eq!(
            arguments(&config, &Start::Cursor("s=ab;i=1".into())),
            [
                "--follow",
                "--all",
                "--output=json",
                "--quiet",
                "--directory=/var/log/journal/remote",
                "--unit=nginx.service",
                "--unit=cron*",
                "--priority=0..4",
                "--cursor=s=ab;i=1",
            ]
        );
        let plain = JournaldConfig::default();
        assert_eq!(
            arguments(&plain, &Start::Fresh(ReadFrom::End))
                .last()
                .unwrap(),
            "--lines=0"
        );
        assert_eq!(
            arguments(&plain, &Start::Fresh(ReadFrom::Beginning))
                .last()
                .unwrap(),
            "--no-tail"
        );
    }

    #[tokio::test]
    async fn lines_over_the_limit_are_skipped_whole_and_the_next_one_is_read() {
        let input: &[u8] = b"short\nthis one is far too long\nnext\nunfinished";
        let mut reader = LineReader::new(tokio::io::BufReader::with_capacity(4, input), 8);
        assert_eq!(reader.next_line().await.unwrap(), Read::Line);
        assert_eq!(reader.line, b"short");
        assert_eq!(reader.next_line().await.unwrap(), Read::TooLong(24));
        assert_eq!(reader.next_line().await.unwrap(), Read::Line);
        assert_eq!(reader.line, b"next");
        assert_eq!(reader.next_line().await.unwrap(), Read::End);
    }
}
