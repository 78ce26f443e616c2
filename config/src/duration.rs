//! Durations as written in configuration, rule and rule-test files (`30s`, `5m`,
//! `1h30m`), in the notation Prometheus uses, so intervals, timeouts, `for` and
//! windows read the same everywhere in Vigil and as in Prometheus.
//!
//! Also the conversions of durations and times to the nanoseconds the wire format
//! counts in.
//!
//! Units are `ms`, `s`, `m`, `h`, `d` (24h) and `w` (7d), each used at most once and
//! from the largest to the smallest; a bare `0` is zero.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid duration `{text}`: {reason}")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

/// Units from the largest to the smallest, with their length in milliseconds.
const UNITS: [(&str, u64); 6] = [
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Longest duration accepted: event times are `i64` nanoseconds, so anything
/// longer could not be added to one.
const MAX_MILLIS: u64 = i64::MAX as u64 / 1_000_000;

/// Serde adapter for duration fields: `#[serde(with = "vigil_config::duration")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Parses `30s`, `5m`, `1h30m`, `2d`, `250ms` or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(error("empty"));
    }
    let mut rest = text;
    let mut millis: u64 = 0;
    // Index into UNITS of the smallest unit used so far: units must get smaller.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(error(
                "expected a number followed by a unit (ms, s, m, h, d, w)",
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| error("number too large"))?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                error("missing unit (ms, s, m, h, d, w)")
            } else {
                error("unknown unit (expected ms, s, m, h, d or w)")
            });
        };
        if index < next_unit {
            return Err(error(
                "units must go from largest to smallest, each at most once",
            ));
        }
        next_unit = index + 1;
        millis = number
            .checked_mul(UNITS[index].1)
            .and_then(|part| millis.checked_add(part))
            .filter(|total| *total <= MAX_MILLIS)
            .ok_or_else(|| error("too long"))?;
    }
    Ok(Duration::from_millis(millis))
}

/// Formats a duration in the notation [`parse_duration`] reads, to the millisecond:
/// `1h30m`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (name, length) in UNITS {
        let count = millis / length;
        if count > 0 {
            text.push_str(&count.to_string());
            text.push_str(name);
            millis %= length;
        }
    }
    text
}

/// A duration as nanoseconds of event time; durations are bounded by [`MAX_MILLIS`]
/// when parsed, so this never saturates for durations from rule files.
pub fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// Nanoseconds since the Unix epoch (0 for a time before it).
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_prometheus_notation() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        let message = |text| parse_duration(text).unwrap_err().to_string();
        assert_eq!(
            message("5"),
            "invalid duration `5`: missing unit (ms, s, m, h, d, w)"
        );
        assert_eq!(
            message("m5"),
            "invalid duration `m5`: expected a number followed by a unit (ms, s, m, h, d, w)"
        );
        assert_eq!(
            message("5 m"),
            "invalid duration `5 m`: missing unit (ms, s, m, h, d, w)"
        );
        assert_eq!(
            message("5y"),
            "invalid duration `5y`: unknown unit (expected ms, s, m, h, d or w)"
        );
        assert_eq!(
            message("30m1h"),
            "invalid duration `30m1h`: units must go from largest to smallest, each at most once"
        );
        assert_eq!(message(""), "invalid duration ``: empty");
        assert_eq!(
            message("99999999999999999999s"),
            "invalid duration `99999999999999999999s`: number too large"
        );
        assert_eq!(
            message("999999999w"),
            "invalid duration `999999999w`: too long"
        );
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s500ms");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(millis in 0..MAX_MILLIS) {
            let duration = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn parse_then_format_is_canonical(
            parts in proptest::collection::vec((0usize..6, 1u64..100), 1..4)
        ) {
            // Build a valid text from distinct units in decreasing order.
            let mut units: Vec<(usize, u64)> = parts;
            units.sort_by_key(|(unit, _)| *unit);
            units.dedup_by_key(|(unit, _)| *unit);
            let text: String = units
                .iter()
                .map(|(unit, count)| format!("{count}{}", UNITS[*unit].0))
                .collect();
            let parsed = parse_duration(&text).unwrap();
            prop_assert_eq!(parse_duration(&format_duration(parsed)), Ok(parsed));
        }
    }
}
