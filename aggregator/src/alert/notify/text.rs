//! The words of a notification, shared by the receivers that people read: the
//! title of a group (`[FIRING:2] HostDown fra`), one line per alert, and the
//! console line of the all-in-one mode.

use super::dispatch::Notification;
use vigil_proto::labels::find;
use vigil_proto::v1::{AlertEvent, AlertStatus};

/// Alertmanager's default title: status with the number of firing alerts, then
/// the values of the group labels, then the common `summary` when there is one.
pub(crate) fn title(notification: &Notification) -> String {
    let firing = firing_count(notification);
    let status = if firing > 0 {
        format!("FIRING:{firing}")
    } else {
        "RESOLVED".to_owned()
    };
    let values: Vec<&str> = notification
        .group_labels
        .values()
        .map(String::as_str)
        .collect();
    let mut title = format!("[{status}] {}", values.join(" "));
    if let Some(summary) = common_annotation(&notification.alerts, "summary") {
        title = format!("{}: {summary}", title.trim_end());
    }
    title.trim_end().to_owned()
}

pub(crate) fn firing_count(notification: &Notification) -> usize {
    notification
        .alerts
        .iter()
        .filter(|alert| alert.status() == AlertStatus::Firing)
        .count()
}

/// The annotation `name` when every alert has it with the same value.
fn common_annotation<'a>(alerts: &'a [AlertEvent], name: &str) -> Option<&'a str> {
    let first = find(&alerts.first()?.annotations, name)?;
    alerts
        .iter()
        .all(|alert| find(&alert.annotations, name) == Some(first))
        .then_some(first)
}

/// `FIRING HostDown host=web-1 severity=page: web-1 unreachable`, then the
/// description on the next line if the alert has one.
pub(crate) fn alert_line(event: &AlertEvent) -> String {
    let status = match event.status() {
        AlertStatus::Firing => "FIRING",
        _ => "RESOLVED",
    };
    let mut line = format!("{status} {}", event.alert);
    for label in event.labels.iter().filter(|l| l.name != "alertname") {
        line.push_str(&format!(" {}={}", label.name, label.value));
    }
    if let Some(summary) = find(&event.annotations, "summary") {
        line.push_str(&format!(": {summary}"));
    }
    if let Some(description) = find(&event.annotations, "description") {
        line.push_str(&format!("\n{description}"));
    }
    line
}

/// `ALERT FIRING   Watchdog  host=web-1 severity=none  summary`, for the console.
pub fn console_line(event: &AlertEvent) -> String {
    let status = match event.status() {
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
    let summary = find(&event.annotations, "summary").unwrap_or_default();
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
