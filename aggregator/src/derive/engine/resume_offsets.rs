//! Resume offsets of the derive engine, for the commits of both input topics: per
//! partition, the earliest offset a new owner must replay to rebuild the state,
//! and the forgetting of what closed windows and silent series no longer need.

use super::Engine;
use vigil_proto::view::MetricBatchView;
use xxhash_rust::xxh3::xxh3_64;

/// A partition whose latest event time is this far behind the latest of all is
/// taken as no longer assigned here: it stops holding back the expiry of silent
/// series. A replay further behind than this starts its series afresh.
const PARTITION_IDLE_NANOS: i64 = 10 * 60 * 1_000_000_000;

/// The latest message of one resource and metric set in a partition.
#[derive(Debug, Clone, Copy)]
pub(super) struct LatestMessage {
    offset: i64,
    time_unix_nano: i64,
    /// Event time between its two latest messages, once there were two.
    interval_nanos: Option<i64>,
}

impl Engine {
    pub(super) fn note_offsets(
        &mut self,
        batch: &MetricBatchView<'_>,
        resource_hash: u64,
        partition: i32,
        offset: i64,
        time: i64,
    ) {
        let (last_offset, floor) = self
            .partition_floors
            .entry(partition)
            .or_insert((i64::MIN, i64::MIN));
        if offset <= *last_offset || *floor == i64::MIN {
            // A partition seen for the first time, or rewound: a replay begins here.
            // Windows that ended before it were emitted by whoever had it before.
            let earliest = batch
                .samples
                .iter()
                .map(|s| s.time_unix_nano)
                .min()
                .unwrap_or(time);
            *floor = earliest;
        }
        *last_offset = offset;
        let offsets = self.resource_offsets.entry(partition).or_default();
        let mut previous_set: Option<&str> = None;
        for sample in &batch.samples {
            if previous_set == Some(sample.metric_set) {
                continue;
            }
            previous_set = Some(sample.metric_set);
            let key = resource_hash ^ xxh3_64(sample.metric_set.as_bytes()).rotate_left(17);
            let latest = offsets.entry(key).or_insert(LatestMessage {
                offset,
                time_unix_nano: time,
                interval_nanos: None,
            });
            if time > latest.time_unix_nano {
                latest.interval_nanos = Some(time.saturating_sub(latest.time_unix_nano));
            }
            latest.offset = offset;
            latest.time_unix_nano = latest.time_unix_nano.max(time);
        }
    }

    pub(super) fn note_window_offset(&mut self, partition: i32, end: i64, offset: i64) {
        let first = self
            .window_offsets
            .entry(partition)
            .or_default()
            .entry(end)
            .or_insert(offset);
        *first = (*first).min(offset);
    }

    /// Drops bookkeeping of closed windows and of series not seen for longer than a
    /// gap allows.
    pub(super) fn forget_closed(&mut self, watermark: i64, wait: i64) {
        let lateness = vigil_config::duration::nanos(self.settings.allowed_lateness);
        for offsets in self.window_offsets.values_mut() {
            *offsets = offsets.split_off(&watermark.saturating_sub(lateness).saturating_add(1));
        }
        for offsets in self.partial_offsets.values_mut() {
            *offsets = offsets.split_off(&watermark.saturating_sub(wait).saturating_add(1));
        }
        let settings = &self.settings.rates;
        let default_interval = vigil_config::duration::nanos(settings.default_interval);
        let gap_intervals = i64::from(settings.max_gap_intervals.max(1));
        let active_from = watermark.saturating_sub(PARTITION_IDLE_NANOS);
        let slowest_active = self
            .partition_watermarks
            .values()
            .copied()
            .filter(|latest| *latest >= active_from)
            .min()
            .unwrap_or(watermark);
        self.rates.expire_silent(slowest_active);
        for (partition, offsets) in &mut self.resource_offsets {
            let clock = self
                .partition_watermarks
                .get(partition)
                .copied()
                .unwrap_or(watermark)
                .max(active_from);
            offsets.retain(|_, latest| {
                let interval = latest.interval_nanos.unwrap_or(default_interval);
                clock.saturating_sub(latest.time_unix_nano)
                    <= interval.saturating_mul(gap_intervals).max(lateness)
            });
        }
        let horizon =
            watermark.saturating_sub(default_interval.saturating_mul(gap_intervals).max(lateness));
        let open_until = self
            .series_windows
            .iter()
            .filter_map(|w| w.windows.oldest_open_start())
            .min()
            .unwrap_or(watermark);
        self.series_origins
            .retain(|_, origin| origin.last_seen_unix_nano >= open_until.min(horizon));
    }

    /// Where a new owner of source `partition` must start to rebuild this
    /// instance's state: the earliest offset still needed, or `None` if nothing
    /// from it is held.
    pub fn resume_offset(&self, partition: i32) -> Option<i64> {
        let resources = self
            .resource_offsets
            .get(&partition)
            .and_then(|offsets| offsets.values().map(|latest| latest.offset).min());
        let windows = self
            .window_offsets
            .get(&partition)
            .and_then(|offsets| offsets.values().min().copied());
        resources.into_iter().chain(windows).min()
    }

    /// Where a new owner of repartition `partition` must start to finish the
    /// groups this instance holds open.
    pub fn resume_partial_offset(&self, partition: i32) -> Option<i64> {
        self.partial_offsets
            .get(&partition)
            .and_then(|offsets| offsets.values().min().copied())
    }
}
