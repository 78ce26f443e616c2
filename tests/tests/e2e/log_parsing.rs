//! Log lines parsed at the source, from a real file to a page and a document:
//! the real agent follows files through the shipped presets, the real alert
//! stage evaluates rules in the lines' own time, the real index stage writes
//! the parsed fields at their Elastic Common Schema names into the
//! Elasticsearch-API server, where they can be searched by those names.

use chrono::{DateTime, FixedOffset, Local, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};
use vigil_proto::Payload;
use vigil_proto::v1::{AlertEvent, AlertStatus};
use vigil_tests::alert_feed::{Line, LogProducer, parse_time, rules_folder, unix_nanos};
use vigil_tests::deployment::{Deployment, metric_value};
use vigil_tests::hostile::read_topic;
use vigil_tests::index_setup::install_templates;
use vigil_tests::ports::free_tcp_ports;
use vigil_tests::{elastic, wait_until};

const DEADLINE: Duration = Duration::from_secs(120);

/// Refreshes `index` and returns the `_source` of the hits of `query`.
fn search(index: &str, query: Value) -> Vec<Value> {
    elastic::refresh(index);
    elastic::search(index, json!({"query": query, "size": 100}))["hits"]["hits"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|hit| hit["_source"].clone())
        .collect()
}

/// Appends `lines` to the file at `path`, as an application writes its log.
fn append(path: &Path, lines: &[String]) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
}

/// The alerts the stage published to its alerts topic as firing, whose
/// labels include every pair of `labels`, as `{labels, annotations, startsAt}`.
/// The topic, not the webhook: an alert on lines read hours late fires and
/// resolves in event time long before the wall clock, so it is not paged.
fn fired_with(deployment: &Deployment, labels: &[(&str, &str)]) -> Vec<Value> {
    read_topic(&deployment.topic("alerts.events"))
        .iter()
        .filter_map(|record| AlertEvent::from_payload(&record.payload).ok())
        .filter(|event| event.status == AlertStatus::Firing as i32)
        .map(|event| {
            let object = |labels: &[vigil_proto::v1::Label]| -> Value {
                labels
                    .iter()
                    .map(|label| (label.name.clone(), Value::from(label.value.clone())))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            let mut alert_labels = object(&event.labels);
            alert_labels["alertname"] = Value::from(event.alert.clone());
            json!({
                "labels": alert_labels,
                "annotations": object(&event.annotations),
                "startsAt": DateTime::<Utc>::from_timestamp_nanos(event.starts_at_unix_nano)
                    .to_rfc3339_opts(SecondsFormat::Nanos, true),
            })
        })
        .filter(|alert| {
            labels
                .iter()
                .all(|(name, value)| alert["labels"][*name] == *value)
        })
        .collect()
}

fn wait_for_fired(deployment: &Deployment, labels: &[(&str, &str)]) -> Value {
    wait_until(&format!("a firing alert with {labels:?}"), DEADLINE, || {
        fired_with(deployment, labels).into_iter().next()
    })
}

fn seconds(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Nanoseconds since the epoch of an RFC 3339 time in a document.
fn document_time(document: &Value, field: &str) -> i64 {
    let mut value = document;
    for part in field.split('.') {
        value = &value[part];
    }
    parse_time(value)
}

#[test]
fn parsed_fields_are_stored_at_their_ecs_names_and_searchable_by_them() {
    let deployment = Deployment::new("e2e-parsed-fields");
    let port = free_tcp_ports(1)[0];
    let config = deployment.aggregator_config("index", port);
    install_templates(&config);
    let _index = deployment.start_stage("index", &config, port);

    let now = SystemTime::now();
    let mut logs = LogProducer::new(deployment.topic("logs.raw"));
    logs.send(
        "web-1",
        "nginx.access",
        &[
            Line::at(
                now,
                "203.0.113.9 - alice [..] \"POST /pay HTTP/1.1\" 503 17",
            )
            .with_field("source.ip", "203.0.113.9")
            .with_field("user.name", "alice")
            .with_field("http.request.method", "POST")
            .with_field("url.path", "/pay")
            .with_field("http.response.status_code", "503")
            .with_field("log.level", "error")
            .with_field("request_id", "r-17"),
            // Values that do not fit the type of their ECS field stay under
            // `fields` rather than make the server refuse the document.
            Line::at(now, "unknown - bob [..] \"GET / HTTP/1.1\" n/a 0")
                .with_field("source.ip", "unknown")
                .with_field("user.name", "bob")
                .with_field("http.response.status_code", "n/a"),
        ],
    );
    wait_until("both lines indexed", DEADLINE, || {
        (elastic::count(&deployment.logs_index) >= 2).then_some(())
    });

    let alice = search(
        &deployment.logs_index,
        json!({"term": {"user.name": "alice"}}),
    );
    assert_eq!(alice.len(), 1, "{alice:?}");
    let alice = &alice[0];
    assert_eq!(alice["source"], json!({"ip": "203.0.113.9"}));
    assert_eq!(alice["http"]["response"]["status_code"], 503);
    assert_eq!(alice["http"]["request"]["method"], "POST");
    assert_eq!(alice["log"]["level"], "error");
    assert_eq!(alice["fields"], json!({"request_id": "r-17"}));

    let by_address = search(
        &deployment.logs_index,
        json!({"term": {"source.ip": "203.0.113.9"}}),
    );
    assert_eq!(by_address.len(), 1);
    let server_errors = search(
        &deployment.logs_index,
        json!({"range": {"http.response.status_code": {"gte": 500}}}),
    );
    assert_eq!(server_errors.len(), 1);
    assert_eq!(server_errors[0]["user"]["name"], "alice");

    let bob = search(
        &deployment.logs_index,
        json!({"term": {"user.name": "bob"}}),
    );
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(
        bob[0]["fields"],
        json!({"source.ip": "unknown", "http.response.status_code": "n/a"})
    );
    assert_eq!(
        metric_value(port, "vigil_index_dead_lettered_total", ""),
        0.0,
        "nothing was refused"
    );
}

const APP_RULES: &str = r#"groups:
  - name: checkout
    interval: 1s
    rules:
      - alert: CheckoutErrors
        logs: {dataset: e2e.checkout, match: 'log.level == "error"'}
        type: frequency
        threshold: {count: 3, window: 1m}
        group_by: [host.name, service.name]
        labels: {severity: ticket}
        annotations:
          summary: "{{ $labels.service.name }}: {{ $value }} errors within a minute"
"#;

/// An application's JSON line at `time`, stamped in its own zone (UTC+1).
fn app_line(time: SystemTime, level: &str, message: &str, user: &str) -> String {
    let zone = FixedOffset::east_opt(3600).unwrap();
    let stamp = DateTime::<Utc>::from(time)
        .with_timezone(&zone)
        .to_rfc3339_opts(SecondsFormat::Millis, false);
    format!(
        r#"{{"time":"{stamp}","level":"{level}","service":"checkout","user":"{user}","msg":"{message}"}}"#
    )
}

#[test]
fn json_lines_an_hour_old_fire_a_frequency_rule_at_their_own_time_and_keep_it_in_elasticsearch() {
    let deployment = Deployment::new("e2e-json-times");
    deployment.push_rules(&rules_folder(
        &deployment,
        "rules",
        &[("checkout.yaml", APP_RULES)],
    ));
    let [alert_port, index_port, agent_port] = free_tcp_ports(3)[..] else {
        unreachable!()
    };
    // Lines read an hour late are on time for a clock that may lag two hours.
    let settings = format!(
        "  allowed_lateness: 2h\n  receivers:\n    - {{type: webhook, name: test, url: '{}'}}\n\
         \x20 route: {{receiver: test, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}\n",
        deployment.webhook.url()
    );
    let alert_config = deployment.alert_config_with("alert", alert_port, &settings);
    let _alert = deployment.start_stage("alert", &alert_config, alert_port);
    let index_config = deployment.aggregator_config("index", index_port);
    install_templates(&index_config);
    let _index = deployment.start_stage("index", &index_config, index_port);

    let log = deployment.work.join("checkout.log");
    std::fs::File::create(&log).unwrap();
    let agent_config = deployment.logs_agent_config(
        "agent",
        &[format!(
            "path: '{}', dataset: e2e.checkout, read_from: beginning, parsers: {{preset: json}}",
            log.display()
        )],
        agent_port,
    );
    let _agent = deployment.start_agent(&agent_config, agent_port);

    let now = SystemTime::now();
    let hour_ago = now - seconds(3600);
    let mut lines = vec![
        (hour_ago, "INFO", "cart opened", "yann"),
        (hour_ago + seconds(2), "ERROR", "payment declined", "alice"),
        (hour_ago + seconds(5), "ERROR", "payment declined", "bob"),
        (hour_ago + seconds(9), "ERROR", "payment declined", "carol"),
        (hour_ago + seconds(12), "INFO", "cart opened", "dave"),
    ];
    // Now, one error alone: not three within a minute.
    lines.push((now - seconds(1), "ERROR", "payment declined", "erin"));
    let written_at = SystemTime::now();
    append(
        &log,
        &lines
            .iter()
            .map(|(time, level, message, user)| app_line(*time, level, message, user))
            .collect::<Vec<_>>(),
    );

    let fired = wait_for_fired(&deployment, &[("alertname", "CheckoutErrors")]);
    assert_eq!(
        fired["labels"],
        json!({"alertname": "CheckoutErrors", "host": "e2e-host", "service.name": "checkout", "severity": "ticket"})
    );
    // The line's stamp has milliseconds.
    let third_error = unix_nanos(hour_ago + seconds(9)) / 1_000_000 * 1_000_000;
    let starts_at = parse_time(&fired["startsAt"]);
    assert!(
        (third_error..third_error + 2_000_000_000).contains(&starts_at),
        "fired at {} for a third error at {third_error}",
        fired["startsAt"]
    );

    wait_until("every line indexed", DEADLINE, || {
        (elastic::count(&deployment.logs_index) >= lines.len() as u64).then_some(())
    });
    let documents = search(
        &deployment.logs_index,
        json!({"term": {"service.name": "checkout"}}),
    );
    assert_eq!(documents.len(), lines.len());
    let read_by = SystemTime::now();
    for (time, level, _, user) in &lines {
        let document = documents
            .iter()
            .find(|document| document["user"]["name"] == *user)
            .unwrap_or_else(|| panic!("{user}'s line in {documents:?}"));
        // Millisecond stamps: the line's own time, to the millisecond.
        let expected = unix_nanos(*time) / 1_000_000 * 1_000_000;
        assert_eq!(
            document_time(document, "@timestamp"),
            expected,
            "{document}"
        );
        assert_eq!(document["log"]["level"], level.to_lowercase());
        let created = document_time(document, "event.created");
        assert!(
            (unix_nanos(written_at)..=unix_nanos(read_by)).contains(&created),
            "read at {created}, between writing and now: {document}"
        );
        assert!(document_time(document, "event.ingested") >= created);
    }
    let errors = search(
        &deployment.logs_index,
        json!({"bool": {"filter": [
            {"term": {"log.level": "error"}},
            {"range": {"@timestamp": {"lt": DateTime::<Utc>::from(now - seconds(1800)).to_rfc3339()}}}
        ]}}),
    );
    assert_eq!(errors.len(), 3, "the hour-old errors, by their own time");
}

/// A Debian auth.log line at `time` in the classic syslog format, local time.
fn auth_line(time: SystemTime, program: &str, message: &str) -> String {
    let stamp = DateTime::<Local>::from(time).format("%b %e %H:%M:%S");
    format!("{stamp} bastion {program}: {message}")
}

/// The same in the RFC 3339 format rsyslog writes on Debian 12.
fn auth_line_rfc3339(time: SystemTime, program: &str, message: &str) -> String {
    let stamp = DateTime::<Local>::from(time).to_rfc3339_opts(SecondsFormat::Micros, false);
    format!("{stamp} bastion {program}: {message}")
}

#[test]
fn shipped_auth_rules_fire_from_real_auth_log_lines_through_the_syslog_preset() {
    let deployment = Deployment::new("e2e-auth-log");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/app-logs.yaml"),
    )
    .expect("the shipped log rules");
    deployment.push_rules(&rules_folder(
        &deployment,
        "rules",
        &[("app-logs.yaml", &shipped)],
    ));
    let [alert_port, agent_port] = free_tcp_ports(2)[..] else {
        unreachable!()
    };
    // `NewSudoUser` learns for an hour after the stage's clock starts: a clock
    // that lags three hours lets the lines of the last two hours be judged.
    let settings = format!(
        "  allowed_lateness: 3h\n  receivers:\n    - {{type: webhook, name: test, url: '{}'}}\n\
         \x20 route: {{receiver: test, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}\n",
        deployment.webhook.url()
    );
    let alert_config = deployment.alert_config_with("alert", alert_port, &settings);
    let _alert = deployment.start_stage("alert", &alert_config, alert_port);
    wait_until("the stage to own partitions", DEADLINE, || {
        (metric_value(alert_port, "vigil_alert_partitions_owned", "") > 0.0).then_some(())
    });

    let log = deployment.work.join("auth.log");
    std::fs::File::create(&log).unwrap();
    let agent_config = deployment.logs_agent_config(
        "agent",
        &[format!(
            "path: '{}', dataset: system.auth, read_from: beginning, parsers: {{preset: auth_log}}",
            log.display()
        )],
        agent_port,
    );
    let _agent = deployment.start_agent(&agent_config, agent_port);

    let now = SystemTime::now();
    let known = now - seconds(2 * 3600 + 1800);
    let mut lines = vec![
        auth_line(
            known,
            "sudo",
            "   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/apt update",
        ),
        auth_line(
            known,
            "sudo",
            "pam_unix(sudo:session): session opened for user root(uid=0) by alice(uid=1000)",
        ),
    ];
    // Spraying: one address tries twelve names within two minutes.
    let spray = now - seconds(1200);
    let users = [
        "admin", "oracle", "test", "ubuntu", "pi", "git", "postgres", "deploy", "admin", "ftp",
        "guest", "root",
    ];
    for (attempt, user) in users.iter().enumerate() {
        let invalid = if *user == "root" { "" } else { "invalid user " };
        lines.push(auth_line(
            spray + seconds(10 * attempt as u64),
            &format!("sshd[{}]", 4100 + attempt),
            &format!(
                "Failed password for {invalid}{user} from 203.0.113.7 port {} ssh2",
                50_000 + attempt
            ),
        ));
    }
    // A user new to sudo becomes root, in Debian 12's RFC 3339 format.
    let takeover = now - seconds(300);
    lines.push(auth_line_rfc3339(
        takeover,
        "sudo",
        "mallory : TTY=pts/2 ; PWD=/home/mallory ; USER=root ; COMMAND=/usr/bin/bash",
    ));
    lines.push(auth_line_rfc3339(
        takeover,
        "sudo",
        "pam_unix(sudo:session): session opened for user root(uid=0) by mallory(uid=1001)",
    ));
    append(&log, &lines);

    let spraying = wait_for_fired(
        &deployment,
        &[("alertname", "SshPasswordSpraying"), ("host", "e2e-host")],
    );
    // Classic syslog stamps have whole seconds.
    let sixth_user = unix_nanos(spray + seconds(50)) / 1_000_000_000 * 1_000_000_000;
    let starts_at = parse_time(&spraying["startsAt"]);
    assert!(
        (sixth_user..sixth_user + 31_000_000_000).contains(&starts_at),
        "spraying seen at {}, the sixth name was tried at {sixth_user}",
        spraying["startsAt"]
    );
    assert_eq!(
        spraying["annotations"]["summary"],
        "e2e-host: failed SSH logins for 6 different users within 10 minutes"
    );

    let brute_force = wait_for_fired(
        &deployment,
        &[("alertname", "SshBruteForce"), ("source.ip", "203.0.113.7")],
    );
    assert_eq!(brute_force["labels"]["host"], "e2e-host");

    let sudo = wait_for_fired(
        &deployment,
        &[("alertname", "NewSudoUser"), ("user.name", "mallory")],
    );
    assert_eq!(
        sudo["annotations"]["summary"],
        "mallory used sudo on e2e-host for the first time in 30 days"
    );
    let at = parse_time(&sudo["startsAt"]);
    assert!(
        (unix_nanos(takeover) / 1_000 * 1_000..unix_nanos(takeover) + 31_000_000_000).contains(&at),
        "mallory's sudo at {}, logged at {}",
        sudo["startsAt"],
        unix_nanos(takeover)
    );
    // alice was learned; root is whom sudo ran as, not a user of sudo.
    for user in ["alice", "root"] {
        assert!(
            fired_with(
                &deployment,
                &[("alertname", "NewSudoUser"), ("user.name", user)]
            )
            .is_empty(),
            "{user} is not new to sudo"
        );
    }
}
