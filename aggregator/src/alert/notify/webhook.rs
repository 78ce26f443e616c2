//! The generic webhook receiver: the alerts of one group rendered as the
//! Alertmanager webhook payload (version 4), so receivers written for Alertmanager
//! work with the alert stage unchanged.

use super::dispatch::Notification;
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use vigil_proto::labels::find;
use vigil_proto::v1::{AlertEvent, AlertStatus, Label};

/// `endsAt` of an alert that is still firing, as Alertmanager sends it.
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

/// The webhook body for `notification`: the alerts as Alertmanager renders them,
/// with the group key and labels of the routing tree.
pub(crate) fn body(notification: &Notification, external_url: &str) -> Value {
    let mut body = alertmanager_payload(&notification.receiver, &notification.alerts, external_url);
    body["groupKey"] = Value::String(notification.group_key.clone());
    body["groupLabels"] = serde_json::to_value(&notification.group_labels).unwrap_or_default();
    body
}

/// The Alertmanager webhook body for `events`. Only `FIRING` and `RESOLVED` events
/// are notified; `PENDING` ones are left out (a body with no alerts is then
/// possible, and is the caller's to skip). `status` is `firing` when any alert
/// fires. Events that all share an `alertname` are grouped by it (`groupLabels`);
/// `generatorURL` is `external_url`.
fn alertmanager_payload(receiver: &str, events: &[AlertEvent], external_url: &str) -> Value {
    let notified: Vec<&AlertEvent> = events
        .iter()
        .filter(|event| matches!(event.status(), AlertStatus::Firing | AlertStatus::Resolved))
        .collect();
    let firing = notified
        .iter()
        .any(|event| event.status() == AlertStatus::Firing);
    let common_labels = common(notified.iter().map(|event| event.labels.as_slice()));
    let common_annotations = common(notified.iter().map(|event| event.annotations.as_slice()));
    let group_labels: BTreeMap<String, String> = common_labels
        .get("alertname")
        .map(|name| BTreeMap::from([("alertname".to_owned(), name.clone())]))
        .unwrap_or_default();
    let group_key = format!(
        "{{}}:{{{}}}",
        group_labels
            .iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let alerts: Vec<Value> = notified
        .iter()
        .map(|event| {
            let resolved = event.status() == AlertStatus::Resolved;
            json!({
                "status": if resolved { "resolved" } else { "firing" },
                "labels": object(&event.labels),
                "annotations": object(&event.annotations),
                "startsAt": rfc3339(event.starts_at_unix_nano),
                "endsAt": if resolved { rfc3339(event.ends_at_unix_nano) } else { NOT_ENDED.to_owned() },
                "generatorURL": external_url,
                "fingerprint": event.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// Labels (or annotations) with the same value in every list.
fn common<'a>(mut lists: impl Iterator<Item = &'a [Label]>) -> BTreeMap<String, String> {
    let Some(first) = lists.next() else {
        return BTreeMap::new();
    };
    let mut shared: BTreeMap<String, String> = first
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    for list in lists {
        shared.retain(|name, value| find(list, name) == Some(value.as_str()));
    }
    shared
}

fn object(labels: &[Label]) -> Value {
    let map: Map<String, Value> = labels
        .iter()
        .map(|l| (l.name.clone(), Value::String(l.value.clone())))
        .collect();
    Value::Object(map)
}

/// RFC 3339 in UTC with as many fraction digits as needed, as Alertmanager writes.
fn rfc3339(unix_nano: i64) -> String {
    DateTime::from_timestamp_nanos(unix_nano).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::labels::label;

    fn event(status: AlertStatus, host: &str) -> AlertEvent {
        AlertEvent {
            group: "host".into(),
            alert: "HostHighLoad".into(),
            labels: vec![
                label("alertname", "HostHighLoad"),
                label("host", host),
                label("severity", "warning"),
            ],
            annotations: vec![
                label("summary", format!("{host} is busy")),
                label("runbook", "r"),
            ],
            status: status as i32,
            starts_at_unix_nano: 1_700_000_000_000_000_000,
            ends_at_unix_nano: if status == AlertStatus::Resolved {
                1_700_000_060_500_000_000
            } else {
                0
            },
            value: 9.0,
            fingerprint: format!("fp-{host}"),
            evaluated_at_unix_nano: 1_700_000_060_500_000_000,
        }
    }

    #[test]
    fn renders_the_alertmanager_v4_shape() {
        let events = [
            event(AlertStatus::Firing, "web-1"),
            event(AlertStatus::Pending, "web-3"),
            event(AlertStatus::Resolved, "web-2"),
        ];
        let payload = alertmanager_payload("ops", &events, "http://vigil.example:9000");
        assert_eq!(
            payload,
            json!({
                "version": "4",
                "groupKey": "{}:{alertname=\"HostHighLoad\"}",
                "truncatedAlerts": 0,
                "status": "firing",
                "receiver": "ops",
                "groupLabels": {"alertname": "HostHighLoad"},
                "commonLabels": {"alertname": "HostHighLoad", "severity": "warning"},
                "commonAnnotations": {"runbook": "r"},
                "externalURL": "http://vigil.example:9000",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "HostHighLoad", "host": "web-1", "severity": "warning"},
                        "annotations": {"summary": "web-1 is busy", "runbook": "r"},
                        "startsAt": "2023-11-14T22:13:20Z",
                        "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://vigil.example:9000",
                        "fingerprint": "fp-web-1",
                    },
                    {
                        "status": "resolved",
                        "labels": {"alertname": "HostHighLoad", "host": "web-2", "severity": "warning"},
                        "annotations": {"summary": "web-2 is busy", "runbook": "r"},
                        "startsAt": "2023-11-14T22:13:20Z",
                        "endsAt": "2023-11-14T22:14:20.500Z",
                        "generatorURL": "http://vigil.example:9000",
                        "fingerprint": "fp-web-2",
                    },
                ],
            })
        );
    }

    #[test]
    fn all_resolved_is_resolved() {
        let payload =
            alertmanager_payload("ops", &[event(AlertStatus::Resolved, "web-2")], "http://x");
        assert_eq!(payload["status"], "resolved");
        assert_eq!(payload["commonLabels"]["host"], "web-2");
    }

    #[test]
    fn mixed_alert_names_have_no_group_labels() {
        let mut other = event(AlertStatus::Firing, "web-2");
        other.labels[0] = label("alertname", "Watchdog");
        let payload = alertmanager_payload(
            "ops",
            &[event(AlertStatus::Firing, "web-1"), other],
            "http://x",
        );
        assert_eq!(payload["groupLabels"], json!({}));
        assert_eq!(payload["groupKey"], "{}:{}");
        assert_eq!(payload["commonLabels"], json!({"severity": "warning"}));
    }
}
