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
}
