//! Unit tests of the parent module.

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
        parsers: None,
        sightings: Sightings::default(),
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
    let (_store_dir, checkpoints) = store();
    let (mut tail, position) =
        FileTail::open(template(&path), StartAt::End, limits(), &checkpoints).unwrap();
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
    let (_store_dir, checkpoints) = store();
    let (mut tail, _) =
        FileTail::open(template(&path), StartAt::Beginning, limits(), &checkpoints).unwrap();
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
        FileTail::open(template(&path), StartAt::Beginning, small, &checkpoints).unwrap();
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
    let (_store_dir, checkpoints) = store();
    let (mut tail, _) =
        FileTail::open(template(&path), StartAt::Beginning, limits(), &checkpoints).unwrap();
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
