//! Adaptive concurrency of the bulk writer: how many `_bulk` requests the index
//! stage has in flight to Elasticsearch at once, between the stage's batches and the
//! cluster.
//!
//! Additive increase, multiplicative decrease, as TCP and Vector's adaptive request
//! concurrency do: the limit halves when Elasticsearch pushes back (429 or 5xx on the
//! request or on any of its documents, a connection error or timeout, or a response
//! much slower than the recent ones) and grows by one after about a round trip's
//! worth of healthy responses while the limit was what held requests back. A
//! request that started before the last decrease cannot tell anything about the new
//! limit, so its pushback does not halve the limit again.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Responses observed before a slow one can lower the limit: the round-trip
/// estimate needs a few samples to mean anything.
const MIN_LATENCY_SAMPLES: u32 = 5;
/// Weight of the newest response in the round-trip estimate.
const LATENCY_WEIGHT: f64 = 0.2;

/// Bounds and sensitivity of the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencySettings {
    /// Requests in flight at start.
    pub initial: usize,
    /// Requests in flight at most, however healthy the cluster looks.
    pub max: usize,
    /// A response this many times slower than the recent average counts as pushback.
    pub latency_factor: f64,
}

impl Default for ConcurrencySettings {
    fn default() -> Self {
        Self {
            initial: 1,
            max: 4,
            latency_factor: 3.0,
        }
    }
}

/// What a request's response says about the cluster's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered, every document accepted or refused for good.
    Healthy,
    /// 429 on the request or on some of its documents.
    Throttled,
    /// 5xx on the request or on some of its documents.
    ServerError,
    /// No answer: connection refused or reset, or a timeout.
    Unreachable,
}

impl Signal {
    fn label(self) -> &'static str {
        match self {
            Self::Healthy => "latency",
            Self::Throttled => "throttled",
            Self::ServerError => "server_error",
            Self::Unreachable => "unreachable",
        }
    }
}

/// The limiter's self-metrics; clones share their values, so the stage registers
/// clones of the limiter's own.
#[derive(Debug, Clone, Default)]
pub struct ConcurrencyMetrics {
    pub limit: Gauge,
    pub in_flight: Gauge,
    /// Decreases of the limit, by what caused them.
    pub decreases: Family<[(&'static str, &'static str); 1], Counter>,
}

/// The limit and the requests counted against it.
#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    /// Average round trip of recent healthy responses, in seconds.
    round_trip: f64,
    round_trips_seen: u32,
    /// When the limit was last lowered.
    last_decrease: Option<Instant>,
    /// Healthy responses to requests that waited for the limit since it last changed.
    saturated_successes: usize,
}

/// What one response did to the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    None,
    Increased,
    Decreased(Signal),
}

impl State {
    fn new(settings: &ConcurrencySettings) -> Self {
        Self {
            limit: settings.initial.clamp(1, settings.max.max(1)),
            in_flight: 0,
            round_trip: 0.0,
            round_trips_seen: 0,
            last_decrease: None,
            saturated_successes: 0,
        }
    }

    /// Takes a response into account: `started` is when its request was sent,
    /// `saturated` whether it was sent with the limit reached.
    fn observe(
        &mut self,
        settings: &ConcurrencySettings,
        now: Instant,
        started: Instant,
        saturated: bool,
        signal: Signal,
    ) -> Change {
        let fresh = self.last_decrease.is_none_or(|last| started >= last);
        let latency = now.saturating_duration_since(started).as_secs_f64();
        let slow = signal == Signal::Healthy
            && self.round_trips_seen >= MIN_LATENCY_SAMPLES
            && latency > self.round_trip * settings.latency_factor;
        if signal == Signal::Healthy {
            self.round_trip = if self.round_trips_seen == 0 {
                latency
            } else {
                self.round_trip * (1.0 - LATENCY_WEIGHT) + latency * LATENCY_WEIGHT
            };
            self.round_trips_seen = self.round_trips_seen.saturating_add(1);
        }
        if signal != Signal::Healthy || slow {
            if !fresh {
                return Change::None;
            }
            self.limit = (self.limit / 2).max(1);
            self.last_decrease = Some(now);
            self.saturated_successes = 0;
            return Change::Decreased(signal);
        }
        if saturated && self.limit < settings.max {
            self.saturated_successes += 1;
            if self.saturated_successes >= self.limit {
                self.limit += 1;
                self.saturated_successes = 0;
                return Change::Increased;
            }
        }
        Change::None
    }
}

/// Hands out permits to send a request, at most `limit` at a time.
#[derive(Debug)]
pub struct AdaptiveConcurrency {
    settings: ConcurrencySettings,
    state: Mutex<State>,
    /// Woken when a permit is returned or the limit grows.
    released: Notify,
    metrics: ConcurrencyMetrics,
}

impl AdaptiveConcurrency {
    pub fn new(settings: ConcurrencySettings) -> Arc<Self> {
        let state = State::new(&settings);
        let metrics = ConcurrencyMetrics::default();
        metrics.limit.set(state.limit as i64);
        Arc::new(Self {
            settings,
            state: Mutex::new(state),
            released: Notify::new(),
            metrics,
        })
    }

    pub fn settings(&self) -> &ConcurrencySettings {
        &self.settings
    }

    pub fn metrics(&self) -> &ConcurrencyMetrics {
        &self.metrics
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Waits until one more request may be sent.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            {
                let mut state = self.lock();
                if state.in_flight < state.limit {
                    state.in_flight += 1;
                    self.metrics.in_flight.set(state.in_flight as i64);
                    return Permit {
                        limiter: Arc::clone(self),
                        started: Instant::now(),
                        saturated: state.in_flight >= state.limit,
                        released: false,
                    };
                }
            }
            released.await;
        }
    }

    fn release(&self, started: Instant, saturated: bool, signal: Option<Signal>) {
        {
            let mut state = self.lock();
            state.in_flight -= 1;
            self.metrics.in_flight.set(state.in_flight as i64);
            if let Some(signal) = signal {
                let change =
                    state.observe(&self.settings, Instant::now(), started, saturated, signal);
                self.metrics.limit.set(state.limit as i64);
                match change {
                    Change::Decreased(cause) => {
                        self.metrics
                            .decreases
                            .get_or_create(&[("cause", cause.label())])
                            .inc();
                        tracing::info!(
                            limit = state.limit,
                            cause = cause.label(),
                            "Elasticsearch pushed back; fewer bulk requests in flight"
                        );
                    }
                    Change::Increased => {
                        tracing::debug!(limit = state.limit, "more bulk requests in flight");
                    }
                    Change::None => {}
                }
            }
        }
        self.released.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Leave to send one request; give it back with [`finish`](Self::finish), or drop it
/// when the request was never sent.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<AdaptiveConcurrency>,
    started: Instant,
    saturated: bool,
    released: bool,
}

impl Permit {
    /// Returns the permit with what the response said.
    pub fn finish(mut self, signal: Signal) {
        self.released = true;
        self.limiter
            .release(self.started, self.saturated, Some(signal));
    }

    /// How long since the permit was granted.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.released {
            self.limiter.release(self.started, self.saturated, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize) -> ConcurrencySettings {
        ConcurrencySettings {
            initial: 1,
            max,
            latency_factor: 3.0,
        }
    }

    /// Feeds `count` healthy responses of `latency` to requests sent at the limit.
    fn healthy(
        state: &mut State,
        settings: &ConcurrencySettings,
        now: &mut Instant,
        latency: Duration,
        count: usize,
    ) {
        for _ in 0..count {
            let started = *now;
            *now += latency;
            state.observe(settings, *now, started, true, Signal::Healthy);
        }
    }

    #[test]
    fn the_limit_grows_by_one_per_round_of_healthy_saturated_responses() {
        let settings = settings(4);
        let mut state = State::new(&settings);
        let mut now = Instant::now();
        let latency = Duration::from_millis(20);
        healthy(&mut state, &settings, &mut now, latency, 1);
        assert_eq!(state.limit, 2);
        healthy(&mut state, &settings, &mut now, latency, 1);
        assert_eq!(state.limit, 2, "one response of two does not make a round");
        healthy(&mut state, &settings, &mut now, latency, 1);
        assert_eq!(state.limit, 3);
        healthy(&mut state, &settings, &mut now, latency, 100);
        assert_eq!(state.limit, 4, "never above the maximum");
    }

    #[test]
    fn an_unsaturated_writer_does_not_raise_the_limit() {
        let settings = settings(8);
        let mut state = State::new(&settings);
        let now = Instant::now();
        for _ in 0..50 {
            state.observe(
                &settings,
                now + Duration::from_millis(5),
                now,
                false,
                Signal::Healthy,
            );
        }
        assert_eq!(state.limit, 1);
    }

    #[test]
    fn pushback_halves_the_limit_once_per_round_trip() {
        let settings = settings(16);
        let mut state = State::new(&settings);
        let mut now = Instant::now();
        let latency = Duration::from_millis(10);
        healthy(&mut state, &settings, &mut now, latency, 200);
        assert_eq!(state.limit, 16);

        // Eight requests in flight together all come back throttled.
        let sent = now;
        now += latency;
        let changes: Vec<Change> = (0..8)
            .map(|_| state.observe(&settings, now, sent, true, Signal::Throttled))
            .collect();
        assert_eq!(changes[0], Change::Decreased(Signal::Throttled));
        assert!(changes[1..].iter().all(|change| *change == Change::None));
        assert_eq!(state.limit, 8);

        // A request sent after the decrease that fails again halves it again.
        let sent = now;
        now += latency;
        assert_eq!(
            state.observe(&settings, now, sent, true, Signal::ServerError),
            Change::Decreased(Signal::ServerError)
        );
        assert_eq!(state.limit, 4);
        for _ in 0..5 {
            let sent = now;
            now += latency;
            state.observe(&settings, now, sent, true, Signal::Unreachable);
        }
        assert_eq!(state.limit, 1, "never below one");
    }

    #[test]
    fn a_response_much_slower_than_the_recent_ones_counts_as_pushback() {
        let settings = settings(8);
        let mut state = State::new(&settings);
        let mut now = Instant::now();
        healthy(
            &mut state,
            &settings,
            &mut now,
            Duration::from_millis(10),
            60,
        );
        assert_eq!(state.limit, 8);
        let sent = now;
        now += Duration::from_millis(25);
        assert_eq!(
            state.observe(&settings, now, sent, true, Signal::Healthy),
            Change::None,
            "2.5 times the average is within the factor of 3"
        );
        let sent = now;
        now += Duration::from_millis(200);
        assert_eq!(
            state.observe(&settings, now, sent, true, Signal::Healthy),
            Change::Decreased(Signal::Healthy)
        );
        assert_eq!(state.limit, 4);
    }

    #[tokio::test]
    async fn permits_wait_for_the_limit_and_metrics_follow_it() {
        let limiter = AdaptiveConcurrency::new(ConcurrencySettings {
            initial: 2,
            max: 2,
            latency_factor: 3.0,
        });
        let first = limiter.acquire().await;
        let second = limiter.acquire().await;
        assert_eq!(limiter.metrics().in_flight.get(), 2);
        let third = limiter.acquire();
        tokio::pin!(third);
        assert!(futures::poll!(&mut third).is_pending());
        first.finish(Signal::Throttled);
        assert_eq!(limiter.limit(), 1);
        assert_eq!(limiter.metrics().limit.get(), 1);
        assert!(
            futures::poll!(&mut third).is_pending(),
            "one in flight is the new limit"
        );
        drop(second);
        let third = third.await;
        assert_eq!(limiter.metrics().in_flight.get(), 1);
        third.finish(Signal::Healthy);
        assert_eq!(limiter.metrics().in_flight.get(), 0);
        assert_eq!(
            limiter
                .metrics()
                .decreases
                .get_or_create(&[("cause", "throttled")])
                .get(),
            1
        );
    }
}
