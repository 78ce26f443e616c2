//! The stage loop's guard against clocks far ahead: stages whose clock follows
//! event time (alert evaluation, derive windows) dead-letter a batch stamped
//! further in the future than this host's clock allows, before it reaches them.

use super::Rejection;
use std::time::{Duration, SystemTime};
use vigil_config::duration::{format_duration, nanos, unix_nanos};

/// How far ahead of this host's clock data may be stamped. A clock that follows
/// event time never goes back, so one batch from a host with a wrong clock would
/// otherwise move it into the future for good: every current series would look
/// stale to the alert rules, and every later sample late to the derive windows.
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Refuses a batch whose latest event time is too far ahead of this host's clock.
pub(super) fn refuse_if_ahead(latest_unix_nano: i64) -> Result<(), Rejection> {
    let limit = unix_nanos(SystemTime::now()).saturating_add(nanos(MAX_CLOCK_SKEW));
    check_not_ahead(latest_unix_nano, limit).map_err(|reason| Rejection {
        kind: "event_time_ahead",
        reason,
    })
}

/// Refuses event times after `limit_unix_nano`, saying by how much they are ahead.
fn check_not_ahead(latest_unix_nano: i64, limit_unix_nano: i64) -> Result<(), String> {
    if latest_unix_nano <= limit_unix_nano {
        return Ok(());
    }
    let ahead = Duration::from_nanos(latest_unix_nano.abs_diff(limit_unix_nano)) + MAX_CLOCK_SKEW;
    Err(format!(
        "event time is {} ahead of this host's clock (at most {} allowed); check the sender's clock",
        format_duration(Duration::from_secs(ahead.as_secs())),
        format_duration(MAX_CLOCK_SKEW)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_from_a_clock_far_ahead_is_refused_with_the_offset() {
        let now = 1_700_000_000_000_000_000;
        let limit = now + nanos(MAX_CLOCK_SKEW);
        assert!(check_not_ahead(now + 60_000_000_000, limit).is_ok());
        let two_hours = 7_200_000_000_000;
        assert_eq!(
            check_not_ahead(now + two_hours, limit).unwrap_err(),
            "event time is 2h ahead of this host's clock (at most 5m allowed); check the sender's clock"
        );
    }
}
