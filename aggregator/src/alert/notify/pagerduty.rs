//! The PagerDuty receiver: one Events API v2 event per notification of a group.
//!
//! A group is one incident, as with Alertmanager: `trigger` while any of its
//! alerts fires (repeated triggers update the incident), `resolve` once all are
//! resolved. The `dedup_key` is a hash of the group key, which depends only on
//! the routing tree and the group's labels, so it is the same after a restart
//! and the resolve closes the incident the trigger opened.

use super::dispatch::Notification;
use super::text::{firing_count, title};
use chrono::{DateTime, SecondsFormat};
use serde_json::{Map, Value, json};
use vigil_proto::labels::find;
use vigil_proto::v1::{AlertStatus, Label};

/// Longest `summary` PagerDuty accepts.
const MAX_SUMMARY_CHARS: usize = 1024;

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
    body
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
