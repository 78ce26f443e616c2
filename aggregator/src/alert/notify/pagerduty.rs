//! The PagerDuty receiver: one Events API v2 event per notification of a group.
//!
//! A group is one incident, as with Alertmanager: `trigger` while any of its
//! alerts fires (repeated triggers update the incident), `resolve` once all are
//! resolved. The `dedup_key` is a hash of the group key, which depends only on
//! the routing tree and the group's labels, so it is the same after a restart
//! and the resolve closes the incident the trigger opened. An event over the
//! API's size limit loses its custom details, as with Alertmanager, so that the
//! page still goes out.

use super::dispatch::Notification;
use super::text::{firing_count, title};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value, json};
use vigil_proto::labels::find;
use vigil_proto::v1::{AlertStatus, Label};

/// Longest `summary` PagerDuty accepts.
const MAX_SUMMARY_CHARS: usize = 1024;

/// Largest event the Events API takes, in bytes, counted as Alertmanager does.
pub(crate) const MAX_EVENT_BYTES: usize = 512_000;

/// The dedup key of a group: 32 hex digits of a 128-bit hash of its group key.
pub(crate) fn dedup_key(group_key: &str) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(group_key.as_bytes()))
}

/// The Events API v2 body for `notification`.
pub(crate) fn event(routing_key: &str, notification: &Notification, external_url: &str) -> Value {
    let dedup_key = dedup_key(&notification.group_key);
    let firing = firing_count(notification);
    if firing == 0 {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        });
    }
    let summary: String = title(notification)
        .chars()
        .take(MAX_SUMMARY_CHARS)
        .collect();
    let common = |name: &str| {
        let first = find(&notification.alerts[0].labels, name)?;
        notification
            .alerts
            .iter()
            .all(|alert| find(&alert.labels, name) == Some(first))
            .then_some(first)
    };
    let alerts: Vec<Value> = notification
        .alerts
        .iter()
        .map(|alert| {
            json!({
                "status": if alert.status() == AlertStatus::Firing { "firing" } else { "resolved" },
                "labels": object(&alert.labels),
                "annotations": object(&alert.annotations),
                "starts_at": DateTime::from_timestamp_nanos(alert.starts_at_unix_nano)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            })
        })
        .collect();
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": common("host").unwrap_or("vigil"),
            "severity": severity(common("severity")),
            "custom_details": {
                "num_firing": firing,
                "num_resolved": notification.alerts.len() - firing,
                "alerts": alerts,
            },
        },
        "client": "Vigil",
    });
    if !external_url.is_empty() {
        body["client_url"] = Value::String(external_url.to_owned());
    }
    if encoded_len(&body) > MAX_EVENT_BYTES {
        body["payload"]["custom_details"] = json!({
            "error": format!(
                "custom details left out: the event was over PagerDuty's limit of {MAX_EVENT_BYTES} bytes"
            ),
        });
    }
    body
}

fn encoded_len(body: &Value) -> usize {
    serde_json::to_vec(body).map_or(0, |bytes| bytes.len())
}

/// PagerDuty's severities pass through; Vigil's `page` is `critical`; anything
/// else is `error`, PagerDuty's own default.
fn severity(label: Option<&str>) -> &'static str {
    match label {
        Some("critical" | "page") => "critical",
        Some("warning") => "warning",
        Some("info") => "info",
        _ => "error",
    }
}

fn object(labels: &[Label]) -> Value {
    let map: Map<String, Value> = labels
        .iter()
        .map(|l| (l.name.clone(), Value::String(l.value.clone())))
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::notify::route::GroupId;
    use std::collections::BTreeMap;
    use vigil_proto::labels::label;
    use vigil_proto::v1::AlertEvent;

    fn notification(description: &str) -> Notification {
        let alert = AlertEvent {
            labels: vec![label("alertname", "HostDown"), label("host", "web-1")],
            annotations: vec![label("description", description)],
            status: AlertStatus::Firing as i32,
            ..AlertEvent::default()
        };
        Notification {
            receiver: "oncall".into(),
            group: GroupId {
                route: 0,
                labels: BTreeMap::new(),
            },
            group_key: "{}:{}".into(),
            group_labels: BTreeMap::new(),
            alerts: vec![alert],
        }
    }

    #[test]
    fn an_event_over_the_size_limit_still_pages_without_its_details() {
        let small = event("KEY", &notification("short"), "");
        assert_eq!(small["payload"]["custom_details"]["num_firing"], 1);

        let huge = event("KEY", &notification(&"x".repeat(MAX_EVENT_BYTES)), "");
        assert!(encoded_len(&huge) <= MAX_EVENT_BYTES);
        assert_eq!(huge["event_action"], "trigger");
        assert_eq!(huge["payload"]["source"], "web-1");
        assert!(
            huge["payload"]["custom_details"]["error"]
                .as_str()
                .unwrap()
                .starts_with("custom details left out")
        );
    }
}
