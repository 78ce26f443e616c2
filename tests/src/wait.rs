//! Polling for a condition with a deadline.
//!
//! Tests synchronise with servers and Vigil processes by awaiting an observable
//! condition (a port answers, a document is indexed), never by sleeping a fixed time.

use std::thread;
use std::time::{Duration, Instant};

/// How often [`wait_until`] checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Some`, and returns that value.
///
/// Panics with `what` in the message once `deadline` has passed, so a failing test
/// says which condition never held (e.g. "3 documents in index logs-x").
pub fn wait_until<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    match poll_until(deadline, &mut check) {
        Some(value) => value,
        None => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Some` or `deadline` passes.
///
/// The non-panicking form of [`wait_until`], for callers that add their own context
/// (such as a server's log) to the failure.
pub fn poll_until<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if started.elapsed() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until `progress` reaches `target`, for as long as it keeps moving: panics
/// with `what` and the last value once it has not grown for `stall_limit`. For
/// work whose pace depends on the machine's load (a backlog draining into a slow
/// server), where a stall is the failure and slowness is not.
pub fn wait_while_progressing(
    what: &str,
    target: u64,
    stall_limit: Duration,
    mut progress: impl FnMut() -> u64,
) {
    let mut best = progress();
    let mut moved = Instant::now();
    while best < target {
        thread::sleep(POLL_INTERVAL);
        let now = progress();
        if now > best {
            best = now;
            moved = Instant::now();
        } else if moved.elapsed() >= stall_limit {
            panic!("{what}: stuck at {best} of {target} for {stall_limit:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value_the_check_yields() {
        let mut calls = 0;
        let value = wait_until("third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls * 10)
        });
        assert_eq!(value, 30);
    }

    #[test]
    #[should_panic(expected = "timed out after 200ms waiting for something that never happens")]
    fn panics_with_what_on_timeout() {
        wait_until(
            "something that never happens",
            Duration::from_millis(200),
            || None::<()>,
        );
    }

    #[test]
    fn waits_on_slow_progress_and_fails_on_a_stall() {
        let mut count = 0;
        wait_while_progressing("slow", 5, Duration::from_millis(500), || {
            count += 1;
            count / 3
        });
        assert_eq!(count / 3, 5);
        let stalled = std::panic::catch_unwind(|| {
            wait_while_progressing("stalled", 5, Duration::from_millis(300), || 2)
        });
        let message = stalled.expect_err("a stall fails");
        assert_eq!(
            message.downcast_ref::<String>().map(String::as_str),
            Some("stalled: stuck at 2 of 5 for 300ms")
        );
    }
}
