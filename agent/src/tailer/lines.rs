//! Line splitting: turns the bytes read from a file into lines with their offsets,
//! the first step of the log data path.
//!
//! A line ends at `\n`; its bytes are kept as they are (a `\r` before the newline
//! stays). The last line is held until its newline arrives. A line longer than the
//! limit keeps only its first bytes and skips the rest up to its newline, so memory
//! stays bounded whatever the file holds. A last line whose newline does not come
//! can be taken as a partial line; the newline that may follow later then ends
//! nothing (it makes no empty line).

use std::borrow::Cow;

/// One complete line as found in the file; it borrows the bytes read when it lies
/// whole within them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawLine<'a> {
    /// Offset of the line's first byte.
    pub(crate) offset: u64,
    /// Bytes the line spans in the file, including its newline if it has one.
    pub(crate) length: u64,
    /// The line without its newline, cut to the limit.
    pub(crate) bytes: Cow<'a, [u8]>,
    /// The line was longer than the limit.
    pub(crate) truncated: bool,
    /// The line was taken before its newline arrived.
    pub(crate) partial: bool,
}

impl RawLine<'_> {
    /// The line with bytes of its own, to outlive the bytes it was read from.
    pub(crate) fn into_owned(self) -> RawLine<'static> {
        RawLine {
            offset: self.offset,
            length: self.length,
            bytes: Cow::Owned(self.bytes.into_owned()),
            truncated: self.truncated,
            partial: self.partial,
        }
    }
}

/// Splits a stream of bytes into lines.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    max_line_bytes: usize,
    /// Kept bytes of the line in progress, at most `max_line_bytes`.
    pending: Vec<u8>,
    /// Offset of the first byte of the line in progress.
    line_start: u64,
    /// Bytes of the line in progress seen so far, kept or skipped.
    line_length: u64,
    truncated: bool,
    /// A newline right at the next byte ends a line that was already taken as
    /// partial, and is skipped.
    absorb_newline: bool,
}

impl LineSplitter {
    /// A splitter whose first byte will be at `offset`.
    pub(crate) fn new(max_line_bytes: usize, offset: u64) -> Self {
        Self {
            max_line_bytes,
            pending: Vec::new(),
            line_start: offset,
            line_length: 0,
            truncated: false,
            absorb_newline: false,
        }
    }

    /// A splitter whose first byte will be at `offset`, where the byte before was
    /// not a newline: a line taken as partial ended there.
    pub(crate) fn after_partial(max_line_bytes: usize, offset: u64) -> Self {
        Self {
            absorb_newline: true,
            ..Self::new(max_line_bytes, offset)
        }
    }

    /// Offset of the next byte to feed.
    pub(crate) fn next_offset(&self) -> u64 {
        self.line_start + self.line_length
    }

    /// Feeds the next bytes of the stream; calls `emit` for every line they complete.
    pub(crate) fn feed<'a>(&mut self, mut bytes: &'a [u8], mut emit: impl FnMut(RawLine<'a>)) {
        if self.absorb_newline && !bytes.is_empty() {
            self.absorb_newline = false;
            if bytes[0] == b'\n' {
                self.line_start += 1;
                bytes = &bytes[1..];
            }
        }
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(newline) if self.line_length == 0 => {
                    // The whole line is in `bytes`: no copy.
                    let kept = newline.min(self.max_line_bytes);
                    let line = RawLine {
                        offset: self.line_start,
                        length: newline as u64 + 1,
                        bytes: Cow::Borrowed(&bytes[..kept]),
                        truncated: kept < newline,
                        partial: false,
                    };
                    self.line_start += line.length;
                    emit(line);
                    bytes = &bytes[newline + 1..];
                }
                Some(newline) => {
                    self.keep(&bytes[..newline]);
                    self.line_length += newline as u64 + 1;
                    emit(self.take_line());
                    bytes = &bytes[newline + 1..];
                }
                None => {
                    self.keep(bytes);
                    self.line_length += bytes.len() as u64;
                    bytes = &[];
                }
            }
        }
    }

    /// The line in progress, as a final line without newline: for a file that will
    /// never grow again (it was replaced). `None` if there is none.
    pub(crate) fn finish(&mut self) -> Option<RawLine<'static>> {
        (self.line_length > 0).then(|| self.take_line())
    }

    /// Whether a line without its newline is in progress.
    pub(crate) fn has_partial(&self) -> bool {
        self.line_length > 0
    }

    /// The line in progress, flagged partial, for a file that may still grow: a
    /// newline written right after it later is skipped. `None` if there is none.
    pub(crate) fn take_partial(&mut self) -> Option<RawLine<'static>> {
        let mut line = self.finish()?;
        line.partial = true;
        self.absorb_newline = true;
        Some(line)
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = self.max_line_bytes - self.pending.len();
        if bytes.len() > room {
            self.truncated = true;
        }
        self.pending
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn take_line(&mut self) -> RawLine<'static> {
        let line = RawLine {
            offset: self.line_start,
            length: self.line_length,
            bytes: Cow::Owned(std::mem::take(&mut self.pending)),
            truncated: self.truncated,
            partial: false,
        };
        self.line_start += self.line_length;
        self.line_length = 0;
        self.truncated = false;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(splitter: &mut LineSplitter, bytes: &[u8]) -> Vec<RawLine<'static>> {
        let mut lines = Vec::new();
        splitter.feed(bytes, |line| lines.push(line.into_owned()));
        lines
    }

    fn line(offset: u64, length: u64, bytes: &[u8], truncated: bool) -> RawLine<'static> {
        RawLine {
            offset,
            length,
            bytes: Cow::Owned(bytes.to_vec()),
            truncated,
            partial: false,
        }
    }

    #[test]
    fn lines_carry_offsets_and_lengths_with_their_newline() {
        let mut splitter = LineSplitter::new(100, 10);
        let lines = split(&mut splitter, b"one\ntwo\r\n\n");
        assert_eq!(
            lines,
            [
                line(10, 4, b"one", false),
                line(14, 5, b"two\r", false),
                line(19, 1, b"", false),
            ]
        );
        assert_eq!(splitter.next_offset(), 20);
    }

    #[test]
    fn a_partial_line_is_held_until_its_newline() {
        let mut splitter = LineSplitter::new(100, 0);
        assert!(split(&mut splitter, b"hel").is_empty());
        assert!(split(&mut splitter, b"lo wor").is_empty());
        assert_eq!(
            split(&mut splitter, b"ld\nx"),
            [line(0, 12, b"hello world", false)]
        );
        assert_eq!(splitter.finish(), Some(line(12, 1, b"x", false)));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn a_long_line_is_cut_and_never_buffered_whole() {
        let mut splitter = LineSplitter::new(1024, 0);
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..160 {
            assert!(split(&mut splitter, &chunk).is_empty());
            assert!(
                splitter.pending.capacity() <= 2 * 1024,
                "buffered beyond the limit"
            );
        }
        let lines = split(&mut splitter, b"\nnext\n");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].bytes, &[b'a'; 1024][..]);
        assert!(lines[0].truncated);
        assert_eq!(lines[0].length, 10 * 1024 * 1024 + 1);
        assert_eq!(lines[1], line(10 * 1024 * 1024 + 1, 5, b"next", false));
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_not_truncated() {
        let mut splitter = LineSplitter::new(4, 0);
        assert_eq!(
            split(&mut splitter, b"abcd\nabcde\n"),
            [line(0, 5, b"abcd", false), line(5, 6, b"abcd", true)]
        );
    }

    #[test]
    fn the_newline_after_a_partial_line_makes_no_empty_line() {
        let mut splitter = LineSplitter::new(100, 0);
        assert!(split(&mut splitter, b"one\ntw").len() == 1);
        let partial = splitter.take_partial().unwrap();
        assert_eq!((partial.offset, partial.length), (4, 2));
        assert!(partial.partial);
        assert!(splitter.take_partial().is_none());
        assert_eq!(
            split(&mut splitter, b"\nthree\n"),
            [line(7, 6, b"three", false)]
        );

        let mut resumed = LineSplitter::after_partial(100, 6);
        assert_eq!(
            split(&mut resumed, b"\nfour\n"),
            [line(7, 5, b"four", false)]
        );
        let mut continued = LineSplitter::after_partial(100, 6);
        assert_eq!(split(&mut continued, b"o\n"), [line(6, 2, b"o", false)]);
    }

    proptest! {
        /// However the bytes are chunked, the lines are the same and tile the input.
        #[test]
        fn chunking_does_not_change_the_lines(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x'), Just(b'y')], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let mut whole = LineSplitter::new(8, 0);
            let expected = split(&mut whole, &text);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(text.len())).collect();
            cuts.sort_unstable();
            let mut chunked = LineSplitter::new(8, 0);
            let mut lines = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([text.len()]) {
                lines.extend(split(&mut chunked, &text[start..cut]));
                start = cut;
            }
            prop_assert_eq!(&lines, &expected);
            let mut next = 0;
            for line in &lines {
                prop_assert_eq!(line.offset, next);
                next += line.length;
            }
            prop_assert_eq!(chunked.next_offset(), text.len() as u64);
        }
    }
}
