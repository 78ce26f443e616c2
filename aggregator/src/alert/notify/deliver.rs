//! Delivery: one task per receiver takes notifications from its own queue, in
//! order, renders them for the receiver, makes one try at sending each, and
//! tells the dispatcher how it went. A 2xx is accepted; 408, 429, 5xx,
//! connection errors and an unreadable secret may pass, so the dispatcher tries
//! the group again later (after the receiver's `Retry-After` if it sent one);
//! other 4xx and a body over the receiver's size limit would only fail again,
//! so they are refused for good, logged and counted. A failing receiver only
//! delays its own queue: evaluation and the other receivers go on.

use super::config::Receiver;
use super::dispatch::{FailureLabels, Notification};
use super::route::GroupId;
use super::text::console_line;
use super::{pagerduty, slack, webhook};
use chrono::{DateTime, NaiveDateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a refusing receiver's answer is logged.
const LOGGED_ANSWER_CHARS: usize = 200;

/// The HTTP client of every receiver.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// How one try at a notification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// The receiver took it.
    Accepted,
    /// It failed in a way that may pass: try again, after `after` if the
    /// receiver named a time.
    Retry { after: Option<Duration> },
    /// The receiver refused it, and would refuse it again.
    Refused,
}

/// The answer to one notification, for the dispatcher.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) group: GroupId,
    pub(crate) attempt: Attempt,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) receiver: String,
    pub(crate) outcome: &'static str,
}

/// The delivery task of one receiver.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) receiver: Receiver,
    pub(crate) http: reqwest::Client,
    pub(crate) external_url: String,
    /// Notifications finished, by outcome: `sent` or `failed` (refused for good).
    pub(crate) notifications: Family<OutcomeLabels, Counter>,
    /// Notifications refused for good, by reason.
    pub(crate) failures: Family<FailureLabels, Counter>,
    /// Failed tries that will be repeated, by reason.
    pub(crate) retries: Family<FailureLabels, Counter>,
    pub(crate) duration: Histogram,
    pub(crate) depth: Gauge,
}

/// Why a try failed, and whether it is worth another.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Retry {
        reason: &'static str,
        after: Option<Duration>,
        detail: String,
    },
    Refused {
        reason: &'static str,
        detail: String,
    },
}

impl Delivery {
    /// Delivers until the dispatcher is gone, telling it on `finished` how
    /// each notification went.
    pub(crate) async fn run(
        self,
        mut queue: mpsc::Receiver<Notification>,
        finished: mpsc::UnboundedSender<Finished>,
    ) {
        while let Some(notification) = queue.recv().await {
            self.depth.dec();
            let attempt = self.deliver(&notification).await;
            // The dispatcher only goes away with the notifier.
            let _ = finished.send(Finished {
                group: notification.group,
                attempt,
            });
        }
    }

    /// Makes one try at `notification`, and counts and logs how it went.
    pub(crate) async fn deliver(&self, notification: &Notification) -> Attempt {
        let started = Instant::now();
        let result = self.send(notification).await;
        self.duration.observe(started.elapsed().as_secs_f64());
        let receiver = self.receiver.name();
        let outcome = |outcome| OutcomeLabels {
            receiver: receiver.to_owned(),
            outcome,
        };
        let failure = |reason| FailureLabels {
            receiver: receiver.to_owned(),
            reason,
        };
        let group = &notification.group_key;
        match result {
            Ok(()) => {
                self.notifications.get_or_create(&outcome("sent")).inc();
                Attempt::Accepted
            }
            Err(Failure::Retry {
                reason,
                after,
                detail,
            }) => {
                self.retries.get_or_create(&failure(reason)).inc();
                let retry_after = after.map(|after| format!("{after:?}"));
                tracing::warn!(%receiver, %group, reason, error = %detail, retry_after, "notification failed; it is tried again");
                Attempt::Retry { after }
            }
            Err(Failure::Refused { reason, detail }) => {
                self.notifications.get_or_create(&outcome("failed")).inc();
                self.failures.get_or_create(&failure(reason)).inc();
                tracing::error!(%receiver, %group, reason, error = %detail, "notification refused; not tried again");
                Attempt::Refused
            }
        }
    }

    async fn send(&self, notification: &Notification) -> Result<(), Failure> {
        let external_url = &self.external_url;
        let secret = |field: &str, error: vigil_runtime::secret::SecretError| Failure::Retry {
            reason: "secret",
            after: None,
            detail: format!("`{field}` could not be read: {error}"),
        };
        let (url, body, limit) = match &self.receiver {
            Receiver::Console { .. } => {
                for alert in &notification.alerts {
                    println!("{}", console_line(alert));
                }
                return Ok(());
            }
            Receiver::Webhook { url, .. } => {
                let url = url.resolve().map_err(|error| secret("url", error))?;
                (url, webhook::body(notification, external_url), None)
            }
            Receiver::Pagerduty {
                routing_key, url, ..
            } => {
                let key = routing_key
                    .resolve()
                    .map_err(|error| secret("routing_key", error))?;
                let event = pagerduty::event(&key, notification, external_url);
                (url.clone(), event, Some(pagerduty::MAX_EVENT_BYTES))
            }
            Receiver::Slack { url, channel, .. } => {
                let url = url.resolve().map_err(|error| secret("url", error))?;
                let message = slack::message(notification, channel.as_deref(), external_url);
                (url, message, None)
            }
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        if let Some(limit) = limit
            && body.len() > limit
        {
            return Err(Failure::Refused {
                reason: "too_large",
                detail: format!(
                    "the body has {} bytes, more than the receiver takes ({limit})",
                    body.len()
                ),
            });
        }
        self.post(&url, body).await
    }

    /// POSTs `body` once. The URL is never logged: Slack's carries a token.
    async fn post(&self, url: &str, body: Vec<u8>) -> Result<(), Failure> {
        let sent = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                let reason = if error.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                };
                return Err(Failure::Retry {
                    reason,
                    after: None,
                    detail: error.without_url().to_string(),
                });
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let judgement = match judge(status) {
            Ok(()) => return Ok(()),
            Err(judgement) => judgement,
        };
        let answer = response.text().await.unwrap_or_default();
        let answer: String = answer.chars().take(LOGGED_ANSWER_CHARS).collect();
        let detail = format!("HTTP {status}: {answer}");
        Err(match judgement {
            Judgement::Retry(reason) => Failure::Retry {
                reason,
                after: retry_after,
                detail,
            },
            Judgement::Refuse(reason) => Failure::Refused { reason, detail },
        })
    }
}

/// What a failed HTTP answer means, with the reason counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    Retry(&'static str),
    Refuse(&'static str),
}

/// Alertmanager's reading of an answer, with 408 taken as the timeout it is:
/// 2xx accepted; 408, 429 and 5xx worth another try; anything else refused.
fn judge(status: StatusCode) -> Result<(), Judgement> {
    match status.as_u16() {
        200..=299 => Ok(()),
        408 => Err(Judgement::Retry("timeout")),
        429 => Err(Judgement::Retry("rate_limited")),
        500..=599 => Err(Judgement::Retry("server_error")),
        413 => Err(Judgement::Refuse("too_large")),
        400..=499 => Err(Judgement::Refuse("client_error")),
        _ => Err(Judgement::Refuse("unexpected_status")),
    }
}

/// The wait a `Retry-After` value asks for at `now`: delay-seconds, or an HTTP
/// date in any of the three forms HTTP allows (a date past is no wait).
/// `None` when it is neither.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let date = DateTime::parse_from_rfc2822(value)
        .map(|date| date.with_timezone(&Utc))
        .or_else(|_| {
            // RFC 850 and asctime, the obsolete forms.
            NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT")
                .or_else(|_| NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y"))
                .map(|date| date.and_utc())
        })
        .ok()?;
    Some(
        SystemTime::from(date)
            .duration_since(now)
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn answers_are_accepted_retried_or_refused_as_alertmanager_reads_them() {
        let judged = |status: u16| judge(StatusCode::from_u16(status).unwrap());
        assert_eq!(judged(200), Ok(()));
        assert_eq!(judged(202), Ok(()));
        assert_eq!(judged(408), Err(Judgement::Retry("timeout")));
        assert_eq!(judged(429), Err(Judgement::Retry("rate_limited")));
        for status in [500, 502, 503, 504] {
            assert_eq!(judged(status), Err(Judgement::Retry("server_error")));
        }
        for status in [400, 401, 403, 404, 422] {
            assert_eq!(judged(status), Err(Judgement::Refuse("client_error")));
        }
        assert_eq!(judged(413), Err(Judgement::Refuse("too_large")));
        assert_eq!(judged(304), Err(Judgement::Refuse("unexpected_status")));
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_any_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT, the example of RFC 9110.
        let date = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = date - Duration::from_secs(90);
        let parsed = |value| parse_retry_after(value, now);
        assert_eq!(parsed("120"), Some(Duration::from_secs(120)));
        assert_eq!(parsed(" 0 "), Some(Duration::ZERO));
        assert_eq!(parsed("99999999999999999999999"), Some(Duration::MAX));
        let ninety = Some(Duration::from_secs(90));
        assert_eq!(parsed("Sun, 06 Nov 1994 08:49:37 GMT"), ninety);
        assert_eq!(parsed("Sunday, 06-Nov-94 08:49:37 GMT"), ninety);
        assert_eq!(parsed("Sun Nov  6 08:49:37 1994"), ninety);
        assert_eq!(
            parse_retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                date + Duration::from_secs(5)
            ),
            Some(Duration::ZERO),
            "a date past asks for no wait"
        );
        assert_eq!(parsed("soon"), None);
        assert_eq!(parsed("-5"), None);
        assert_eq!(parsed(""), None);
    }
}
