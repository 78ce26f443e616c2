//! The notifier end to end against a small HTTP server on 127.0.0.1: the exact
//! bodies PagerDuty, Slack and webhook receivers get, retries on 5xx and after
//! `Retry-After`, none on 4xx or a body over the limit, delivery reports, and a
//! stuck receiver not holding up another.

use super::*;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vigil_proto::labels::label;
use vigil_proto::v1::AlertStatus;

/// An HTTP/1.1 server recording request bodies and answering with the statuses
/// (and `Retry-After` values) it was given, in order (200 once they run out),
/// or never answering.
struct TestServer {
    url: String,
    bodies: mpsc::UnboundedReceiver<Value>,
}

#[derive(Clone, Copy)]
enum Answer {
    Statuses(&'static [u16]),
    /// Statuses with a `Retry-After` header of the given value.
    RetryAfter(&'static [(u16, &'static str)]),
    Never,
}

impl TestServer {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (sender, bodies) = mpsc::unbounded_channel();
        let statuses = Arc::new(Mutex::new(match answer {
            Answer::Statuses(statuses) => statuses.iter().map(|status| (*status, None)).collect(),
            Answer::RetryAfter(answers) => answers
                .iter()
                .map(|(status, after)| (*status, Some(*after)))
                .collect(),
            Answer::Never => VecDeque::new(),
        }));
        tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                let sender = sender.clone();
                let statuses = Arc::clone(&statuses);
                tokio::spawn(async move {
                    let body = read_request(connection, answer, &statuses).await;
                    let _ = sender.send(body);
                });
            }
        });
        Self { url, bodies }
    }

    async fn next_body(&mut self) -> Value {
        self.bodies.recv().await.unwrap()
    }
}

async fn read_request(
    mut connection: TcpStream,
    answer: Answer,
    statuses: &Mutex<VecDeque<(u16, Option<&'static str>)>>,
) -> Value {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = connection.read(&mut chunk).await.unwrap();
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(position) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break position + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while buffer.len() < head_end + length {
        let read = connection.read(&mut chunk).await.unwrap();
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap();
    if !matches!(answer, Answer::Never) {
        let (status, retry_after) = statuses.lock().unwrap().pop_front().unwrap_or((200, None));
        let retry_after = retry_after
            .map(|value| format!("retry-after: {value}\r\n"))
            .unwrap_or_default();
        let response = format!(
            "HTTP/1.1 {status} X\r\n{retry_after}content-length: 0\r\nconnection: close\r\n\r\n"
        );
        connection.write_all(response.as_bytes()).await.unwrap();
    } else {
        tokio::spawn(async move {
            // Holds the connection open without answering.
            let _ = connection.read(&mut chunk).await;
        });
    }
    body
}

fn event(host: &str, status: AlertStatus) -> AlertEvent {
    AlertEvent {
        group: "host".into(),
        alert: "HostDown".into(),
        labels: vec![
            label("alertname", "HostDown"),
            label("host", host),
            label("severity", "page"),
        ],
        annotations: vec![
            label("summary", "host unreachable"),
            label("description", format!("{host} missed 3 polls")),
        ],
        status: status as i32,
        starts_at_unix_nano: 1_700_000_000_000_000_000,
        ends_at_unix_nano: if status == AlertStatus::Resolved {
            1_700_000_600_000_000_000
        } else {
            0
        },
        fingerprint: format!("fp-{host}"),
        ..AlertEvent::default()
    }
}

/// A fast retry policy.
const FAST_RETRY: RetryPolicy = RetryPolicy {
    first_backoff: Duration::from_millis(10),
    max_backoff: Duration::from_millis(40),
    max_retry_after: Duration::from_millis(40),
};

/// A notifier with `receivers` (YAML list), a route to `receiver` that notifies
/// at once, and a fast retry policy.
fn notifier(receivers: &str, receiver: &str, metrics: &SelfMetrics) -> (Notifier, Deliveries) {
    notifier_retrying(receivers, receiver, FAST_RETRY, metrics)
}

/// Like [`notifier`], retrying by `retry`.
fn notifier_retrying(
    receivers: &str,
    receiver: &str,
    retry: RetryPolicy,
    metrics: &SelfMetrics,
) -> (Notifier, Deliveries) {
    let receivers: Vec<Receiver> = vigil_config::parse_yaml("receivers.yaml", receivers).unwrap();
    let config = NotifyConfig {
        receivers,
        route: Some(Route {
            receiver: Some(receiver.to_owned()),
            group_by: Some(vec!["alertname".to_owned()]),
            group_wait: Some(Duration::ZERO),
            group_interval: Some(Duration::from_secs(1)),
            ..Route::default()
        }),
        external_url: "https://vigil.example.net".to_owned(),
        retry,
        ..NotifyConfig::default()
    };
    config.validate().unwrap();
    Notifier::start(config, None, metrics)
}

fn secret_file(value: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{value}\n")).unwrap();
    file
}

#[tokio::test]
async fn the_webhook_gets_the_alertmanager_v4_body_of_the_group() {
    let mut server = TestServer::start(Answer::Statuses(&[])).await;
    let receivers = format!("- {{type: webhook, name: hook, url: '{}'}}", server.url);
    let (notifier, _deliveries) = notifier(&receivers, "hook", &SelfMetrics::default());
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    assert_eq!(
        server.next_body().await,
        json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"HostDown\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "hook",
            "groupLabels": {"alertname": "HostDown"},
            "commonLabels": {"alertname": "HostDown", "host": "web-1", "severity": "page"},
            "commonAnnotations": {"summary": "host unreachable", "description": "web-1 missed 3 polls"},
            "externalURL": "https://vigil.example.net",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "HostDown", "host": "web-1", "severity": "page"},
                "annotations": {"summary": "host unreachable", "description": "web-1 missed 3 polls"},
                "startsAt": "2023-11-14T22:13:20Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://vigil.example.net",
                "fingerprint": "fp-web-1",
            }],
        })
    );
}

#[tokio::test]
async fn pagerduty_triggers_then_resolves_the_incident_of_the_group() {
    let mut server = TestServer::start(Answer::Statuses(&[202, 202])).await;
    let key = secret_file("R0UT1NGKEY");
    let receivers = format!(
        "- {{type: pagerduty, name: oncall, routing_key: {{file: '{}'}}, url: '{}'}}",
        key.path().display(),
        server.url
    );
    let (notifier, mut deliveries) = notifier(&receivers, "oncall", &SelfMetrics::default());
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    let dedup_key = pagerduty::dedup_key("{}:{alertname=\"HostDown\"}");
    assert_eq!(
        server.next_body().await,
        json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": "[FIRING:1] HostDown: host unreachable",
                "source": "web-1",
                "severity": "critical",
                "custom_details": {
                    "num_firing": 1,
                    "num_resolved": 0,
                    "alerts": [{
                        "status": "firing",
                        "labels": {"alertname": "HostDown", "host": "web-1", "severity": "page"},
                        "annotations": {"summary": "host unreachable", "description": "web-1 missed 3 polls"},
                        "starts_at": "2023-11-14T22:13:20Z",
                    }],
                },
            },
            "client": "Vigil",
            "client_url": "https://vigil.example.net",
        })
    );
    // The resolve is sent at the group's next tick, after the trigger finished.
    deliveries.recv().await.unwrap();
    notifier
        .notify(&event("web-1", AlertStatus::Resolved))
        .await;
    assert_eq!(
        server.next_body().await,
        json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": dedup_key})
    );
    assert_eq!(
        dedup_key,
        pagerduty::dedup_key("{}:{alertname=\"HostDown\"}")
    );
    assert_eq!(dedup_key.len(), 32);
}

#[tokio::test]
async fn slack_gets_an_attachment_titled_by_status_and_alert() {
    let mut server = TestServer::start(Answer::Statuses(&[])).await;
    let url = secret_file(&server.url);
    let receivers = format!(
        "- {{type: slack, name: chat, url: {{file: '{}'}}, channel: '#ops'}}",
        url.path().display()
    );
    let (notifier, _deliveries) = notifier(&receivers, "chat", &SelfMetrics::default());
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    notifier.notify(&event("web-2", AlertStatus::Firing)).await;
    assert_eq!(
        server.next_body().await,
        json!({
            "channel": "#ops",
            "attachments": [{
                "color": "danger",
                "title": "[FIRING:2] HostDown: host unreachable",
                "title_link": "https://vigil.example.net",
                "fallback": "[FIRING:2] HostDown: host unreachable",
                "text": "FIRING HostDown host=web-1 severity=page: host unreachable\nweb-1 missed 3 polls\n\
                         FIRING HostDown host=web-2 severity=page: host unreachable\nweb-2 missed 3 polls",
            }],
        })
    );
}

#[tokio::test]
async fn a_webhook_url_with_a_token_comes_from_a_file_and_is_never_printed() {
    let mut server = TestServer::start(Answer::Statuses(&[])).await;
    let url = secret_file(&format!("{}?token=T0K3N", server.url));
    let receivers = format!(
        "- {{type: webhook, name: hook, url: {{file: '{}'}}}}",
        url.path().display()
    );
    let parsed: Vec<Receiver> = vigil_config::parse_yaml("receivers.yaml", &receivers).unwrap();
    assert!(!format!("{parsed:?}").contains("T0K3N"), "{parsed:?}");
    let (notifier, _deliveries) = notifier(&receivers, "hook", &SelfMetrics::default());
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    assert_eq!(server.next_body().await["receiver"], "hook");
}

#[tokio::test]
async fn server_errors_are_retried_until_the_receiver_accepts() {
    let mut server = TestServer::start(Answer::Statuses(&[500, 503, 429, 408])).await;
    let receivers = format!("- {{type: webhook, name: hook, url: '{}'}}", server.url);
    let metrics = SelfMetrics::default();
    let (notifier, mut deliveries) = notifier(&receivers, "hook", &metrics);
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    let delivered = deliveries.recv().await.unwrap();
    assert_eq!(
        (delivered.fingerprint.as_str(), delivered.status),
        ("fp-web-1", AlertStatus::Firing)
    );
    let mut bodies = Vec::new();
    while let Ok(body) = server.bodies.try_recv() {
        bodies.push(body);
    }
    assert_eq!(bodies.len(), 5, "four failures, then success");
    assert!(bodies.iter().all(|body| body == &bodies[0]));
    let text = metrics.encode();
    for line in [
        r#"vigil_alert_notifications_total{receiver="hook",outcome="sent"} 1"#,
        r#"vigil_alert_notification_retries_total{receiver="hook",reason="server_error"} 2"#,
        r#"vigil_alert_notification_retries_total{receiver="hook",reason="rate_limited"} 1"#,
        r#"vigil_alert_notification_retries_total{receiver="hook",reason="timeout"} 1"#,
        r#"vigil_alert_notifications_retrying{receiver="hook"} 0"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

// Six failed tries within about 15 s counted as delivered: a receiver down
// for longer never got the page, and the stage persisted it as notified.
#[tokio::test]
async fn a_receiver_down_longer_than_any_fixed_number_of_tries_still_gets_the_page() {
    const DOWN: &[u16] = &[503; 40];
    let mut server = TestServer::start(Answer::Statuses(DOWN)).await;
    let receivers = format!("- {{type: webhook, name: hook, url: '{}'}}", server.url);
    let retry = RetryPolicy {
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..FAST_RETRY
    };
    let metrics = SelfMetrics::default();
    let (notifier, mut deliveries) = notifier_retrying(&receivers, "hook", retry, &metrics);
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    let delivered = deliveries.recv().await.unwrap();
    assert_eq!(delivered.fingerprint, "fp-web-1");
    let mut tries = 0;
    while server.bodies.try_recv().is_ok() {
        tries += 1;
    }
    assert_eq!(tries, DOWN.len() + 1);
    assert!(deliveries.try_recv().is_err(), "reported once");
}

#[tokio::test]
async fn the_receivers_retry_after_sets_the_next_try() {
    // Without its Retry-After the next try would be an hour away; the second
    // answer names a date long past, which asks for no wait either.
    let mut server = TestServer::start(Answer::RetryAfter(&[
        (429, "0"),
        (503, "Sun, 06 Nov 1994 08:49:37 GMT"),
    ]))
    .await;
    let receivers = format!("- {{type: webhook, name: hook, url: '{}'}}", server.url);
    let hour = Duration::from_secs(3600);
    let retry = RetryPolicy {
        first_backoff: hour,
        max_backoff: hour,
        max_retry_after: hour,
    };
    let (notifier, mut deliveries) =
        notifier_retrying(&receivers, "hook", retry, &SelfMetrics::default());
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    let delivered = tokio::time::timeout(Duration::from_secs(30), deliveries.recv())
        .await
        .expect("tried again as the receiver asked")
        .unwrap();
    assert_eq!(delivered.fingerprint, "fp-web-1");
    for _ in 0..3 {
        server.next_body().await;
    }
}

// A 4xx counted as delivered: the stage persisted a page PagerDuty refused.
#[tokio::test]
async fn a_client_error_is_neither_retried_nor_reported_delivered() {
    let mut server = TestServer::start(Answer::Statuses(&[400])).await;
    let receivers = format!("- {{type: webhook, name: hook, url: '{}'}}", server.url);
    let metrics = SelfMetrics::default();
    let (notifier, mut deliveries) = notifier(&receivers, "hook", &metrics);
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    let refused = server.next_body().await;
    assert_eq!(alert_hosts(&refused), ["web-1"]);
    // The group's next change goes out a group_interval later, with the refused
    // alert in it: no retry came in between, and only the new alert is reported.
    notifier.notify(&event("web-2", AlertStatus::Firing)).await;
    let delivered = deliveries.recv().await.unwrap();
    assert_eq!(delivered.fingerprint, "fp-web-2");
    assert_eq!(alert_hosts(&server.next_body().await), ["web-1", "web-2"]);
    assert!(server.bodies.try_recv().is_err(), "two requests only");
    assert!(deliveries.try_recv().is_err());
    let text = metrics.encode();
    for line in [
        r#"vigil_alert_notifications_total{receiver="hook",outcome="failed"} 1"#,
        r#"vigil_alert_notifications_failed_total{receiver="hook",reason="client_error"} 1"#,
        r#"vigil_alert_notifications_total{receiver="hook",outcome="sent"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

fn alert_hosts(body: &Value) -> Vec<&str> {
    body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| alert["labels"]["host"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_body_over_the_receivers_limit_is_refused_without_being_sent() {
    let mut server = TestServer::start(Answer::Statuses(&[])).await;
    let key = secret_file("R0UT1NGKEY");
    let receiver: Receiver = vigil_config::parse_yaml(
        "receiver.yaml",
        &format!(
            "{{type: pagerduty, name: oncall, routing_key: {{file: '{}'}}, url: '{}'}}",
            key.path().display(),
            server.url
        ),
    )
    .unwrap();
    let failures = Family::default();
    let delivery = Delivery {
        receiver,
        http: http_client(),
        external_url: String::new(),
        notifications: Family::default(),
        failures: failures.clone(),
        retries: Family::default(),
        duration: Histogram::new(exponential_buckets(0.005, 4.0, 9)),
        depth: Gauge::default(),
    };
    // The source of the event is the host label: no trimming makes it fit.
    let host = "h".repeat(pagerduty::MAX_EVENT_BYTES);
    let notification = dispatch::Notification {
        receiver: "oncall".to_owned(),
        group: route::GroupId {
            route: 0,
            labels: std::collections::BTreeMap::new(),
        },
        group_key: "{}:{}".to_owned(),
        group_labels: std::collections::BTreeMap::new(),
        alerts: vec![event(&host, AlertStatus::Firing)],
    };
    assert_eq!(
        delivery.deliver(&notification).await,
        deliver::Attempt::Refused
    );
    let too_large = dispatch::FailureLabels {
        receiver: "oncall".to_owned(),
        reason: "too_large",
    };
    assert_eq!(failures.get_or_create(&too_large).get(), 1);
    assert!(server.bodies.try_recv().is_err(), "nothing was sent");

    let fits = dispatch::Notification {
        alerts: vec![event("web-1", AlertStatus::Firing)],
        ..notification
    };
    assert_eq!(delivery.deliver(&fits).await, deliver::Attempt::Accepted);
    assert_eq!(server.next_body().await["payload"]["source"], "web-1");
}

#[tokio::test]
async fn a_stuck_receiver_does_not_hold_up_another() {
    let stuck = TestServer::start(Answer::Never).await;
    let mut working = TestServer::start(Answer::Statuses(&[])).await;
    let receivers: Vec<Receiver> = vigil_config::parse_yaml(
        "receivers.yaml",
        &format!(
            "- {{type: webhook, name: stuck, url: '{}'}}\n- {{type: webhook, name: working, url: '{}'}}",
            stuck.url, working.url
        ),
    )
    .unwrap();
    let config = NotifyConfig {
        receivers,
        route: Some(Route {
            receiver: Some("working".to_owned()),
            group_wait: Some(Duration::ZERO),
            routes: ["stuck", "working"]
                .map(|receiver| Route {
                    receiver: Some(receiver.to_owned()),
                    continue_matching: true,
                    ..Route::default()
                })
                .into(),
            ..Route::default()
        }),
        ..NotifyConfig::default()
    };
    let (notifier, _deliveries) = Notifier::start(config, None, &SelfMetrics::default());
    // The stuck receiver is first in the tree and never answers.
    notifier.notify(&event("web-1", AlertStatus::Firing)).await;
    let body = working.next_body().await;
    assert_eq!(body["receiver"], "working");
}
