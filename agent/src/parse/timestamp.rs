//! The `timestamp` step: the line's own time, from one of its fields, becomes its
//! event time (the time the agent read it stays beside it, as `event.created`).
//! Times are read with jiff: RFC 3339, ISO 8601 with or without zone, strftime
//! layouts, and epoch numbers; a stamp without zone is in the configured zone.

use jiff::civil::DateTime;
use jiff::fmt::strtime::{self, BrokenDownTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

/// One way a time may be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    /// RFC 3339 and ISO 8601: with or without offset, `T` or space, `.` or `,`.
    Iso8601,
    /// A number: seconds, milliseconds, microseconds or nanoseconds by its size.
    Epoch,
    EpochSeconds,
    EpochMillis,
    EpochMicros,
    EpochNanos,
    Strftime(String),
}

impl Layout {
    /// The layout named `name`, or a strftime layout; `None` when it is neither.
    pub(crate) fn named(name: &str) -> Result<Self, String> {
        Ok(match name {
            "rfc3339" | "iso8601" => Self::Iso8601,
            "epoch" => Self::Epoch,
            "epoch_s" => Self::EpochSeconds,
            "epoch_ms" => Self::EpochMillis,
            "epoch_us" => Self::EpochMicros,
            "epoch_ns" => Self::EpochNanos,
            layout if layout.contains('%') => {
                let probe = ZonedDateTime::new(Timestamp::UNIX_EPOCH, TimeZone::UTC);
                strtime::format(layout, &probe)
                    .map_err(|error| format!("is not a valid strftime layout: {error}"))?;
                Self::Strftime(layout.to_owned())
            }
            other => {
                return Err(format!(
                    "is neither a layout name (rfc3339, iso8601, epoch, epoch_s, epoch_ms, epoch_us, epoch_ns) nor a strftime layout with `%`: `{other}`"
                ));
            }
        })
    }

    /// The layouts tried when a step names none.
    pub(crate) fn defaults() -> Vec<Self> {
        vec![Self::Iso8601, Self::Epoch]
    }
}

/// The time zone called `name` (IANA), or the host's own when `None`.
pub(crate) fn zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None => Ok(TimeZone::system()),
        Some(name) => {
            TimeZone::get(name).map_err(|error| format!("is not a known time zone: {error}"))
        }
    }
}

/// Reads `text` with the first of `layouts` that fits, in nanoseconds since the
/// Unix epoch; a time without zone is in `zone`.
pub(crate) fn parse(text: &str, layouts: &[Layout], zone: &TimeZone) -> Result<i64, String> {
    let text = text.trim();
    for layout in layouts {
        if let Some(nanos) = parse_one(text, layout, zone) {
            return Ok(nanos);
        }
    }
    Err(format!("`{text}` is not a time in the step's layouts"))
}

fn parse_one(text: &str, layout: &Layout, zone: &TimeZone) -> Option<i64> {
    let timestamp = match layout {
        Layout::Iso8601 => iso8601(text, zone)?,
        Layout::Epoch => return epoch(text, None),
        Layout::EpochSeconds => return epoch(text, Some(1_000_000_000)),
        Layout::EpochMillis => return epoch(text, Some(1_000_000)),
        Layout::EpochMicros => return epoch(text, Some(1_000)),
        Layout::EpochNanos => return epoch(text, Some(1)),
        Layout::Strftime(layout) => {
            let mut broken = strtime::parse(layout, text).ok()?;
            with_zone(&mut broken, zone)?
        }
    };
    i64::try_from(timestamp.as_nanosecond()).ok()
}

/// RFC 3339 and the ISO 8601 forms logs use.
fn iso8601(text: &str, zone: &TimeZone) -> Option<Timestamp> {
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Some(timestamp);
    }
    let civil = text.parse::<DateTime>().ok()?;
    zone.to_ambiguous_timestamp(civil).compatible().ok()
}

/// A strftime result as a timestamp: its own offset if it has one, else in
/// `zone`; a stamp without year (syslog's) is in the current year, or the last
/// one when that would put it more than a day in the future.
fn with_zone(broken: &mut BrokenDownTime, zone: &TimeZone) -> Option<Timestamp> {
    if broken.offset().is_some() || broken.iana_time_zone().is_some() {
        return broken.to_timestamp().ok();
    }
    if broken.year().is_none() {
        let now = ZonedDateTime::now().with_time_zone(zone.clone());
        broken.set_year(Some(now.year())).ok()?;
        let civil = broken.to_datetime().ok()?;
        let timestamp = zone.to_ambiguous_timestamp(civil).compatible().ok()?;
        if timestamp > now.timestamp() + jiff::SignedDuration::from_hours(24) {
            broken.set_year(Some(now.year() - 1)).ok()?;
        } else {
            return Some(timestamp);
        }
    }
    let civil = broken.to_datetime().ok()?;
    zone.to_ambiguous_timestamp(civil).compatible().ok()
}

/// A number of `unit` nanoseconds, or with `None` of the unit its size says
/// (below 1e11 seconds, 1e14 milliseconds, 1e17 microseconds, else nanoseconds).
/// A fraction is kept down to the nanosecond.
fn epoch(text: &str, unit: Option<i64>) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|byte| byte.is_ascii_digit())
        || !fraction.bytes().all(|byte| byte.is_ascii_digit())
    {
        return None;
    }
    let value: i64 = whole.parse().ok()?;
    let unit = unit.unwrap_or(match value {
        0..100_000_000_000 => 1_000_000_000,
        100_000_000_000..100_000_000_000_000 => 1_000_000,
        100_000_000_000_000..100_000_000_000_000_000 => 1_000,
        _ => 1,
    });
    let mut nanos = value.checked_mul(unit)?;
    let mut scale = unit;
    for digit in fraction.bytes().take(9) {
        scale /= 10;
        nanos = nanos.checked_add(i64::from(digit - b'0') * scale)?;
    }
    Some(nanos)
}
