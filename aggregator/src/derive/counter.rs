//! Counter arithmetic of the derive stage: how far a raw SNMP or host counter moved
//! between two readings of one series, across wraps, resets and gaps. The rate
//! tracker ([`super::rates`]) keeps the previous reading of each series and turns
//! every step into a per-second rate.
//!
//! [`step`] applies these rules, in this order:
//!
//! 1. The current reading has the same time as the previous one:
//!    [`Step::Duplicate`]; an earlier time: [`Step::OutOfOrder`]. Both leave the
//!    previous reading in place.
//! 2. More than `max_gap_nanos` since the previous reading: [`Step::Gap`].
//! 3. The raw delta is `current − previous` modulo 2^width, in exact integer
//!    arithmetic. Floats only enter the plausibility checks below and the final
//!    rate, so counters above 2^53 keep exact deltas.
//! 4. The counter went forward: an increase of the raw delta, whatever the maximum
//!    rate says (device speeds are often misreported); a known maximum rate can only
//!    add whole wraps (rule 6).
//! 5. The counter went back: a wrap when plausible, otherwise [`Step::Reset`]:
//!    - 64-bit: the raw delta is below 2^63 and, when the maximum rate is known,
//!      within it (plus [`RATE_TOLERANCE`]);
//!    - 32-bit with a known maximum rate: the raw delta is within it (plus
//!      [`RATE_TOLERANCE`]);
//!    - 32-bit without one: the raw delta is below 2^31, half the modulus.
//! 6. Several wraps (32-bit only: a 64-bit counter cannot wrap twice in a `u64`
//!    increase): with a known maximum rate, every `raw + k·2^32` (k ≥ 1) within
//!    `max_rate · elapsed · (1 + RATE_TOLERANCE)` is plausible too, as a 32-bit
//!    octet counter of a 100 Gbit/s port wraps every 0.34 s. The candidate whose rate
//!    is closest to the previous step's rate wins; without a previous rate, the
//!    smallest (k = 0).
//!
//! A maximum rate that is not a positive finite number counts as unknown (SNMP
//! agents report a speed of 0 for ports whose speed they do not know).
//!
//! A float counter ([`CounterWidth::Float`]: Prometheus, OpenMetrics and OTLP
//! counters) follows rules 1 and 2, then Prometheus' rule: it never wraps, any
//! decrease is a [`Step::Reset`], and an increase is [`Step::FloatIncrease`].

use std::cmp::Ordering;

use vigil_proto::v1::ValueType;

/// Margin over the maximum rate before an unfolded increase counts as implausible:
/// readings are timestamped by the poller, not the device, so the measured interval
/// can be shorter than the one the counter actually covered.
pub const RATE_TOLERANCE: f64 = 0.1;

/// Nanoseconds in a second, for turning event-time differences into seconds.
pub const NANOS_PER_SECOND: f64 = 1e9;

/// Modulus of a 32-bit counter, as a float for plausibility checks.
const MODULUS_32: f64 = 4_294_967_296.0;

/// How many bits a counter has before it wraps to zero, or that it is a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterWidth {
    Bits32,
    Bits64,
    /// A float counter: the reading's value holds the `f64`'s bits, and it never
    /// wraps.
    Float,
}

impl CounterWidth {
    /// Counter32 is 32-bit; everything else (Counter64, unspecified, host `/proc`
    /// counters) is 64-bit.
    pub fn of(value_type: ValueType) -> Self {
        match value_type {
            ValueType::Counter32 => Self::Bits32,
            _ => Self::Bits64,
        }
    }

    /// 2^32 or 2^64: the value at which the counter starts again from zero.
    pub fn modulus(self) -> u128 {
        1 << self.bits()
    }

    fn bits(self) -> u32 {
        match self {
            Self::Bits32 => 32,
            Self::Bits64 | Self::Float => 64,
        }
    }

    /// The bits a value of this width can have; a 32-bit reading never has more
    /// (SNMP encodes Counter32 in 32 bits), so anything above is ignored.
    fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits())
    }
}

/// One value of a counter series at its event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub time_unix_nano: i64,
    pub value: u64,
}

/// What makes a step plausible, known from the series and its resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLimits {
    /// Plausible maximum increase per second (e.g. interface speed in octets/s), when
    /// known.
    pub max_rate_per_second: Option<f64>,
    /// Rate of the previous step, when known: picks the number of wraps when several
    /// are plausible.
    pub previous_rate_per_second: Option<f64>,
    /// A step longer than this restarts the series.
    pub max_gap_nanos: u64,
}

/// How a counter moved from one reading to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// The counter increased by exactly `increase` over `elapsed_nanos`, wraps
    /// already unfolded; `wraps` is how many times it passed its modulus.
    Increase {
        increase: u64,
        elapsed_nanos: u64,
        wraps: u32,
    },
    /// A float counter increased by `increase` (finite, not negative) over
    /// `elapsed_nanos`.
    FloatIncrease { increase: f64, elapsed_nanos: u64 },
    /// Went back and cannot be a wrap: a reset (or reboot). Restart the series at the
    /// current reading.
    Reset,
    /// Too long since the previous reading: restart the series at the current
    /// reading.
    Gap,
    /// Same timestamp as the previous reading: ignore it and keep the previous state.
    Duplicate,
    /// Older than the previous reading: ignore it and keep the previous state.
    OutOfOrder,
}

impl Step {
    /// Increase per second of an [`Step::Increase`]; `None` for every other step.
    ///
    /// The increase is an exact integer until this single division.
    pub fn rate_per_second(&self) -> Option<f64> {
        match *self {
            Self::Increase {
                increase,
                elapsed_nanos,
                ..
            } if elapsed_nanos > 0 => {
                Some(increase as f64 * NANOS_PER_SECOND / elapsed_nanos as f64)
            }
            Self::FloatIncrease {
                increase,
                elapsed_nanos,
            } if elapsed_nanos > 0 => Some(increase * NANOS_PER_SECOND / elapsed_nanos as f64),
            _ => None,
        }
    }
}

/// Classifies the move from `previous` to `current` of a counter of `width`, by
/// the rules in the module documentation.
pub fn step(previous: Reading, current: Reading, width: CounterWidth, limits: &StepLimits) -> Step {
    match current.time_unix_nano.cmp(&previous.time_unix_nano) {
        Ordering::Equal => return Step::Duplicate,
        Ordering::Less => return Step::OutOfOrder,
        Ordering::Greater => {}
    }
    let elapsed_nanos = current.time_unix_nano.abs_diff(previous.time_unix_nano);
    if elapsed_nanos > limits.max_gap_nanos {
        return Step::Gap;
    }
    if width == CounterWidth::Float {
        let (from, to) = (
            f64::from_bits(previous.value),
            f64::from_bits(current.value),
        );
        let increase = to - from;
        return if increase >= 0.0 && increase.is_finite() {
            Step::FloatIncrease {
                increase,
                elapsed_nanos,
            }
        } else {
            Step::Reset
        };
    }

    let mask = width.mask();
    let (from, to) = (previous.value & mask, current.value & mask);
    let raw = to.wrapping_sub(from) & mask;
    let went_back = to < from;
    let seconds = elapsed_nanos as f64 / NANOS_PER_SECOND;
    let allowance = limits
        .max_rate_per_second
        .filter(|rate| rate.is_finite() && *rate > 0.0)
        .map(|rate| rate * seconds * (1.0 + RATE_TOLERANCE));

    if went_back {
        let plausible = match (width, allowance) {
            (CounterWidth::Bits64, None) => raw < 1 << 63,
            (CounterWidth::Bits64, Some(allowance)) => raw < 1 << 63 && raw as f64 <= allowance,
            (CounterWidth::Bits32, Some(allowance)) => raw as f64 <= allowance,
            (CounterWidth::Bits32, None) => raw < 1 << 31,
            // Float counters returned above.
            (CounterWidth::Float, _) => false,
        };
        if !plausible {
            return Step::Reset;
        }
    }

    let extra_wraps = match (width, allowance, limits.previous_rate_per_second) {
        (CounterWidth::Bits32, Some(allowance), Some(previous_rate)) => {
            extra_wraps_32(raw, went_back, seconds, allowance, previous_rate)
        }
        _ => 0,
    };
    Step::Increase {
        // raw < 2^32 and extra_wraps < 2^32, so this stays below 2^64.
        increase: raw + (u64::from(extra_wraps) << 32),
        elapsed_nanos,
        wraps: extra_wraps + u32::from(went_back),
    }
}

/// Full 32-bit wraps to add to `raw`: the `k` whose unfolded increase
/// `raw + k·2^32` stays within `allowance` and comes closest to what
/// `previous_rate` would have counted over `seconds`.
///
/// Candidates are evenly spaced, so rounding the wanted `k` and clamping it to the
/// plausible range picks the closest one; the range is also capped so that the
/// total wrap count fits in a `u32`.
fn extra_wraps_32(
    raw: u64,
    went_back: bool,
    seconds: f64,
    allowance: f64,
    previous_rate: f64,
) -> u32 {
    let most = ((allowance - raw as f64) / MODULUS_32)
        .floor()
        .clamp(0.0, f64::from(u32::MAX - u32::from(went_back)));
    let wanted = ((previous_rate * seconds - raw as f64) / MODULUS_32).round();
    // NaN (from a NaN previous rate) fails both comparisons and clamps to nothing.
    if wanted >= 1.0 {
        wanted.min(most) as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: i64 = 1_000_000_000;
    const TWO_32: u64 = 1 << 32;

    fn reading(seconds: i64, value: u64) -> Reading {
        Reading {
            time_unix_nano: 1_700_000_000 * S + seconds * S,
            value,
        }
    }

    fn limits(max_rate: Option<f64>, previous_rate: Option<f64>) -> StepLimits {
        StepLimits {
            max_rate_per_second: max_rate,
            previous_rate_per_second: previous_rate,
            max_gap_nanos: 600 * S as u64,
        }
    }

    fn increase(increase: u64, seconds: u64, wraps: u32) -> Step {
        Step::Increase {
            increase,
            elapsed_nanos: seconds * S as u64,
            wraps,
        }
    }

    /// 100 Gbit/s in octets per second.
    const HUNDRED_GBIT: f64 = 100e9 / 8.0;

    #[test]
    fn a_float_counter_increases_by_its_difference_and_resets_on_any_decrease() {
        let float = |seconds, value: f64| reading(seconds, value.to_bits());
        let step_of = |from, to| step(from, to, CounterWidth::Float, &limits(None, None));
        let up = step_of(float(0, 10.5), float(10, 30.5));
        assert_eq!(
            up,
            Step::FloatIncrease {
                increase: 20.0,
                elapsed_nanos: 10 * S as u64
            }
        );
        assert_eq!(up.rate_per_second(), Some(2.0));
        // A float counter never wraps: even a tiny decrease is a reset.
        assert_eq!(step_of(float(0, 1e20), float(10, 1e20 - 1e5)), Step::Reset);
        assert_eq!(step_of(float(0, 5.0), float(10, f64::NAN)), Step::Reset);
        assert_eq!(step_of(float(0, 5.0), float(0, 6.0)), Step::Duplicate);
        assert_eq!(step_of(float(0, 5.0), float(700, 6.0)), Step::Gap);
    }

    #[test]
    fn width_follows_the_value_type() {
        assert_eq!(CounterWidth::of(ValueType::Counter32), CounterWidth::Bits32);
        assert_eq!(CounterWidth::of(ValueType::Counter64), CounterWidth::Bits64);
        assert_eq!(
            CounterWidth::of(ValueType::Unspecified),
            CounterWidth::Bits64
        );
        assert_eq!(CounterWidth::Bits32.modulus(), 1 << 32);
        assert_eq!(CounterWidth::Bits64.modulus(), 1 << 64);
    }

    #[test]
    fn plain_increase_and_its_rate() {
        let got = step(
            reading(0, 1_000),
            reading(10, 6_000),
            CounterWidth::Bits64,
            &limits(None, None),
        );
        assert_eq!(got, increase(5_000, 10, 0));
        assert_eq!(got.rate_per_second(), Some(500.0));
    }

    #[test]
    fn wrap_32() {
        let got = step(
            reading(0, TWO_32 - 100),
            reading(10, 50),
            CounterWidth::Bits32,
            &limits(None, None),
        );
        assert_eq!(got, increase(150, 10, 1));
    }

    #[test]
    fn wrap_32_within_the_max_rate_even_past_half_the_modulus() {
        // 3e9 octets in 10 s is fine for a 10 Gbit/s port.
        let got = step(
            reading(0, 2_000_000_000),
            reading(10, 705_032_704),
            CounterWidth::Bits32,
            &limits(Some(10e9 / 8.0), None),
        );
        assert_eq!(got, increase(3_000_000_000, 10, 1));
    }

    #[test]
    fn wrap_64() {
        let got = step(
            reading(0, u64::MAX - 9),
            reading(10, 5),
            CounterWidth::Bits64,
            &limits(None, None),
        );
        assert_eq!(got, increase(15, 10, 1));
    }

    #[test]
    fn several_wraps_picked_by_the_previous_rate() {
        // A 32-bit octet counter of a 100 Gbit/s port near line rate wraps 29 times
        // in 10 s; the previous step's rate (1% off) says which unfolding is right.
        let true_increase = 29 * TWO_32 + 123_456;
        let previous_rate = true_increase as f64 / 10.0 * 1.01;
        let start = TWO_32 - 1_000;
        let end = (start + true_increase) % TWO_32;
        let got = step(
            reading(0, start),
            reading(10, end),
            CounterWidth::Bits32,
            &limits(Some(HUNDRED_GBIT), Some(previous_rate)),
        );
        assert_eq!(got, increase(true_increase, 10, 30));
        let rate = got.rate_per_second().unwrap_or_default();
        assert!((rate - true_increase as f64 / 10.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn double_wrap_without_going_back() {
        let true_increase = 2 * TWO_32 + 1_000;
        let got = step(
            reading(0, 100),
            reading(10, 1_100),
            CounterWidth::Bits32,
            &limits(Some(HUNDRED_GBIT), Some(8.6e8)),
        );
        assert_eq!(got, increase(true_increase, 10, 2));
    }

    #[test]
    fn several_plausible_wraps_without_a_previous_rate_take_the_smallest() {
        let got = step(
            reading(0, TWO_32 - 500),
            reading(10, 500),
            CounterWidth::Bits32,
            &limits(Some(HUNDRED_GBIT), None),
        );
        assert_eq!(got, increase(1_000, 10, 1));
    }

    #[test]
    fn wraps_are_capped_by_the_max_rate() {
        // The previous rate asks for more than the port can carry.
        let got = step(
            reading(0, 100),
            reading(10, 1_100),
            CounterWidth::Bits32,
            &limits(Some(1e9), Some(1e12)),
        );
        assert_eq!(got, increase(2 * TWO_32 + 1_000, 10, 2));
    }

    #[test]
    fn reset_32_beyond_the_max_rate() {
        // Unfolding as a wrap would mean 1.3e9 octets in 10 s on a 10 Mbit/s port.
        let got = step(
            reading(0, 3_000_000_000),
            reading(10, 1_000),
            CounterWidth::Bits32,
            &limits(Some(10e6 / 8.0), None),
        );
        assert_eq!(got, Step::Reset);
    }

    #[test]
    fn reset_32_without_max_rate() {
        let got = step(
            reading(0, 1_000_000),
            reading(10, 10),
            CounterWidth::Bits32,
            &limits(None, None),
        );
        assert_eq!(got, Step::Reset);
    }

    #[test]
    fn reset_64_after_a_big_drop() {
        for max_rate in [None, Some(HUNDRED_GBIT)] {
            let got = step(
                reading(0, 1 << 60),
                reading(10, 3),
                CounterWidth::Bits64,
                &limits(max_rate, None),
            );
            assert_eq!(got, Step::Reset);
            assert_eq!(got.rate_per_second(), None);
        }
    }

    #[test]
    fn wrap_64_beyond_the_max_rate_is_a_reset() {
        let got = step(
            reading(0, u64::MAX - 1_000_000),
            reading(1, 5),
            CounterWidth::Bits64,
            &limits(Some(1_000.0), None),
        );
        assert_eq!(got, Step::Reset);
    }

    #[test]
    fn forward_steps_beyond_the_max_rate_still_count() {
        let got = step(
            reading(0, 0),
            reading(1, 1_000_000),
            CounterWidth::Bits32,
            &limits(Some(1_000.0), None),
        );
        assert_eq!(got, increase(1_000_000, 1, 0));
    }

    #[test]
    fn values_above_2_pow_53_stay_exact() {
        let got = step(
            reading(0, 1 << 60),
            reading(1, (1 << 60) + 1),
            CounterWidth::Bits64,
            &limits(None, None),
        );
        assert_eq!(got, increase(1, 1, 0));
        let got = step(
            reading(0, (1 << 53) + 1),
            reading(1, (1 << 53) + 2),
            CounterWidth::Bits64,
            &limits(Some(HUNDRED_GBIT), None),
        );
        assert_eq!(got, increase(1, 1, 0));
        let got = step(
            reading(0, u64::MAX),
            reading(1, 0),
            CounterWidth::Bits64,
            &limits(Some(HUNDRED_GBIT), None),
        );
        assert_eq!(got, increase(1, 1, 1));
    }

    #[test]
    fn duplicate_and_out_of_order_readings() {
        let previous = reading(10, 100);
        let none = limits(None, None);
        assert_eq!(
            step(previous, reading(10, 200), CounterWidth::Bits64, &none),
            Step::Duplicate
        );
        assert_eq!(
            step(previous, reading(9, 50), CounterWidth::Bits64, &none),
            Step::OutOfOrder
        );
        assert_eq!(Step::Duplicate.rate_per_second(), None);
    }

    #[test]
    fn gap() {
        let previous = reading(0, 100);
        let none = limits(None, None);
        assert_eq!(
            step(previous, reading(601, 200), CounterWidth::Bits64, &none),
            Step::Gap
        );
        assert_eq!(
            step(previous, reading(600, 200), CounterWidth::Bits64, &none),
            increase(100, 600, 0)
        );
    }

    #[test]
    fn unusable_max_rates_count_as_unknown() {
        for max_rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let got = step(
                reading(0, TWO_32 - 100),
                reading(10, 50),
                CounterWidth::Bits32,
                &limits(Some(max_rate), Some(1e9)),
            );
            assert_eq!(got, increase(150, 10, 1));
        }
    }

    fn width() -> impl Strategy<Value = CounterWidth> {
        prop_oneof![Just(CounterWidth::Bits32), Just(CounterWidth::Bits64)]
    }

    proptest! {
        /// Without a maximum rate, every 64-bit increase below 2^63 comes back exactly.
        #[test]
        fn recovers_64_bit_increases(
            start in any::<u64>(),
            true_increase in 0..1u64 << 63,
            elapsed in 1..=600 * S as u64,
        ) {
            let previous = Reading { time_unix_nano: 0, value: start };
            let current = Reading { time_unix_nano: elapsed as i64, value: start.wrapping_add(true_increase) };
            let wraps = ((u128::from(start) + u128::from(true_increase)) >> 64) as u32;
            prop_assert_eq!(
                step(previous, current, CounterWidth::Bits64, &limits(None, None)),
                Step::Increase { increase: true_increase, elapsed_nanos: elapsed, wraps }
            );
        }

        /// Without a maximum rate, every 32-bit increase below 2^31 comes back exactly.
        #[test]
        fn recovers_32_bit_increases(
            start in 0..TWO_32,
            true_increase in 0..1u64 << 31,
            elapsed in 1..=600 * S as u64,
        ) {
            let previous = Reading { time_unix_nano: 0, value: start };
            let current = Reading { time_unix_nano: elapsed as i64, value: (start + true_increase) % TWO_32 };
            let wraps = ((start + true_increase) / TWO_32) as u32;
            prop_assert_eq!(
                step(previous, current, CounterWidth::Bits32, &limits(None, None)),
                Step::Increase { increase: true_increase, elapsed_nanos: elapsed, wraps }
            );
        }

        /// With a maximum rate, every increase within it comes back exactly, however
        /// many times a 32-bit counter wrapped, when the previous rate was the same.
        #[test]
        fn recovers_increases_within_the_max_rate(
            width in width(),
            start in any::<u64>(),
            max_rate in 1e3..2e10f64,
            elapsed in S as u64 / 10..=60 * S as u64,
            fraction in 0.0..=1.0f64,
        ) {
            let modulus = width.modulus();
            let start = (u128::from(start) % modulus) as u64;
            let seconds = elapsed as f64 / NANOS_PER_SECOND;
            let true_increase = (max_rate * seconds * fraction) as u64;
            let end = u128::from(start) + u128::from(true_increase);
            let previous = Reading { time_unix_nano: 0, value: start };
            let current = Reading { time_unix_nano: elapsed as i64, value: (end % modulus) as u64 };
            let limits = limits(Some(max_rate), Some(true_increase as f64 / seconds));
            let got = step(previous, current, width, &limits);
            prop_assert_eq!(
                got,
                Step::Increase { increase: true_increase, elapsed_nanos: elapsed, wraps: (end / modulus) as u32 }
            );
        }

        /// A 64-bit counter that drops to a smaller value from anywhere up to 2^63
        /// was reset; it never counts as an increase.
        #[test]
        fn big_64_bit_drops_are_resets(
            previous in 1..=1u64 << 63,
            drop_to in any::<u64>(),
            max_rate in prop::option::of(1.0..1e12f64),
            elapsed in 1..=600 * S as u64,
        ) {
            let current = drop_to % previous;
            let got = step(
                Reading { time_unix_nano: 0, value: previous },
                Reading { time_unix_nano: elapsed as i64, value: current },
                CounterWidth::Bits64,
                &limits(max_rate, None),
            );
            prop_assert_eq!(got, Step::Reset);
        }

        /// A rate is a finite, non-negative number, whatever the readings.
        #[test]
        fn rates_are_never_negative(
            width in width(),
            previous in any::<(i64, u64)>(),
            current in any::<(i64, u64)>(),
            max_rate in prop::option::of(any::<f64>()),
            previous_rate in prop::option::of(any::<f64>()),
            max_gap_nanos in any::<u64>(),
        ) {
            let limits = StepLimits { max_rate_per_second: max_rate, previous_rate_per_second: previous_rate, max_gap_nanos };
            let got = step(
                Reading { time_unix_nano: previous.0, value: previous.1 },
                Reading { time_unix_nano: current.0, value: current.1 },
                width,
                &limits,
            );
            if let Some(rate) = got.rate_per_second() {
                prop_assert!(rate.is_finite() && rate >= 0.0, "{got:?} gave {rate}");
            }
        }
    }
}
