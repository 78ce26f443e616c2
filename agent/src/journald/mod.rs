//! The journal source: the systemd journal as a log source of the data path. It
//! runs `journalctl --follow --output=json`, turns each entry into a log line
//! (fields named as Elastic Common Schema names them), ships them as `LogBatch`es
//! to the logs topic through the same shipper as log files, and moves its cursor
//! only once the bus acknowledged every entry up to it.
//!
//! Where reading starts: after the saved cursor (`journalctl --cursor` prints
//! that entry again and it is passed over; if the journal was vacuumed past it,
//! journalctl starts at the oldest entry it still holds, which is shipped, and
//! that is logged); without one, where `read_from` says. If journalctl ends, it
//! is started again with backoff after the last entry read. While the bus does
//! not take batches, journalctl's output is not read: the journal is the buffer.
//!
//! Document identity: a line's source id is the journal's sequence number series
//! and its offset the entry's sequence number, so an entry sent twice makes one
//! document.

mod cursor;
mod entry;
mod journalctl;
mod progress;

use crate::config::{JournaldConfig, LogBatchConfig};
use crate::self_metrics::AgentMetrics;
use crate::tailer::{Delivery, EncodedBatch, PublishBatch};
use cursor::CursorFilePath;
use entry::{Cursor, Entry, parse_entry};
use journalctl::{LineReader, Read, Start};
use progress::{CursorState, JournalProgress};
use prost::Message;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::BufReader;
use tokio::process::Child;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use vigil_proto::v1::{LogBatch, LogLine, LogSource, Resource};

/// How often the acknowledged cursor is written, if it moved.
const CURSOR_WRITE_INTERVAL: Duration = Duration::from_secs(1);
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(500);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);
/// journalctl's lines longer than this are skipped: an entry's JSON with a
/// message at the line limit and every field at theirs is far shorter.
const MIN_OUTPUT_LINE_LIMIT: usize = 4 * 1024 * 1024;
/// Longest line of journalctl's errors logged.
const MAX_ERROR_LINE: usize = 1024;

/// What the journal source needs besides its configuration.
#[derive(Clone)]
pub(crate) struct JournalContext {
    pub(crate) resource: Resource,
    pub(crate) limits: LogBatchConfig,
    pub(crate) topic: String,
    pub(crate) publish: PublishBatch,
    pub(crate) metrics: AgentMetrics,
    pub(crate) data_dir: PathBuf,
    pub(crate) shutdown_timeout: Duration,
}

impl std::fmt::Debug for JournalContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalContext")
            .field("topic", &self.topic)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// Entries read but not handed to the shipper yet: one sequence number series.
#[derive(Debug)]
struct OpenBatch {
    seqnum_id: String,
    lines: Vec<LogLine>,
    encoded_len: usize,
    /// The cursor of the last entry read into it or passed over after it.
    end: String,
    started: Instant,
}

/// Reads the journal and ships it until shutdown.
#[derive(Debug)]
struct JournalSource {
    config: JournaldConfig,
    context: JournalContext,
    cursor_file: CursorFilePath,
    cursor: CursorState,
    delivery: Delivery<JournalProgress>,
    /// The cursor of the last entry read: where journalctl starts again.
    last_read: Option<Cursor>,
    /// The entry journalctl was started at, which it prints first if the journal
    /// still holds it; cleared at the first entry.
    restarted_at: Option<Cursor>,
    batch: Option<OpenBatch>,
    restart_delay: Duration,
}

/// Reads the journal as `config` says until `shutdown`, then ships what was read,
/// waits for its acknowledgement (at most `shutdown_timeout`) and writes the cursor.
pub(crate) async fn run(
    config: JournaldConfig,
    context: JournalContext,
    shutdown: CancellationToken,
) {
    let cursor_file = CursorFilePath::in_dir(&context.data_dir);
    let saved = match cursor_file.read() {
        Ok(saved) => saved.and_then(|text| match Cursor::parse(&text) {
            Ok(cursor) => Some(cursor),
            Err(error) => {
                tracing::warn!(%error, "saved journal cursor unusable; reading as `read_from` says");
                None
            }
        }),
        Err(error) => {
            tracing::warn!(%error, "reading the journal as `read_from` says");
            None
        }
    };
    let cursor = CursorState::default();
    let progress = JournalProgress {
        state: cursor.clone(),
        shipped: context.metrics.journald_entries_shipped.clone(),
    };
    let delivery = Delivery::with_progress(
        progress,
        context.topic.clone(),
        std::sync::Arc::clone(&context.publish),
        context.metrics.clone(),
    );
    let source = JournalSource {
        config,
        context,
        cursor_file,
        cursor,
        delivery,
        last_read: saved,
        restarted_at: None,
        batch: None,
        restart_delay: FIRST_RESTART_DELAY,
    };
    source.run(shutdown).await;
}

impl JournalSource {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut write_cursor = tokio::time::interval(CURSOR_WRITE_INTERVAL);
        write_cursor.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while !shutdown.is_cancelled() {
            let start = match &self.last_read {
                Some(cursor) => Start::Cursor(cursor.text.clone()),
                None => Start::Fresh(self.config.read_from),
            };
            self.restarted_at = self.last_read.clone();
            match journalctl::spawn(&self.config, &start) {
                Ok(child) => {
                    tracing::info!(start = ?start, "reading the journal");
                    self.follow(child, &shutdown, &mut write_cursor).await;
                }
                Err(error) => tracing::warn!(
                    journalctl = %self.config.journalctl_path.display(),
                    %error,
                    "journalctl could not be started"
                ),
            }
            if shutdown.is_cancelled() {
                break;
            }
            self.context.metrics.journald_restarts.inc();
            tracing::warn!(
                delay = ?self.restart_delay,
                "starting journalctl again after the last entry read"
            );
            self.pause(&shutdown, &mut write_cursor).await;
        }
        self.stop().await;
    }

    /// Reads `child`'s entries until it ends or `shutdown`.
    async fn follow(
        &mut self,
        mut child: Child,
        shutdown: &CancellationToken,
        write_cursor: &mut tokio::time::Interval,
    ) {
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return;
        };
        tokio::spawn(log_errors(stderr));
        let limit = MIN_OUTPUT_LINE_LIMIT.max(8 * self.context.limits.max_line_bytes);
        let mut reader = LineReader::new(BufReader::new(stdout), limit);
        let flush_interval = self.context.limits.flush_interval;
        loop {
            let flush_at = self
                .batch
                .as_ref()
                .map(|batch| batch.started + flush_interval);
            tokio::select! {
                () = shutdown.cancelled() => break,
                attempt = self.delivery.next_attempt(), if self.delivery.has_in_flight() => {
                    self.delivery.on_attempt(attempt);
                }
                read = reader.next_line(), if self.delivery.room() > 0 => match read {
                    Ok(Read::Line) => {
                        self.take(&reader.line);
                        self.restart_delay = FIRST_RESTART_DELAY;
                    }
                    Ok(Read::TooLong(length)) => {
                        self.context.metrics.journald_entries_invalid.inc();
                        tracing::warn!(length, "journal entry longer than journalctl's line limit; skipped");
                    }
                    Ok(Read::End) => break,
                    Err(error) => {
                        tracing::warn!(%error, "journalctl's output could not be read");
                        break;
                    }
                },
                () = sleep_until(flush_at), if flush_at.is_some() => self.flush(),
                _ = write_cursor.tick() => self.write_cursor().await,
            }
        }
        self.flush();
        if let Err(error) = child.start_kill() {
            tracing::debug!(%error, "journalctl had ended");
        }
        match child.wait().await {
            Ok(status) if !shutdown.is_cancelled() => {
                tracing::warn!(%status, "journalctl ended");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "journalctl could not be waited for"),
        }
    }

    /// Waits before journalctl starts again, shipping meanwhile.
    async fn pause(
        &mut self,
        shutdown: &CancellationToken,
        write_cursor: &mut tokio::time::Interval,
    ) {
        let until = Instant::now() + self.restart_delay;
        self.restart_delay = (self.restart_delay * 2).min(MAX_RESTART_DELAY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(until) => return,
                attempt = self.delivery.next_attempt(), if self.delivery.has_in_flight() => {
                    self.delivery.on_attempt(attempt);
                }
                _ = write_cursor.tick() => self.write_cursor().await,
            }
        }
    }

    /// Takes one line of journalctl's output.
    fn take(&mut self, line: &[u8]) {
        let entry = match parse_entry(line, self.context.limits.max_line_bytes) {
            Ok(entry) => entry,
            Err(error) => {
                self.context.metrics.journald_entries_invalid.inc();
                tracing::warn!(%error, "journalctl printed a line that is no journal entry; skipped");
                return;
            }
        };
        self.context.metrics.journald_entries_read.inc();
        self.last_read = Some(entry.cursor.clone());
        if let Some(start) = self.restarted_at.take() {
            if start.seqnum_id == entry.cursor.seqnum_id && start.seqnum == entry.cursor.seqnum {
                self.pass_over(entry.cursor.text);
                return;
            }
            tracing::warn!(
                cursor = %start.text,
                next = %entry.cursor.text,
                "the journal no longer holds the entry at the saved cursor (vacuumed, or the filters changed); reading on from the oldest entry after it"
            );
        }
        if self.is_excluded(&entry) {
            self.pass_over(entry.cursor.text);
            return;
        }
        self.push(entry);
    }

    fn is_excluded(&self, entry: &Entry) -> bool {
        let Some(unit) = &entry.unit else {
            return false;
        };
        self.config.exclude_units.iter().any(|pattern| {
            glob::Pattern::new(pattern).map_or(pattern == unit, |glob| glob.matches(unit))
        })
    }

    /// Moves the cursor over an entry that is not shipped, in order.
    fn pass_over(&mut self, cursor: String) {
        match &mut self.batch {
            Some(batch) => batch.end = cursor,
            None => self.delivery.mark(cursor),
        }
    }

    fn push(&mut self, entry: Entry) {
        if entry.truncated {
            self.context.metrics.log_lines_truncated.inc();
        }
        let line = LogLine {
            offset: entry.cursor.seqnum,
            event_time_unix_nano: entry.realtime_unix_nano,
            observed_time_unix_nano: crate::unix_nanos(std::time::SystemTime::now()),
            message: entry.message,
            fields: entry.fields,
            truncated: entry.truncated,
            invalid_utf8: entry.invalid_utf8,
            length: 0,
        };
        let encoded_len = line.encoded_len() + 8;
        let limits = self.context.limits;
        let fits = self.batch.as_ref().is_some_and(|batch| {
            batch.seqnum_id == entry.cursor.seqnum_id
                && batch.lines.len() < limits.max_lines
                && batch.encoded_len + encoded_len <= limits.max_bytes
        });
        if !fits {
            self.flush();
        }
        let batch = self.batch.get_or_insert_with(|| OpenBatch {
            seqnum_id: entry.cursor.seqnum_id.clone(),
            lines: Vec::new(),
            encoded_len: 0,
            end: String::new(),
            started: Instant::now(),
        });
        batch.lines.push(line);
        batch.encoded_len += encoded_len;
        batch.end = entry.cursor.text;
        if batch.lines.len() >= limits.max_lines {
            self.flush();
        }
    }

    /// Hands the open batch to the shipper.
    fn flush(&mut self) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        let lines = batch.lines.len() as u64;
        let payload = LogBatch {
            resource: Some(self.context.resource.clone()),
            source: Some(LogSource {
                path: String::new(),
                source_id: batch.seqnum_id,
                device: 0,
                inode: 0,
                dataset: self.config.dataset.clone(),
            }),
            lines: batch.lines,
        }
        .encode_to_vec();
        self.delivery.send(
            EncodedBatch {
                key: self.context.resource.id.clone(),
                payload,
                lines,
                source_bytes: 0,
            },
            batch.end,
        );
    }

    /// Writes the acknowledged cursor if it moved; the future holds no borrow of
    /// the source.
    fn write_cursor(&self) -> impl Future<Output = ()> + Send + 'static {
        let file = self.cursor_file.clone();
        let state = self.cursor.clone();
        async move {
            match tokio::task::spawn_blocking(move || file.write_if_changed(&state)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "journal cursor not saved; retrying"),
                Err(error) => tracing::error!(%error, "journal cursor writer failed"),
            }
        }
    }

    /// Ships what was read, waits at most `shutdown_timeout` for the
    /// acknowledgements and writes the cursor they reached.
    async fn stop(mut self) {
        self.flush();
        if tokio::time::timeout(self.context.shutdown_timeout, self.delivery.drain())
            .await
            .is_err()
        {
            tracing::warn!(
                "shutdown timeout reached with journal entries unacknowledged; they are read again after the restart"
            );
        }
        self.write_cursor().await;
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Logs what journalctl writes to its standard error, line by line.
async fn log_errors(stderr: tokio::process::ChildStderr) {
    let mut lines = LineReader::new(BufReader::new(stderr), MAX_ERROR_LINE);
    while let Ok(read) = lines.next_line().await {
        match read {
            Read::Line => {
                let text = String::from_utf8_lossy(&lines.line);
                if !text.trim().is_empty() {
                    tracing::warn!(error = %text.trim_end(), "journalctl reports");
                }
            }
            Read::TooLong(length) => tracing::warn!(length, "journalctl reports a long error"),
            Read::End => break,
        }
    }
}
