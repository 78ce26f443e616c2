//! Per-series rate state of the derive stage: the previous reading of every counter
//! series, so that each new raw SNMP or host counter sample becomes a per-second
//! rate ([`super::counter`] does the arithmetic), and the last uptime of every
//! resource, so that a reboot restarts its series instead of producing a spike.
//!
//! The state is rebuilt by replaying the metrics topic from the latest message of
//! each resource (the stage commits that position), so it holds nothing that
//! replay cannot restore.

use std::collections::hash_map::Entry;
use std::num::NonZeroU64;
use std::time::Duration;

use super::counter::{self, CounterWidth, NANOS_PER_SECOND, Reading, Step, StepLimits};
use super::{HashedMap, SeriesId};

/// Fixed part of the slack when comparing a resource's uptime with event time:
/// the poller stamps a reading when it asks, the device answers a little later.
const UPTIME_SLACK_SECONDS: f64 = 5.0;

/// Proportional part of that slack: device clocks drift from the poller's by well
/// under this fraction.
const UPTIME_DRIFT: f64 = 1e-3;

/// How long a resource's last uptime is kept after it went silent: resources are
/// few next to their series, and a slow poller's uptime must outlive its interval.
const UPTIME_RETENTION_NANOS: i64 = 24 * 3600 * 1_000_000_000;

/// How the tracker treats a series' timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSettings {
    /// Gaps longer than this many intervals restart a series.
    pub max_gap_intervals: u32,
    /// Interval assumed before a series has shown its own (first step).
    pub default_interval: Duration,
}

/// Why a series started again from a new baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartCause {
    /// The counter went back and could not have wrapped.
    Reset,
    /// Too long since the previous reading.
    Gap,
    /// The resource restarted (its uptime went back).
    Reboot,
}

/// Why a reading was dropped without changing its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoredCause {
    /// Same event time as the previous reading.
    Duplicate,
    /// Earlier event time than the previous reading.
    OutOfOrder,
}

/// What one reading did to its series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateOutcome {
    /// Increase per second since the previous reading.
    Rate(f64),
    /// First reading of the series: a baseline, no rate yet.
    Started,
    /// The reading became a new baseline, no rate.
    Restarted(RestartCause),
    /// The reading was dropped; the series is unchanged.
    Ignored(IgnoredCause),
}

/// Previous readings of counter series and uptimes of resources, by id.
#[derive(Debug)]
pub struct RateTracker {
    settings: RateSettings,
    series: SeriesMap<SeriesState>,
    uptimes: SeriesMap<UptimeState>,
}

/// Everything a counter series needs for its next step, kept small: there is one
/// per series of every resource the stage owns.
#[derive(Debug, Clone, Copy)]
struct SeriesState {
    /// Also the last time the series was seen: readings that are not newer leave
    /// the state untouched.
    previous: Reading,
    /// Elapsed time of the last step, the series' own polling interval.
    interval_nanos: Option<NonZeroU64>,
    /// Rate of the last step, to choose between several plausible wrap counts;
    /// `f32` is precise enough, as it only has to be right within half a wrap.
    previous_rate: Option<f32>,
}

/// Last uptime reading of a resource.
#[derive(Debug, Clone, Copy)]
struct UptimeState {
    time_unix_nano: i64,
    uptime_seconds: f64,
}

impl RateTracker {
    pub fn new(settings: RateSettings) -> Self {
        Self {
            settings,
            series: SeriesMap::default(),
            uptimes: SeriesMap::default(),
        }
    }

    /// Feeds one counter reading of `series`.
    ///
    /// The series' gap limit is `max_gap_intervals` × its own last interval
    /// (`default_interval` before it has one). When `resource_restarted` (see
    /// [`Self::observe_uptime`]), a newer reading only sets a new baseline, so the
    /// counters that restarted from zero give no spike. A duplicate or older reading
    /// is ignored even then.
    pub fn observe(
        &mut self,
        series: SeriesId,
        reading: Reading,
        width: CounterWidth,
        max_rate_per_second: Option<f64>,
        resource_restarted: bool,
    ) -> RateOutcome {
        let state = match self.series.entry(series) {
            Entry::Vacant(vacant) => {
                vacant.insert(SeriesState {
                    previous: reading,
                    interval_nanos: None,
                    previous_rate: None,
                });
                return RateOutcome::Started;
            }
            Entry::Occupied(occupied) => occupied.into_mut(),
        };
        let interval_nanos = state.interval_nanos.map_or_else(
            || saturating_nanos(self.settings.default_interval),
            NonZeroU64::get,
        );
        let limits = StepLimits {
            max_rate_per_second,
            previous_rate_per_second: state.previous_rate.map(f64::from),
            max_gap_nanos: interval_nanos
                .saturating_mul(u64::from(self.settings.max_gap_intervals)),
        };
        let step = counter::step(state.previous, reading, width, &limits);
        let (outcome, interval_nanos, rate) = match step {
            Step::Duplicate => return RateOutcome::Ignored(IgnoredCause::Duplicate),
            Step::OutOfOrder => return RateOutcome::Ignored(IgnoredCause::OutOfOrder),
            _ if resource_restarted => (
                RateOutcome::Restarted(RestartCause::Reboot),
                state.interval_nanos,
                None,
            ),
            Step::Gap => (
                RateOutcome::Restarted(RestartCause::Gap),
                state.interval_nanos,
                None,
            ),
            Step::Reset => (
                RateOutcome::Restarted(RestartCause::Reset),
                NonZeroU64::new(
                    reading
                        .time_unix_nano
                        .abs_diff(state.previous.time_unix_nano),
                ),
                None,
            ),
            Step::Increase { elapsed_nanos, .. } | Step::FloatIncrease { elapsed_nanos, .. } => {
                let rate = step
                    .rate_per_second()
                    .expect("an increase is always over a positive interval");
                (
                    RateOutcome::Rate(rate),
                    NonZeroU64::new(elapsed_nanos),
                    Some(rate),
                )
            }
        };
        *state = SeriesState {
            previous: reading,
            interval_nanos,
            previous_rate: rate.map(|rate| rate as f32),
        };
        outcome
    }

    /// Feeds the uptime of `resource` at `time_unix_nano`, in seconds; returns true
    /// when the resource restarted since its previous uptime reading.
    ///
    /// A restart shows as the uptime going back, or as an uptime shorter than the
    /// time since the previous reading (it restarted and ran past its old uptime in
    /// between). An uptime that wraps — SNMP sysUpTime is 32-bit hundredths of a
    /// second, `wraps_after_seconds: Some(4294967296.0 / 100.0)`, about 497 days — is
    /// no restart when the unfolded uptime matches the elapsed time. Duplicate, older
    /// and non-finite readings are ignored (false). `resource` is an id the caller
    /// computes for the resource; uptimes are kept apart from counter series, so it
    /// may equal a series id.
    pub fn observe_uptime(
        &mut self,
        resource: SeriesId,
        time_unix_nano: i64,
        uptime_seconds: f64,
        wraps_after_seconds: Option<f64>,
    ) -> bool {
        if !uptime_seconds.is_finite() {
            return false;
        }
        let current = UptimeState {
            time_unix_nano,
            uptime_seconds,
        };
        let state = match self.uptimes.entry(resource) {
            Entry::Vacant(vacant) => {
                vacant.insert(current);
                return false;
            }
            Entry::Occupied(occupied) => occupied.into_mut(),
        };
        if time_unix_nano <= state.time_unix_nano {
            return false;
        }
        let elapsed_seconds =
            time_unix_nano.abs_diff(state.time_unix_nano) as f64 / NANOS_PER_SECOND;
        let slack = UPTIME_SLACK_SECONDS + elapsed_seconds * UPTIME_DRIFT;
        let expected = state.uptime_seconds + elapsed_seconds;
        let restarted = if uptime_seconds < state.uptime_seconds {
            wraps_after_seconds.is_none_or(|wrap| (uptime_seconds + wrap - expected).abs() > slack)
        } else {
            uptime_seconds + slack < elapsed_seconds
        };
        *state = current;
        restarted
    }

    /// Drops the series silent for longer than their gap limit at `now_unix_nano`
    /// (event time): their next reading would only start them again. Uptimes are
    /// kept for a day. Returns how many counter series were dropped.
    pub fn expire_silent(&mut self, now_unix_nano: i64) -> usize {
        let before = self.series.len();
        let default_interval = saturating_nanos(self.settings.default_interval);
        let intervals = u64::from(self.settings.max_gap_intervals);
        self.series.retain(|_, state| {
            let interval = state
                .interval_nanos
                .map_or(default_interval, NonZeroU64::get);
            let limit = i64::try_from(interval.saturating_mul(intervals)).unwrap_or(i64::MAX);
            now_unix_nano.saturating_sub(state.previous.time_unix_nano) <= limit
        });
        self.uptimes.retain(|_, state| {
            now_unix_nano.saturating_sub(state.time_unix_nano) <= UPTIME_RETENTION_NANOS
        });
        before - self.series.len()
    }

    /// Whether `series` has a previous reading held.
    pub fn contains(&self, series: SeriesId) -> bool {
        self.series.contains_key(&series)
    }

    /// Number of counter series tracked.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A map keyed by [`SeriesId`], which is already a well-mixed 64-bit hash.
type SeriesMap<V> = HashedMap<SeriesId, V>;

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const START: i64 = 1_700_000_000 * S;
    const SYS_UP_TIME_WRAP: f64 = 4_294_967_296.0 / 100.0;
    const IF_IN_OCTETS: SeriesId = SeriesId(0x9e37_79b9_7f4a_7c15);
    const ROUTER: SeriesId = SeriesId(0x5851_f42d_4c95_7f2d);

    fn tracker() -> RateTracker {
        RateTracker::new(RateSettings {
            max_gap_intervals: 3,
            default_interval: Duration::from_secs(10),
        })
    }

    fn at(seconds: i64, value: u64) -> Reading {
        Reading {
            time_unix_nano: START + seconds * S,
            value,
        }
    }

    fn observe(tracker: &mut RateTracker, seconds: i64, value: u64) -> RateOutcome {
        tracker.observe(
            IF_IN_OCTETS,
            at(seconds, value),
            CounterWidth::Bits64,
            None,
            false,
        )
    }

    #[test]
    fn first_reading_starts_and_the_second_gives_a_rate() {
        let mut tracker = tracker();
        assert!(tracker.is_empty());
        assert_eq!(observe(&mut tracker, 0, 1_000), RateOutcome::Started);
        assert_eq!(observe(&mut tracker, 10, 2_000), RateOutcome::Rate(100.0));
        assert_eq!(tracker.len(), 1);
    }

    #[test]
    fn reboot_restarts_without_a_spike() {
        let mut tracker = tracker();
        let observe = |tracker: &mut RateTracker, seconds, value, restarted| {
            tracker.observe(
                IF_IN_OCTETS,
                at(seconds, value),
                CounterWidth::Bits32,
                None,
                restarted,
            )
        };
        assert!(!tracker.observe_uptime(ROUTER, START, 86_400.0, Some(SYS_UP_TIME_WRAP)));
        assert_eq!(
            observe(&mut tracker, 0, 3_000_000_000, false),
            RateOutcome::Started
        );
        // Back up after the reboot: 500 MB counted since, which taken alone would
        // unfold as a 1.8 GB wrap.
        let restarted =
            tracker.observe_uptime(ROUTER, START + 60 * S, 30.0, Some(SYS_UP_TIME_WRAP));
        assert!(restarted);
        assert_eq!(
            observe(&mut tracker, 60, 500_000_000, restarted),
            RateOutcome::Restarted(RestartCause::Reboot)
        );
        assert!(!tracker.observe_uptime(ROUTER, START + 70 * S, 40.0, Some(SYS_UP_TIME_WRAP)));
        assert_eq!(
            observe(&mut tracker, 70, 500_001_000, false),
            RateOutcome::Rate(100.0)
        );
    }

    #[test]
    fn an_uptime_shorter_than_the_elapsed_time_is_a_restart() {
        let mut tracker = tracker();
        assert!(!tracker.observe_uptime(ROUTER, START, 10.0, None));
        // Restarted within the hour and has been up for 20 minutes.
        assert!(tracker.observe_uptime(ROUTER, START + 3_600 * S, 1_200.0, None));
        assert!(!tracker.observe_uptime(ROUTER, START + 3_660 * S, 1_260.0, None));
    }

    #[test]
    fn sys_up_time_wrap_is_not_a_restart() {
        let mut tracker = tracker();
        assert!(!tracker.observe_uptime(
            ROUTER,
            START,
            SYS_UP_TIME_WRAP - 30.0,
            Some(SYS_UP_TIME_WRAP)
        ));
        assert!(!tracker.observe_uptime(ROUTER, START + 60 * S, 30.0, Some(SYS_UP_TIME_WRAP)));
        assert!(!tracker.observe_uptime(ROUTER, START + 120 * S, 90.0, Some(SYS_UP_TIME_WRAP)));
        // Going back without matching the wrap point is a restart.
        assert!(tracker.observe_uptime(ROUTER, START + 180 * S, 20.0, Some(SYS_UP_TIME_WRAP)));
    }

    #[test]
    fn uptime_going_back_without_a_wrap_is_a_restart() {
        let mut tracker = tracker();
        assert!(!tracker.observe_uptime(ROUTER, START, SYS_UP_TIME_WRAP - 30.0, None));
        assert!(tracker.observe_uptime(ROUTER, START + 60 * S, 30.0, None));
    }

    #[test]
    fn duplicate_and_older_uptimes_are_ignored() {
        let mut tracker = tracker();
        assert!(!tracker.observe_uptime(ROUTER, START, 1_000.0, None));
        assert!(!tracker.observe_uptime(ROUTER, START, 5.0, None));
        assert!(!tracker.observe_uptime(ROUTER, START - 60 * S, 940.0, None));
        assert!(!tracker.observe_uptime(ROUTER, START + 60 * S, f64::NAN, None));
        assert!(!tracker.observe_uptime(ROUTER, START + 60 * S, 1_060.0, None));
    }

    #[test]
    fn gap_restarts() {
        let mut tracker = tracker();
        assert_eq!(observe(&mut tracker, 0, 0), RateOutcome::Started);
        assert_eq!(observe(&mut tracker, 5, 500), RateOutcome::Rate(100.0));
        // The series' own interval is 5 s: 3 intervals are 15 s.
        assert_eq!(
            observe(&mut tracker, 21, 2_100),
            RateOutcome::Restarted(RestartCause::Gap)
        );
        assert_eq!(observe(&mut tracker, 26, 2_600), RateOutcome::Rate(100.0));
    }

    #[test]
    fn gap_before_the_series_has_an_interval_uses_the_default() {
        let mut tracker = tracker();
        assert_eq!(observe(&mut tracker, 0, 0), RateOutcome::Started);
        assert_eq!(
            observe(&mut tracker, 31, 3_100),
            RateOutcome::Restarted(RestartCause::Gap)
        );
        assert_eq!(observe(&mut tracker, 61, 6_100), RateOutcome::Rate(100.0));
    }

    #[test]
    fn reset_restarts() {
        let mut tracker = tracker();
        assert_eq!(observe(&mut tracker, 0, 1 << 40), RateOutcome::Started);
        assert_eq!(
            observe(&mut tracker, 10, 5),
            RateOutcome::Restarted(RestartCause::Reset)
        );
        assert_eq!(observe(&mut tracker, 20, 1_005), RateOutcome::Rate(100.0));
    }

    #[test]
    fn duplicate_and_out_of_order_readings_keep_the_state() {
        let mut tracker = tracker();
        observe(&mut tracker, 0, 100);
        assert_eq!(observe(&mut tracker, 10, 200), RateOutcome::Rate(10.0));
        assert_eq!(
            observe(&mut tracker, 10, 999),
            RateOutcome::Ignored(IgnoredCause::Duplicate)
        );
        assert_eq!(
            observe(&mut tracker, 5, 150),
            RateOutcome::Ignored(IgnoredCause::OutOfOrder)
        );
        // Even in a batch that says the resource restarted: an old reading tells
        // nothing about now.
        assert_eq!(
            tracker.observe(IF_IN_OCTETS, at(5, 0), CounterWidth::Bits64, None, true),
            RateOutcome::Ignored(IgnoredCause::OutOfOrder)
        );
        assert_eq!(observe(&mut tracker, 20, 300), RateOutcome::Rate(10.0));
    }

    #[test]
    fn the_previous_rate_unfolds_an_extra_wrap() {
        let mut tracker = tracker();
        let observe = |tracker: &mut RateTracker, seconds, value| {
            tracker.observe(
                IF_IN_OCTETS,
                at(seconds, value),
                CounterWidth::Bits32,
                Some(100e9 / 8.0),
                false,
            )
        };
        let two_32 = 1u64 << 32;
        observe(&mut tracker, 0, 0);
        assert_eq!(
            observe(&mut tracker, 10, 3_000_000_000),
            RateOutcome::Rate(3e8)
        );
        // 5e9 octets in the next 10 s: a full wrap on top of the raw delta.
        assert_eq!(
            observe(&mut tracker, 20, (3_000_000_000 + 5_000_000_000) % two_32),
            RateOutcome::Rate(5e8)
        );
    }

    #[test]
    fn series_silent_beyond_their_gap_limit_are_dropped() {
        let mut tracker = tracker();
        let other = SeriesId(7);
        // One series with a 5 s interval, one without an interval yet (10 s assumed).
        observe(&mut tracker, 0, 0);
        observe(&mut tracker, 5, 100);
        tracker.observe(other, at(10, 0), CounterWidth::Bits64, None, false);
        tracker.observe_uptime(ROUTER, START, 1_000.0, None);
        assert_eq!(tracker.expire_silent(START + 20 * S), 0);
        assert_eq!(tracker.expire_silent(START + 21 * S), 1);
        assert_eq!(tracker.len(), 1, "the assumed interval is longer");
        assert_eq!(tracker.expire_silent(START + 50_000 * S), 1);
        assert!(tracker.is_empty());
        // The uptime outlives the series, so a slow device's reboot is still seen.
        assert!(tracker.observe_uptime(ROUTER, START + 50_000 * S, 5.0, None));
    }

    #[test]
    fn series_state_stays_small() {
        assert_eq!(std::mem::size_of::<SeriesState>(), 32);
    }
}
