//! One blocking HTTP client for the harness, usable from sync and async tests.
//!
//! `reqwest::blocking` panics when it blocks inside a tokio runtime, so requests made
//! from within one run on a scoped helper thread instead.

use std::panic;
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use reqwest::blocking::Client;

/// Per-request timeout; servers on loopback answer well within it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `request` with the shared client, off any tokio runtime.
pub(crate) fn with_client<T: Send>(request: impl FnOnce(&Client) -> T + Send) -> T {
    off_runtime(|| request(client()))
}

fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_else(|error| panic!("cannot build the harness HTTP client: {error}"))
    })
}

fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    thread::scope(|scope| match scope.spawn(work).join() {
        Ok(value) => value,
        Err(payload) => panic::resume_unwind(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::WebhookReceiver;

    #[tokio::test]
    async fn requests_work_inside_a_tokio_runtime() {
        let receiver = WebhookReceiver::start();
        let status = with_client(|http| {
            http.post(receiver.url())
                .body("{}")
                .send()
                .expect("post from inside a runtime")
                .status()
        });
        assert!(status.is_success());
    }
}
