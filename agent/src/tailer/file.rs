//! One open log file: reads what was appended, splits it into lines and encodes the
//! lines into `LogBatch`es ready for the bus. The file is known by the fingerprint of
//! its first line, which names its source downstream and finds its checkpoint, also
//! after a rename or a copy. Truncation (the file shrank below the read position, or
//! its first line changed) restarts at offset 0 as a new source.
//!
//! Everything here is blocking file I/O on an owned handle; the follower runs it on
//! a blocking thread and keeps the async side free.

use super::lines::{LineSplitter, RawLine};
use super::multiline::{Joiner, MultilineRule};
use super::wire::{BatchEncoder, EncodedBatch, WireLine};
use crate::checkpoint::{CheckpointStore, FINGERPRINT_BYTES, FileIdentity, Fingerprint, Position};
use crate::config::LogBatchConfig;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use vigil_proto::v1::{LogSource, Resource};

/// Bytes read from the file per system call.
const READ_CHUNK: usize = 64 * 1024;

/// What every batch of one configured path carries besides its lines.
#[derive(Debug)]
pub(crate) struct SourceTemplate {
    pub(crate) path: PathBuf,
    pub(crate) dataset: String,
    pub(crate) resource: Resource,
    /// How long a last line without newline waits before it is shipped as partial.
    pub(crate) partial_line_timeout: Duration,
    /// How physical lines are joined into events, if they are.
    pub(crate) multiline: Option<Arc<MultilineRule>>,
}

/// Where reading a newly opened file starts when it has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// Offset 0: a file that appeared after the agent started, or a replacement.
    Beginning,
    /// After the last complete line: a file seen for the first time at startup,
    /// whose history is not shipped.
    End,
    /// At this offset (or the end, if shorter): a file that was skipped as idle at
    /// this size and changed since.
    At(u64),
}

/// Where a path leads now: device and inode, without reading the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Location {
    pub(crate) device: u64,
    pub(crate) inode: u64,
}

impl Location {
    pub(crate) fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
        }
    }
}

/// A batch and the position the file's checkpoint moves to once it is acknowledged.
#[derive(Debug)]
pub(crate) struct PendingBatch {
    pub(crate) batch: EncodedBatch,
    pub(crate) end: Position,
}

/// What reading produced, in file order.
#[derive(Debug)]
pub(crate) enum Emitted {
    Batch(PendingBatch),
    /// The checkpoint may move here once everything before is acknowledged: the file
    /// was opened at this position.
    Mark(Position),
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

/// Where the file at `path` lives now, or `None` if there is none.
pub(crate) fn location_at(path: &Path) -> std::io::Result<Option<Location>> {
    match std::fs::metadata(path) {
        Ok(metadata) => Ok(Some(Location::of(&metadata))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// The fingerprint of the open `file`, read without moving its position; `None`
/// while it is too short to have one.
fn read_fingerprint(file: &File) -> std::io::Result<Option<Fingerprint>> {
    let mut head = [0; FINGERPRINT_BYTES];
    let mut filled = 0;
    while filled < head.len() {
        let read = file.read_at(&mut head[filled..], filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(Fingerprint::of_head(&head[..filled]))
}

/// An open file being read line by line.
#[derive(Debug)]
pub(crate) struct FileTail {
    template: Arc<SourceTemplate>,
    file: File,
    location: Location,
    /// Known once the file holds a newline or `FINGERPRINT_BYTES`; lines wait for it.
    fingerprint: Option<Fingerprint>,
    /// The first bytes read from offset 0 while the fingerprint is not known.
    head: Vec<u8>,
    splitter: LineSplitter,
    joiner: Joiner,
    /// Multiline records completed by one read, kept to spare allocations.
    records: Vec<RawLine<'static>>,
    buffer: Vec<u8>,
    /// The batch in progress.
    encoder: BatchEncoder,
    /// When the first line of the batch in progress was read.
    batch_started: Option<Instant>,
    /// Since when the line in progress, at this offset, waits for its newline.
    partial_since: Option<(u64, Instant)>,
    limits: LogBatchConfig,
}

impl FileTail {
    /// Opens the file of `template.path` and positions it at its checkpoint, or as
    /// `start` says if it has none; returns the tail and, when the file has a
    /// fingerprint, the position it starts at.
    pub(crate) fn open(
        template: Arc<SourceTemplate>,
        start: StartAt,
        limits: LogBatchConfig,
        checkpoints: &CheckpointStore,
    ) -> std::io::Result<(Self, Option<Position>)> {
        let mut file = File::open(&template.path)?;
        let metadata = file.metadata()?;
        let location = Location::of(&metadata);
        let size = metadata.len();
        let fingerprint = read_fingerprint(&file)?;
        let checkpoint = fingerprint
            .and_then(|fingerprint| checkpoints.get(fingerprint))
            .map(|position| position.offset)
            .or_else(|| {
                checkpoints.unidentified_offset(&template.path, location.device, location.inode)
            });
        let offset = match checkpoint {
            Some(offset) if offset <= size => offset,
            Some(offset) => {
                tracing::info!(
                    path = %template.path.display(),
                    checkpoint = offset,
                    size,
                    "file was truncated since the checkpoint; reading it from the beginning"
                );
                0
            }
            None => match start {
                StartAt::Beginning => 0,
                StartAt::End => start_of_incomplete_tail(&mut file, size)?,
                StartAt::At(offset) => offset.min(size),
            },
        };
        file.seek(SeekFrom::Start(offset))?;
        let splitter = if offset > 0 && !follows_newline(&file, offset)? {
            LineSplitter::after_partial(limits.max_line_bytes, offset)
        } else {
            LineSplitter::new(limits.max_line_bytes, offset)
        };
        if fingerprint.is_none() {
            checkpoints.set_unidentified(&template.path, location.device, location.inode, 0);
        }
        let position = fingerprint.map(|fingerprint| Position {
            identity: FileIdentity {
                fingerprint,
                device: location.device,
                inode: location.inode,
            },
            offset,
        });
        let tail = Self {
            template,
            file,
            location,
            fingerprint,
            head: Vec::new(),
            splitter,
            joiner: Joiner::new(limits.max_line_bytes),
            records: Vec::new(),
            buffer: vec![0; READ_CHUNK],
            encoder: BatchEncoder::default(),
            batch_started: None,
            partial_since: None,
            limits,
        };
        Ok((tail, position))
    }

    pub(crate) fn location(&self) -> Location {
        self.location
    }

    /// Bytes of the file after the read position.
    pub(crate) fn unread_bytes(&self) -> std::io::Result<u64> {
        Ok(self
            .file
            .metadata()?
            .len()
            .saturating_sub(self.splitter.next_offset()))
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
        let size = self.file.metadata()?.len();
        if size < self.splitter.next_offset() {
            tracing::info!(
                path = %self.template.path.display(),
                size,
                position = self.splitter.next_offset(),
                "file was truncated; reading it again from the beginning"
            );
            self.restart_from_zero(out)?;
        }
        // Lines borrow the buffer while they are encoded; it returns whatever happens.
        let mut buffer = std::mem::take(&mut self.buffer);
        let read = self.read_with(&mut buffer, max_batches, now, out);
        self.buffer = buffer;
        read
    }

    fn read_with(
        &mut self,
        buffer: &mut [u8],
        max_batches: usize,
        now: Instant,
        out: &mut Vec<Emitted>,
    ) -> std::io::Result<ReadProgress> {
        let mut progress = ReadProgress::default();
        let batches_before = out.len();
        let template = Arc::clone(&self.template);
        let mut records = std::mem::take(&mut self.records);
        while out.len() - batches_before < max_batches {
            let read = self.file.read(buffer)?;
            if read == 0 {
                progress.at_end = true;
                break;
            }
            if let Some(fingerprint) = self.fingerprint
                && read_fingerprint(&self.file)? != Some(fingerprint)
            {
                // Rewritten since it was fingerprinted: these bytes belong to
                // another source, which starts at offset 0.
                tracing::info!(
                    path = %self.template.path.display(),
                    "file was truncated and written again; reading it from the beginning"
                );
                self.restart_from_zero(out)?;
                continue;
            }
            progress.bytes += read as u64;
            if self.fingerprint.is_none() {
                self.learn_fingerprint(&buffer[..read])?;
            }
            let observed = crate::unix_nanos(SystemTime::now());
            let mut raw_lines = Vec::new();
            self.splitter
                .feed(&buffer[..read], |line| raw_lines.push(line));
            for raw in raw_lines {
                progress.lines += 1;
                progress.truncated_lines += u64::from(raw.truncated);
                match &template.multiline {
                    Some(rule) => {
                        self.joiner.add(rule, raw, now, &mut records);
                        for record in records.drain(..) {
                            self.push(&record, observed, now, out);
                        }
                    }
                    None => self.push(&raw, observed, now, out),
                }
            }
        }
        self.records = records;
        Ok(progress)
    }

    /// At the end of the file: whether its first line changed since it was
    /// fingerprinted, that is it was truncated and written again past the read
    /// position. Then reading restarts at offset 0, as a new source.
    pub(crate) fn restart_if_rewritten(&mut self, out: &mut Vec<Emitted>) -> std::io::Result<()> {
        let Some(fingerprint) = self.fingerprint else {
            return Ok(());
        };
        if read_fingerprint(&self.file)? != Some(fingerprint) {
            tracing::info!(
                path = %self.template.path.display(),
                "file was truncated and written again; reading it from the beginning"
            );
            self.restart_from_zero(out)?;
        }
        Ok(())
    }

    /// Sends the batch in progress if its first line waited `flush_interval`, after
    /// shipping a last line without newline that waited `partial_line_timeout`.
    pub(crate) fn flush_if_due(&mut self, now: Instant, out: &mut Vec<Emitted>) -> ReadProgress {
        let mut progress = ReadProgress::default();
        if let Some(rule) = &self.template.multiline
            && let Some(record) = self.joiner.flush_if_due(rule, now)
        {
            self.push(&record, crate::unix_nanos(SystemTime::now()), now, out);
        }
        if self.splitter.has_partial() && self.fingerprint.is_some() {
            let next = self.splitter.next_offset();
            match self.partial_since {
                Some((offset, since)) if offset == next => {
                    if now.duration_since(since) >= self.template.partial_line_timeout
                        && let Some(raw) = self.splitter.take_partial()
                    {
                        progress.lines = 1;
                        progress.truncated_lines = u64::from(raw.truncated);
                        let observed = crate::unix_nanos(SystemTime::now());
                        if let Some(record) = self.joiner.take() {
                            self.push(&record, observed, now, out);
                        }
                        self.push(&raw, observed, now, out);
                        self.partial_since = None;
                    }
                }
                _ => self.partial_since = Some((next, now)),
            }
        } else {
            self.partial_since = None;
        }
        if self
            .batch_started
            .is_some_and(|started| now.duration_since(started) >= self.limits.flush_interval)
        {
            self.take_batch(out);
        }
        progress
    }

    /// Ends the file: its last line, even without a newline, and the batch in
    /// progress. For a file that was replaced and will not grow again.
    pub(crate) fn finish(mut self, now: Instant, out: &mut Vec<Emitted>) -> ReadProgress {
        let mut progress = ReadProgress::default();
        let observed = crate::unix_nanos(SystemTime::now());
        if let Some(record) = self.joiner.take() {
            self.push(&record, observed, now, out);
        }
        if let Some(raw) = self.splitter.finish() {
            progress.lines = 1;
            progress.truncated_lines = u64::from(raw.truncated);
            self.push(&raw, observed, now, out);
        }
        self.take_batch(out);
        progress
    }

    /// Moves the batch in progress, if any, to `out`. Lines wait while the file has
    /// no fingerprint (a partial line of a file too short for one).
    pub(crate) fn take_batch(&mut self, out: &mut Vec<Emitted>) {
        let Some(fingerprint) = self.fingerprint else {
            return;
        };
        if self.encoder.is_empty() {
            return;
        }
        let identity = FileIdentity {
            fingerprint,
            device: self.location.device,
            inode: self.location.inode,
        };
        let end = Position {
            identity,
            offset: self.encoder.end(),
        };
        let source = LogSource {
            path: self.template.path.display().to_string(),
            source_id: fingerprint.source_id(),
            device: identity.device,
            inode: identity.inode,
            dataset: self.template.dataset.clone(),
        };
        let batch = self.encoder.finish(&self.template.resource, &source);
        self.batch_started = None;
        out.push(Emitted::Batch(PendingBatch { batch, end }));
    }

    /// Reads the file again from offset 0 as new content, after what was read of
    /// the old content is sent.
    fn restart_from_zero(&mut self, out: &mut Vec<Emitted>) -> std::io::Result<()> {
        if let Some(record) = self.joiner.take() {
            self.push(
                &record,
                crate::unix_nanos(SystemTime::now()),
                Instant::now(),
                out,
            );
        }
        self.take_batch(out);
        self.encoder.clear();
        self.batch_started = None;
        self.partial_since = None;
        self.file.seek(SeekFrom::Start(0))?;
        self.splitter = LineSplitter::new(self.limits.max_line_bytes, 0);
        self.fingerprint = None;
        self.head.clear();
        Ok(())
    }

    /// Collects the first bytes of a file read from offset 0 (the `read` bytes in
    /// the buffer come next) until they make its fingerprint.
    fn learn_fingerprint(&mut self, read: &[u8]) -> std::io::Result<()> {
        if self.splitter.next_offset() == self.head.len() as u64 {
            let wanted = (FINGERPRINT_BYTES - self.head.len()).min(read.len());
            self.head.extend_from_slice(&read[..wanted]);
            self.fingerprint = Fingerprint::of_head(&self.head);
        } else {
            self.fingerprint = read_fingerprint(&self.file)?;
        }
        if self.fingerprint.is_some() {
            self.head = Vec::new();
        }
        Ok(())
    }

    fn push(&mut self, raw: &RawLine<'_>, observed: i64, now: Instant, out: &mut Vec<Emitted>) {
        let line = wire_line(raw, observed);
        let size = line.encoded_len();
        if !self.encoder.is_empty() && self.encoder.len() + size > self.limits.max_bytes {
            self.take_batch(out);
        }
        self.encoder.push(&line);
        self.batch_started.get_or_insert(now);
        if self.encoder.lines() >= self.limits.max_lines as u64 {
            self.take_batch(out);
        }
    }
}

/// A line as it goes on the wire: invalid UTF-8 is flagged and kept as bytes; a
/// multi-byte character cut by truncation is dropped rather than flagged; a line
/// shipped before its newline is flagged partial.
fn wire_line<'a>(raw: &'a RawLine<'_>, observed: i64) -> WireLine<'a> {
    let mut message: &[u8] = &raw.bytes;
    let invalid_utf8 = match std::str::from_utf8(message) {
        Ok(_) => false,
        Err(error) if raw.truncated && error.error_len().is_none() => {
            message = &message[..error.valid_up_to()];
            false
        }
        Err(_) => true,
    };
    WireLine {
        offset: raw.offset,
        length: raw.length,
        observed_unix_nano: observed,
        message,
        truncated: raw.truncated,
        invalid_utf8,
        partial: raw.partial,
    }
}

/// Whether the byte before `offset` is a newline, so that a line starts there.
fn follows_newline(file: &File, offset: u64) -> std::io::Result<bool> {
    let mut byte = [0];
    Ok(file.read_at(&mut byte, offset - 1)? == 1 && byte[0] == b'\n')
}

/// Where "from the end" starts: after the last newline, so that a line being
/// written right now is shipped whole once it is complete. Looks back one read
/// chunk; a longer last line is joined where the file ended.
fn start_of_incomplete_tail(file: &mut File, size: u64) -> std::io::Result<u64> {
    let look_back = size.min(READ_CHUNK as u64);
    let mut tail = vec![0; look_back as usize];
    file.seek(SeekFrom::Start(size - look_back))?;
    file.read_exact(&mut tail)?;
    Ok(match memchr::memrchr(b'\n', &tail) {
        Some(newline) => size - look_back + newline as u64 + 1,
        None if look_back == size => 0,
        None => size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::io::Write;
    use vigil_proto::Payload;
    use vigil_proto::v1::LogBatch;

    fn template(path: &Path) -> Arc<SourceTemplate> {
        Arc::new(SourceTemplate {
            path: path.to_owned(),
            dataset: "app".into(),
            resource: Resource {
                id: "web-1".into(),
                ..Resource::default()
            },
            partial_line_timeout: std::time::Duration::from_secs(5),
            multiline: None,
        })
    }

    fn store() -> (tempfile::TempDir, CheckpointStore) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = CheckpointStore::open(dir.path()).unwrap();
        (dir, store)
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
                    LogBatch::from_payload(&pending.batch.payload)
                        .expect("a valid batch")
                        .lines
                        .into_iter()
                        .map(|line| (line.offset, line.message))
                        .collect(),
                ),
                Emitted::Mark(_) => None,
            })
            .collect()
    }

    #[test]
    fn starting_at_the_end_skips_history_but_not_a_line_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "old 1\nold 2\nhalf").unwrap();
        let (mut tail, position) =
            FileTail::open(template(&path), StartAt::End, limits(), &store().1).unwrap();
        assert_eq!(position.unwrap().offset, 12);
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
        let (mut tail, _) =
            FileTail::open(template(&path), StartAt::Beginning, limits(), &store().1).unwrap();
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
        let (mut tail, _) =
            FileTail::open(template(&path), StartAt::Beginning, small, &store().1).unwrap();
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
        let (mut tail, _) =
            FileTail::open(template(&path), StartAt::Beginning, limits(), &store().1).unwrap();
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
            bytes: Cow::Borrowed(&[b'a', 0xff, b'b']),
            truncated: false,
            partial: false,
        };
        let line = wire_line(&raw, 1);
        assert!(line.invalid_utf8);
        assert_eq!(line.message, [b'a', 0xff, b'b']);
    }

    #[test]
    fn a_character_cut_by_truncation_is_not_invalid_utf8() {
        let raw = RawLine {
            offset: 0,
            length: 10,
            bytes: Cow::Borrowed(&"ab\u{e9}".as_bytes()[..3]),
            truncated: true,
            partial: false,
        };
        let line = wire_line(&raw, 1);
        assert!(!line.invalid_utf8);
        assert_eq!(line.message, b"ab");
    }
}
