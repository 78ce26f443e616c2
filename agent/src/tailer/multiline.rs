//! Multiline records: joins the physical lines of one event (a Java stack trace,
//! say) into one log line, between line splitting and batching in the log data
//! path.
//!
//! A record starts at a line matching `start_pattern` (or at a line not matching
//! `continuation_pattern`) and takes the lines after it until the next start, until
//! `max_lines`, or until no line came for `flush_timeout`. The record's offset is
//! that of its first byte and its length covers all its lines, so the checkpoint
//! and the document id work as for single lines.

use super::lines::RawLine;
use crate::config::MultilineConfig;
use regex::bytes::Regex;
use std::time::Duration;
use tokio::time::Instant;

/// How lines are grouped, compiled from the configuration.
#[derive(Debug)]
pub(crate) struct MultilineRule {
    boundary: Boundary,
    flush_timeout: Duration,
    max_lines: usize,
}

#[derive(Debug)]
enum Boundary {
    /// A matching line starts a record.
    Start(Regex),
    /// A matching line continues the record before it.
    Continuation(Regex),
}

impl MultilineRule {
    /// Compiles `config`; `None` if its pattern is invalid (the configuration was
    /// validated, so this does not happen in practice).
    pub(crate) fn new(config: &MultilineConfig) -> Option<Self> {
        let boundary = match (&config.start_pattern, &config.continuation_pattern) {
            (Some(start), None) => Boundary::Start(Regex::new(start).ok()?),
            (None, Some(continuation)) => Boundary::Continuation(Regex::new(continuation).ok()?),
            _ => return None,
        };
        Some(Self {
            boundary,
            flush_timeout: config.flush_timeout,
            max_lines: config.max_lines,
        })
    }

    fn continues(&self, line: &[u8]) -> bool {
        match &self.boundary {
            Boundary::Start(start) => !start.is_match(line),
            Boundary::Continuation(continuation) => continuation.is_match(line),
        }
    }
}

/// The record in progress of one file.
#[derive(Debug)]
pub(crate) struct Joiner {
    max_line_bytes: usize,
    record: Option<RawLine<'static>>,
    lines: usize,
    /// When the last line joined the record.
    updated: Option<Instant>,
}

impl Joiner {
    pub(crate) fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            record: None,
            lines: 0,
            updated: None,
        }
    }

    /// Takes the next physical line; pushes to `out` every record it completes.
    pub(crate) fn add(
        &mut self,
        rule: &MultilineRule,
        line: RawLine<'_>,
        now: Instant,
        out: &mut Vec<RawLine<'static>>,
    ) {
        match &mut self.record {
            Some(record) if rule.continues(&line.bytes) && !line.partial => {
                let room = self.max_line_bytes.saturating_sub(record.bytes.len());
                let wanted = line.bytes.len() + 1;
                if wanted > room {
                    record.truncated = true;
                }
                let mut joined = Vec::with_capacity(wanted.min(room));
                joined.push(b'\n');
                joined.extend_from_slice(&line.bytes);
                joined.truncate(room);
                record.bytes.to_mut().extend_from_slice(&joined);
                record.length += line.length;
                record.truncated |= line.truncated;
                self.lines += 1;
            }
            _ => {
                out.extend(self.take());
                self.record = Some(line.into_owned());
                self.lines = 1;
            }
        }
        self.updated = Some(now);
        if self.lines >= rule.max_lines {
            out.extend(self.take());
        }
    }

    /// The record in progress if no line joined it for the rule's flush timeout.
    pub(crate) fn flush_if_due(
        &mut self,
        rule: &MultilineRule,
        now: Instant,
    ) -> Option<RawLine<'static>> {
        let due = self
            .updated
            .is_some_and(|updated| now.duration_since(updated) >= rule.flush_timeout);
        if due { self.take() } else { None }
    }

    /// The record in progress, whatever its age.
    pub(crate) fn take(&mut self) -> Option<RawLine<'static>> {
        self.lines = 0;
        self.updated = None;
        self.record.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailer::lines::LineSplitter;

    fn rule(start: Option<&str>, continuation: Option<&str>, max_lines: usize) -> MultilineRule {
        MultilineRule::new(&MultilineConfig {
            start_pattern: start.map(str::to_owned),
            continuation_pattern: continuation.map(str::to_owned),
            flush_timeout: Duration::from_secs(1),
            max_lines,
        })
        .unwrap()
    }

    fn join(
        rule: &MultilineRule,
        text: &[u8],
        max_line_bytes: usize,
    ) -> (Vec<RawLine<'static>>, Joiner) {
        let mut splitter = LineSplitter::new(max_line_bytes, 0);
        let mut lines = Vec::new();
        splitter.feed(text, |line| lines.push(line));
        let mut joiner = Joiner::new(max_line_bytes);
        let mut out = Vec::new();
        let now = Instant::now();
        for line in lines {
            joiner.add(rule, line, now, &mut out);
        }
        (out, joiner)
    }

    const TRACE: &[u8] = b"2024-05-01 12:00:00 ERROR request failed\n\
java.lang.IllegalStateException: boom\n\
\tat com.example.Service.handle(Service.java:42)\n\
\tat com.example.Main.main(Main.java:7)\n\
2024-05-01 12:00:01 INFO next\n";

    #[test]
    fn a_java_stack_trace_is_one_line_spanning_its_physical_lines() {
        let (records, mut joiner) = join(&rule(Some(r"^\d{4}-"), None, 500), TRACE, 1024);
        assert_eq!(records.len(), 1);
        let trace = &records[0];
        assert_eq!(trace.offset, 0);
        let first_three = TRACE.split(|&b| b == b'\n').take(4).map(|l| l.len() + 1);
        assert_eq!(trace.length, first_three.sum::<usize>() as u64);
        assert_eq!(
            trace.bytes,
            TRACE[..trace.length as usize - 1].to_vec(),
            "joined with newlines, without the last one"
        );
        assert!(!trace.truncated);
        let next = joiner.take().unwrap();
        assert_eq!(next.offset, trace.length);
        assert_eq!(&*next.bytes, b"2024-05-01 12:00:01 INFO next");
    }

    #[test]
    fn continuation_patterns_max_lines_and_the_size_limit_end_records() {
        let text = b"start\n  one\n  two\n  three\nnext\n";
        let (records, _) = join(&rule(None, Some(r"^\s"), 3), text, 1024);
        assert_eq!(&*records[0].bytes, b"start\n  one\n  two");
        assert_eq!(&*records[1].bytes, b"  three");

        let (records, _) = join(&rule(None, Some(r"^\s"), 500), text, 10);
        assert_eq!(&*records[0].bytes, b"start\n  on");
        assert!(records[0].truncated);
        assert_eq!(records[0].length, 26);
    }

    #[test]
    fn a_record_is_flushed_after_the_timeout() {
        let rule = rule(Some(r"^\d{4}-"), None, 500);
        let (records, mut joiner) = join(&rule, b"2024-05-01 one\n  more\n", 1024);
        assert!(records.is_empty());
        let start = Instant::now();
        assert!(joiner.flush_if_due(&rule, start).is_none());
        let record = joiner
            .flush_if_due(&rule, start + Duration::from_secs(1))
            .unwrap();
        assert_eq!(&*record.bytes, b"2024-05-01 one\n  more");
    }
}
