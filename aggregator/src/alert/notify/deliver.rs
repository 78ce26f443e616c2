//! Delivery: one task per receiver takes notifications from its own queue, in
//! order, renders them for the receiver and sends them, retrying 429, 5xx and
//! connection errors with exponential backoff up to a cap, never other 4xx (the
//! same body would be refused again). A failing receiver only delays its own
//! queue: evaluation and the other receivers go on.

use super::config::{Receiver, RetryPolicy};
use super::dispatch::{DeliveryKey, Notification, OutcomeLabels};
use super::text::console_line;
use super::{pagerduty, slack, webhook};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client of every receiver.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// What happened to one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    /// Retries exhausted, or the receiver could not even be asked (a secret
    /// missing).
    Failed,
    /// Refused with a 4xx other than 429.
    Rejected,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }
}

/// The delivery task of one receiver.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) receiver: Receiver,
    pub(crate) http: reqwest::Client,
    pub(crate) external_url: String,
    pub(crate) retry: RetryPolicy,
    pub(crate) notifications: Family<OutcomeLabels, Counter>,
    pub(crate) duration: Histogram,
    pub(crate) depth: Gauge,
}

impl Delivery {
    /// Delivers until the dispatcher is gone, reporting each finished
    /// notification's events on `finished`.
    pub(crate) async fn run(
        self,
        mut queue: mpsc::Receiver<Notification>,
        finished: mpsc::UnboundedSender<Vec<DeliveryKey>>,
    ) {
        while let Some(notification) = queue.recv().await {
            self.depth.dec();
            let started = Instant::now();
            let outcome = self.deliver(&notification).await;
            self.duration.observe(started.elapsed().as_secs_f64());
            self.notifications
                .get_or_create(&OutcomeLabels {
                    receiver: self.receiver.name().to_owned(),
                    outcome: outcome.as_str(),
                })
                .inc();
            // The dispatcher only goes away with the notifier.
            let _ = finished.send(notification.awaiting);
        }
    }

    async fn deliver(&self, notification: &Notification) -> Outcome {
        let external_url = &self.external_url;
        let request = match &self.receiver {
            Receiver::Console { .. } => {
                for alert in &notification.alerts {
                    println!("{}", console_line(alert));
                }
                return Outcome::Sent;
            }
            Receiver::Webhook { url, .. } => {
                Ok((url.clone(), webhook::body(notification, external_url)))
            }
            Receiver::Pagerduty {
                routing_key, url, ..
            } => routing_key
                .resolve()
                .map(|key| {
                    (
                        url.clone(),
                        pagerduty::event(&key, notification, external_url),
                    )
                })
                .map_err(|error| ("routing_key", error)),
            Receiver::Slack { url, channel, .. } => url
                .resolve()
                .map(|url| {
                    let message = slack::message(notification, channel.as_deref(), external_url);
                    (url, message)
                })
                .map_err(|error| ("url", error)),
        };
        match request {
            Ok((url, body)) => self.post(&url, &body).await,
            Err((field, error)) => {
                tracing::error!(receiver = %self.receiver.name(), field, %error, "notification not sent: its secret could not be read");
                Outcome::Failed
            }
        }
    }

    /// POSTs `body`, retrying what may succeed later. The URL is never logged:
    /// Slack's carries a token.
    async fn post(&self, url: &str, body: &Value) -> Outcome {
        let receiver = self.receiver.name();
        let mut backoff = self.retry.first_backoff;
        for attempt in 1..=self.retry.attempts {
            let failure = match self.http.post(url).json(body).send().await {
                Ok(response) if response.status().is_success() => return Outcome::Sent,
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    let status = response.status();
                    let reason = response.text().await.unwrap_or_default();
                    let reason: String = reason.chars().take(200).collect();
                    tracing::error!(%receiver, %status, %reason, "notification refused; not retried");
                    return Outcome::Rejected;
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(error) => error.without_url().to_string(),
            };
            tracing::warn!(%receiver, attempt, error = %failure, "notification failed");
            if attempt < self.retry.attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.retry.max_backoff);
            }
        }
        Outcome::Failed
    }
}
