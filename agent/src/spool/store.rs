//! The spool on disk: the ordered segment files under `<data_dir>/spool/`, what
//! each holds, how far it was sent and acknowledged, and the bound on their total
//! size. The spool task is its only user; everything here is synchronous file I/O
//! on small records.

use super::SpoolError;
use super::segment::{Damage, Next, Record, SEGMENT_MAGIC, read_record};
use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// File name suffix of segments; the stem is the segment's number.
const SEGMENT_SUFFIX: &str = ".spool";
/// Bytes of a segment that holds no record.
const EMPTY_SEGMENT_BYTES: u64 = SEGMENT_MAGIC.len() as u64;
/// A spool is cut into this many segments or more, so that making room drops a
/// small part of it.
const SEGMENTS_PER_SPOOL: u64 = 16;
/// Bounds of one segment's size.
const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
const MAX_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// Where a record ends: acknowledging it moves the segment's acknowledged
/// position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) segment: u64,
    pub(crate) end: u64,
    /// Samples of the record, so that it is counted if it is dropped while in flight.
    pub(crate) samples: u64,
}

/// Batches and samples the spool gave up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) batches: u64,
    pub(crate) samples: u64,
}

impl Dropped {
    fn add(&mut self, other: Dropped) {
        self.batches += other.batches;
        self.samples += other.samples;
    }
}

/// A part of a segment cut at start because it was not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cut {
    pub(crate) path: PathBuf,
    /// Where the segment was cut; everything from here on is gone.
    pub(crate) offset: u64,
    pub(crate) bytes: u64,
    pub(crate) damage: Damage,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cut at byte {} ({} bytes removed): {}",
            self.path.display(),
            self.offset,
            self.bytes,
            self.damage
        )
    }
}

/// What the spool held when it was opened.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Batches waiting to be sent.
    pub(crate) batches: u64,
    /// Damaged tails that were cut.
    pub(crate) cuts: Vec<Cut>,
    /// Batches dropped because the spool held more than its bound allows.
    pub(crate) dropped: Dropped,
}

/// One segment file and how far its records went.
#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes of the file that hold whole records (and the header).
    bytes: u64,
    records: u64,
    samples: u64,
    /// Records handed to the bus, from the start; rewound to `acked` on failure.
    sent_records: u64,
    sent_samples: u64,
    acked_records: u64,
    acked_samples: u64,
    /// Where the last acknowledged record ends.
    acked_end: u64,
}

impl Segment {
    fn new(id: u64) -> Self {
        Self {
            id,
            bytes: EMPTY_SEGMENT_BYTES,
            records: 0,
            samples: 0,
            sent_records: 0,
            sent_samples: 0,
            acked_records: 0,
            acked_samples: 0,
            acked_end: EMPTY_SEGMENT_BYTES,
        }
    }

    fn unsent(&self) -> Dropped {
        Dropped {
            batches: self.records - self.sent_records,
            samples: self.samples - self.sent_samples,
        }
    }
}

/// The reading position of the drainer.
#[derive(Debug)]
struct Cursor {
    segment: u64,
    offset: u64,
    /// Open on `segment` at `offset`; opened on the first read.
    file: Option<BufReader<File>>,
}

/// The segments of one spool directory, oldest first; records are appended to the
/// last one.
#[derive(Debug)]
pub(crate) struct SpoolStore {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: File,
    cursor: Cursor,
}

impl SpoolStore {
    /// Opens the spool in `dir` (creating it), verifying every segment: a damaged
    /// tail is cut and reported, never an error. Appending starts in a new segment.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Recovered), SpoolError> {
        std::fs::create_dir_all(dir).map_err(|cause| SpoolError::io(dir, cause))?;
        let mut recovered = Recovered::default();
        let mut segments = VecDeque::new();
        for (id, path) in segment_files(dir)? {
            let (segment, cut) = verify(id, &path)?;
            if let Some(cut) = cut {
                recovered.cuts.push(cut);
            }
            if segment.records == 0 {
                std::fs::remove_file(&path).map_err(|cause| SpoolError::io(&path, cause))?;
            } else {
                recovered.batches += segment.records;
                segments.push_back(segment);
            }
        }
        let next_id = segments.back().map_or(0, |s| s.id + 1);
        let writer = create_segment(&segment_path(dir, next_id))?;
        segments.push_back(Segment::new(next_id));
        let first = segments.front().map_or(next_id, |s| s.id);
        let mut store = Self {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / SEGMENTS_PER_SPOOL)
                .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
            segments,
            writer,
            cursor: Cursor {
                segment: first,
                offset: EMPTY_SEGMENT_BYTES,
                file: None,
            },
        };
        while store.bytes() > max_bytes && store.segments.len() > 1 {
            recovered.dropped.add(store.drop_oldest()?);
        }
        recovered.batches -= recovered.dropped.batches;
        Ok((store, recovered))
    }

    /// Bytes the segment files take.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Batches not acknowledged yet.
    pub(crate) fn waiting(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.records - s.acked_records)
            .sum()
    }

    /// Appends `record`, first dropping the oldest segments if it would not fit;
    /// returns what was dropped for it.
    pub(crate) fn append(&mut self, record: &Record) -> Result<Dropped, SpoolError> {
        let bytes = record.encode();
        let len = bytes.len() as u64;
        if len + EMPTY_SEGMENT_BYTES > self.max_bytes {
            return Err(SpoolError::Oversized {
                bytes: len,
                max_bytes: self.max_bytes,
            });
        }
        let mut dropped = Dropped::default();
        if self.last().records > 0 && self.last().bytes + len > self.segment_bytes {
            self.rotate()?;
        }
        if self.bytes() + len > self.max_bytes {
            if self.last().records > 0 {
                self.rotate()?;
            }
            while self.bytes() + len > self.max_bytes && self.segments.len() > 1 {
                dropped.add(self.drop_oldest()?);
            }
        }
        let path = self.last_path();
        self.writer
            .write_all(&bytes)
            .map_err(|cause| SpoolError::io(&path, cause))?;
        let last = self.last_mut();
        last.bytes += len;
        last.records += 1;
        last.samples += u64::from(record.samples);
        Ok(dropped)
    }

    /// The oldest record not handed to the bus yet, and where it ends; `None` when
    /// every record was handed over. A record that cannot be read back is reported
    /// with the rest of its segment, which is skipped.
    pub(crate) fn next_unsent(&mut self) -> Result<Option<(Record, Position)>, SpoolError> {
        loop {
            let Some(index) = self.index_of(self.cursor.segment) else {
                // Its segment was deleted, all acknowledged: go on with the oldest.
                let oldest = self.segments.front().map_or(0, |s| s.id);
                if self.cursor.segment >= oldest {
                    return Ok(None);
                }
                self.cursor = Cursor {
                    segment: oldest,
                    offset: EMPTY_SEGMENT_BYTES,
                    file: None,
                };
                continue;
            };
            let segment = &self.segments[index];
            if self.cursor.offset >= segment.bytes {
                if index + 1 == self.segments.len() {
                    return Ok(None);
                }
                self.cursor = Cursor {
                    segment: self.segments[index + 1].id,
                    offset: EMPTY_SEGMENT_BYTES,
                    file: None,
                };
                continue;
            }
            let remaining = segment.bytes - self.cursor.offset;
            let path = segment_path(&self.dir, segment.id);
            let reader = match &mut self.cursor.file {
                Some(reader) => reader,
                None => {
                    let mut file =
                        File::open(&path).map_err(|cause| SpoolError::io(&path, cause))?;
                    file.seek(SeekFrom::Start(self.cursor.offset))
                        .map_err(|cause| SpoolError::io(&path, cause))?;
                    self.cursor.file.insert(BufReader::new(file))
                }
            };
            match read_record(reader, remaining).map_err(|cause| SpoolError::io(&path, cause))? {
                Next::Record(record, len) => {
                    self.cursor.offset += len;
                    let segment = &mut self.segments[index];
                    segment.sent_records += 1;
                    segment.sent_samples += u64::from(record.samples);
                    let position = Position {
                        segment: segment.id,
                        end: self.cursor.offset,
                        samples: u64::from(record.samples),
                    };
                    return Ok(Some((record, position)));
                }
                Next::End => return Ok(None),
                Next::Damaged(damage) => {
                    return Err(SpoolError::Unreadable {
                        path,
                        offset: self.cursor.offset,
                        damage: damage.to_string(),
                    });
                }
            }
        }
    }

    /// Gives up the rest of the segment the drainer is in, after
    /// [`next_unsent`](Self::next_unsent) found it unreadable; returns what that
    /// dropped. Appending goes on in a new segment.
    pub(crate) fn skip_unreadable(&mut self) -> Result<Dropped, SpoolError> {
        let Some(index) = self.index_of(self.cursor.segment) else {
            return Ok(Dropped::default());
        };
        if index + 1 == self.segments.len() {
            self.rotate()?;
        }
        let segment = &mut self.segments[index];
        let dropped = segment.unsent();
        segment.records = segment.sent_records;
        segment.samples = segment.sent_samples;
        segment.bytes = self.cursor.offset;
        Ok(dropped)
    }

    /// Marks the record ending at `position` as acknowledged; records are
    /// acknowledged in the order they were handed out. A segment whose records are
    /// all acknowledged is deleted, and the segment being written is emptied.
    /// Whether the record was still in the spool (not dropped for room).
    pub(crate) fn acknowledge(&mut self, position: Position) -> Result<bool, SpoolError> {
        let Some(index) = self.index_of(position.segment) else {
            return Ok(false);
        };
        let segment = &mut self.segments[index];
        segment.acked_records += 1;
        segment.acked_samples += position.samples;
        segment.acked_end = position.end;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            if oldest.acked_records < oldest.records {
                break;
            }
            let path = segment_path(&self.dir, oldest.id);
            std::fs::remove_file(&path).map_err(|cause| SpoolError::io(&path, cause))?;
            self.segments.pop_front();
        }
        let last = self.last();
        if self.segments.len() == 1 && last.records > 0 && last.acked_records == last.records {
            self.empty_last()?;
        }
        Ok(true)
    }

    /// Makes the drainer hand out again everything not acknowledged, from the
    /// oldest such record: after a publish failed.
    pub(crate) fn rewind(&mut self) {
        for segment in &mut self.segments {
            segment.sent_records = segment.acked_records;
            segment.sent_samples = segment.acked_samples;
        }
        if let Some(oldest) = self.segments.front() {
            self.cursor = Cursor {
                segment: oldest.id,
                offset: oldest.acked_end,
                file: None,
            };
        }
    }

    /// Whether the segment `id` is still in the spool.
    pub(crate) fn holds(&self, id: u64) -> bool {
        self.index_of(id).is_some()
    }

    /// Writes what was appended through to the disk.
    pub(crate) fn sync(&self) -> Result<(), SpoolError> {
        self.writer
            .sync_data()
            .map_err(|cause| SpoolError::io(&self.last_path(), cause))
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        let first = self.segments.front()?.id;
        let index = usize::try_from(id.checked_sub(first)?).ok()?;
        (index < self.segments.len()).then_some(index)
    }

    fn last(&self) -> &Segment {
        self.segments
            .back()
            .expect("the spool always has a segment to write to")
    }

    fn last_mut(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .expect("the spool always has a segment to write to")
    }

    fn last_path(&self) -> PathBuf {
        segment_path(&self.dir, self.last().id)
    }

    /// Starts a new segment to append to; the old one is synced first, so that a
    /// crash loses at most the segment being written.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let id = self.last().id + 1;
        self.writer = create_segment(&segment_path(&self.dir, id))?;
        self.segments.push_back(Segment::new(id));
        Ok(())
    }

    /// Empties the segment being written once everything in it was acknowledged,
    /// so that a healthy bus keeps the spool at one small file.
    fn empty_last(&mut self) -> Result<(), SpoolError> {
        let path = self.last_path();
        self.writer
            .set_len(EMPTY_SEGMENT_BYTES)
            .and_then(|()| {
                self.writer
                    .seek(SeekFrom::Start(EMPTY_SEGMENT_BYTES))
                    .map(drop)
            })
            .map_err(|cause| SpoolError::io(&path, cause))?;
        let id = self.last().id;
        *self.last_mut() = Segment::new(id);
        self.cursor = Cursor {
            segment: id,
            offset: EMPTY_SEGMENT_BYTES,
            file: None,
        };
        Ok(())
    }

    /// Deletes the oldest segment to make room; returns the batches in it that
    /// were never handed to the bus.
    fn drop_oldest(&mut self) -> Result<Dropped, SpoolError> {
        let Some(oldest) = self.segments.pop_front() else {
            return Ok(Dropped::default());
        };
        let path = segment_path(&self.dir, oldest.id);
        std::fs::remove_file(&path).map_err(|cause| SpoolError::io(&path, cause))?;
        if self.cursor.segment == oldest.id
            && let Some(next) = self.segments.front()
        {
            self.cursor = Cursor {
                segment: next.id,
                offset: EMPTY_SEGMENT_BYTES,
                file: None,
            };
        }
        Ok(oldest.unsent())
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

/// The segment files in `dir` by number, oldest first; other files are left alone.
fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let entries = std::fs::read_dir(dir).map_err(|cause| SpoolError::io(dir, cause))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|cause| SpoolError::io(dir, cause))?.path();
        let id = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|stem| stem.parse::<u64>().ok());
        if let Some(id) = id {
            files.push((id, path));
        }
    }
    files.sort_unstable();
    Ok(files)
}

fn create_segment(path: &Path) -> Result<File, SpoolError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|cause| SpoolError::io(path, cause))?;
    file.write_all(SEGMENT_MAGIC)
        .map_err(|cause| SpoolError::io(path, cause))?;
    Ok(file)
}

/// Reads segment `id` at `path` record by record; cuts it after its last whole,
/// intact record if anything else follows.
fn verify(id: u64, path: &Path) -> Result<(Segment, Option<Cut>), SpoolError> {
    let io = |cause| SpoolError::io(path, cause);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let length = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::new(file);
    let mut segment = Segment::new(id);
    let mut magic = [0u8; SEGMENT_MAGIC.len()];
    let damage = if length < EMPTY_SEGMENT_BYTES
        || std::io::Read::read_exact(&mut reader, &mut magic).is_err()
        || &magic != SEGMENT_MAGIC
    {
        segment.bytes = 0;
        Some(Damage::NotASegment)
    } else {
        loop {
            match read_record(&mut reader, length - segment.bytes).map_err(io)? {
                Next::Record(record, len) => {
                    segment.bytes += len;
                    segment.records += 1;
                    segment.samples += u64::from(record.samples);
                }
                Next::End => break None,
                Next::Damaged(damage) => break Some(damage),
            }
        }
    };
    let Some(damage) = damage else {
        return Ok((segment, None));
    };
    reader.into_inner().set_len(segment.bytes).map_err(io)?;
    let cut = Cut {
        path: path.to_owned(),
        offset: segment.bytes,
        bytes: length - segment.bytes,
        damage,
    };
    tracing::warn!(path = %path.display(), offset = cut.offset, bytes = cut.bytes, damage = %cut.damage, "metric spool segment cut: {cut}");
    Ok((segment, Some(cut)))
}
