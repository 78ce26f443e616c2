//! One open log file: reads what was appended, splits it into lines and encodes the
//! lines into `LogBatch`es ready for the bus. Truncation (the file shrank below the
//! read position, or its first bytes changed) restarts at offset 0 as a new
//! instance.
//!
//! A file is recognised by its head: its first bytes, 1 KiB once it holds that
//! many. A complete head names the content, so a renamed file and a copy
//! (copytruncate) resume at the checkpoint of the instance they continue, and a
//! file first read with a complete head gets the hash of it as source id (a copy
//! derives the same id, with or without checkpoint). A shorter head (a header line,
//! a banner, a few lines) is not distinctive: it recognises its instance only in
//! the same file (device and inode), or in a copy once the content left the
//! original: the original is found neither at the path it was read at nor where
//! the last scan saw it, or it no longer starts with the head (it was truncated,
//! and maybe written again). That is decided from the files as they are, not
//! from what the tailer happened to see, so the order files are opened in and
//! whether a truncation was read before do not change a copy's identity. A file
//! first read that short gets a new source id, unique to it, recorded in the
//! checkpoint file before any line carries it. So files with the same first line
//! are distinct sources while both exist.
//!
//! Everything here is blocking file I/O on an owned handle; the follower runs it on
//! a blocking thread and keeps the async side free.

use super::discovery::Sightings;
use super::identity::{is_identifiable, known_instance, new_identity, read_prefix};
use super::lines::{LineSplitter, RawLine};
use super::multiline::{Joiner, MultilineRule};
use super::wire::{BatchEncoder, EncodedBatch, NO_FIELDS, WireLine};
use crate::checkpoint::{CheckpointStore, FileIdentity, HEAD_BYTES, Head, Position};
use crate::config::LogBatchConfig;
use crate::parse::{Chain, LineParser};
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
    /// The parser chain lines go through before they are encoded, if any.
    pub(crate) parsers: Option<Arc<Chain>>,
    /// Where the last scan saw every file of the globs: the original of a copy
    /// may have been renamed there.
    pub(crate) sightings: Sightings,
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

/// What becomes of bytes just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// They are lines of the instance read (or wait for it to be identified).
    Lines,
    /// The file no longer starts as the instance read: it was truncated and
    /// written again.
    Rewritten,
    /// They were read before a known instance was resumed elsewhere in the file.
    Skipped,
}

/// What identifying the content being read decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identified {
    /// Not yet: the file holds no complete line.
    NotYet,
    /// Lines are read on from here.
    HereOn,
    /// A known instance, resumed at this offset: what was read is dropped.
    ResumeAt(u64),
}

/// An open file being read line by line.
#[derive(Debug)]
pub(crate) struct FileTail {
    template: Arc<SourceTemplate>,
    file: File,
    location: Location,
    /// Known once the file holds a complete line or a complete head; lines wait
    /// for it.
    identity: Option<FileIdentity>,
    /// The first bytes read from offset 0 while the content is not identified.
    head: Vec<u8>,
    /// Where reading the current content started: a new instance identified later
    /// starts there.
    content_start: u64,
    checkpoints: CheckpointStore,
    splitter: LineSplitter,
    joiner: Joiner,
    /// Multiline records completed by one read, kept to spare allocations.
    records: Vec<RawLine<'static>>,
    buffer: Vec<u8>,
    /// Parses lines as the template's chain says; `None` for unparsed files.
    parser: Option<LineParser>,
    /// The batch in progress.
    encoder: BatchEncoder,
    /// When the first line of the batch in progress was read.
    batch_started: Option<Instant>,
    /// Since when the line in progress, at this offset, waits for its newline.
    partial_since: Option<(u64, Instant)>,
    limits: LogBatchConfig,
}

impl FileTail {
    /// Opens the file of `template.path` and positions it at the checkpoint of the
    /// instance it continues, or as `start` says if it is new; returns the tail
    /// and, once the file is identified, the position it starts at.
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
        let prefix = read_prefix(&file)?;
        let identifiable = is_identifiable(&prefix);
        let known = identifiable
            .then(|| {
                known_instance(
                    checkpoints,
                    &template.sightings,
                    &template.path,
                    &prefix,
                    location,
                    size,
                )
            })
            .flatten();
        let offset = match known {
            Some(position) => position.offset,
            None => match checkpoints.unidentified_offset(
                &template.path,
                location.device,
                location.inode,
            ) {
                Some(offset) if offset <= size => offset,
                _ => match start {
                    StartAt::Beginning => 0,
                    StartAt::End => start_of_incomplete_tail(&mut file, size)?,
                    StartAt::At(offset) => offset.min(size),
                },
            },
        };
        let position = match known {
            Some(position) => Some(position),
            None if identifiable => {
                let (identity, unique) = new_identity(&prefix, location);
                let position = Position { identity, offset };
                if unique {
                    checkpoints
                        .record_new(&template.path, position)
                        .map_err(std::io::Error::other)?;
                }
                Some(position)
            }
            None => {
                checkpoints.set_unidentified(&template.path, location.device, location.inode, 0);
                None
            }
        };
        checkpoints.detach_all_at(
            location.device,
            location.inode,
            position.map(|position| position.identity.source),
        );
        file.seek(SeekFrom::Start(offset))?;
        let splitter = if offset > 0 && !follows_newline(&file, offset)? {
            LineSplitter::after_partial(limits.max_line_bytes, offset)
        } else {
            LineSplitter::new(limits.max_line_bytes, offset)
        };
        let parser = template
            .parsers
            .clone()
            .map(|chain| LineParser::new(chain, &template.path, limits.max_line_bytes));
        let tail = Self {
            parser,
            template,
            file,
            location,
            identity: position.map(|position| position.identity),
            head: Vec::new(),
            content_start: offset,
            checkpoints: checkpoints.clone(),
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
            let chunk_start = self.splitter.next_offset();
            let read = self.file.read(buffer)?;
            if read == 0 {
                progress.at_end = true;
                break;
            }
            match self.check_chunk(&buffer[..read], chunk_start, out) {
                Ok(Chunk::Lines) => {}
                Ok(Chunk::Rewritten) => {
                    // Rewritten since it was identified: these bytes belong to
                    // another instance, which starts at offset 0.
                    tracing::info!(
                        path = %self.template.path.display(),
                        "file was truncated and written again; reading it from the beginning"
                    );
                    self.restart_from_zero(out)?;
                    continue;
                }
                Ok(Chunk::Skipped) => continue,
                Err(error) => {
                    // Read again once the error is gone.
                    self.file.seek(SeekFrom::Start(chunk_start))?;
                    return Err(error);
                }
            }
            progress.bytes += read as u64;
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

    /// What to do with `chunk`, just read at `chunk_start`: identifies the content
    /// if it is not yet, and checks that the file still starts as identified.
    fn check_chunk(
        &mut self,
        chunk: &[u8],
        chunk_start: u64,
        out: &mut Vec<Emitted>,
    ) -> std::io::Result<Chunk> {
        if self.identity.is_none() {
            match self.identify(chunk, chunk_start, out)? {
                Identified::NotYet => return Ok(Chunk::Lines),
                Identified::HereOn => {}
                Identified::ResumeAt(offset) => {
                    self.seek_to(offset)?;
                    return Ok(Chunk::Skipped);
                }
            }
        }
        Ok(if self.still_starts_the_same()? {
            Chunk::Lines
        } else {
            Chunk::Rewritten
        })
    }

    /// Whether the file still starts with the head of the instance read; learns
    /// more of the head while it is shorter than `HEAD_BYTES`. A head that short
    /// is written to the checkpoint file before lines beyond it are sent: after
    /// a crash, another file with the same first bytes is then not taken for an
    /// instance whose lines it would overwrite downstream.
    fn still_starts_the_same(&mut self) -> std::io::Result<bool> {
        let Some(identity) = &mut self.identity else {
            return Ok(true);
        };
        let prefix = read_prefix(&self.file)?;
        if !identity.head.matches(&prefix) {
            return Ok(false);
        }
        let head = identity.head.longer(Head::of(&prefix));
        if head != identity.head {
            let was_complete = identity.head.is_complete();
            identity.head = head;
            if self.checkpoints.extend_head(identity.source, head) && !was_complete {
                self.checkpoints
                    .write_if_changed()
                    .map_err(std::io::Error::other)?;
            }
        }
        Ok(true)
    }

    /// At the end of the file: whether its first bytes changed since it was
    /// identified, that is it was truncated and written again past the read
    /// position. Then reading restarts at offset 0, as a new instance.
    pub(crate) fn restart_if_rewritten(&mut self, out: &mut Vec<Emitted>) -> std::io::Result<()> {
        if !self.still_starts_the_same()? {
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
        if self.splitter.has_partial() && self.identity.is_some() {
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
        if let Some(mut parser) = self.parser.take() {
            if let Some(line) = parser.take_pending(observed) {
                self.push_wire(&line, now, out);
            }
            self.parser = Some(parser);
        }
        self.take_batch(out);
        progress
    }

    /// Moves the batch in progress, if any, to `out`. Lines wait while the file is
    /// not identified (a partial line of a file too short for that).
    pub(crate) fn take_batch(&mut self, out: &mut Vec<Emitted>) {
        let Some(identity) = self.identity else {
            return;
        };
        if self.encoder.is_empty() {
            return;
        }
        let end = Position {
            identity,
            offset: self.encoder.end(),
        };
        let source = LogSource {
            path: self.template.path.display().to_string(),
            source_id: identity.source.hex(),
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
        if let Some(identity) = self.identity {
            self.checkpoints.detach(identity);
        }
        self.encoder.clear();
        self.batch_started = None;
        self.partial_since = None;
        self.file.seek(SeekFrom::Start(0))?;
        self.splitter = LineSplitter::new(self.limits.max_line_bytes, 0);
        self.identity = None;
        self.head.clear();
        self.content_start = 0;
        Ok(())
    }

    /// Moves reading to `offset` of the same content, dropping what was read and
    /// not sent (nothing was, before the content was identified).
    fn seek_to(&mut self, offset: u64) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(offset))?;
        self.splitter = if offset > 0 && !follows_newline(&self.file, offset)? {
            LineSplitter::after_partial(self.limits.max_line_bytes, offset)
        } else {
            LineSplitter::new(self.limits.max_line_bytes, offset)
        };
        self.joiner = Joiner::new(self.limits.max_line_bytes);
        self.partial_since = None;
        Ok(())
    }

    /// Identifies the content being read, with `chunk` the bytes just read at
    /// `chunk_start`: from its first bytes (collected from what is read from
    /// offset 0, so that they are the bytes the lines come from), as a known
    /// instance or a new one. Marks where the instance's checkpoint may move.
    fn identify(
        &mut self,
        chunk: &[u8],
        chunk_start: u64,
        out: &mut Vec<Emitted>,
    ) -> std::io::Result<Identified> {
        let prefix = if chunk_start == self.head.len() as u64 && self.head.len() < HEAD_BYTES {
            let wanted = (HEAD_BYTES - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..wanted]);
            self.head.clone()
        } else {
            read_prefix(&self.file)?
        };
        if !is_identifiable(&prefix) {
            return Ok(Identified::NotYet);
        }
        let size = self.file.metadata()?.len();
        let path = &self.template.path;
        let known = known_instance(
            &self.checkpoints,
            &self.template.sightings,
            path,
            &prefix,
            self.location,
            size,
        );
        let (identity, identified) = match known {
            Some(position) => {
                out.push(Emitted::Mark(position));
                let identified = if position.offset == self.content_start {
                    Identified::HereOn
                } else {
                    Identified::ResumeAt(position.offset)
                };
                (position.identity, identified)
            }
            None => {
                let (identity, unique) = new_identity(&prefix, self.location);
                if unique {
                    let position = Position {
                        identity,
                        offset: self.content_start,
                    };
                    self.checkpoints
                        .record_new(path, position)
                        .map_err(std::io::Error::other)?;
                }
                (identity, Identified::HereOn)
            }
        };
        self.checkpoints.detach_all_at(
            self.location.device,
            self.location.inode,
            Some(identity.source),
        );
        self.identity = Some(identity);
        self.head = Vec::new();
        Ok(identified)
    }

    fn push(&mut self, raw: &RawLine<'_>, observed: i64, now: Instant, out: &mut Vec<Emitted>) {
        let line = wire_line(raw, observed);
        let Some(mut parser) = self.parser.take() else {
            return self.push_wire(&line, now, out);
        };
        if let Some(parsed) = parser.parse(line) {
            self.push_wire(&parsed, now, out);
        }
        self.parser = Some(parser);
    }

    fn push_wire(&mut self, line: &WireLine<'_>, now: Instant, out: &mut Vec<Emitted>) {
        let size = line.encoded_len();
        if !self.encoder.is_empty() && self.encoder.len() + size > self.limits.max_bytes {
            self.take_batch(out);
        }
        self.encoder.push(line);
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
        event_unix_nano: observed,
        message,
        fields: &NO_FIELDS,
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
mod tests;
