//! What a message from the wire may carry: the limits behind every batch's
//! [`Payload::check`](crate::Payload::check), shared by both decoders (prost's
//! through [`Payload::from_payload`](crate::Payload::from_payload), and the
//! borrowing [`MetricBatchView`](crate::view::MetricBatchView)), so that every
//! stage accepts or refuses a message alike and nothing a stage computes from an
//! accepted one can overflow or panic. A refused message goes to the dead-letter
//! topic with the reason these checks give, which names the field and its value.
//!
//! - **Times** are nanoseconds since the Unix epoch, from 1970 up to
//!   [`LATEST_UNIX_NANO`] (2200-01-01): the 62 years left before `i64` runs out
//!   leave room for every window, lateness and wait a stage adds to one. A time
//!   that must be set (a sample's, when an alert became active) is after 1970; one
//!   that may be unset (a log line's, an alert's end) may also be 0. The range is
//!   fixed rather than relative to the clock, so a message decodes the same way
//!   whenever it is read again.
//! - **Names**: a sample has a metric name; every label, resource attribute and
//!   group label has a name (its value may be empty).
//! - **Label sets** hold at most [`MAX_LABELS`] labels: a sample's labels, a
//!   resource's attributes, a partial aggregate's group, an alert's labels and its
//!   annotations.
//! - **Values**: a gauge may be NaN or ±∞, as in Prometheus (a summary quantile
//!   of no observations is NaN); the stages skip such values where they compute.
//!   So may a float counter; a NaN with the bits of a
//!   [staleness marker](crate::staleness) ends its series.
//!   A partial aggregate's sum, min and max are finite, and min ≤ max once it
//!   counted a value.
//! - **Log lines**: each line's offset plus its length fits in 64 bits, and the
//!   lines of a batch do not overlap. A line carries at most [`MAX_LOG_FIELDS`]
//!   parsed fields, each name at most [`MAX_LOG_FIELD_NAME_BYTES`] long and each
//!   value at most [`MAX_LOG_FIELD_VALUE_BYTES`].

/// The most labels one label set may hold.
pub const MAX_LABELS: usize = 1_000;

/// The most parsed fields one log line may carry.
pub const MAX_LOG_FIELDS: usize = 1_000;

/// The longest name of a log line's field, in bytes. Elasticsearch indexes each
/// key of the `fields` object together with its value as one term, and refuses
/// a document with a term beyond 32 KiB.
pub const MAX_LOG_FIELD_NAME_BYTES: usize = 1_024;

/// The longest value of a log line's field, in bytes: no longer than the
/// longest line the agent reads.
pub const MAX_LOG_FIELD_VALUE_BYTES: usize = 1024 * 1024;

/// 2200-01-01T00:00:00Z in nanoseconds since the Unix epoch: the latest time a
/// message may carry.
pub const LATEST_UNIX_NANO: i64 = 7_258_118_400 * 1_000_000_000;

// Sixty years of headroom before `i64` nanoseconds run out.
const _: () = assert!(LATEST_UNIX_NANO < i64::MAX - 60 * 365 * 86_400 * 1_000_000_000);

/// [`LATEST_UNIX_NANO`] as people read it.
const LATEST_DATE: &str = "2200-01-01";

/// Whether a time may be 0 (unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unset {
    Allowed,
    Refused,
}

/// Checks the time in `field`; the reason reads after the subject it is about,
/// as in "sample 3 (`cpu`) has no `time_unix_nano` (it is 0)".
pub(crate) fn time(field: &str, value: i64, unset: Unset) -> Result<(), String> {
    if value == 0 && unset == Unset::Refused {
        Err(format!("has no `{field}` (it is 0)"))
    } else if value < 0 {
        Err(format!(
            "has `{field}` {value}, before 1970 (times are nanoseconds since the Unix epoch)"
        ))
    } else if value > LATEST_UNIX_NANO {
        Err(format!(
            "has `{field}` {value}, after {LATEST_DATE} (times are nanoseconds since the Unix epoch)"
        ))
    } else {
        Ok(())
    }
}

/// Checks a label set of which `names` are the names; `noun` says what one of
/// them is ("label", "attribute"). The reason reads after the subject, as in
/// [`time`].
pub(crate) fn labels<'a>(
    noun: &str,
    mut names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), String> {
    let count = names.len();
    if count > MAX_LABELS {
        return Err(format!(
            "has {count} {noun}s, more than the {MAX_LABELS} allowed"
        ));
    }
    match names.position(str::is_empty) {
        Some(position) => Err(format!("has an unnamed {noun} at position {position}")),
        None => Ok(()),
    }
}

/// Checks the parsed fields of a log line, given as `(name, value)` pairs. The
/// reason reads after the subject, as in [`time`].
pub(crate) fn log_fields<'a>(
    fields: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    let count = fields.len();
    if count > MAX_LOG_FIELDS {
        return Err(format!(
            "has {count} fields, more than the {MAX_LOG_FIELDS} allowed"
        ));
    }
    for (position, (name, value)) in fields.enumerate() {
        if name.len() > MAX_LOG_FIELD_NAME_BYTES {
            return Err(format!(
                "has a field name of {} bytes at position {position} (`{}…`), longer than the {MAX_LOG_FIELD_NAME_BYTES} allowed",
                name.len(),
                name.chars().take(32).collect::<String>()
            ));
        }
        if value.len() > MAX_LOG_FIELD_VALUE_BYTES {
            return Err(format!(
                "has field `{name}` with a value of {} bytes, longer than the {MAX_LOG_FIELD_VALUE_BYTES} allowed",
                value.len()
            ));
        }
    }
    Ok(())
}

/// The checks of a metric batch's resource, for both decoders.
pub(crate) fn resource<'a>(
    id: &str,
    attribute_names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty resource id".into());
    }
    labels("attribute", attribute_names).map_err(|reason| format!("resource `{id}` {reason}"))
}

/// The checks of one sample of a metric batch, for both decoders.
pub(crate) fn sample<'a>(
    index: usize,
    name: &str,
    time_unix_nano: i64,
    has_value: bool,
    label_names: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("sample {index} has no name"));
    }
    time("time_unix_nano", time_unix_nano, Unset::Refused)
        .and_then(|()| {
            if has_value {
                Ok(())
            } else {
                Err("has no value".into())
            }
        })
        .and_then(|()| labels("label", label_names))
        .map_err(|reason| format!("sample {index} (`{name}`) {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_time_is_the_start_of_2200() {
        // 2200-01-01 is 230 years of 365 days, plus the 56 leap days since 1970
        // (2000 was a leap year, 2100 is not).
        let days: i64 = 230 * 365 + 56;
        assert_eq!(LATEST_UNIX_NANO, days * 86_400 * 1_000_000_000);
    }

    #[test]
    fn times_outside_1970_to_2200_are_refused_with_field_and_value() {
        assert_eq!(time("t", 1, Unset::Refused), Ok(()));
        assert_eq!(time("t", 0, Unset::Allowed), Ok(()));
        assert_eq!(time("t", LATEST_UNIX_NANO, Unset::Refused), Ok(()));
        assert_eq!(
            time("t", 0, Unset::Refused).unwrap_err(),
            "has no `t` (it is 0)"
        );
        assert_eq!(
            time("t", i64::MIN, Unset::Allowed).unwrap_err(),
            "has `t` -9223372036854775808, before 1970 (times are nanoseconds since the Unix epoch)"
        );
        assert_eq!(
            time("t", i64::MAX, Unset::Allowed).unwrap_err(),
            "has `t` 9223372036854775807, after 2200-01-01 (times are nanoseconds since the Unix epoch)"
        );
    }

    #[test]
    fn label_sets_are_bounded_and_named() {
        assert_eq!(labels("label", ["a", "b"].into_iter()), Ok(()));
        assert_eq!(
            labels("label", ["a", ""].into_iter()).unwrap_err(),
            "has an unnamed label at position 1"
        );
        let many = vec!["x"; MAX_LABELS + 1];
        assert_eq!(
            labels("attribute", many.into_iter()).unwrap_err(),
            "has 1001 attributes, more than the 1000 allowed"
        );
        assert_eq!(labels("label", vec!["x"; MAX_LABELS].into_iter()), Ok(()));
    }

    #[test]
    fn log_fields_are_bounded_in_count_name_and_value() {
        assert_eq!(log_fields([("user.name", "alice")].into_iter()), Ok(()));
        let many = vec![("x", "y"); MAX_LOG_FIELDS + 1];
        assert_eq!(
            log_fields(many.into_iter()).unwrap_err(),
            "has 1001 fields, more than the 1000 allowed"
        );
        assert_eq!(
            log_fields(vec![("x", "y"); MAX_LOG_FIELDS].into_iter()),
            Ok(())
        );
        let long_name = "n".repeat(MAX_LOG_FIELD_NAME_BYTES + 1);
        assert_eq!(
            log_fields([("a", ""), (long_name.as_str(), "v")].into_iter()).unwrap_err(),
            format!(
                "has a field name of 1025 bytes at position 1 (`{}…`), longer than the 1024 allowed",
                "n".repeat(32)
            )
        );
        let name = "n".repeat(MAX_LOG_FIELD_NAME_BYTES);
        let value = "v".repeat(MAX_LOG_FIELD_VALUE_BYTES);
        assert_eq!(
            log_fields([(name.as_str(), value.as_str())].into_iter()),
            Ok(())
        );
        let long_value = "v".repeat(MAX_LOG_FIELD_VALUE_BYTES + 1);
        assert_eq!(
            log_fields([("message", long_value.as_str())].into_iter()).unwrap_err(),
            "has field `message` with a value of 1048577 bytes, longer than the 1048576 allowed"
        );
    }
}
