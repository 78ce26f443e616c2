//! The tailer against real files and the in-process bus (or a publisher that fails
//! or blocks on command), with tokio's clock paused so that poll and flush
//! intervals pass instantly.

use super::*;
use crate::checkpoint::{self, Position};
use futures::FutureExt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;
use vigil_proto::Payload;
use vigil_proto::v1::{LogBatch, LogLine};
use vigil_runtime::{Bus, BusError, SelfMetrics, Subscription};

const TOPIC: &str = "vigil.logs.raw";

struct Setup {
    dir: tempfile::TempDir,
    checkpoints: CheckpointStore,
    metrics: AgentMetrics,
    limits: LogBatchConfig,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (checkpoints, _) = CheckpointStore::open(&dir.path().join("data")).unwrap();
        Self {
            dir,
            checkpoints,
            metrics: AgentMetrics::register(&SelfMetrics::default()),
            limits: LogBatchConfig {
                max_lines: 100,
                max_bytes: 64 * 1024,
                flush_interval: Duration::from_millis(50),
                max_line_bytes: 1024,
            },
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("app.log")
    }

    /// Starts the tailer on `app.log`, publishing with `publish`.
    fn start(&self, publish: PublishBatch) -> Running {
        let context = TailerContext {
            resource: Resource {
                id: "web-1".into(),
                ..Resource::default()
            },
            limits: self.limits,
            topic: TOPIC.into(),
            publish,
            checkpoints: self.checkpoints.clone(),
            metrics: self.metrics.clone(),
            shutdown_timeout: Duration::from_secs(5),
        };
        let shutdown = CancellationToken::new();
        let tasks = start(
            &[LogFileConfig::new(self.log(), "app")],
            &context,
            &shutdown,
        );
        Running { shutdown, tasks }
    }

    /// Starts the tailer on an in-memory bus; returns the subscription to its topic.
    fn start_on_memory_bus(&self) -> (Running, Subscription) {
        let bus = Bus::in_memory();
        let subscription = bus.subscribe("test", &[TOPIC.into()]).unwrap();
        let running = self.start(publish_to(bus.publisher().unwrap(), TOPIC.into()));
        (running, subscription)
    }

    fn checkpoint(&self) -> Option<Position> {
        self.checkpoints.get(&self.log())
    }

    /// Reopens the checkpoints from disk, as a restarted agent would.
    fn restart(&mut self) {
        let (checkpoints, problem) = CheckpointStore::open(&self.dir.path().join("data")).unwrap();
        assert!(problem.is_none());
        self.checkpoints = checkpoints;
    }
}

struct Running {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    async fn stop(mut self, setup: &Setup) {
        self.shutdown.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            joined.unwrap();
        }
        checkpoint::write_now(&setup.checkpoints, &setup.metrics.checkpoint_writes)
            .await
            .unwrap();
    }
}

fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}

async fn next_batch(subscription: &mut Subscription) -> LogBatch {
    let message = tokio::time::timeout(Duration::from_secs(30), subscription.recv())
        .await
        .expect("a batch within 30s")
        .unwrap();
    LogBatch::from_payload(&message.payload).unwrap()
}

/// Receives batches until `count` lines arrived.
async fn receive_lines(subscription: &mut Subscription, count: usize) -> Vec<LogLine> {
    let mut lines = Vec::new();
    while lines.len() < count {
        lines.extend(next_batch(subscription).await.lines);
    }
    assert_eq!(lines.len(), count, "more lines than expected");
    lines
}

fn texts(lines: &[LogLine]) -> Vec<(u64, String)> {
    lines
        .iter()
        .map(|line| {
            (
                line.offset,
                String::from_utf8_lossy(&line.message).into_owned(),
            )
        })
        .collect()
}

/// Waits (in paused time) until `condition` holds.
async fn until(mut condition: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test(start_paused = true)]
async fn an_existing_file_ships_only_lines_written_after_the_start() {
    let setup = Setup::new();
    append(&setup.log(), b"history 1\nhistory 2\n");
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"new 1\nnew 2\n");

    let lines = receive_lines(&mut subscription, 2).await;
    assert_eq!(texts(&lines), [(20, "new 1".into()), (26, "new 2".into())]);
    assert_eq!(lines[0].length, 6);
    assert!(lines[0].observed_time_unix_nano > 0);
    assert_eq!(
        lines[0].event_time_unix_nano,
        lines[0].observed_time_unix_nano
    );
    running.stop(&setup).await;
}

#[tokio::test(start_paused = true)]
async fn batches_carry_the_source_identity_and_resource() {
    let setup = Setup::new();
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"x\n");
    let batch = next_batch(&mut subscription).await;
    let source = batch.source.unwrap();
    let metadata = std::fs::metadata(setup.log()).unwrap();
    let identity = crate::checkpoint::FileIdentity::of(&metadata);
    assert_eq!(source.path, setup.log().display().to_string());
    assert_eq!(source.source_id, identity.source_id());
    assert_eq!(
        (source.device, source.inode),
        (identity.device, identity.inode)
    );
    assert_eq!(source.dataset, "app");
    assert_eq!(batch.resource.unwrap().id, "web-1");
    running.stop(&setup).await;
}

#[tokio::test(start_paused = true)]
async fn a_file_created_after_the_start_is_read_from_its_beginning() {
    let setup = Setup::new();
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"first\nsecond\n");
    let lines = receive_lines(&mut subscription, 2).await;
    assert_eq!(texts(&lines), [(0, "first".into()), (6, "second".into())]);
    running.stop(&setup).await;
}

#[tokio::test(start_paused = true)]
async fn a_partial_last_line_is_held_until_its_newline() {
    let setup = Setup::new();
    append(&setup.log(), b"");
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"complete\nhalf a ");
    let lines = receive_lines(&mut subscription, 1).await;
    assert_eq!(texts(&lines), [(0, "complete".into())]);
    until(|| setup.metrics.log_bytes_read.get() == 16).await;
    // Several flush intervals pass with the half line read but not sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    append(&setup.log(), b"line\n");
    let lines = receive_lines(&mut subscription, 1).await;
    assert_eq!(texts(&lines), [(9, "half a line".into())]);
    assert_eq!(lines[0].length, 12);
    running.stop(&setup).await;
}

#[tokio::test(start_paused = true)]
async fn a_huge_line_is_truncated_and_flagged_and_the_next_line_follows() {
    let setup = Setup::new();
    append(&setup.log(), b"");
    let (running, mut subscription) = setup.start_on_memory_bus();
    let huge = vec![b'z'; 10 * 1024 * 1024];
    append(&setup.log(), &huge);
    append(&setup.log(), b"\nafter\n");

    let lines = receive_lines(&mut subscription, 2).await;
    assert!(lines[0].truncated);
    assert_eq!(lines[0].message.len(), 1024);
    assert_eq!(lines[0].length, huge.len() as u64 + 1);
    assert_eq!(
        texts(&lines[1..]),
        [(huge.len() as u64 + 1, "after".into())]
    );
    assert!(!lines[1].truncated);
    assert_eq!(setup.metrics.log_lines_truncated.get(), 1);
    running.stop(&setup).await;
}

#[tokio::test(start_paused = true)]
async fn invalid_utf8_is_flagged_and_the_other_lines_still_flow() {
    let setup = Setup::new();
    append(&setup.log(), b"");
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"ok 1\n\xff\xfe bad\nok 2\n");
    let lines = receive_lines(&mut subscription, 3).await;
    let flags: Vec<bool> = lines.iter().map(|line| line.invalid_utf8).collect();
    assert_eq!(flags, [false, true, false]);
    assert_eq!(lines[1].message, b"\xff\xfe bad");
    assert_eq!(texts(&lines)[2], (12, "ok 2".into()));
    running.stop(&setup).await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_exactly_at_the_checkpoint() {
    let mut setup = Setup::new();
    append(&setup.log(), b"");
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"one\ntwo\nthree\n");
    receive_lines(&mut subscription, 3).await;
    running.stop(&setup).await;
    assert_eq!(setup.checkpoint().unwrap().offset, 14);

    // Written while the agent was down.
    append(&setup.log(), b"four\nfive\n");
    setup.restart();
    let (running, mut subscription) = setup.start_on_memory_bus();
    let lines = receive_lines(&mut subscription, 2).await;
    assert_eq!(texts(&lines), [(14, "four".into()), (19, "five".into())]);
    append(&setup.log(), b"six\n");
    let lines = receive_lines(&mut subscription, 1).await;
    assert_eq!(texts(&lines), [(24, "six".into())]);
    running.stop(&setup).await;
    assert_eq!(setup.checkpoint().unwrap().offset, 28);
}

#[tokio::test(start_paused = true)]
async fn a_file_that_appeared_but_was_not_shipped_before_a_restart_is_read_from_its_beginning() {
    // Regression guard: without a checkpoint taken when the file was opened, the
    // restart would treat it as pre-existing and skip its lines.
    let mut setup = Setup::new();
    let gate = Arc::new(Semaphore::new(0));
    let running = setup.start(gated_publish(Arc::clone(&gate), Arc::default()));
    append(&setup.log(), b"early\n");
    until(|| setup.metrics.log_lines_read.get() == 1).await;
    tokio::time::timeout(Duration::from_secs(6), running.stop(&setup))
        .await
        .unwrap();
    setup.restart();
    let (running, mut subscription) = setup.start_on_memory_bus();
    let lines = receive_lines(&mut subscription, 1).await;
    assert_eq!(texts(&lines), [(0, "early".into())]);
    running.stop(&setup).await;
}

#[tokio::test(start_paused = true)]
async fn truncation_restarts_at_offset_zero() {
    let setup = Setup::new();
    append(&setup.log(), b"");
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"a long first line\nand a second one\n");
    receive_lines(&mut subscription, 2).await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(setup.log())
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&setup.log(), b"fresh\n");
    let lines = receive_lines(&mut subscription, 1).await;
    assert_eq!(texts(&lines), [(0, "fresh".into())]);
    running.stop(&setup).await;
    assert_eq!(setup.checkpoint().unwrap().offset, 6);
}

#[tokio::test(start_paused = true)]
async fn a_replaced_file_is_finished_then_the_new_one_is_read_from_zero() {
    let setup = Setup::new();
    append(&setup.log(), b"");
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"old 1\n");
    let old = next_batch(&mut subscription).await;
    std::fs::rename(setup.log(), setup.dir.path().join("app.log.1")).unwrap();
    // The writer still had the old file open, and its last line has no newline.
    append(&setup.dir.path().join("app.log.1"), b"old 2\nold tail");
    append(&setup.log(), b"new 1\n");

    let lines = receive_lines(&mut subscription, 3).await;
    assert_eq!(
        texts(&lines),
        [
            (6, "old 2".into()),
            (12, "old tail".into()),
            (0, "new 1".into())
        ]
    );
    let new = next_source_id(&setup);
    assert_ne!(old.source.unwrap().source_id, new);
    running.stop(&setup).await;
    let checkpoint = setup.checkpoint().unwrap();
    assert_eq!(
        (checkpoint.identity.source_id(), checkpoint.offset),
        (new, 6)
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_file_is_closed_and_its_successor_read_from_zero() {
    let setup = Setup::new();
    append(&setup.log(), b"");
    let (running, mut subscription) = setup.start_on_memory_bus();
    append(&setup.log(), b"before\n");
    receive_lines(&mut subscription, 1).await;
    assert_eq!(setup.metrics.log_files_watched.get(), 1);
    std::fs::remove_file(setup.log()).unwrap();
    until(|| setup.metrics.log_files_watched.get() == 0).await;
    append(&setup.log(), b"after\n");
    let lines = receive_lines(&mut subscription, 1).await;
    assert_eq!(texts(&lines), [(0, "after".into())]);
    running.stop(&setup).await;
}

fn next_source_id(setup: &Setup) -> String {
    crate::checkpoint::FileIdentity::of(&std::fs::metadata(setup.log()).unwrap()).source_id()
}

/// A publish that waits for a permit from `gate` per batch, and counts how many
/// publishes started.
fn gated_publish(gate: Arc<Semaphore>, started: Arc<AtomicUsize>) -> PublishBatch {
    Arc::new(move |_batch| {
        let gate = Arc::clone(&gate);
        started.fetch_add(1, Ordering::SeqCst);
        async move {
            gate.acquire().await.unwrap().forget();
            Ok(())
        }
        .boxed()
    })
}

#[tokio::test(start_paused = true)]
async fn a_blocked_bus_stops_reading_and_holds_the_checkpoint() {
    let mut setup = Setup::new();
    setup.limits.max_lines = 10;
    append(&setup.log(), b"");
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let running = setup.start(gated_publish(Arc::clone(&gate), Arc::clone(&started)));
    let opened_at = setup.checkpoint().unwrap();
    assert_eq!(opened_at.offset, 0);

    let line = [b'x'; 99];
    let mut file = Vec::new();
    for _ in 0..10_000 {
        file.extend_from_slice(&line);
        file.push(b'\n');
    }
    append(&setup.log(), &file);
    until(|| started.load(Ordering::SeqCst) == shipper::MAX_IN_FLIGHT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(started.load(Ordering::SeqCst), shipper::MAX_IN_FLIGHT);
    let read = setup.metrics.log_bytes_read.get();
    assert!(
        read < 200_000,
        "read {read} of 1000000 bytes while the bus was blocked"
    );
    assert_eq!(setup.checkpoint(), Some(opened_at));

    gate.add_permits(Semaphore::MAX_PERMITS / 2);
    until(|| {
        setup
            .checkpoint()
            .is_some_and(|p| p.offset == file.len() as u64)
    })
    .await;
    assert_eq!(setup.metrics.log_lines_sent.get(), 10_000);
    running.stop(&setup).await;
}

fn ten_lines() -> String {
    (0..10).map(|index| format!("line {index}\n")).collect()
}

#[tokio::test(start_paused = true)]
async fn failed_publishes_are_retried_in_order_and_never_skipped() {
    let mut setup = Setup::new();
    setup.limits.max_lines = 2;
    append(&setup.log(), b"");
    let down_until = tokio::time::Instant::now() + Duration::from_secs(1);
    let delivered: Arc<Mutex<Vec<u64>>> = Arc::default();
    let publish: PublishBatch = {
        let delivered = Arc::clone(&delivered);
        Arc::new(move |batch: Arc<LogBatch>| {
            let delivered = Arc::clone(&delivered);
            async move {
                // The bus is down for a second, then takes everything.
                if tokio::time::Instant::now() < down_until {
                    return Err(BusError::Closed);
                }
                delivered.lock().unwrap().push(batch.lines[0].offset);
                Ok(())
            }
            .boxed()
        })
    };
    let running = setup.start(publish);
    let text = ten_lines();
    append(&setup.log(), text.as_bytes());
    until(|| {
        setup
            .checkpoint()
            .is_some_and(|p| p.offset == text.len() as u64)
    })
    .await;
    let delivered = delivered.lock().unwrap().clone();
    assert_eq!(
        delivered,
        [0, 14, 28, 42, 56],
        "every batch once, in file order"
    );
    assert!(setup.metrics.log_publish_failures.get() >= 5);
    assert_eq!(setup.metrics.log_lines_sent.get(), 10);
    running.stop(&setup).await;
}

#[tokio::test(start_paused = true)]
async fn a_later_acknowledgement_never_moves_the_checkpoint_past_an_earlier_failure() {
    let mut setup = Setup::new();
    setup.limits.max_lines = 2;
    append(&setup.log(), b"");
    let retry_gate = Arc::new(Semaphore::new(0));
    let first_attempt = Arc::new(AtomicUsize::new(0));
    let delivered: Arc<Mutex<Vec<u64>>> = Arc::default();
    let publish: PublishBatch = {
        let retry_gate = Arc::clone(&retry_gate);
        let delivered = Arc::clone(&delivered);
        Arc::new(move |batch: Arc<LogBatch>| {
            let offset = batch.lines[0].offset;
            let attempt = if offset == 0 {
                first_attempt.fetch_add(1, Ordering::SeqCst)
            } else {
                0
            };
            let retry_gate = Arc::clone(&retry_gate);
            let delivered = Arc::clone(&delivered);
            async move {
                // Only the first batch fails, once; its retry waits for the test.
                if offset == 0 && attempt == 0 {
                    return Err(BusError::Closed);
                }
                if offset == 0 {
                    retry_gate.acquire().await.unwrap().forget();
                }
                delivered.lock().unwrap().push(offset);
                Ok(())
            }
            .boxed()
        })
    };
    let running = setup.start(publish);
    let text = ten_lines();
    append(&setup.log(), text.as_bytes());
    until(|| delivered.lock().unwrap().len() == 4).await;
    assert_eq!(setup.checkpoint().unwrap().offset, 0);

    retry_gate.add_permits(1);
    until(|| {
        setup
            .checkpoint()
            .is_some_and(|p| p.offset == text.len() as u64)
    })
    .await;
    assert_eq!(
        delivered.lock().unwrap().last(),
        Some(&0),
        "the failed batch was sent again"
    );
    running.stop(&setup).await;
}
