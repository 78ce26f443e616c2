//! Staleness markers on the wire: the NaN Prometheus writes when a scrape target
//! or one of its series disappears, carried as a sample's float value (`gauge` or
//! `float_counter`). The scrape source writes them; the rules engine reads one as
//! "the series ended" and the index stage writes no document for it.

use crate::v1::sample;

/// The bit pattern of Prometheus' staleness marker (`value.StaleNaN`): a NaN that
/// no arithmetic produces, so it cannot be mistaken for a computed value.
pub const STALE_MARKER_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub fn stale_marker() -> f64 {
    f64::from_bits(STALE_MARKER_BITS)
}

/// Whether `value` is the staleness marker (and not any other NaN).
pub fn is_stale_marker(value: f64) -> bool {
    value.to_bits() == STALE_MARKER_BITS
}

impl sample::Value {
    /// Whether this value is a staleness marker: a float value (gauge or float
    /// counter) with the marker's bits.
    pub fn is_stale_marker(&self) -> bool {
        match *self {
            sample::Value::Gauge(value) | sample::Value::FloatCounter(value) => {
                is_stale_marker(value)
            }
            sample::Value::Counter(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_marker_bits_are_a_marker() {
        assert!(stale_marker().is_nan());
        assert!(is_stale_marker(stale_marker()));
        assert!(!is_stale_marker(f64::NAN));
        assert!(!is_stale_marker(0.0));
        assert!(sample::Value::Gauge(stale_marker()).is_stale_marker());
        assert!(sample::Value::FloatCounter(stale_marker()).is_stale_marker());
        assert!(!sample::Value::Gauge(f64::NAN).is_stale_marker());
        assert!(!sample::Value::Counter(STALE_MARKER_BITS).is_stale_marker());
    }
}
