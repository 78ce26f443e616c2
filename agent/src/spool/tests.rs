use super::segment::{Damage, Record};
use super::store::{Dropped, SpoolStore};
use super::*;
use crate::self_metrics::AgentMetrics;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use vigil_proto::v1::{Resource, Sample, sample};
use vigil_runtime::kafka::KafkaSettings;
use vigil_runtime::{Bus, SelfMetrics};

const MIB: u64 = 1024 * 1024;

fn record(number: usize, payload_bytes: usize) -> Record {
    Record {
        topic: "vigil.metrics.raw".into(),
        key: format!("host-{number}"),
        samples: number as u32 + 1,
        payload: vec![(number % 251) as u8; payload_bytes],
    }
}

/// Hands out and acknowledges everything the store has; returns the records.
fn drain(store: &mut SpoolStore) -> Vec<Record> {
    let mut records = Vec::new();
    while let Some((record, position)) = store.next_unsent().unwrap() {
        assert!(store.acknowledge(position).unwrap());
        records.push(record);
    }
    records
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn records_come_back_in_order_and_intact_and_acknowledged_ones_leave_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, recovered) = SpoolStore::open(dir.path(), MIB).unwrap();
    assert_eq!(recovered.batches, 0);
    let written: Vec<Record> = (0..20).map(|n| record(n, 100 + n)).collect();
    for record in &written {
        assert_eq!(store.append(record).unwrap(), Dropped::default());
    }
    assert_eq!(store.waiting(), 20);
    assert_eq!(drain(&mut store), written);
    assert_eq!(store.waiting(), 0);
    assert_eq!(store.bytes(), 8, "only the segment header is left");
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), 8);
}

#[test]
fn a_torn_tail_is_cut_and_the_whole_records_before_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = SpoolStore::open(dir.path(), MIB).unwrap();
    for n in 0..3 {
        store.append(&record(n, 50)).unwrap();
    }
    drop(store);
    let file = segment_files(dir.path()).remove(0);
    let length = std::fs::metadata(&file).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(length - 10)
        .unwrap();

    let (mut store, recovered) = SpoolStore::open(dir.path(), MIB).unwrap();
    assert_eq!(recovered.batches, 2);
    let record_bytes = (length - 8) / 3;
    let cut = &recovered.cuts[..];
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0].path, file);
    assert_eq!(cut[0].offset, 8 + 2 * record_bytes);
    assert_eq!(cut[0].bytes, record_bytes - 10);
    assert_eq!(cut[0].damage, Damage::Torn);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), cut[0].offset);
    assert_eq!(drain(&mut store), vec![record(0, 50), record(1, 50)]);
}

#[test]
fn a_corrupted_record_is_cut_with_what_follows_and_the_cut_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = SpoolStore::open(dir.path(), MIB).unwrap();
    for n in 0..4 {
        store.append(&record(n, 50)).unwrap();
    }
    drop(store);
    let file = segment_files(dir.path()).remove(0);
    let record_bytes = (std::fs::metadata(&file).unwrap().len() - 8) / 4;
    let second_record = 8 + record_bytes;
    let mut writer = OpenOptions::new().write(true).open(&file).unwrap();
    writer
        .seek(SeekFrom::Start(second_record + record_bytes - 1))
        .unwrap();
    writer.write_all(b"\xff").unwrap();
    drop(writer);

    let (mut store, recovered) = SpoolStore::open(dir.path(), MIB).unwrap();
    assert_eq!(recovered.batches, 1);
    let cut = &recovered.cuts[0];
    assert_eq!(
        (cut.offset, cut.bytes, &cut.damage),
        (second_record, 3 * record_bytes, &Damage::Checksum)
    );
    assert_eq!(
        cut.to_string(),
        format!(
            "{} cut at byte {second_record} ({} bytes removed): the record's checksum does not match its bytes",
            file.display(),
            3 * record_bytes
        )
    );
    assert_eq!(drain(&mut store), vec![record(0, 50)]);
}

#[test]
fn a_file_without_the_spool_header_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let stray = dir.path().join("00000000000000000007.spool");
    std::fs::write(&stray, b"not a spool segment").unwrap();
    let (mut store, recovered) = SpoolStore::open(dir.path(), MIB).unwrap();
    assert_eq!(recovered.cuts[0].damage, Damage::NotASegment);
    assert_eq!(recovered.cuts[0].offset, 0);
    assert!(!stray.exists());
    assert!(drain(&mut store).is_empty());
}

#[test]
fn a_full_spool_drops_its_oldest_batches_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = SpoolStore::open(dir.path(), MIB).unwrap();
    let mut dropped = Dropped::default();
    let total = 400;
    for n in 0..total {
        let more = store.append(&record(n, 10_000)).unwrap();
        dropped.batches += more.batches;
        dropped.samples += more.samples;
        assert!(store.bytes() <= MIB, "{} bytes after {n}", store.bytes());
    }
    assert!(dropped.batches > 0);
    let kept = drain(&mut store);
    assert_eq!(kept.len() as u64 + dropped.batches, total as u64);
    let first_kept = dropped.batches as usize;
    let expected: Vec<Record> = (first_kept..total).map(|n| record(n, 10_000)).collect();
    assert_eq!(kept, expected, "the newest batches are kept, in order");
    let dropped_samples: u64 = (0..first_kept as u64).map(|n| n + 1).sum();
    assert_eq!(dropped.samples, dropped_samples);
}

#[test]
fn batches_in_flight_when_their_segment_is_dropped_are_not_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = SpoolStore::open(dir.path(), MIB).unwrap();
    store.append(&record(0, 10_000)).unwrap();
    let (_, in_flight) = store.next_unsent().unwrap().unwrap();
    let mut dropped = Dropped::default();
    for n in 1..200 {
        let more = store.append(&record(n, 10_000)).unwrap();
        dropped.batches += more.batches;
    }
    assert!(!store.holds(in_flight.segment));
    store.rewind();
    let resent = drain(&mut store);
    assert_eq!(
        resent.first(),
        Some(&record(dropped.batches as usize + 1, 10_000))
    );
    assert_eq!(resent.len() as u64 + dropped.batches + 1, 200);
}

#[test]
fn a_rewind_sends_again_from_the_oldest_batch_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = SpoolStore::open(dir.path(), MIB).unwrap();
    for n in 0..5 {
        store.append(&record(n, 20)).unwrap();
    }
    let handed: Vec<_> = (0..4)
        .map(|_| store.next_unsent().unwrap().unwrap())
        .collect();
    store.acknowledge(handed[0].1).unwrap();
    store.acknowledge(handed[1].1).unwrap();
    store.rewind();
    let again: Vec<Record> = drain(&mut store);
    assert_eq!(again, (2..5).map(|n| record(n, 20)).collect::<Vec<_>>());
}

#[test]
fn a_restart_sends_what_was_not_acknowledged_before_what_comes_after() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of 64 KiB: the first records fill whole segments that are
    // acknowledged and deleted before the restart.
    let (mut store, _) = SpoolStore::open(dir.path(), MIB).unwrap();
    for n in 0..30 {
        store.append(&record(n, 10_000)).unwrap();
    }
    for _ in 0..12 {
        let (_, position) = store.next_unsent().unwrap().unwrap();
        store.acknowledge(position).unwrap();
    }
    drop(store);

    let (mut store, recovered) = SpoolStore::open(dir.path(), MIB).unwrap();
    assert!(recovered.cuts.is_empty());
    for n in 30..35 {
        store.append(&record(n, 10_000)).unwrap();
    }
    let sent = drain(&mut store);
    let first = 30 - recovered.batches as usize;
    assert!(
        (6..=12).contains(&first),
        "acknowledged segments are not sent again; the restart began at {first}"
    );
    assert_eq!(
        sent,
        (first..35).map(|n| record(n, 10_000)).collect::<Vec<_>>()
    );
}

fn metric_batch(number: usize, samples: usize) -> MetricBatch {
    MetricBatch {
        resource: Some(Resource {
            id: "spool-host".into(),
            host_name: "spool-host".into(),
            ..Resource::default()
        }),
        samples: (0..samples)
            .map(|s| Sample {
                name: format!("test.value.{s}"),
                time_unix_nano: 1_700_000_000_000_000_000 + number as i64,
                value: Some(sample::Value::Gauge(number as f64)),
                ..Sample::default()
            })
            .collect(),
        producer: "spool-test".into(),
    }
}

#[tokio::test]
async fn the_task_publishes_every_batch_in_order_and_empties_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::in_memory();
    let topic = bus.topics().metrics_raw();
    let mut received = bus.subscribe("test", std::slice::from_ref(&topic)).unwrap();
    let registry = SelfMetrics::default();
    let (spool, task) = open(
        dir.path(),
        &SpoolConfig::default(),
        topic.clone(),
        bus.clone(),
        AgentMetrics::register(&registry),
    )
    .unwrap();
    let running = tokio::spawn(task.run(Duration::from_secs(5)));
    for number in 0..100 {
        spool.submit(&metric_batch(number, 3)).await;
    }
    for number in 0..100 {
        let message = received.recv().await.unwrap();
        assert_eq!(message.topic, topic);
        assert_eq!(message.key.as_deref(), Some(&b"spool-host"[..]));
        let batch = MetricBatch::from_payload(&message.payload).unwrap();
        assert_eq!(batch, metric_batch(number, 3));
    }
    drop(spool);
    running.await.unwrap();
    let exposed = registry.encode();
    for expected in [
        "vigil_agent_spool_batches_written_total 100",
        "vigil_agent_spool_batches 0",
        "vigil_agent_spool_bytes 8",
    ] {
        assert!(
            exposed.contains(expected),
            "{expected} missing in\n{exposed}"
        );
    }
}

/// A Kafka bus whose broker address has no listener: deliveries fail after
/// `message.timeout.ms`, as they do while Kafka is down.
fn unreachable_kafka() -> Bus {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = KafkaSettings::for_brokers(format!("127.0.0.1:{port}"));
    settings
        .producer_properties
        .insert("message.timeout.ms".into(), "300".into());
    Bus::Kafka(Box::new(settings))
}

#[tokio::test]
async fn while_the_bus_is_down_batches_wait_on_disk_and_a_full_spool_counts_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let registry = SelfMetrics::default();
    let metrics = AgentMetrics::register(&registry);
    let (spool, task) = open(
        dir.path(),
        &SpoolConfig { max_bytes: MIB },
        "vigil.metrics.raw".into(),
        unreachable_kafka(),
        metrics.clone(),
    )
    .unwrap();
    let running = tokio::spawn(task.run(Duration::from_secs(1)));
    // 500 batches of 100 samples, about 4 KiB each: about twice the spool.
    for number in 0..500 {
        spool.submit(&metric_batch(number, 100)).await;
    }
    drop(spool);
    running.await.unwrap();

    let dropped_batches = metrics
        .spool_dropped_batches
        .get_or_create(&crate::self_metrics::DropLabels {
            reason: DropReason::Full,
        })
        .get();
    let dropped_samples = metrics
        .spool_dropped_samples
        .get_or_create(&crate::self_metrics::DropLabels {
            reason: DropReason::Full,
        })
        .get();
    assert!(dropped_batches > 0, "{}", registry.encode());
    assert_eq!(dropped_samples, dropped_batches * 100);
    let waiting = metrics.spool_batches.get() as u64;
    assert_eq!(waiting + dropped_batches, 500, "{}", registry.encode());
    assert!(metrics.spool_bytes.get() as u64 <= MIB);
    assert!(
        registry
            .encode()
            .contains("vigil_agent_spool_dropped_batches_total{reason=\"full\"}")
    );

    // What waited is on disk, in order, for the next start.
    let (mut store, recovered) = SpoolStore::open(&dir.path().join("spool"), MIB).unwrap();
    assert_eq!(recovered.batches, waiting);
    let kept = drain(&mut store);
    let first = MetricBatch::from_payload(&kept[0].payload).unwrap();
    assert_eq!(first, metric_batch(dropped_batches as usize, 100));
    let last = MetricBatch::from_payload(&kept[kept.len() - 1].payload).unwrap();
    assert_eq!(last, metric_batch(499, 100));
}
