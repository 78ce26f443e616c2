//! Fuzzes the multiline joiner over the lines of any file, with any timing
//! between them: the records tile the lines, each is its lines joined with
//! newlines and cut to the limit (flagged when cut), and none holds more lines
//! than allowed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use vigil_agent::config::MultilineConfig;
use vigil_agent::fuzzing::{Line, Multiline, Splitter};

const START_PATTERNS: [&str; 4] = [r"^\d{4}-", r"^\S", r"^\[", r"^$"];
const CONTINUATION_PATTERNS: [&str; 4] = [r"^\s", r"^\tat ", r"^Caused by: ", r"\\$"];

#[derive(Debug, Arbitrary)]
struct Input {
    pattern: u8,
    continuation: bool,
    max_lines: u8,
    max_line_bytes: u8,
    flush_timeout_ms: u16,
    /// The file's bytes, and the milliseconds between its lines.
    text: Vec<u8>,
    delays_ms: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let pattern = usize::from(input.pattern) % START_PATTERNS.len();
    let config = MultilineConfig {
        start_pattern: (!input.continuation).then(|| START_PATTERNS[pattern].to_owned()),
        continuation_pattern: input
            .continuation
            .then(|| CONTINUATION_PATTERNS[pattern].to_owned()),
        flush_timeout: Duration::from_millis(u64::from(input.flush_timeout_ms)),
        max_lines: usize::from(input.max_lines % 16) + 1,
    };
    let max_line_bytes = usize::from(input.max_line_bytes % 64) + 1;
    let mut splitter = Splitter::new(max_line_bytes, 0, false);
    let mut lines = splitter.feed(&input.text);
    lines.extend(splitter.finish());

    let mut joiner = Multiline::new(&config, max_line_bytes).expect("the patterns compile");
    let mut records = Vec::new();
    let mut now = Duration::ZERO;
    for (position, line) in lines.iter().enumerate() {
        let delay = input.delays_ms.get(position).copied().unwrap_or(0);
        now += Duration::from_millis(u64::from(delay));
        records.extend(joiner.flush_if_due(now));
        records.extend(joiner.add(line.clone(), now));
    }
    records.extend(joiner.take());

    let mut remaining: &[Line] = &lines;
    let mut offset = 0;
    for record in &records {
        assert_eq!(record.offset, offset, "records do not tile the file");
        let mut length = 0;
        let count = remaining
            .iter()
            .take_while(|line| {
                let inside = length < record.length;
                length += line.length;
                inside
            })
            .count();
        let (parts, rest) = remaining.split_at(count);
        remaining = rest;
        assert_eq!(
            parts.iter().map(|line| line.length).sum::<u64>(),
            record.length,
            "a record does not end where a line ends"
        );
        assert!(
            (1..=config.max_lines).contains(&parts.len()),
            "a record of {} lines",
            parts.len()
        );
        let joined = parts
            .iter()
            .map(|line| line.bytes.as_slice())
            .collect::<Vec<_>>()
            .join(&b'\n');
        assert_eq!(record.bytes, joined[..joined.len().min(max_line_bytes)]);
        assert_eq!(
            record.truncated,
            joined.len() > max_line_bytes || parts.iter().any(|line| line.truncated),
            "{record:?}"
        );
        offset += record.length;
    }
    assert!(remaining.is_empty(), "lines left out of every record");
});
