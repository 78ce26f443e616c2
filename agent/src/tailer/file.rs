//! One open log file: reads what was appended, splits it into lines and groups the
//! lines into `LogBatch`es ready for the bus. Truncation (the file shrank below the
//! read position) restarts at offset 0.
//!
//! Everything here is blocking file I/O on an owned handle; the follower runs it on
//! a blocking thread and keeps the async side free.

use super::lines::{LineSplitter, RawLine};
use crate::checkpoint::{FileIdentity, Position};
use crate::config::LogBatchConfig;
use prost::Message;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;
use vigil_proto::v1::{LogBatch, LogLine, LogSource, Resource};

/// Bytes read from the file per system call.
const READ_CHUNK: usize = 64 * 1024;

/// What every batch of one configured path carries besides its lines.
#[derive(Debug)]
pub(crate) struct SourceTemplate {
    pub(crate) path: PathBuf,
    pub(crate) dataset: String,
    pub(crate) resource: Resource,
}

/// Where reading a newly opened file starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// Offset 0: a file that appeared after the agent started, or a replacement.
    Beginning,
    /// After the last complete line: a file seen for the first time at startup,
    /// whose history is not shipped.
    End,
    /// A checkpoint from an earlier run; offset 0 if the file was replaced or
    /// truncated since.
    Checkpoint(Position),
}

/// A batch and the position the file's checkpoint moves to once it is acknowledged.
#[derive(Debug)]
pub(crate) struct PendingBatch {
    pub(crate) batch: LogBatch,
    pub(crate) end: Position,
}

/// What reading produced, in file order.
#[derive(Debug)]
pub(crate) enum Emitted {
    Batch(PendingBatch),
    /// Reading (re)started here with nothing unacknowledged in this file before it:
    /// the file was opened or truncated.
    Restart(Position),
}

/// Counts of one read, for the self-metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadProgress {
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
    pub(crate) truncated_lines: u64,
    /// Everything the file held was read.
    pub(crate) at_end: bool,
}

/// The identity of the file at `path` now, or `None` if there is none.
pub(crate) fn identity_at(path: &Path) -> std::io::Result<Option<FileIdentity>> {
    match std::fs::metadata(path) {
        Ok(metadata) => Ok(Some(FileIdentity::of(&metadata))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// An open file being read line by line.
#[derive(Debug)]
pub(crate) struct FileTail {
    template: Arc<SourceTemplate>,
    file: File,
    identity: FileIdentity,
    splitter: LineSplitter,
    buffer: Vec<u8>,
    lines: Vec<LogLine>,
    /// Encoded size of `lines`.
    batch_bytes: usize,
    /// When the first line of the batch in progress was read.
    batch_started: Option<Instant>,
    limits: LogBatchConfig,
}

impl FileTail {
    /// Opens the file of `template.path` and positions it as `start` says; returns
    /// the tail and the position it starts at.
    pub(crate) fn open(
        template: Arc<SourceTemplate>,
        start: StartAt,
        limits: LogBatchConfig,
    ) -> std::io::Result<(Self, Position)> {
        let mut file = File::open(&template.path)?;
        let metadata = file.metadata()?;
        let identity = FileIdentity::of(&metadata);
        let size = metadata.len();
        let offset = match start {
            StartAt::Beginning => 0,
            StartAt::End => start_of_incomplete_tail(&mut file, size)?,
            StartAt::Checkpoint(position) => {
                if position.identity != identity {
                    tracing::info!(
                        path = %template.path.display(),
                        "file was replaced since the checkpoint; reading it from the beginning"
                    );
                    0
                } else if position.offset > size {
                    tracing::info!(
                        path = %template.path.display(),
                        checkpoint = position.offset,
                        size,
                        "file was truncated since the checkpoint; reading it from the beginning"
                    );
                    0
                } else {
                    position.offset
                }
            }
        };
        file.seek(SeekFrom::Start(offset))?;
        let tail = Self {
            template,
            file,
            identity,
            splitter: LineSplitter::new(limits.max_line_bytes, offset),
            buffer: vec![0; READ_CHUNK],
            lines: Vec::new(),
            batch_bytes: 0,
            batch_started: None,
            limits,
        };
        Ok((tail, Position { identity, offset }))
    }

    pub(crate) fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// Whether the file was deleted (not renamed): no path leads to it any more.
    pub(crate) fn is_deleted(&self) -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.nlink() == 0)
    }

    /// Reads what was appended until the end of the file or until `max_batches`
    /// full batches were produced, appending them to `out`.
    pub(crate) fn read(
        &mut self,
        max_batches: usize,
        now: Instant,
        out: &mut Vec<Emitted>,
    ) -> std::io::Result<ReadProgress> {
        let mut progress = ReadProgress::default();
        let size = self.file.metadata()?.len();
        if size < self.splitter.next_offset() {
            tracing::info!(
                path = %self.template.path.display(),
                size,
                position = self.splitter.next_offset(),
                "file was truncated; reading it again from the beginning"
            );
            self.take_batch(out);
            self.file.seek(SeekFrom::Start(0))?;
            self.splitter.restart_at(0);
            out.push(Emitted::Restart(Position {
                identity: self.identity,
                offset: 0,
            }));
        }
        let batches_before = out.len();
        while out.len() - batches_before < max_batches {
            let read = self.file.read(&mut self.buffer)?;
            if read == 0 {
                progress.at_end = true;
                break;
            }
            progress.bytes += read as u64;
            let observed = crate::unix_nanos(SystemTime::now());
            let mut raw_lines = Vec::new();
            self.splitter
                .feed(&self.buffer[..read], |line| raw_lines.push(line));
            for raw in raw_lines {
                progress.lines += 1;
                progress.truncated_lines += u64::from(raw.truncated);
                self.push(raw, observed, now, out);
            }
        }
        Ok(progress)
    }

    /// Sends the batch in progress if its first line waited `flush_interval`.
    pub(crate) fn flush_if_due(&mut self, now: Instant, out: &mut Vec<Emitted>) {
        if self
            .batch_started
            .is_some_and(|started| now.duration_since(started) >= self.limits.flush_interval)
        {
            self.take_batch(out);
        }
    }

    /// Ends the file: its last line, even without a newline, and the batch in
    /// progress. For a file that was replaced and will not grow again.
    pub(crate) fn finish(mut self, now: Instant, out: &mut Vec<Emitted>) -> ReadProgress {
        let mut progress = ReadProgress::default();
        if let Some(raw) = self.splitter.finish() {
            progress.lines = 1;
            progress.truncated_lines = u64::from(raw.truncated);
            self.push(raw, crate::unix_nanos(SystemTime::now()), now, out);
        }
        self.take_batch(out);
        progress
    }

    /// Moves the batch in progress, if any, to `out`.
    pub(crate) fn take_batch(&mut self, out: &mut Vec<Emitted>) {
        let Some(last) = self.lines.last() else {
            return;
        };
        let end = Position {
            identity: self.identity,
            offset: last.offset + last.length,
        };
        let batch = LogBatch {
            resource: Some(self.template.resource.clone()),
            source: Some(LogSource {
                path: self.template.path.display().to_string(),
                source_id: self.identity.source_id(),
                device: self.identity.device,
                inode: self.identity.inode,
                dataset: self.template.dataset.clone(),
            }),
            lines: std::mem::take(&mut self.lines),
        };
        self.batch_bytes = 0;
        self.batch_started = None;
        out.push(Emitted::Batch(PendingBatch { batch, end }));
    }

    fn push(&mut self, raw: RawLine, observed: i64, now: Instant, out: &mut Vec<Emitted>) {
        let line = log_line(raw, observed);
        let size =
            line.encoded_len() + prost::encoding::encoded_len_varint(line.encoded_len() as u64) + 1;
        if !self.lines.is_empty() && self.batch_bytes + size > self.limits.max_bytes {
            self.take_batch(out);
        }
        self.lines.push(line);
        self.batch_bytes += size;
        self.batch_started.get_or_insert(now);
        if self.lines.len() >= self.limits.max_lines {
            self.take_batch(out);
        }
    }
}

/// A line as it goes on the wire: invalid UTF-8 is flagged and kept as bytes; a
/// multi-byte character cut by truncation is dropped rather than flagged.
fn log_line(raw: RawLine, observed: i64) -> LogLine {
    let mut message = raw.bytes;
    let invalid_utf8 = match std::str::from_utf8(&message) {
        Ok(_) => false,
        Err(error) if raw.truncated && error.error_len().is_none() => {
            message.truncate(error.valid_up_to());
            false
        }
        Err(_) => true,
    };
    LogLine {
        offset: raw.offset,
        event_time_unix_nano: observed,
        observed_time_unix_nano: observed,
        message,
        fields: Vec::new(),
        truncated: raw.truncated,
        invalid_utf8,
        length: raw.length,
    }
}

/// Where "from the end" starts: after the last newline, so that a line being
/// written right now is shipped whole once it is complete. Looks back one read
/// chunk; a longer last line is joined where the file ended.
fn start_of_incomplete_tail(file: &mut File, size: u64) -> std::io::Result<u64> {
    let look_back = size.min(READ_CHUNK as u64);
    let mut tail = vec![0; look_back as usize];
    file.seek(SeekFrom::Start(size - look_back))?;
    file.read_exact(&mut tail)?;
    Ok(match tail.iter().rposition(|&byte| byte == b'\n') {
        Some(newline) => size - look_back + newline as u64 + 1,
        None if look_back == size => 0,
        None => size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn template(path: &Path) -> Arc<SourceTemplate> {
        Arc::new(SourceTemplate {
            path: path.to_owned(),
            dataset: "app".into(),
            resource: Resource {
                id: "web-1".into(),
                ..Resource::default()
            },
        })
    }

    fn limits() -> LogBatchConfig {
        LogBatchConfig {
            max_lines: 3,
            max_bytes: 1024,
            flush_interval: std::time::Duration::from_millis(200),
            max_line_bytes: 16,
        }
    }

    fn batches(out: Vec<Emitted>) -> Vec<Vec<(u64, Vec<u8>)>> {
        out.into_iter()
            .filter_map(|emitted| match emitted {
                Emitted::Batch(pending) => Some(
                    pending
                        .batch
                        .lines
                        .into_iter()
                        .map(|line| (line.offset, line.message))
                        .collect(),
                ),
                Emitted::Restart(_) => None,
            })
            .collect()
    }

    #[test]
    fn starting_at_the_end_skips_history_but_not_a_line_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old 1\nold 2\nhalf").unwrap();
        let (mut tail, position) = FileTail::open(template(&path), StartAt::End, limits()).unwrap();
        assert_eq!(position.offset, 12);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b" done\n")
            .unwrap();
        let now = Instant::now();
        let mut out = Vec::new();
        let progress = tail.read(8, now, &mut out).unwrap();
        assert!(progress.at_end);
        assert_eq!(progress.lines, 1);
        tail.take_batch(&mut out);
        assert_eq!(batches(out), [vec![(12, b"half done".to_vec())]]);
    }

    #[test]
    fn batches_close_at_max_lines_and_at_max_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "1\n2\n3\n4\n").unwrap();
        let (mut tail, _) = FileTail::open(template(&path), StartAt::Beginning, limits()).unwrap();
        let mut out = Vec::new();
        tail.read(8, Instant::now(), &mut out).unwrap();
        assert_eq!(
            batches(out),
            [vec![
                (0, b"1".to_vec()),
                (2, b"2".to_vec()),
                (4, b"3".to_vec())
            ]]
        );

        let mut small = limits();
        small.max_lines = 100;
        small.max_bytes = 40;
        let (mut tail, _) = FileTail::open(template(&path), StartAt::Beginning, small).unwrap();
        let mut out = Vec::new();
        tail.read(8, Instant::now(), &mut out).unwrap();
        tail.take_batch(&mut out);
        let sizes: Vec<usize> = batches(out).iter().map(Vec::len).collect();
        assert!(
            sizes.len() > 1 && sizes.iter().sum::<usize>() == 4,
            "{sizes:?}"
        );
    }

    #[test]
    fn a_batch_waits_for_the_flush_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "1\n").unwrap();
        let (mut tail, _) = FileTail::open(template(&path), StartAt::Beginning, limits()).unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        tail.read(8, start, &mut out).unwrap();
        tail.flush_if_due(start + std::time::Duration::from_millis(199), &mut out);
        assert!(out.is_empty());
        tail.flush_if_due(start + std::time::Duration::from_millis(200), &mut out);
        assert_eq!(batches(out).len(), 1);
    }

    #[test]
    fn invalid_utf8_is_flagged_and_kept() {
        let raw = RawLine {
            offset: 0,
            length: 4,
            bytes: vec![b'a', 0xff, b'b'],
            truncated: false,
        };
        let line = log_line(raw, 1);
        assert!(line.invalid_utf8);
        assert_eq!(line.message, [b'a', 0xff, b'b']);
    }

    #[test]
    fn a_character_cut_by_truncation_is_not_invalid_utf8() {
        let raw = RawLine {
            offset: 0,
            length: 10,
            bytes: "ab\u{e9}".as_bytes()[..3].to_vec(),
            truncated: true,
        };
        let line = log_line(raw, 1);
        assert!(!line.invalid_utf8);
        assert_eq!(line.message, b"ab");
    }
}
