//! The generic webhook receiver: the Alertmanager webhook format (version 4) of
//! one group, so receivers written for Alertmanager work unchanged.

use super::dispatch::Notification;
use crate::rules::alertmanager_payload;
use serde_json::Value;

/// The webhook body for `notification`: the alerts as Alertmanager renders them,
/// with the group key and labels of the routing tree.
pub(crate) fn body(notification: &Notification, external_url: &str) -> Value {
    let mut body = alertmanager_payload(&notification.receiver, &notification.alerts, external_url);
    body["groupKey"] = Value::String(notification.group_key.clone());
    body["groupLabels"] = serde_json::to_value(&notification.group_labels).unwrap_or_default();
    body
}
