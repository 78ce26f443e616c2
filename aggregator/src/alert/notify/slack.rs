//! The Slack receiver: one incoming-webhook message per notification of a group,
//! an attachment coloured by status whose title names the alerts and whose text
//! has one line per alert with its labels, summary and description.

use super::dispatch::Notification;
use super::text::{alert_line, firing_count, title};
use serde_json::{Value, json};

/// The incoming-webhook body for `notification`.
pub(crate) fn message(
    notification: &Notification,
    channel: Option<&str>,
    external_url: &str,
) -> Value {
    let title = title(notification);
    let lines: Vec<String> = notification.alerts.iter().map(alert_line).collect();
    let mut attachment = json!({
        "color": if firing_count(notification) > 0 { "danger" } else { "good" },
        "title": title,
        "fallback": title,
        "text": lines.join("\n"),
    });
    if !external_url.is_empty() {
        attachment["title_link"] = Value::String(external_url.to_owned());
    }
    let mut body = json!({ "attachments": [attachment] });
    if let Some(channel) = channel {
        body["channel"] = Value::String(channel.to_owned());
    }
    body
}
