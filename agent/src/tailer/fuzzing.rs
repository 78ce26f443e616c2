//! The first steps of the log data path, line splitting and multiline joining,
//! with owned inputs and outputs for the fuzz targets in `fuzz/` (see
//! [`crate::fuzzing`]); the tailer uses [`LineSplitter`] and [`Joiner`] directly.

use super::lines::{LineSplitter, RawLine};
use super::multiline::{Joiner, MultilineRule};
use crate::config::MultilineConfig;
use std::time::Duration;
use tokio::time::Instant;

/// A line as the splitter or the joiner gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Offset of the line's first byte.
    pub offset: u64,
    /// Bytes the line spans in the file, newlines included.
    pub length: u64,
    /// The line without its newline, cut to the limit.
    pub bytes: Vec<u8>,
    /// The line was longer than the limit.
    pub truncated: bool,
    /// The line was taken before its newline arrived.
    pub partial: bool,
}

impl From<RawLine<'_>> for Line {
    fn from(line: RawLine<'_>) -> Self {
        Self {
            offset: line.offset,
            length: line.length,
            bytes: line.bytes.into_owned(),
            truncated: line.truncated,
            partial: line.partial,
        }
    }
}

impl From<Line> for RawLine<'static> {
    fn from(line: Line) -> Self {
        RawLine {
            offset: line.offset,
            length: line.length,
            bytes: line.bytes.into(),
            truncated: line.truncated,
            partial: line.partial,
        }
    }
}

/// The tailer's line splitter of one file.
#[derive(Debug)]
pub struct Splitter(LineSplitter);

impl Splitter {
    /// A splitter whose first byte is at `offset`; `after_partial` when the line
    /// before it was taken as partial.
    pub fn new(max_line_bytes: usize, offset: u64, after_partial: bool) -> Self {
        Self(if after_partial {
            LineSplitter::after_partial(max_line_bytes, offset)
        } else {
            LineSplitter::new(max_line_bytes, offset)
        })
    }

    /// The lines `bytes`, the next bytes read, complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut lines = Vec::new();
        self.0.feed(bytes, |line| lines.push(line.into()));
        lines
    }

    /// The line in progress, taken as partial (its file may still grow).
    pub fn take_partial(&mut self) -> Option<Line> {
        self.0.take_partial().map(Line::from)
    }

    /// The line in progress, as the last line of a file that no longer grows.
    pub fn finish(&mut self) -> Option<Line> {
        self.0.finish().map(Line::from)
    }

    /// Offset of the next byte to feed.
    pub fn next_offset(&self) -> u64 {
        self.0.next_offset()
    }
}

/// The tailer's multiline joiner of one file, on a clock that starts at its
/// creation.
#[derive(Debug)]
pub struct Multiline {
    rule: MultilineRule,
    joiner: Joiner,
    start: Instant,
}

impl Multiline {
    /// The joiner of `config`; `None` if its patterns do not compile.
    pub fn new(config: &MultilineConfig, max_line_bytes: usize) -> Option<Self> {
        Some(Self {
            rule: MultilineRule::new(config)?,
            joiner: Joiner::new(max_line_bytes),
            start: Instant::now(),
        })
    }

    /// The records completed by `line`, read `at` after the start.
    pub fn add(&mut self, line: Line, at: Duration) -> Vec<Line> {
        let mut records = Vec::new();
        self.joiner
            .add(&self.rule, line.into(), self.start + at, &mut records);
        records.into_iter().map(Line::from).collect()
    }

    /// The record in progress if no line joined it for the flush timeout by `at`.
    pub fn flush_if_due(&mut self, at: Duration) -> Option<Line> {
        self.joiner
            .flush_if_due(&self.rule, self.start + at)
            .map(Line::from)
    }

    /// The record in progress, whatever its age.
    pub fn take(&mut self) -> Option<Line> {
        self.joiner.take().map(Line::from)
    }
}
