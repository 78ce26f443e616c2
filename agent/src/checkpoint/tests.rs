//! Unit tests of the parent module.

use super::*;

fn position(source: u64, inode: u64, offset: u64) -> Position {
    Position {
        identity: FileIdentity {
            source: SourceId(source),
            head: Head::of(b"time,level,message\n"),
            device: 8,
            inode,
        },
        offset,
    }
}

#[test]
fn checkpoints_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
    assert!(problem.is_none());
    assert!(store.is_first_start());
    store.set(Path::new("/var/log/a.log"), position(1, 42, 1234));
    assert!(store.write_if_changed().unwrap());
    assert!(!store.write_if_changed().unwrap(), "nothing changed");

    let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
    assert!(!reopened.is_first_start());
    assert_eq!(
        reopened.matching(b"time,level,message\n1,INFO,x\n"),
        [Known {
            path: "/var/log/a.log".into(),
            position: position(1, 42, 1234),
            detached: false,
        }]
    );
    assert_eq!(
        reopened.latest_at(Path::new("/var/log/a.log")),
        Some(position(1, 42, 1234))
    );
    assert!(!dir.path().join("checkpoints.json.tmp").exists());
}

#[tokio::test]
async fn the_metrics_record_writes_and_when_the_file_was_last_current() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    let metrics = AgentMetrics::register(&vigil_runtime::SelfMetrics::default());
    assert_eq!(metrics.checkpoint_persisted.get(), 0.0);
    store.set(Path::new("/a.log"), position(1, 7, 10));
    write_now(&store, &metrics).await.unwrap();
    let first = metrics.checkpoint_persisted.get();
    assert!(first > 1.7e9, "a Unix time: {first}");
    assert_eq!(metrics.checkpoint_writes.get(), 1);
    // Unchanged positions: nothing to write, but the file is still current.
    write_now(&store, &metrics).await.unwrap();
    assert_eq!(metrics.checkpoint_writes.get(), 1);
    assert!(metrics.checkpoint_persisted.get() >= first);
}

#[test]
fn the_format_is_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    store.set(Path::new("/a.log"), position(0xabc, 7, 10));
    store.write_if_changed().unwrap();
    let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["version"], "3");
    let file = &value["files"][0];
    assert_eq!(file["source_id"], "0000000000000abc");
    assert_eq!(file["head_bytes"], 19);
    let hash = xxhash_rust::xxh3::xxh3_64(b"time,level,message\n");
    assert_eq!(file["head_hash"], format!("{hash:016x}"));
    assert_eq!(file["inode"], 7);
    assert_eq!(file["offset"], 10);
}

#[test]
fn version_1_offsets_are_taken_over_by_the_same_file_at_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE_NAME),
        br#"{"version":"1","files":[{"path":"/a.log","source_id":"8:7","device":8,"inode":7,"offset":10}]}"#,
    )
    .unwrap();
    let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
    assert!(problem.is_none());
    assert_eq!(
        store.unidentified_offset(Path::new("/a.log"), 8, 7),
        Some(10)
    );
    assert_eq!(store.unidentified_offset(Path::new("/a.log"), 8, 9), None);
    assert_eq!(store.unidentified_offset(Path::new("/b.log"), 8, 7), None);
    assert!(store.knows_path(Path::new("/a.log")));
    store.set(Path::new("/a.log"), position(1, 7, 12));
    assert_eq!(store.unidentified_offset(Path::new("/a.log"), 8, 7), None);
    assert!(store.knows_path(Path::new("/a.log")));
}

#[test]
fn version_2_entries_keep_their_source_id_with_their_first_line_as_head() {
    let dir = tempfile::tempdir().unwrap();
    let first_line = xxhash_rust::xxh3::xxh3_64(b"time,level,message\n");
    std::fs::write(
        dir.path().join(FILE_NAME),
        format!(
            r#"{{"version":"2","files":[{{"path":"/a.csv","source_id":"{first_line:016x}","device":8,"inode":7,"offset":30}}],"unidentified":[]}}"#
        ),
    )
    .unwrap();
    let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
    assert!(problem.is_none(), "{problem:?}");
    let taken_over = Position {
        identity: FileIdentity {
            source: SourceId(first_line),
            head: Head::FirstLine(first_line),
            device: 8,
            inode: 7,
        },
        offset: 30,
    };
    assert_eq!(
        store.matching(b"time,level,message\n1,INFO,x\n"),
        [Known {
            path: "/a.csv".into(),
            position: taken_over,
            detached: false,
        }]
    );
    assert!(store.matching(b"time,level\n").is_empty());
    assert!(store.matching(b"time,level,message").is_empty());

    // Read again, the file's head replaces its first line; the format moves on.
    let mut read_again = taken_over;
    read_again.identity.head = Head::of(b"time,level,message\n1,INFO,x\n");
    store.set(Path::new("/a.csv"), read_again);
    store.write_if_changed().unwrap();
    let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(reopened.latest_at(Path::new("/a.csv")), Some(read_again));
    let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    assert!(text.contains(r#""version": "3""#), "{text}");
}

#[test]
fn a_first_line_head_carried_over_survives_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    let mut legacy = position(5, 7, 30);
    legacy.identity.head = Head::FirstLine(5);
    store.set(Path::new("/a.csv"), legacy);
    store.write_if_changed().unwrap();
    let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(reopened.latest_at(Path::new("/a.csv")), Some(legacy));
}

#[test]
fn the_recorded_head_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    let path = Path::new("/a.csv");
    let short = position(1, 7, 19);
    store.set(path, short);
    let longer = Head::of(b"time,level,message\n1,INFO,x\n");
    store.extend_head(SourceId(1), longer);
    assert_eq!(store.latest_at(path).unwrap().identity.head, longer);
    // An acknowledgement of a batch read before the head grew keeps it.
    let mut acknowledged = short;
    acknowledged.offset = 28;
    store.set(path, acknowledged);
    let latest = store.latest_at(path).unwrap();
    assert_eq!((latest.identity.head, latest.offset), (longer, 28));
    // Nothing is known of an instance the store does not hold.
    store.extend_head(SourceId(2), longer);
    assert!(store.matching(b"time,level,message\n1,INFO,x\n").len() == 1);
}

#[test]
fn a_new_instance_is_written_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    store
        .record_new(Path::new("/a.csv"), position(9, 7, 0))
        .unwrap();
    let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened.latest_at(Path::new("/a.csv")),
        Some(position(9, 7, 0))
    );
}

#[test]
fn a_file_without_a_complete_line_is_remembered_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    store.set_unidentified(Path::new("/empty.log"), 8, 3, 0);
    store.write_if_changed().unwrap();
    let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
    assert!(reopened.knows_path(Path::new("/empty.log")));
    assert_eq!(
        reopened.unidentified_offset(Path::new("/empty.log"), 8, 3),
        Some(0)
    );
}

#[test]
fn old_instances_of_a_path_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    for source in 0..10 {
        store.set(Path::new("/a.log"), position(source, source, 5));
    }
    store.set(Path::new("/a.log.1"), position(100, 3, 7));
    store.write_if_changed().unwrap();
    let (reopened, _) = CheckpointStore::open(dir.path()).unwrap();
    let mut kept: Vec<u64> = reopened
        .matching(b"time,level,message\n")
        .iter()
        .map(|known| known.position.identity.source.0)
        .collect();
    kept.sort_unstable();
    assert_eq!(kept, [6, 7, 8, 9, 100]);
    assert_eq!(
        reopened.latest_at(Path::new("/a.log")),
        Some(position(9, 9, 5))
    );
}

#[test]
fn a_write_replaces_the_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    store.set(Path::new("/a.log"), position(1, 7, 10));
    store.write_if_changed().unwrap();
    // A temporary file left by a crash mid-write is simply overwritten.
    std::fs::write(dir.path().join("checkpoints.json.tmp"), b"{\"vers").unwrap();
    store.set(Path::new("/a.log"), position(1, 7, 20));
    store.write_if_changed().unwrap();
    let (reopened, problem) = CheckpointStore::open(dir.path()).unwrap();
    assert!(problem.is_none());
    assert_eq!(
        reopened.latest_at(Path::new("/a.log")),
        Some(position(1, 7, 20))
    );
}

#[test]
fn a_corrupt_file_is_reported_moved_aside_and_the_store_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE_NAME),
        b"{\"version\":\"3\",\"files\":[{",
    )
    .unwrap();
    let (store, problem) = CheckpointStore::open(dir.path()).unwrap();
    let message = problem.expect("corruption is reported").to_string();
    assert!(
        message.starts_with(&format!(
            "checkpoint file {} is corrupt (",
            dir.path().join(FILE_NAME).display()
        )),
        "{message}"
    );
    assert!(
        message.ends_with("checkpoints.json.corrupt and files are tailed from their end"),
        "{message}"
    );
    assert!(store.latest_at(Path::new("/a.log")).is_none());
    assert!(dir.path().join("checkpoints.json.corrupt").exists());
    // The next write creates a fresh, valid file.
    assert!(store.write_if_changed().unwrap());
    assert!(CheckpointStore::open(dir.path()).unwrap().1.is_none());
}

#[test]
fn a_head_of_impossible_length_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::write(
        &file,
        br#"{"version":"3","files":[{"path":"/a.log","source_id":"0000000000000001","head_bytes":2000,"head_hash":"0000000000000002","device":8,"inode":7,"offset":10}]}"#,
    )
    .unwrap();
    let error = read_checkpoint_file(&file).err().unwrap().to_string();
    assert!(
        error.contains("entry for /a.log has head_bytes 2000, not 1 to 1024"),
        "{error}"
    );
}

#[test]
fn an_unknown_version_is_corrupt_not_silently_empty() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::write(&file, b"{\"version\":\"4\",\"files\":[]}").unwrap();
    let error = read_checkpoint_file(&file).err().unwrap().to_string();
    assert!(error.contains("unknown variant `4`"), "{error}");
}

#[test]
fn heads_cover_the_first_kibibyte_and_first_line_heads_the_first_line() {
    let csv = b"time,level,message\n1,INFO,x\n";
    let head = Head::of(csv);
    assert!(head.matches(csv));
    assert!(head.matches(&[&csv[..], b"2,INFO,y\n"].concat()));
    assert!(!head.matches(b"time,level,message\n1,INFO,y\n"));
    assert!(!head.matches(&csv[..20]), "a file shorter than the head");
    assert!(!head.is_complete());

    let long = vec![b'x'; HEAD_BYTES + 10];
    let complete = Head::of(&long);
    assert!(complete.is_complete());
    assert_eq!(complete, Head::of(&long[..HEAD_BYTES]));
    assert_eq!(head.longer(complete), complete);
    assert_eq!(complete.longer(head), complete);

    let first_line = Head::FirstLine(xxhash_rust::xxh3::xxh3_64(b"time,level,message\n"));
    assert!(first_line.matches(csv));
    assert!(!first_line.matches(b"time,level,message"), "no newline yet");
    assert!(!first_line.matches(b"other\n"));
    assert_eq!(first_line.longer(head), head);
    let long_line = Head::FirstLine(xxhash_rust::xxh3::xxh3_64(&long[..HEAD_BYTES]));
    assert!(long_line.matches(&long));
}

/// A path that is not UTF-8: Linux file names are bytes.
fn not_utf8(prefix: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(b"\xffapp.log");
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

// A file name that is not UTF-8 made every later checkpoint write fail.
#[test]
fn a_path_that_is_not_utf8_round_trips_and_other_entries_still_get_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(dir.path()).unwrap();
    let odd = not_utf8("/var/log/");
    store.set(&odd, position(1, 7, 10));
    store.set_unidentified(&not_utf8("/var/log/empty-"), 8, 9, 0);
    assert!(store.write_if_changed().unwrap());
    store.set(Path::new("/var/log/b.log"), position(2, 8, 20));
    assert!(store.write_if_changed().unwrap());

    let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["version"], "3");
    let stored = value["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|file| file["source_id"] == "0000000000000001")
        .unwrap();
    assert_eq!(stored["path"], "/var/log/\u{fffd}app.log");
    assert_eq!(stored["path_bytes"], "2f7661722f6c6f672fff6170702e6c6f67");

    let (reopened, problem) = CheckpointStore::open(dir.path()).unwrap();
    assert!(problem.is_none());
    assert_eq!(reopened.latest_at(&odd), Some(position(1, 7, 10)));
    assert_eq!(
        reopened.latest_at(Path::new("/var/log/b.log")),
        Some(position(2, 8, 20))
    );
    assert_eq!(
        reopened.unidentified_offset(&not_utf8("/var/log/empty-"), 8, 9),
        Some(0)
    );
}

#[test]
fn path_bytes_that_are_not_hexadecimal_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(FILE_NAME);
    std::fs::write(
        &file,
        br#"{"version":"3","files":[{"path":"/a.log","path_bytes":"2fz","source_id":"0000000000000001","head_bytes":20,"head_hash":"0000000000000002","device":8,"inode":7,"offset":10}]}"#,
    )
    .unwrap();
    let error = read_checkpoint_file(&file).err().unwrap().to_string();
    assert!(
        error.contains("entry for /a.log has path_bytes `2fz`, not hexadecimal bytes"),
        "{error}"
    );
}

#[test]
fn instances_of_vanished_paths_are_forgotten_after_the_grace_unless_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(&dir.path().join("data")).unwrap();
    let present = dir.path().join("present.log");
    std::fs::write(&present, "x\n").unwrap();
    let (gone, open, short) = (
        dir.path().join("gone.log"),
        dir.path().join("open.log"),
        dir.path().join("short.log"),
    );
    store.set(&present, position(1, 1, 2));
    store.set(&gone, position(2, 2, 2));
    store.set(&open, position(3, 3, 2));
    store.set_unidentified(&short, 8, 4, 0);
    store.write_if_changed().unwrap();
    let in_use = |device: u64, inode: u64| (device, inode) == (8, 3);
    let grace = Duration::from_secs(600);
    let start = Instant::now();

    assert_eq!(store.prune_vanished(start, grace, in_use), 0);
    let almost = start + grace - Duration::from_secs(1);
    assert_eq!(store.prune_vanished(almost, grace, in_use), 0);
    assert!(!store.write_if_changed().unwrap(), "nothing forgotten yet");
    assert_eq!(store.prune_vanished(start + grace, grace, in_use), 2);
    assert!(store.write_if_changed().unwrap());

    let (reopened, _) = CheckpointStore::open(&dir.path().join("data")).unwrap();
    assert_eq!(reopened.latest_at(&present), Some(position(1, 1, 2)));
    assert_eq!(reopened.latest_at(&gone), None);
    assert_eq!(reopened.latest_at(&open), Some(position(3, 3, 2)));
    assert!(!reopened.knows_path(&short));
}

#[test]
fn a_path_that_returns_within_the_grace_starts_its_grace_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = CheckpointStore::open(&dir.path().join("data")).unwrap();
    let path = dir.path().join("flapping.log");
    store.set(&path, position(1, 1, 2));
    let grace = Duration::from_secs(600);
    let start = Instant::now();
    assert_eq!(store.prune_vanished(start, grace, |_, _| false), 0);
    std::fs::write(&path, "x\n").unwrap();
    assert_eq!(
        store.prune_vanished(start + grace / 2, grace, |_, _| false),
        0
    );
    std::fs::remove_file(&path).unwrap();
    let again = start + grace;
    assert_eq!(store.prune_vanished(again, grace, |_, _| false), 0);
    let almost = again + grace - Duration::from_secs(1);
    assert_eq!(store.prune_vanished(almost, grace, |_, _| false), 0);
    assert_eq!(store.prune_vanished(again + grace, grace, |_, _| false), 1);
}
