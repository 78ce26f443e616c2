//! Notifications from the alert stage to pagers: real etcd for rules and
//! silences, the real broker for metrics, the real `vigil-aggregator alert`, and
//! HTTP receivers in the test standing in for PagerDuty, Slack and an
//! Alertmanager webhook, whose bodies are checked field by field. Covers the life
//! of one incident (fire, repeat, resolve), flapping with `keep_firing_for`,
//! silences made with the CLI, inhibition and grouping.

use serde_json::{Value, json};
use std::time::Duration;
use vigil_proto::labels::{ContentId, label};
use vigil_tests::alert_feed::{
    MetricFeed, alerts_with, notified_alerts, parse_time, rules_folder, unix_nanos, wait_for_alert,
    wait_for_count,
};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::wait_until;
use vigil_tests::webhook::WebhookReceiver;

/// The UI alerts link to.
const EXTERNAL_URL: &str = "https://vigil.example.net/alerts";

/// The PagerDuty integration key, read from a file as in production.
const ROUTING_KEY: &str = "R0UT1NGKEY0000000000000000000000";

const DISK_RULES: &str = r#"groups:
  - name: storage
    interval: 1s
    rules:
      - alert: DiskFull
        metric: disk.used_percent
        condition: value > 90
        for: 2s
        labels: {severity: page, team: storage}
        annotations:
          summary: "{{ $labels.host }}: {{ $labels.mountpoint }} {{ $value }}% full"
          description: "{{ $labels.host }} stops writing when it is full."
"#;

/// The labels of every disk reading.
const SRV: &[(&str, &str)] = &[("mountpoint", "/srv")];

/// A PagerDuty and a Slack receiver beside the deployment's webhook, each an HTTP
/// server of the test.
struct Pagers {
    pagerduty: WebhookReceiver,
    slack: WebhookReceiver,
}

impl Pagers {
    fn start() -> Pagers {
        let pagerduty = WebhookReceiver::start();
        // The Events API answers 202 Accepted.
        pagerduty.respond_with(202);
        Pagers {
            pagerduty,
            slack: WebhookReceiver::start(),
        }
    }

    /// The `receivers` of the alert section: `oncall` (PagerDuty), `chat`
    /// (Slack, its URL in a file since it carries a token) and `hook` (webhook).
    fn receivers(&self, deployment: &Deployment) -> String {
        let key = deployment.work.join("pagerduty-key");
        std::fs::write(&key, format!("{ROUTING_KEY}\n")).unwrap();
        let slack_url = deployment.work.join("slack-url");
        std::fs::write(&slack_url, self.slack.url()).unwrap();
        format!(
            "  receivers:\n\
             \x20   - {{type: pagerduty, name: oncall, routing_key: {{file: '{key}'}}, url: '{pagerduty}'}}\n\
             \x20   - {{type: slack, name: chat, url: {{file: '{slack}'}}, channel: '#storage'}}\n\
             \x20   - {{type: webhook, name: hook, url: '{hook}'}}\n",
            key = key.display(),
            pagerduty = self.pagerduty.url(),
            slack = slack_url.display(),
            hook = deployment.webhook.url(),
        )
    }
}

/// The alert stage of `deployment` with `rules` pushed, configured with
/// `settings` (lines of the `alert` section), and its HTTP port.
fn start_alert_stage(
    deployment: &Deployment,
    rules: &[(&str, &str)],
    settings: &str,
) -> (vigil_tests::ChildProcess, u16) {
    deployment.push_rules(&rules_folder(deployment, "rules", rules));
    let [port] = free_tcp_ports(1)[..] else {
        unreachable!()
    };
    let config = deployment.alert_config_with("alert", port, settings);
    (deployment.start_stage("alert", &config, port), port)
}

/// The fingerprint of an alert: a content hash of its name and labels.
fn fingerprint(alert: &str, labels: &Value) -> String {
    let labels: Vec<_> = labels
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| label(name, value.as_str().unwrap()))
        .collect();
    ContentId::new().part(alert).labels(&labels).finish()
}

fn disk_labels(host: &str) -> Value {
    json!({
        "alertname": "DiskFull",
        "host": host,
        "mountpoint": "/srv",
        "severity": "page",
        "team": "storage",
    })
}

fn disk_annotations(host: &str, percent: u32) -> Value {
    json!({
        "summary": format!("{host}: /srv {percent}% full"),
        "description": format!("{host} stops writing when it is full."),
    })
}

/// The Alertmanager webhook body of the `hook` route for DiskFull of `host`.
fn expected_webhook_body(
    host: &str,
    percent: u32,
    starts_at: &Value,
    ends_at: Option<&Value>,
) -> Value {
    let status = if ends_at.is_some() {
        "resolved"
    } else {
        "firing"
    };
    let labels = disk_labels(host);
    let annotations = disk_annotations(host, percent);
    json!({
        "version": "4",
        "groupKey": format!("{{}}/{{}}:{{alertname=\"DiskFull\",host=\"{host}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "hook",
        "groupLabels": {"alertname": "DiskFull", "host": host},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": EXTERNAL_URL,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": starts_at,
            "endsAt": ends_at.cloned().unwrap_or(json!("0001-01-01T00:00:00Z")),
            "generatorURL": EXTERNAL_URL,
            "fingerprint": fingerprint("DiskFull", &labels),
        }],
    })
}

/// The Slack message for DiskFull of `host`.
fn expected_slack_message(host: &str, percent: u32, firing: bool) -> Value {
    let (status, title_status, colour) = if firing {
        ("FIRING", "FIRING:1", "danger")
    } else {
        ("RESOLVED", "RESOLVED", "good")
    };
    let title = format!("[{title_status}] DiskFull {host}: {host}: /srv {percent}% full");
    json!({
        "channel": "#storage",
        "attachments": [{
            "color": colour,
            "title": title,
            "title_link": EXTERNAL_URL,
            "fallback": title,
            "text": format!(
                "{status} DiskFull host={host} mountpoint=/srv severity=page team=storage: \
                 {host}: /srv {percent}% full\n{host} stops writing when it is full."
            ),
        }],
    })
}

/// The PagerDuty Events v2 trigger for DiskFull of `host`.
fn expected_trigger(host: &str, percent: u32, dedup_key: &str, starts_at: &Value) -> Value {
    json!({
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": format!("[FIRING:1] DiskFull {host}: {host}: /srv {percent}% full"),
            "source": host,
            "severity": "critical",
            "custom_details": {
                "num_firing": 1,
                "num_resolved": 0,
                "alerts": [{
                    "status": "firing",
                    "labels": disk_labels(host),
                    "annotations": disk_annotations(host, percent),
                    "starts_at": starts_at,
                }],
            },
        },
        "client": "Vigil",
        "client_url": EXTERNAL_URL,
    })
}

fn bodies_mentioning(receiver: &WebhookReceiver, text: &str) -> Vec<Value> {
    receiver
        .bodies()
        .into_iter()
        .filter(|body| body.to_string().contains(text))
        .collect()
}

#[test]
fn an_incident_fires_once_repeats_and_resolves_once_at_pagerduty_slack_and_a_webhook() {
    let deployment = Deployment::new("alert-incident");
    let pagers = Pagers::start();
    let settings = format!(
        "  allowed_lateness: 1s\n  external_url: '{EXTERNAL_URL}'\n{receivers}\
         \x20 route:\n\
         \x20   receiver: hook\n\
         \x20   group_by: [alertname, host]\n\
         \x20   group_wait: 0s\n\
         \x20   group_interval: 1s\n\
         \x20   repeat_interval: 3s\n\
         \x20   routes:\n\
         \x20     - {{matchers: ['severity=\"page\"'], receiver: oncall, continue: true}}\n\
         \x20     - {{matchers: ['team=\"storage\"'], receiver: chat, continue: true}}\n\
         \x20     - {{receiver: hook}}\n",
        receivers = pagers.receivers(&deployment),
    );
    let (_alert, port) = start_alert_stage(&deployment, &[("storage.yaml", DISK_RULES)], &settings);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));

    let full_from = feed.set("db-1", SRV, &[("disk.used_percent", 95.0)]);
    // The first notification and one repeat, at every receiver.
    for receiver in [&pagers.pagerduty, &pagers.slack, &deployment.webhook] {
        wait_until(
            "a notification and its repeat",
            Duration::from_secs(90),
            || (receiver.bodies().len() >= 2).then_some(()),
        );
    }
    let firing = deployment.webhook.bodies()[0].clone();
    let starts_at = firing["alerts"][0]["startsAt"].clone();
    // `for: 2s` counted from a sample sent after `full_from`.
    assert!(parse_time(&starts_at) >= unix_nanos(full_from) + 2_000_000_000);
    assert_eq!(firing, expected_webhook_body("db-1", 95, &starts_at, None));
    // The dedup key is a hash of the group key of the `oncall` route,
    // `{}/{severity="page"}:{alertname="DiskFull",host="db-1"}`: the same on
    // every instance and after restarts, so the resolve closes this incident.
    let dedup_key = "44b1696ff077f823c5c1d2d91290e27e";
    assert_eq!(
        pagers.pagerduty.bodies()[0],
        expected_trigger("db-1", 95, dedup_key, &starts_at)
    );
    assert_eq!(
        pagers.slack.bodies()[0],
        expected_slack_message("db-1", 95, true)
    );
    // The repeat waits `repeat_interval` (3s) after the first; the second POST
    // may have been sent a little faster than the first.
    let requests = deployment.webhook.requests();
    let gap = requests[1]
        .received_at
        .duration_since(requests[0].received_at)
        .unwrap();
    assert!(gap >= Duration::from_millis(2500), "repeated after {gap:?}");

    let empty_from = feed.set("db-1", SRV, &[("disk.used_percent", 40.0)]);
    let is_resolve = |body: &Value| body["event_action"] == "resolve";
    wait_until("PagerDuty resolved", Duration::from_secs(90), || {
        pagers
            .pagerduty
            .bodies()
            .iter()
            .any(is_resolve)
            .then_some(())
    });
    let resolved = wait_for_alert(&deployment.webhook, "resolved", &[("host", "db-1")]);
    let ends_at = resolved["endsAt"].clone();
    assert!(parse_time(&ends_at) >= unix_nanos(empty_from));
    wait_until("Slack resolved", Duration::from_secs(90), || {
        let bodies = pagers.slack.bodies();
        bodies
            .iter()
            .any(|body| body["attachments"][0]["color"] == "good")
            .then_some(())
    });
    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "firing"),
        1.0
    );
    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "resolved"),
        1.0
    );

    // Another disk fills up: its incident is its own, and once it has been
    // repeated, any second resolve or late repeat of db-1 would have come.
    feed.set("db-2", SRV, &[("disk.used_percent", 97.0)]);
    wait_until(
        "db-2 notified and repeated",
        Duration::from_secs(90),
        || {
            (alerts_with(&deployment.webhook, "firing", &[("host", "db-2")]).len() >= 2)
                .then_some(())
        },
    );

    // Every receiver got the same firing message until the resolve, and the
    // resolve once, last.
    let webhook = bodies_mentioning(&deployment.webhook, "\"host\":\"db-1\"");
    let (last, repeats) = webhook.split_last().unwrap();
    assert!(repeats.len() >= 2);
    assert!(repeats.iter().all(|body| *body == firing), "{webhook:#?}");
    assert_eq!(
        *last,
        expected_webhook_body("db-1", 40, &starts_at, Some(&ends_at))
    );

    let slack = bodies_mentioning(&pagers.slack, "DiskFull db-1");
    let (last, repeats) = slack.split_last().unwrap();
    assert!(repeats.len() >= 2);
    let slack_firing = expected_slack_message("db-1", 95, true);
    assert!(
        repeats.iter().all(|body| *body == slack_firing),
        "{slack:#?}"
    );
    assert_eq!(*last, expected_slack_message("db-1", 40, false));

    let pagerduty = bodies_mentioning(&pagers.pagerduty, dedup_key);
    let (last, triggers) = pagerduty.split_last().unwrap();
    assert!(triggers.len() >= 2);
    let trigger = expected_trigger("db-1", 95, dedup_key, &starts_at);
    assert!(
        triggers.iter().all(|body| *body == trigger),
        "{pagerduty:#?}"
    );
    assert_eq!(
        *last,
        json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": dedup_key})
    );
    let db2_trigger = pagers
        .pagerduty
        .bodies()
        .into_iter()
        .find(|body| body["payload"]["source"] == "db-2")
        .expect("db-2 triggered PagerDuty");
    assert_ne!(
        db2_trigger["dedup_key"], dedup_key,
        "one incident per alert"
    );
}

const FLAPPING_RULES: &str = r#"groups:
  - name: links
    interval: 1s
    rules:
      - alert: UplinkErrors
        metric: link.error_rate
        condition: value > 5
        keep_firing_for: 10s
        labels: {severity: page}
        annotations:
          summary: "{{ $labels.host }}: uplink errors"
      # The same condition without keep_firing_for: an incident per flap.
      - alert: UplinkErrorsRaw
        metric: link.error_rate
        condition: value > 5
        labels: {severity: info}
"#;

#[test]
fn a_flapping_condition_with_keep_firing_for_is_one_incident() {
    let deployment = Deployment::new("alert-flapping");
    let pagers = Pagers::start();
    let settings = format!(
        "  allowed_lateness: 1s\n  external_url: '{EXTERNAL_URL}'\n{receivers}\
         \x20 route:\n\
         \x20   receiver: hook\n\
         \x20   group_by: ['...']\n\
         \x20   group_wait: 0s\n\
         \x20   group_interval: 1s\n\
         \x20   repeat_interval: 1h\n\
         \x20   routes:\n\
         \x20     - {{matchers: ['severity=\"page\"'], receiver: oncall, continue: true}}\n\
         \x20     - {{receiver: hook}}\n",
        receivers = pagers.receivers(&deployment),
    );
    let (_alert, port) =
        start_alert_stage(&deployment, &[("links.yaml", FLAPPING_RULES)], &settings);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));

    // Three flaps, each phase long enough for an evaluation to see it: the raw
    // rule fires and resolves each time (its events are counted as they are
    // evaluated), and UplinkErrors keeps firing through the short clear spells.
    for flap in 1..=3 {
        feed.set("gw-1", &[], &[("link.error_rate", 20.0)]);
        wait_for_count(
            port,
            "vigil_alert_events_total",
            "firing",
            f64::from(flap) + 1.0,
        );
        feed.set("gw-1", &[], &[("link.error_rate", 0.0)]);
        wait_for_count(
            port,
            "vigil_alert_events_total",
            "resolved",
            f64::from(flap),
        );
    }
    // Clear for good: after keep_firing_for, the incident ends.
    let resolved = wait_for_alert(
        &deployment.webhook,
        "resolved",
        &[("alertname", "UplinkErrors")],
    );
    wait_until("PagerDuty resolved", Duration::from_secs(90), || {
        (pagers.pagerduty.bodies().len() >= 2).then_some(())
    });

    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "firing"),
        4.0
    );
    let firing = alerts_with(
        &deployment.webhook,
        "firing",
        &[("alertname", "UplinkErrors")],
    );
    assert_eq!(firing.len(), 1, "{firing:#?}");
    assert_eq!(firing[0]["startsAt"], resolved["startsAt"]);
    assert_eq!(
        alerts_with(
            &deployment.webhook,
            "resolved",
            &[("alertname", "UplinkErrors")]
        )
        .len(),
        1
    );
    let incident: Vec<(Value, Value)> = pagers
        .pagerduty
        .bodies()
        .iter()
        .map(|body| (body["event_action"].clone(), body["dedup_key"].clone()))
        .collect();
    assert_eq!(
        incident
            .iter()
            .map(|(action, _)| action.clone())
            .collect::<Vec<_>>(),
        [json!("trigger"), json!("resolve")],
        "{incident:?}"
    );
    assert_eq!(incident[0].1, incident[1].1);
}

/// Runs `silences <args>` against the deployment's etcd; returns standard output.
fn silences(deployment: &Deployment, args: &[&str]) -> String {
    let mut all = vec!["silences"];
    all.extend_from_slice(args);
    let output = deployment.aggregator_cli(&all);
    assert!(
        output.status.success(),
        "silences {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Alert settings notifying the deployment's webhook of every alert on its own.
fn one_group_per_alert(deployment: &Deployment) -> String {
    format!(
        "  allowed_lateness: 1s\n  receivers:\n    - {{type: webhook, name: hook, url: '{}'}}\n\
         \x20 route: {{receiver: hook, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}\n",
        deployment.webhook.url()
    )
}

#[test]
fn a_silence_added_with_the_cli_mutes_its_alerts_until_it_is_expired() {
    let deployment = Deployment::new("alert-silence");
    let settings = one_group_per_alert(&deployment);
    let (_alert, port) = start_alert_stage(&deployment, &[("storage.yaml", DISK_RULES)], &settings);
    let id = silences(
        &deployment,
        &[
            "add",
            "--matcher",
            "alertname=DiskFull",
            "--matcher",
            "host=~db-1|db-3",
            "--duration",
            "1h",
            "--author",
            "alice",
            "--comment",
            "moving /srv to a bigger volume",
        ],
    )
    .trim()
    .to_owned();
    let listed = silences(&deployment, &["list"]);
    let line = listed
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_default();
    assert!(line.contains(" active "), "{listed}");
    assert!(
        line.contains(r#"alertname="DiskFull",host=~"db-1|db-3""#),
        "{listed}"
    );
    assert!(line.contains("alice"), "{listed}");
    assert!(line.ends_with("moving /srv to a bigger volume"), "{listed}");
    wait_for_count(port, "vigil_alert_silences", "\"active\"", 1.0);

    let feed = MetricFeed::start(deployment.topic("metrics.raw"));
    feed.set_all(&[
        ("db-1", SRV, &[("disk.used_percent", 95.0)]),
        ("db-2", SRV, &[("disk.used_percent", 95.0)]),
    ]);
    wait_for_alert(&deployment.webhook, "firing", &[("host", "db-2")]);
    // db-1's alert fired too, and its notification was left out.
    wait_for_count(
        port,
        "vigil_alert_notifications_muted_total",
        "silenced",
        1.0,
    );
    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "firing"),
        2.0
    );
    assert!(alerts_with(&deployment.webhook, "firing", &[("host", "db-1")]).is_empty());

    assert_eq!(
        silences(&deployment, &["expire", &id]).trim(),
        format!("expired {id}")
    );
    let listed = silences(&deployment, &["list"]);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&id) && line.contains(" expired ")),
        "{listed}"
    );
    // The next flush of db-1's group lets the alert through, as it fired.
    let db1 = wait_for_alert(&deployment.webhook, "firing", &[("host", "db-1")]);
    let db2 = alerts_with(&deployment.webhook, "firing", &[("host", "db-2")]);
    assert_eq!(
        db1["startsAt"], db2[0]["startsAt"],
        "fired together, notified later"
    );
    assert_eq!(
        metric_value(port, "vigil_alert_silences", "\"expired\""),
        1.0
    );
    assert_eq!(
        metric_value(port, "vigil_alert_silences", "\"active\""),
        0.0
    );
    assert_eq!(notified_alerts(&deployment.webhook).len(), 2);
}

const SITE_RULES: &str = r#"groups:
  - name: sites
    interval: 1s
    rules:
      - alert: SiteDown
        metric: site.uplink.up
        condition: value < 1
        labels: {severity: page}
      - alert: HostDown
        metric: host.ping.up
        condition: value < 1
        labels: {severity: warning}
"#;

#[test]
fn an_inhibition_rule_mutes_targets_while_the_source_fires() {
    let deployment = Deployment::new("alert-inhibit");
    let settings = one_group_per_alert(&deployment)
        + "  inhibit_rules:\n    - {source_matchers: [alertname=SiteDown], target_matchers: [alertname=HostDown], equal: [site]}\n";
    let (_alert, port) = start_alert_stage(&deployment, &[("sites.yaml", SITE_RULES)], &settings);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));
    let fra: &[(&str, &str)] = &[("site", "fra")];
    let ams: &[(&str, &str)] = &[("site", "ams")];

    feed.set("gw-fra", fra, &[("site.uplink.up", 0.0)]);
    wait_for_alert(&deployment.webhook, "firing", &[("alertname", "SiteDown")]);
    feed.set_all(&[
        ("web-fra-1", fra, &[("host.ping.up", 0.0)]),
        ("web-ams-1", ams, &[("host.ping.up", 0.0)]),
    ]);
    wait_for_alert(
        &deployment.webhook,
        "firing",
        &[("alertname", "HostDown"), ("site", "ams")],
    );
    wait_for_count(
        port,
        "vigil_alert_notifications_muted_total",
        "inhibited",
        1.0,
    );
    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "firing"),
        3.0
    );
    assert!(
        alerts_with(&deployment.webhook, "firing", &[("host", "web-fra-1")]).is_empty(),
        "the site being down explains web-fra-1"
    );

    // The site is back while web-fra-1 still does not answer: now it is news.
    feed.set("gw-fra", fra, &[("site.uplink.up", 1.0)]);
    wait_for_alert(
        &deployment.webhook,
        "resolved",
        &[("alertname", "SiteDown")],
    );
    let web_fra = wait_for_alert(&deployment.webhook, "firing", &[("host", "web-fra-1")]);
    assert_eq!(
        web_fra["labels"],
        json!({"alertname": "HostDown", "host": "web-fra-1", "severity": "warning", "site": "fra"})
    );
    assert_eq!(
        alerts_with(&deployment.webhook, "firing", &[("alertname", "HostDown")]).len(),
        2
    );
}

#[test]
fn alerts_of_many_hosts_grouped_by_alertname_go_out_in_one_notification() {
    let deployment = Deployment::new("alert-grouping");
    let settings = format!(
        "  allowed_lateness: 1s\n  receivers:\n    - {{type: webhook, name: hook, url: '{}'}}\n\
         \x20 route: {{receiver: hook, group_by: [alertname], group_wait: 3s, group_interval: 1s, repeat_interval: 1h}}\n",
        deployment.webhook.url()
    );
    let (_alert, port) = start_alert_stage(&deployment, &[("storage.yaml", DISK_RULES)], &settings);
    let feed = MetricFeed::start(deployment.topic("metrics.raw"));
    let hosts = ["db-1", "db-2", "db-3", "db-4"];
    let full: &[(&str, f64)] = &[("disk.used_percent", 95.0)];
    feed.set_all(&hosts.map(|host| (host, SRV, full)));

    let first = wait_until("a notification", Duration::from_secs(90), || {
        deployment.webhook.bodies().into_iter().next()
    });
    assert_eq!(
        metric_value(port, "vigil_alert_events_total", "firing"),
        4.0
    );
    assert_eq!(first["groupKey"], "{}:{alertname=\"DiskFull\"}");
    assert_eq!(first["groupLabels"], json!({"alertname": "DiskFull"}));
    assert_eq!(
        first["commonLabels"],
        json!({"alertname": "DiskFull", "mountpoint": "/srv", "severity": "page", "team": "storage"})
    );
    assert_eq!(first["commonAnnotations"], json!({}));
    let mut notified: Vec<&str> = first["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| {
            assert_eq!(alert["status"], "firing");
            assert_eq!(
                alert["labels"],
                disk_labels(alert["labels"]["host"].as_str().unwrap())
            );
            alert["labels"]["host"].as_str().unwrap()
        })
        .collect();
    notified.sort_unstable();
    assert_eq!(notified, hosts);

    // Nothing else is sent while they all keep firing; when they resolve, the
    // group's next notifications carry the resolutions.
    let empty: &[(&str, f64)] = &[("disk.used_percent", 50.0)];
    feed.set_all(&hosts.map(|host| (host, SRV, empty)));
    wait_until("every disk resolved", Duration::from_secs(90), || {
        (alerts_with(&deployment.webhook, "resolved", &[]).len() == hosts.len()).then_some(())
    });
    let bodies = deployment.webhook.bodies();
    assert!(
        bodies[1..].iter().all(|body| body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["status"] == "resolved")),
        "only one notification before the resolutions: {bodies:#?}"
    );
    assert!(
        bodies
            .iter()
            .all(|body| body["groupKey"] == first["groupKey"])
    );
}
