//! Alert documents: each alert state change the alert stage publishes on the bus
//! becomes one document for the alerts index, with an id derived from the alert's
//! fingerprint, status and start.

use super::{Document, Host, label_object, rfc3339, serialize};
use serde::Serialize;
use std::collections::BTreeMap;
use vigil_proto::labels::ContentId;
use vigil_proto::v1::{AlertEvent, AlertStatus};

/// Id of the document of one alert state change.
pub fn alert_document_id(
    fingerprint: &str,
    status: AlertStatus,
    starts_at_unix_nano: i64,
) -> String {
    ContentId::new()
        .part(fingerprint)
        .part(status.as_str_name())
        .part(starts_at_unix_nano.to_string())
        .finish()
}

/// The document of one alert state change.
///
/// The alert's `host` label, when it has one, is also its `host.name`, so one filter
/// on a host finds its logs, metrics and alerts.
pub fn alert_document(event: &AlertEvent, index: &str, origin: usize, ingested: &str) -> Document {
    let status = event.status();
    let labels = label_object(&event.labels);
    let document = AlertDocument {
        timestamp: rfc3339(event.evaluated_at_unix_nano),
        event: AlertEventFields {
            kind: "alert",
            start: (event.starts_at_unix_nano != 0).then(|| rfc3339(event.starts_at_unix_nano)),
            end: (event.ends_at_unix_nano != 0).then(|| rfc3339(event.ends_at_unix_nano)),
            ingested,
        },
        host: labels.get("host").map(|&name| Host { name }),
        rule: Rule {
            name: &event.alert,
            ruleset: &event.group,
        },
        labels,
        vigil: AlertVigil {
            alert: AlertFields {
                status: match status {
                    AlertStatus::Unspecified => "unspecified",
                    AlertStatus::Pending => "pending",
                    AlertStatus::Firing => "firing",
                    AlertStatus::Resolved => "resolved",
                },
                fingerprint: &event.fingerprint,
                value: event.value,
                annotations: label_object(&event.annotations),
            },
        },
    };
    Document {
        index: index.to_owned(),
        id: alert_document_id(&event.fingerprint, status, event.starts_at_unix_nano),
        body: serialize(&document),
        origin,
        record: 0,
    }
}

#[derive(Serialize)]
struct AlertDocument<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    event: AlertEventFields<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<Host<'a>>,
    rule: Rule<'a>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
    vigil: AlertVigil<'a>,
}

#[derive(Serialize)]
struct AlertEventFields<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
    ingested: &'a str,
}

#[derive(Serialize)]
struct Rule<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    ruleset: &'a str,
}

#[derive(Serialize)]
struct AlertVigil<'a> {
    alert: AlertFields<'a>,
}

#[derive(Serialize)]
struct AlertFields<'a> {
    status: &'static str,
    fingerprint: &'a str,
    value: f64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, &'a str>,
}
