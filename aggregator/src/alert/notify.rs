//! Pagers: where the alert stage sends firing and resolved alerts. A webhook
//! receiver gets the Alertmanager webhook format, so existing receivers work; the
//! console receiver prints alerts for the all-in-one mode.
//!
//! Notifications run on their own task behind a bounded queue, in order, so a slow
//! receiver never stalls rule evaluation and a resolve never overtakes its firing.

use crate::rules::alertmanager_payload;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Deserialize;
use std::time::Duration;
use tokio::sync::mpsc;
use vigil_proto::v1::{AlertEvent, AlertStatus};
use vigil_runtime::SelfMetrics;

/// How many times a webhook delivery is tried before it is given up and counted.
const WEBHOOK_ATTEMPTS: u32 = 5;

/// One receiver of notifications.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Receiver {
    /// POSTs the Alertmanager webhook format (version 4) to `url`.
    Webhook {
        /// Receiver name, sent as `receiver` in the payload.
        name: String,
        url: String,
    },
    /// Prints one line per alert to standard output.
    Console,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    receiver: String,
    outcome: &'static str,
}

/// Sends notifications to every receiver, in order, off the evaluation path.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: mpsc::Sender<AlertEvent>,
}

impl Notifier {
    /// Starts the delivery task for `receivers`.
    pub fn start(receivers: Vec<Receiver>, external_url: String, metrics: &SelfMetrics) -> Self {
        let deliveries = metrics.register(
            "alert_notifications",
            "Notifications sent, by receiver and outcome",
            Family::<DeliveryLabels, Counter>::default(),
        );
        let (queue, mut pending) = mpsc::channel::<AlertEvent>(1024);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        tokio::spawn(async move {
            while let Some(event) = pending.recv().await {
                for receiver in &receivers {
                    let (name, outcome) = match receiver {
                        Receiver::Console => {
                            println!("{}", console_line(&event));
                            ("console", "sent")
                        }
                        Receiver::Webhook { name, url } => {
                            let payload = alertmanager_payload(
                                name,
                                std::slice::from_ref(&event),
                                &external_url,
                            );
                            (name.as_str(), post_with_retries(&http, url, &payload).await)
                        }
                    };
                    deliveries
                        .get_or_create(&DeliveryLabels {
                            receiver: name.to_owned(),
                            outcome,
                        })
                        .inc();
                }
            }
        });
        Self { queue }
    }

    /// Queues `event` if receivers care about it (firing and resolved alerts).
    pub async fn notify(&self, event: &AlertEvent) {
        let status = AlertStatus::try_from(event.status).unwrap_or_default();
        if matches!(status, AlertStatus::Firing | AlertStatus::Resolved) {
            // The task only ends with the process.
            let _ = self.queue.send(event.clone()).await;
        }
    }
}

async fn post_with_retries(
    http: &reqwest::Client,
    url: &str,
    payload: &serde_json::Value,
) -> &'static str {
    let mut backoff = Duration::from_millis(200);
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let failure = match http.post(url).json(payload).send().await {
            Ok(response) if response.status().is_success() => return "sent",
            Ok(response) => format!("HTTP {}", response.status()),
            Err(error) => error.to_string(),
        };
        tracing::warn!(%url, attempt, error = %failure, "webhook delivery failed");
        if attempt < WEBHOOK_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    "failed"
}

/// `FIRING  Watchdog  host=web-1 severity=none  summary`, for the console.
pub fn console_line(event: &AlertEvent) -> String {
    let status = match AlertStatus::try_from(event.status).unwrap_or_default() {
        AlertStatus::Firing => "FIRING  ",
        AlertStatus::Resolved => "RESOLVED",
        AlertStatus::Pending => "PENDING ",
        AlertStatus::Unspecified => "UNKNOWN ",
    };
    let labels: Vec<String> = event
        .labels
        .iter()
        .filter(|l| l.name != "alertname")
        .map(|l| format!("{}={}", l.name, l.value))
        .collect();
    let summary = vigil_proto::labels::find(&event.annotations, "summary").unwrap_or_default();
    format!(
        "ALERT {status} {}  {}  {summary}",
        event.alert,
        labels.join(" ")
    )
    .trim_end()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::label;

    #[test]
    fn console_lines_name_status_alert_labels_and_summary() {
        let event = AlertEvent {
            alert: "ErrorBurst".into(),
            status: AlertStatus::Firing as i32,
            labels: vec![
                label("alertname", "ErrorBurst"),
                label("host.name", "web-1"),
                label("severity", "page"),
            ],
            annotations: vec![label("summary", "5 errors in 1m")],
            fingerprint: "f".into(),
            ..AlertEvent::default()
        };
        assert_eq!(
            console_line(&event),
            "ALERT FIRING   ErrorBurst  host.name=web-1 severity=page  5 errors in 1m"
        );
    }
}
