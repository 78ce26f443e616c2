//! Fuzzes the tailer's line splitter with the bytes of a file arriving in any
//! chunks, partial lines taken between them: the lines tile the file (only the
//! newline after a partial line is skipped), each holds its bytes cut to the
//! limit and says whether it was cut, and without partial lines the chunking
//! changes nothing.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vigil_agent::fuzzing::{Line, Splitter};

#[derive(Debug, Arbitrary)]
enum Step {
    Read(Vec<u8>),
    TakePartial,
}

#[derive(Debug, Arbitrary)]
struct File {
    max_line_bytes: u8,
    start: u32,
    after_partial: bool,
    steps: Vec<Step>,
    ends: bool,
}

/// Checks `line` against `stream`, the bytes fed from offset `start` on.
fn check_line(line: &Line, stream: &[u8], start: u64, max_line_bytes: usize, last: bool) {
    let from = usize::try_from(line.offset - start).unwrap();
    let spanned = &stream[from..from + usize::try_from(line.length).unwrap()];
    let content = match spanned.split_last() {
        Some((b'\n', content)) if !line.partial => content,
        _ => {
            assert!(line.partial || last, "a line without newline: {line:?}");
            spanned
        }
    };
    assert!(!content.contains(&b'\n'), "a newline inside {line:?}");
    assert_eq!(line.bytes, content[..content.len().min(max_line_bytes)]);
    assert_eq!(line.truncated, content.len() > max_line_bytes, "{line:?}");
}

fuzz_target!(|file: File| {
    let max_line_bytes = usize::from(file.max_line_bytes % 64) + 1;
    let start = u64::from(file.start);
    let mut splitter = Splitter::new(max_line_bytes, start, file.after_partial);
    let mut stream = Vec::new();
    let mut lines = Vec::new();
    let mut took_partial = file.after_partial;
    for step in &file.steps {
        match step {
            Step::Read(bytes) => {
                stream.extend_from_slice(bytes);
                lines.extend(splitter.feed(bytes));
            }
            Step::TakePartial => {
                if let Some(line) = splitter.take_partial() {
                    assert!(line.partial);
                    took_partial = true;
                    lines.push(line);
                }
            }
        }
    }
    let finished = if file.ends { splitter.finish() } else { None };
    let finished_any = finished.is_some();
    lines.extend(finished);
    assert_eq!(splitter.next_offset(), start + stream.len() as u64);

    let mut expected_offset = start;
    let mut skip_allowed = file.after_partial;
    for (position, line) in lines.iter().enumerate() {
        if line.offset != expected_offset {
            let skipped = usize::try_from(expected_offset - start).unwrap();
            assert!(
                skip_allowed && line.offset == expected_offset + 1 && stream[skipped] == b'\n',
                "line at {} does not follow the one ending at {expected_offset}",
                line.offset
            );
        }
        let last = finished_any && position == lines.len() - 1;
        check_line(line, &stream, start, max_line_bytes, last);
        expected_offset = line.offset + line.length;
        skip_allowed = line.partial;
    }

    if !took_partial {
        let mut whole = Splitter::new(max_line_bytes, start, false);
        let mut at_once = whole.feed(&stream);
        if file.ends {
            at_once.extend(whole.finish());
        }
        assert_eq!(at_once, lines, "the chunking changed the lines");
    }
});
